"""Reading a segment's versions in MySQL: the live pointer, a version's members and its changes.

Over ``funnel_live_versions`` (the live pointer, one row per segment), ``funnel_segment_versions``,
the member spans (``funnel_memberships``: the members of version ``v`` are the spans with
``entered <= v`` and ``exited`` NULL or ``> v``) and the change log (``funnel_segment_changes``).
Readers (the API, previews, webhooks, composites, restores) only read; writing a version (stage,
promote, prune) is ``funnel.storage.mysql.segment_versions``, whose store reads through this one.
A version is pageable while it is live or retired (``funnel.core.states.PAGEABLE_STATES``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.run_info import RunInfo
from funnel.core.states import PAGEABLE_STATES, ChangeType
from funnel.core.utc_time import from_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.sql_params import marks

#: The rows of a version: ``{m}`` is the memberships alias, ``%s`` the version, twice.
_IN_VERSION = "{m}.entered <= %s AND ({m}.exited IS NULL OR {m}.exited > %s)"
#: The live pointer's columns, as ``live_from_row`` reads them.
LIVE_COLUMNS = "version, logical_date, size, dag_id, run_id, refreshed_at, entered, exited"


@dataclass(frozen=True)
class LiveVersion:
    """The version a segment's readers see."""

    version: int
    logical_date: dt.datetime
    size: int
    dag_id: str
    run_id: str
    refreshed_at: dt.datetime
    entered: int | None = None
    exited: int | None = None

    def is_after(self, run: RunInfo, version: int) -> bool:
        """True when this live version must not be replaced by ``version`` computed by ``run``."""
        return (self.logical_date, self.version) > (run.logical_date, version)


class SegmentVersionReader:
    """Reads segments' versions and members in MySQL, over one DB-API (mysqlclient) connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # ------------------------------------------------------------------ versions

    def live_version(self, segment_id: str) -> LiveVersion | None:
        cur = self.conn.cursor()
        cur.execute(f"SELECT {LIVE_COLUMNS} FROM {layout.LIVE_TABLE} WHERE segment_id = %s", (segment_id,))
        row = cur.fetchone()
        self.conn.commit()
        return live_from_row(row) if row else None

    def live_versions(self) -> dict[str, LiveVersion]:
        """Every segment's live version, in one read."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT segment_id, {LIVE_COLUMNS} FROM {layout.LIVE_TABLE}")
        found = {row[0]: live_from_row(row[1:]) for row in cur.fetchall()}
        self.conn.commit()
        return found

    def has_version(self, segment_id: str, version: int) -> bool:
        """Whether ``version`` is still kept (live or retired): a pinned cursor may read it."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT 1 FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s"
            f" AND state IN ({marks(PAGEABLE_STATES)})",
            (segment_id, version, *PAGEABLE_STATES),
        )
        found = cur.fetchone() is not None
        self.conn.commit()
        return found

    def kept_refreshed_at(self, segment_id: str, version: int) -> tuple[bool, dt.datetime | None]:
        """Whether ``version`` is still kept (live or retired), and when it was made live."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT promoted_at FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s"
            f" AND state IN ({marks(PAGEABLE_STATES)})",
            (segment_id, version, *PAGEABLE_STATES),
        )
        row = cur.fetchone()
        self.conn.commit()
        if row is None:
            return False, None
        return True, (from_naive_utc(row[0]) if row[0] is not None else None)

    def is_logged(self, segment_id: str, version: int) -> bool:
        """Whether ``version``'s changes are in the change log (a first version's are not)."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT logged FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s", (segment_id, version)
        )
        row = cur.fetchone()
        self.conn.commit()
        return bool(row[0]) if row else True

    # ------------------------------------------------------------------ members and changes

    def count_members(self, segment_id: str, version: int) -> int:
        """How many members ``version`` has (a scan of the segment's spans: for checks and tests)."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COUNT(*) FROM {layout.MEMBERSHIPS_TABLE} m WHERE m.segment_id = %s AND "
            + _IN_VERSION.format(m="m"),
            (segment_id, version, version),
        )
        count = int(cur.fetchone()[0])
        self.conn.commit()
        return count

    def iter_changes(self, segment_id: str, version: int, change: str, batch_size: int) -> Iterator[list[str]]:
        """Stream the ids that ``entered`` or ``exited`` in ``version``."""
        after = ""
        while page := self.page_changes(segment_id, version, change, after, batch_size):
            yield page
            after = page[-1]

    def count_changes(self, segment_id: str, version: int) -> tuple[int, int]:
        """How many ids entered and exited in ``version`` (a first version: its members entered)."""
        if not self.is_logged(segment_id, version):
            return self.count_members(segment_id, version), 0
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT change_type, COUNT(*) FROM {layout.CHANGES_TABLE} WHERE segment_id = %s AND version = %s"
            " GROUP BY change_type",
            (segment_id, version),
        )
        counts = {str(kind): int(count) for kind, count in cur.fetchall()}
        self.conn.commit()
        return counts.get(ChangeType.ENTERED, 0), counts.get(ChangeType.EXITED, 0)

    def iter_live_members(self, segment_id: str, batch_size: int) -> Iterator[list[str]]:
        """Stream the live members in batches."""
        live = self.live_version(segment_id)
        if live is None:
            return
        yield from self.iter_members(segment_id, live.version, batch_size)

    def iter_members(self, segment_id: str, version: int, batch_size: int) -> Iterator[list[str]]:
        after = ""
        while page := self.page_members(segment_id, version, after, batch_size):
            yield page
            after = page[-1]

    def members_among(self, segment_id: str, version: int, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` are members of ``version`` (the API's answer when Redis is not whole)."""
        found: set[str] = set()
        cur = self.conn.cursor()
        for start in range(0, len(user_ids), 1000):
            chunk = user_ids[start : start + 1000]
            cur.execute(
                f"SELECT m.user_id FROM {layout.MEMBERSHIPS_TABLE} m"
                f" WHERE m.segment_id = %s AND m.user_id IN ({marks(chunk)}) AND " + _IN_VERSION.format(m="m"),
                (segment_id, *chunk, version, version),
            )
            found.update(row[0] for row in cur.fetchall())
        self.conn.commit()
        return found

    def page_members(self, segment_id: str, version: int, after: str, limit: int) -> list[str]:
        """Up to ``limit`` members of ``version`` after ``after``, in user id order."""
        return self._page(
            f"SELECT m.user_id FROM {layout.MEMBERSHIPS_TABLE} m WHERE m.segment_id = %s AND m.user_id > %s AND "
            + _IN_VERSION.format(m="m")
            + " ORDER BY m.user_id LIMIT %s",
            (segment_id, after, version, version, limit),
        )

    def page_changes(self, segment_id: str, version: int, change: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` ids that ``entered`` or ``exited`` in ``version``, after ``after``.

        A first version logs no changes: everyone entered, nobody exited.
        """
        if not self.is_logged(segment_id, version):
            return self.page_members(segment_id, version, after, limit) if change == ChangeType.ENTERED else []
        return self._page(
            f"SELECT user_id FROM {layout.CHANGES_TABLE} WHERE segment_id = %s AND version = %s"
            " AND change_type = %s AND user_id > %s ORDER BY user_id LIMIT %s",
            (segment_id, version, change, after, limit),
        )

    def _page(self, sql: str, params: tuple[object, ...]) -> list[str]:
        cur = self.conn.cursor()
        cur.execute(sql, params)
        page = [row[0] for row in cur.fetchall()]
        self.conn.commit()
        return page


def live_from_row(row: Sequence[Any]) -> LiveVersion:
    """A row of ``LIVE_COLUMNS`` as a ``LiveVersion``."""
    version, logical_date, size, dag_id, run_id, refreshed_at, entered, exited = row
    return LiveVersion(
        int(version),
        from_naive_utc(logical_date),
        int(size),
        dag_id,
        run_id,
        from_naive_utc(refreshed_at),
        None if entered is None else int(entered),
        None if exited is None else int(exited),
    )
