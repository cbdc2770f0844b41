"""One write path for segment definitions: add, edit, enable and disable a segment, each checked
exactly as the catalog checks it (the same ``SegmentError``, naming the field and the fix), each
recorded as a revision; and who depends on a segment.

Every write is one MySQL transaction over the catalog row and its revision: refused, nothing is
written. ``add`` and a change of what decides membership (query, rule, run_at, enabling) first
preview the new definition when given a ``preview`` (``funnel.services.previewer``: the doors
pass one unless told not to): an error of the query on Hive refuses the change, and so does a
result holding more than ``max_share_of_users`` of all users with tags, unless forced. The
catalog row stays what the DAG factory reads, so a change shows at the next parse;
the row and the Airflow Variable can still be written by hand (the catalog reads them as before).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from funnel import settings
from funnel.core.composite_graph import composite_operands
from funnel.core.errors import (
    FunnelError,
    PreviewNotAvailable,
    RevisionConflict,
    SegmentError,
    SegmentExists,
    SegmentInUse,
    SegmentRetired,
    UnknownSegment,
)
from funnel.core.query_check import rules_fingerprint
from funnel.core.refresh_guards import share_violation
from funnel.core.segment import Kind, Segment, segment_from_row
from funnel.core.segment_revisions import DEFINITION_FIELDS, Revision, changed_fields, definition
from funnel.core.states import RevisionChange
from funnel.core.utc_time import utc_now
from funnel.services.catalog import merge_rows, validate_rows
from funnel.services.preview_values import Preview, PreviewRequest
from funnel.storage import catalog_snapshot, layout
from funnel.storage.mysql.segment_definitions import DefinitionStore
from funnel.storage.mysql.segment_purge import purge_segment_rows
from funnel.storage.mysql.webhook_store import WebhookStore

_FIELDS = ", ".join(DEFINITION_FIELDS)
#: The fields whose change can change who is a member: a change of one is previewed.
MEMBERSHIP_FIELDS = frozenset({"kind", "query", "run_at", "rule", "enabled"})


def moves_membership(changes: Mapping[str, Any]) -> bool:
    """Whether ``changes`` name a field that decides membership (so an edit is previewed)."""
    return not MEMBERSHIP_FIELDS.isdisjoint(changes)


#: Runs a preview (``Previewer.preview``), however the door runs it.
Previewing = Callable[[PreviewRequest], Preview]
log = logging.getLogger(__name__)


class SegmentAdmin:
    """Definitions over one MySQL connection's stores. ``variable_rows``: the Airflow Variable's
    rows, so that a new or changed segment is checked against the whole catalog."""

    def __init__(
        self,
        store: DefinitionStore,
        webhooks: WebhookStore,
        variable_rows: Callable[[], list[dict[str, Any]]],
        now: Callable[[], dt.datetime] = utc_now,
        users_with_tags: Callable[[], int | None] = lambda: None,
        max_share_of_users: float = 1.0,
    ) -> None:
        self.store, self.webhooks, self.variable_rows, self.now = store, webhooks, variable_rows, now
        self.users_with_tags, self.max_share_of_users = users_with_tags, max_share_of_users
        #: the preview the latest ``add`` or ``edit`` ran (None: none)
        self.last_preview: Preview | None = None

    # ------------------------------------------------------------------ writes

    def add(
        self,
        fields: Mapping[str, Any],
        actor: str,
        comment: str | None = None,
        *,
        preview: Previewing | None = None,
        force: bool = False,
    ) -> Revision:
        """A new segment (enabled unless ``enabled`` says otherwise), as revision 1; previewed
        first with ``preview`` (``force``: past the share guard)."""
        segment_id = _id_of(fields)
        _known_fields(segment_id, fields)
        self.last_preview = None
        if preview is not None:
            if self.store.row(segment_id) is None:  # no Hive query for an id that is taken (said below)
                self._previewed(self._checked(segment_id, {"enabled": True, **fields}), preview, force)
            self.store.commit()
        try:
            if self.store.row(segment_id, lock=True) is not None:
                raise SegmentExists(
                    f"segment {segment_id!r} already exists. Fix: edit it (segments edit {segment_id}), "
                    "or pick another id"
                )
            latest = self.store.latest_revision(segment_id)  # a row deleted by hand keeps its history
            if latest is not None and latest.change is RevisionChange.RETIRED:
                raise SegmentExists(
                    f"segment {segment_id!r} was retired at {latest.at.isoformat()} and its id stays reserved. "
                    f"Fix: restore it (segments restore {segment_id}), or pick another id"
                )
            segment = self._checked(segment_id, {"enabled": True, **fields})
            if not self.store.insert(segment):  # added meanwhile by another writer
                raise SegmentExists(f"segment {segment_id!r} already exists. Fix: pick another id")
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
        *,
        preview: Previewing | None = None,
        force: bool = False,
    ) -> Revision | None:
        """Change some fields; None when they were already so (no revision). ``expect_revision``:
        the revision the edit started from (``RevisionConflict`` when it is not the latest). A
        segment an enabled composite or webhook depends on stays enabled (``SegmentInUse``). A
        change of what decides membership is previewed first with ``preview``."""
        _known_fields(segment_id, changes)
        self.last_preview = None
        if preview is not None and moves_membership(changes):
            current = self.store.row(segment_id)
            self.store.commit()
            if current is not None and changes.get("kind", current["kind"]) == current["kind"]:
                candidate = self._checked(segment_id, {**current, **changes})
                moved = changed_fields(definition(current), definition({**current, **changes}))
                if MEMBERSHIP_FIELDS & set(moved) and candidate.enabled:
                    self._previewed(candidate, preview, force)
        if changes.get("segment_id", segment_id) != segment_id:
            raise SegmentError(
                segment_id, "segment_id", "cannot change", "a segment's id is its identity: add a new segment instead"
            )
        try:
            current = self.store.row(segment_id, lock=True)
            latest = self.store.latest_revision(segment_id)
            if current is None:
                raise self._missing(segment_id, latest)
            number = latest.revision if latest is not None else 0
            if expect_revision is not None and expect_revision != number:
                raise RevisionConflict(segment_id, expect_revision, number, latest.changed if latest else {})
            if changes.get("enabled") is False:
                self._refuse_in_use(segment_id, "disabled")
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

    def retire(self, segment_id: str, actor: str, comment: str | None = None) -> Revision:
        """Retire the segment: its catalog row goes (no task; the API answers 410), its definition
        stays in the revision, its data is kept for ``change_history_days`` (``purge``).
        Refused while an enabled composite or webhook depends on it (``SegmentInUse``)."""
        try:
            current = self.store.row(segment_id, lock=True)
            latest = self.store.latest_revision(segment_id)
            if current is None:
                raise self._missing(segment_id, latest)
            if any(row.get("segment_id") == segment_id for row in self.variable_rows()):
                raise SegmentError(
                    segment_id,
                    "segment_id",
                    f"is also defined in the Airflow Variable {settings.CATALOG_VARIABLE}, which would take its place",
                    "delete it from the Variable first, then retire it",
                )
            self._refuse_in_use(segment_id, "retired")
            self.store.delete(segment_id)
            kept = definition(current)
            return self._record(segment_id, latest, RevisionChange.RETIRED, actor, kept, kept, comment)
        except BaseException:
            self.store.rollback()
            raise

    def restore(self, segment_id: str, actor: str, comment: str | None = None) -> Revision:
        """Bring a retired segment back as it was (its definition checked against today's catalog)."""
        try:
            if self.store.row(segment_id, lock=True) is not None:
                raise SegmentExists(f"segment {segment_id!r} is not retired. Fix: nothing to restore")
            latest = self.store.latest_revision(segment_id)
            if latest is None or latest.change is not RevisionChange.RETIRED:
                raise _unknown(segment_id)
            segment = self._checked(segment_id, latest.definition)
            if not self.store.insert(segment):  # added meanwhile by another writer
                raise SegmentExists(f"segment {segment_id!r} was added meanwhile. Fix: read it again")
            after = definition(self.store.row(segment_id) or {})
            return self._record(segment_id, latest, RevisionChange.RESTORED, actor, after, after, comment)
        except BaseException:
            self.store.rollback()
            raise

    def purge(self, horizon_days: float, forget_keys: Callable[[str], None]) -> list[str]:
        """Delete the data of every segment retired more than ``horizon_days`` ago (MySQL's rows,
        then its Redis keys through ``forget_keys``); its revisions stay. Returns their ids."""
        purged = []
        horizon = self.now() - dt.timedelta(days=horizon_days)
        for segment_id in sorted(self.retired(horizon)):
            latest, row = self.store.latest_revision(segment_id), self.store.row(segment_id)
            self.store.commit()
            if row is not None or latest is None or latest.change is not RevisionChange.RETIRED:
                continue  # restored (or added again) since the list was read
            rows = purge_segment_rows(self.store.conn, segment_id)
            forget_keys(segment_id)
            log.info("funnel: purged retired segment %r (%d MySQL rows and its Redis keys)", segment_id, rows)
            purged.append(segment_id)
        return purged

    def retired(self, before: dt.datetime | None = None) -> dict[str, dt.datetime]:
        """The retired segments and when each was retired (``before``: only those before then)."""
        found = self.store.retired(before)
        self.store.commit()
        return found

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
            raise self._missing(segment_id, latest)
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
        try:
            rows = self.store.rows()
            if not any(row["segment_id"] == segment_id for row in rows):
                raise self._missing(segment_id, self.store.latest_revision(segment_id))
            return self._using(segment_id, rows)
        finally:
            self.store.commit()

    # ------------------------------------------------------------------ inside

    def _using(self, segment_id: str, rows: list[dict[str, Any]]) -> list[str]:
        """``dependents`` in the caller's transaction (no commit)."""
        catalog = validate_rows(merge_rows(rows, self.variable_rows(), settings.CATALOG_VARIABLE), check_queries=False)
        using = [
            f"composite {segment.segment_id}"
            for segment in catalog.segments
            if segment.kind is Kind.COMPOSITE and segment.enabled and segment_id in composite_operands(segment)
        ]
        return using + [f"webhook {number}" for number in self.webhooks.enabled_ids_on(segment_id)]

    def _refuse_in_use(self, segment_id: str, action: str) -> None:
        """``SegmentInUse`` when something depends on the segment, read after its row's lock: a
        composite added meanwhile locked its operands' rows first (``_checked``), so it is seen."""
        using = self._using(segment_id, self.store.rows())
        if using:
            raise SegmentInUse(segment_id, action, using)

    def _previewed(self, segment: Segment, preview: Previewing, force: bool) -> None:
        """Preview the segment (its query on Hive, its rule over the tags or the operands); refuse
        it when the preview fails or finds an everyone-segment (``share_violation``)."""
        self.store.commit()  # no transaction stays open while Hive computes
        request = PreviewRequest(
            segment_id=segment.segment_id,
            query=segment.query,
            rule=segment.rule if segment.query is None else None,
            kind=segment.kind.value,
        )
        try:
            found = self.last_preview = preview(request)
        except PreviewNotAvailable as exc:  # nothing to preview yet: nothing to refuse either
            log.info("funnel: %s; saved without a preview", exc)
            return
        too_big = share_violation(found.size, self.users_with_tags(), self.max_share_of_users, force)
        if too_big:
            raise SegmentError(
                segment.segment_id,
                "query" if segment.query else "rule",
                f"gives a segment that {too_big}; nothing was saved",
                "check it (a lost WHERE?), or save it with force (--force, ?force=true) if it really holds nearly "
                "everyone",
            )

    def _missing(self, segment_id: str, latest: Revision | None) -> FunnelError:
        """Why a segment has no catalog row: retired (410), in the Airflow Variable (which this
        path does not write), or unknown (404)."""
        if latest is not None and latest.change is RevisionChange.RETIRED:
            return SegmentRetired(segment_id, latest.at)
        if any(row.get("segment_id") == segment_id for row in self.variable_rows()):
            return SegmentError(
                segment_id,
                "segment_id",
                f"is defined in the Airflow Variable {settings.CATALOG_VARIABLE}",
                "change it there, or move it into funnel_segments (segments add) and delete it from the Variable",
            )
        return _unknown(segment_id)

    def _checked(self, segment_id: str, row: Mapping[str, Any]) -> Segment:
        """``row`` as a segment, checked with the whole catalog as the DAG factory checks it (its
        query parsed; the others' queries as they are). Raises its ``SegmentError``."""
        candidate = {name: row.get(name) for name in DEFINITION_FIELDS}
        operands: tuple[str, ...] = ()
        if candidate.get("kind") == Kind.COMPOSITE.value:
            with contextlib.suppress(SegmentError):  # a bad rule: said below, as the catalog says it
                operands = composite_operands(segment_from_row(candidate))
        locked = {r["segment_id"]: r for r in self.store.lock_shared(operands)}  # held, and as committed now
        others = [
            locked.get(r["segment_id"], r)
            for r in self.store.rows()
            if r["segment_id"] != segment_id and (r["segment_id"] not in operands or r["segment_id"] in locked)
        ]
        others += [r for sid, r in locked.items() if sid not in {o["segment_id"] for o in others}]
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
