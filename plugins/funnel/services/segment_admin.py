"""One write path for segment definitions: add, edit, enable and disable a segment, each checked
exactly as the catalog checks it (the same ``SegmentError``, naming the field and the fix), each
recorded as a revision; and who depends on a segment.

Every write is one MySQL transaction over the catalog row and its revision: refused, nothing is
written. The catalog row stays what the DAG factory reads, so a change shows at the next parse;
the row and the Airflow Variable can still be written by hand (the catalog reads them as before).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from funnel import settings
from funnel.core.composite_graph import composite_operands
from funnel.core.errors import RevisionConflict, SegmentError, SegmentExists, SegmentInUse, UnknownSegment
from funnel.core.query_check import rules_fingerprint
from funnel.core.segment import Kind, Segment
from funnel.core.segment_revisions import DEFINITION_FIELDS, Revision, changed_fields, definition
from funnel.core.states import RevisionChange
from funnel.core.utc_time import utc_now
from funnel.services.catalog import merge_rows, validate_rows
from funnel.storage import catalog_snapshot, layout
from funnel.storage.mysql.segment_definitions import DefinitionStore
from funnel.storage.mysql.webhook_store import WebhookStore

_FIELDS = ", ".join(DEFINITION_FIELDS)


class SegmentAdmin:
    """Definitions over one MySQL connection's stores. ``variable_rows``: the Airflow Variable's
    rows, so that a new or changed segment is checked against the whole catalog."""

    def __init__(
        self,
        store: DefinitionStore,
        webhooks: WebhookStore,
        variable_rows: Callable[[], list[dict[str, Any]]],
        now: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.store, self.webhooks, self.variable_rows, self.now = store, webhooks, variable_rows, now

    # ------------------------------------------------------------------ writes

    def add(self, fields: Mapping[str, Any], actor: str, comment: str | None = None) -> Revision:
        """A new segment (enabled unless ``enabled`` says otherwise), as revision 1."""
        segment_id = _id_of(fields)
        _known_fields(segment_id, fields)
        try:
            if self.store.row(segment_id, lock=True) is not None:
                raise SegmentExists(
                    f"segment {segment_id!r} already exists. Fix: edit it (segments edit {segment_id}), "
                    "or pick another id"
                )
            segment = self._checked(segment_id, {"enabled": True, **fields})
            if not self.store.insert(segment):  # added meanwhile by another writer
                raise SegmentExists(f"segment {segment_id!r} already exists. Fix: pick another id")
            latest = self.store.latest_revision(segment_id)  # a row deleted by hand keeps its history
            after = definition(self.store.row(segment_id) or {})
            return self._record(segment_id, latest, RevisionChange.CREATED, actor, {}, after, comment)
        except BaseException:
            self.store.rollback()
            raise

    def edit(
        self,
        segment_id: str,
        changes: Mapping[str, Any],
        actor: str,
        expect_revision: int | None = None,
        comment: str | None = None,
    ) -> Revision | None:
        """Change some fields; None when they were already so (no revision). ``expect_revision``:
        the revision the edit started from (``RevisionConflict`` when it is not the latest). A
        segment an enabled composite or webhook depends on stays enabled (``SegmentInUse``)."""
        _known_fields(segment_id, changes)
        if changes.get("enabled") is False:
            using = self.dependents(segment_id)
            if using:
                raise SegmentInUse(segment_id, "disabled", using)
        if changes.get("segment_id", segment_id) != segment_id:
            raise SegmentError(
                segment_id, "segment_id", "cannot change", "a segment's id is its identity: add a new segment instead"
            )
        try:
            current = self.store.row(segment_id, lock=True)
            if current is None:
                raise _unknown(segment_id)
            latest = self.store.latest_revision(segment_id)
            number = latest.revision if latest is not None else 0
            if expect_revision is not None and expect_revision != number:
                raise RevisionConflict(segment_id, expect_revision, number, latest.changed if latest else {})
            kind = changes.get("kind", current["kind"])
            if kind != current["kind"]:
                raise SegmentError(
                    segment_id,
                    "kind",
                    f"cannot change from {current['kind']} to {kind}",
                    "a segment keeps its kind: add a new segment of that kind and disable this one",
                )
            before = definition(current)
            self.store.update(self._checked(segment_id, {**current, **changes}))
            after = definition(self.store.row(segment_id) or {})
            if after == before:
                self.store.rollback()
                return None
            change = RevisionChange.EDITED
            if set(changed_fields(before, after)) == {"enabled"}:
                change = RevisionChange.ENABLED if after["enabled"] else RevisionChange.DISABLED
            return self._record(segment_id, latest, change, actor, before, after, comment)
        except BaseException:
            self.store.rollback()
            raise

    def set_enabled(self, segment_id: str, enabled: bool, actor: str, comment: str | None = None) -> Revision | None:
        """Enable or disable (``edit`` of ``enabled``: refused while something depends on it)."""
        return self.edit(segment_id, {"enabled": enabled}, actor, comment=comment)

    # ------------------------------------------------------------------ reads

    def listing(self) -> list[tuple[dict[str, Any], int | None]]:
        """Every segment's definition and latest revision number (None: never written through here)."""
        rows, numbers = self.store.rows(), self.store.latest_numbers()
        self.store.commit()
        return [(definition(row), numbers.get(row["segment_id"])) for row in rows]

    def show(self, segment_id: str) -> tuple[dict[str, Any], Revision | None]:
        """The segment's definition and its latest revision (None: never written through here)."""
        row = self.store.row(segment_id)
        latest = self.store.latest_revision(segment_id)
        self.store.commit()
        if row is None:
            raise _unknown(segment_id)
        return definition(row), latest

    def history(self, segment_id: str) -> list[Revision]:
        """Every revision, oldest first (a segment whose row is gone keeps its history)."""
        revisions = self.store.revisions(segment_id)
        exists = self.store.row(segment_id) is not None
        self.store.commit()
        if not revisions and not exists:
            raise _unknown(segment_id)
        return revisions

    def dependents(self, segment_id: str) -> list[str]:
        """What stops working without this segment: the enabled composites that use it, and the
        enabled webhook subscriptions on it."""
        rows = self.store.rows()
        self.store.commit()
        if not any(row["segment_id"] == segment_id for row in rows):
            raise _unknown(segment_id)
        catalog = validate_rows(merge_rows(rows, self.variable_rows(), settings.CATALOG_VARIABLE), check_queries=False)
        using = [
            f"composite {segment.segment_id}"
            for segment in catalog.segments
            if segment.kind is Kind.COMPOSITE and segment.enabled and segment_id in composite_operands(segment)
        ]
        hooks = self.webhooks.list(enabled_only=True)
        using += [f"webhook {hook.id}" for hook in hooks if hook.segment_id == segment_id]
        return using

    # ------------------------------------------------------------------ inside

    def _checked(self, segment_id: str, row: Mapping[str, Any]) -> Segment:
        """``row`` as a segment, checked with the whole catalog as the DAG factory checks it (its
        query parsed; the others' queries as they are). Raises its ``SegmentError``."""
        others = [r for r in self.store.rows() if r["segment_id"] != segment_id]
        candidate = {name: row.get(name) for name in DEFINITION_FIELDS}
        rules = rules_fingerprint(settings.ALLOWED_FUNCTIONS)
        checked = {catalog_snapshot.query_digest(r["query"], rules) for r in others if r.get("query")}
        rows = merge_rows([*others, candidate], self.variable_rows(), settings.CATALOG_VARIABLE)
        catalog = validate_rows(rows, checked)
        for error in catalog.errors:
            if error.segment_id == segment_id:
                raise error
        return next(s for s in catalog.segments if s.segment_id == segment_id)

    def _record(
        self,
        segment_id: str,
        latest: Revision | None,
        change: RevisionChange,
        actor: str,
        before: dict[str, Any],
        after: dict[str, Any],
        comment: str | None,
    ) -> Revision:
        number = 1 if latest is None else latest.revision + 1
        revision = Revision(
            segment_id, number, change, actor, self.now(), after, changed_fields(before, after), comment
        )
        self.store.add_revision(revision)
        self.store.commit()
        return revision


def _id_of(fields: Mapping[str, Any]) -> str:
    segment_id = fields.get("segment_id")
    if not isinstance(segment_id, str) or not segment_id:
        raise SegmentError("?", "segment_id", "is missing", "give the new segment an id (a lower-case slug)")
    return segment_id


def _known_fields(segment_id: str, fields: Mapping[str, Any]) -> None:
    for name in fields:
        if name not in DEFINITION_FIELDS:
            raise SegmentError(segment_id, name, "is not a field of a segment", f"use {_FIELDS}")


def _unknown(segment_id: str) -> UnknownSegment:
    return UnknownSegment(
        f"segment {segment_id!r} is not in {layout.SEGMENTS_TABLE}. Fix: list the segments (segments list)"
    )
