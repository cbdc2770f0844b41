"""The durable, versioned member store in MySQL.

A refresh writes a new version's rows beside the live one, then moves the live pointer
(``funnel_live_versions``) in one transaction: readers of ``funnel_current_members`` see
the old version or the new one, never a mix. The pointer only moves forward in logical time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from funnel import layout
from funnel.stores.run_info import RunInfo, from_naive_utc, to_naive_utc

#: Rows deleted per statement when cleaning up, so no delete holds locks for long.
DELETE_CHUNK = 10_000


@dataclass(frozen=True)
class LiveVersion:
    """The version a segment's readers see."""

    version: int
    logical_date: dt.datetime
    size: int
    run_id: str
    refreshed_at: dt.datetime

    def is_after(self, run: RunInfo, version: int) -> bool:
        """True when this live version must not be replaced by ``version`` computed by ``run``."""
        return (self.logical_date, self.version) > (run.logical_date, version)


class MySqlSegmentStore:
    """Versions and members of segments in MySQL, over one DB-API (mysqlclient) connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def live_version(self, segment_id: str) -> LiveVersion | None:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version, logical_date, size, run_id, refreshed_at FROM {layout.LIVE_TABLE} WHERE segment_id = %s",
            (segment_id,),
        )
        row = cur.fetchone()
        self.conn.commit()
        return _live(row) if row else None

    def clear_staged(self, segment_id: str) -> int:
        """Delete what failed attempts left staged; return how many versions were removed."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND state IN ('staging', 'discarded')",
            (segment_id,),
        )
        versions = [row[0] for row in cur.fetchall()]
        self.conn.commit()
        for version in versions:
            self.delete_version(segment_id, version)
        return len(versions)

    def delete_version(self, segment_id: str, version: int) -> None:
        """Delete one non-live version's members in small chunks, then its row."""
        cur = self.conn.cursor()
        while True:
            cur.execute(
                f"DELETE FROM {layout.MEMBERS_TABLE} WHERE segment_id = %s AND version = %s LIMIT {DELETE_CHUNK}",
                (segment_id, version),
            )
            deleted = cur.rowcount
            self.conn.commit()
            if deleted < DELETE_CHUNK:
                break
        cur.execute(
            f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s AND state <> 'live'",
            (segment_id, version),
        )
        self.conn.commit()

    def begin_version(self, segment_id: str, run: RunInfo, now: dt.datetime) -> int:
        """Reserve the segment's next version number, in state 'staging'."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COALESCE(MAX(version), 0) + 1 FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s FOR UPDATE",
            (segment_id,),
        )
        version = int(cur.fetchone()[0])
        cur.execute(
            f"INSERT INTO {layout.VERSIONS_TABLE}"
            " (segment_id, version, state, logical_date, dag_id, run_id, created_at)"
            " VALUES (%s, %s, 'staging', %s, %s, %s, %s)",
            (segment_id, version, to_naive_utc(run.logical_date), run.dag_id, run.run_id, to_naive_utc(now)),
        )
        self.conn.commit()
        return version

    def add_members(self, segment_id: str, version: int, user_ids: Sequence[str]) -> int:
        """Stage a batch of user ids; return how many were new (duplicates are ignored)."""
        if not user_ids:
            return 0
        cur = self.conn.cursor()
        cur.executemany(
            f"INSERT IGNORE INTO {layout.MEMBERS_TABLE} (segment_id, version, user_id) VALUES (%s, %s, %s)",
            [(segment_id, version, user_id) for user_id in user_ids],
        )
        inserted = cur.rowcount
        self.conn.commit()
        return inserted

    def count_members(self, segment_id: str, version: int) -> int:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COUNT(*) FROM {layout.MEMBERS_TABLE} WHERE segment_id = %s AND version = %s",
            (segment_id, version),
        )
        count = int(cur.fetchone()[0])
        self.conn.commit()
        return count

    def promote(
        self, segment_id: str, version: int, run: RunInfo, size: int, now: dt.datetime
    ) -> tuple[bool, LiveVersion]:
        """Make ``version`` live unless a version for a later logical date already is.

        Returns whether it was promoted and the live version after the call. One transaction:
        the pointer row is locked, compared, moved, and the version states follow.
        """
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version, logical_date, size, run_id, refreshed_at FROM {layout.LIVE_TABLE}"
            " WHERE segment_id = %s FOR UPDATE",
            (segment_id,),
        )
        row = cur.fetchone()
        current = _live(row) if row else None
        if current is not None and current.is_after(run, version):
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = 'discarded', size = %s"
                " WHERE segment_id = %s AND version = %s",
                (size, segment_id, version),
            )
            self.conn.commit()
            return False, current
        naive_now = to_naive_utc(now)
        cur.execute(
            f"INSERT INTO {layout.LIVE_TABLE}"
            " (segment_id, version, logical_date, size, dag_id, run_id, refreshed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON DUPLICATE KEY UPDATE version = VALUES(version), logical_date = VALUES(logical_date),"
            " size = VALUES(size), dag_id = VALUES(dag_id), run_id = VALUES(run_id),"
            " refreshed_at = VALUES(refreshed_at)",
            (segment_id, version, to_naive_utc(run.logical_date), size, run.dag_id, run.run_id, naive_now),
        )
        cur.execute(
            f"UPDATE {layout.VERSIONS_TABLE} SET state = 'live', size = %s, promoted_at = %s"
            " WHERE segment_id = %s AND version = %s",
            (size, naive_now, segment_id, version),
        )
        if current is not None:
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = 'retired' WHERE segment_id = %s AND version = %s",
                (segment_id, current.version),
            )
        self.conn.commit()
        return True, LiveVersion(version, run.logical_date, size, run.run_id, now)

    def iter_live_members(self, segment_id: str, batch_size: int) -> Iterator[list[str]]:
        """Stream the live members in batches (keyset pagination: no long-open cursor)."""
        live = self.live_version(segment_id)
        if live is None:
            return
        after = ""
        cur = self.conn.cursor()
        while True:
            cur.execute(
                f"SELECT user_id FROM {layout.MEMBERS_TABLE}"
                " WHERE segment_id = %s AND version = %s AND user_id > %s ORDER BY user_id LIMIT %s",
                (segment_id, live.version, after, batch_size),
            )
            batch = [row[0] for row in cur.fetchall()]
            self.conn.commit()
            if not batch:
                return
            yield batch
            after = batch[-1]


def _live(row: Sequence[Any]) -> LiveVersion:
    version, logical_date, size, run_id, refreshed_at = row
    return LiveVersion(int(version), from_naive_utc(logical_date), int(size), run_id, from_naive_utc(refreshed_at))
