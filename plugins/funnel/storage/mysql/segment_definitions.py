"""The catalog table (``funnel_segments``) and its revisions (``funnel_segment_revisions``), over
one DB-API (mysqlclient) connection: the rows as the catalog reads them, and the writes of
funnel's one write path for definitions (``funnel.services.segment_admin``).

A write and its revision are one transaction: the caller commits (``commit``) or rolls back
(``rollback``) both. ``row(..., lock=True)`` takes the row's lock first, so two edits of one
segment follow each other and the second sees the first's revision.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from funnel.core.errors import SegmentError
from funnel.core.segment import Segment, segment_from_row
from funnel.core.segment_revisions import (
    DEFINITION_FIELDS,
    Revision,
    catalog_revisions,
    digest,
    segment_definition,
)
from funnel.core.states import RevisionChange
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.storage import layout

_COLUMNS = ", ".join(DEFINITION_FIELDS)
_FAR_FUTURE = dt.datetime(9999, 1, 1)
#: Joined to the revisions as ``r``: keeps each segment's latest revision only.
_LATEST_ONLY = (
    f"JOIN (SELECT segment_id AS id, MAX(revision) AS latest FROM {layout.REVISIONS_TABLE} GROUP BY segment_id) l"
    " ON l.id = r.segment_id AND l.latest = r.revision"
)


def catalog_rows(conn: Any) -> list[dict[str, Any]]:
    """Every catalog row, in segment_id order (the catalog is metadata, not members)."""
    rows = DefinitionStore(conn).rows()
    conn.commit()
    return rows


def record_catalog_changes(
    conn: Any, current: dict[str, dict[str, Any]], unreadable: set[str], mysql_ids: set[str], now: dt.datetime
) -> list[Revision]:
    """Record what changed in the catalog outside the write path (``catalog_revisions``), in one
    transaction; a revision another parse recorded first is skipped. Returns those added.

    ``current``: the parse's valid definitions; ``mysql_ids``: the ids it read from MySQL. A row
    the write path changed since the parse read it (added, edited, retired) is left to the next
    parse: the revisions and the rows are read here in one snapshot, so what is recorded is what
    the table holds beside its revisions, never the parse's older copy."""
    store = DefinitionStore(conn)
    try:
        latest = store.latest_revisions()
        rows_now = {row["segment_id"]: row for row in store.rows()}
        moved = {
            segment_id
            for segment_id in mysql_ids | set(rows_now)
            if _digest_or_none(current.get(segment_id)) != _digest_or_none(_valid_definition(rows_now.get(segment_id)))
        }
        kept = {segment_id: found for segment_id, found in current.items() if segment_id not in moved}
        found = catalog_revisions(kept, latest, unreadable | moved, now)
        added = [revision for revision in found if store.add_revision(revision, unless_taken=True)]
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return added


def _valid_definition(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row's definition as a valid segment's (``segment_definition``); None: gone or invalid."""
    if row is None:
        return None
    try:
        return segment_definition(segment_from_row(row))
    except SegmentError:
        return None


def _digest_or_none(found: dict[str, Any] | None) -> str | None:
    return None if found is None else digest(found)


def _stored(segment: Segment) -> tuple[Any, ...]:
    """A valid segment as the table's columns hold it (times as naive UTC, the rule as JSON text)."""
    return (
        segment.segment_id,
        segment.name,
        segment.kind.value,
        segment.query,
        None if segment.run_at is None else to_naive_utc(segment.run_at),
        segment.rule,  # canonical JSON text
        segment.max_shrink_pct,
        segment.enabled,
        segment.owner,
        json.dumps(list(segment.labels)) if segment.labels else None,
    )


class DefinitionStore:
    """Catalog rows and their revisions; every write waits for ``commit``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self) -> list[dict[str, Any]]:
        """Every catalog row (``catalog_rows``), in this transaction."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT {_COLUMNS} FROM {layout.SEGMENTS_TABLE} ORDER BY segment_id")
        return [dict(zip(DEFINITION_FIELDS, row, strict=True)) for row in cur.fetchall()]

    def row(self, segment_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        """The segment's catalog row, or None; ``lock``: held until commit or rollback."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT {_COLUMNS} FROM {layout.SEGMENTS_TABLE} WHERE segment_id = %s{' FOR UPDATE' if lock else ''}",
            (segment_id,),
        )
        found = cur.fetchone()
        return None if found is None else dict(zip(DEFINITION_FIELDS, found, strict=True))

    def insert(self, segment: Segment) -> bool:
        """Add the segment's row; False when its id is taken (nothing written)."""
        cur = self.conn.cursor()
        marks = ", ".join(["%s"] * len(DEFINITION_FIELDS))
        cur.execute(
            f"INSERT IGNORE INTO {layout.SEGMENTS_TABLE} ({_COLUMNS}) VALUES ({marks})",
            _stored(segment),
        )
        return bool(cur.rowcount)

    def update(self, segment: Segment) -> None:
        """Write the segment's fields over its row (its id never changes)."""
        cur = self.conn.cursor()
        columns = ", ".join(f"{name} = %s" for name in DEFINITION_FIELDS[1:])
        values = _stored(segment)
        cur.execute(f"UPDATE {layout.SEGMENTS_TABLE} SET {columns} WHERE segment_id = %s", (*values[1:], values[0]))

    def lock_shared(self, segment_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Hold a shared lock on these rows until commit or rollback, and return them as they are
        now (a locking read sees the latest commit, whatever this transaction's snapshot): a
        composite's operands, so that a disable or retire of one waits for the composite, and
        the composite sees one committed before."""
        ids = sorted(set(segment_ids))
        if not ids:
            return []
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT {_COLUMNS} FROM {layout.SEGMENTS_TABLE} WHERE segment_id IN ({', '.join(['%s'] * len(ids))})"
            " LOCK IN SHARE MODE",
            tuple(ids),
        )
        return [dict(zip(DEFINITION_FIELDS, row, strict=True)) for row in cur.fetchall()]

    def delete(self, segment_id: str) -> None:
        """Remove the segment's row (a retire: its definition stays in its revisions)."""
        cur = self.conn.cursor()
        cur.execute(f"DELETE FROM {layout.SEGMENTS_TABLE} WHERE segment_id = %s", (segment_id,))

    def retired(self, before: dt.datetime | None = None) -> dict[str, dt.datetime]:
        """The retired segments (latest revision a retire, no catalog row) and when each was
        retired; ``before``: only those retired before then."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT r.segment_id, r.at FROM {layout.REVISIONS_TABLE} r {_LATEST_ONLY}"
            f" LEFT JOIN {layout.SEGMENTS_TABLE} s ON s.segment_id = r.segment_id"
            " WHERE r.change_type = %s AND s.segment_id IS NULL AND r.at < %s",
            (RevisionChange.RETIRED.value, to_naive_utc(before) if before else _FAR_FUTURE),
        )
        return {segment_id: from_naive_utc(at) for segment_id, at in cur.fetchall()}

    def latest_revision(self, segment_id: str) -> Revision | None:
        """The segment's newest revision, or None (never written through funnel's write path)."""
        found = self._revisions("WHERE segment_id = %s ORDER BY revision DESC LIMIT 1", (segment_id,))
        return found[0] if found else None

    def latest_numbers(self) -> dict[str, int]:
        """Each segment's latest revision number (segments never written through here are absent)."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT segment_id, MAX(revision) FROM {layout.REVISIONS_TABLE} GROUP BY segment_id")
        return {segment_id: int(number) for segment_id, number in cur.fetchall()}

    def revisions(self, segment_id: str) -> list[Revision]:
        """The segment's revisions, oldest first."""
        return self._revisions("WHERE segment_id = %s ORDER BY revision", (segment_id,))

    def latest_revisions(self) -> dict[str, Revision]:
        """Every segment's latest revision (a parse compares the catalog with them)."""
        found = self._revisions("", (), join=_LATEST_ONLY)
        return {revision.segment_id: revision for revision in found}

    def add_revision(self, revision: Revision, *, unless_taken: bool = False) -> bool:
        """Record the revision with its definition's digest; ``unless_taken``: skip it when its
        number is taken (another parse recorded the same change first). Whether it was added."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT {'IGNORE ' if unless_taken else ''}INTO {layout.REVISIONS_TABLE}"
            " (segment_id, revision, change_type, actor, at, definition, changed, comment, digest)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                revision.segment_id,
                revision.revision,
                revision.change.value,
                revision.actor,
                to_naive_utc(revision.at),
                json.dumps(revision.definition),
                json.dumps(revision.changed),
                revision.comment,
                digest(revision.definition),
            ),
        )
        return bool(cur.rowcount)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def _revisions(self, where: str, params: tuple[Any, ...], join: str = "") -> list[Revision]:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT r.segment_id, r.revision, r.change_type, r.actor, r.at, r.definition, r.changed, r.comment"
            f" FROM {layout.REVISIONS_TABLE} r {join} {where}",
            params,
        )
        return [_revision(row) for row in cur.fetchall()]


def _revision(row: tuple[Any, ...]) -> Revision:
    segment_id, number, change, actor, at, definition, changed, comment = row
    return Revision(
        segment_id=segment_id,
        revision=int(number),
        change=RevisionChange(change),
        actor=actor,
        at=from_naive_utc(at) if isinstance(at, dt.datetime) else at,
        definition=_json(definition),
        changed=_json(changed),
        comment=comment,
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value
