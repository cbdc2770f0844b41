"""The durable, versioned member store in MySQL.

A refresh writes a new version's rows beside the live one, then moves the live pointer
(``funnel_live_versions``) in one transaction: readers of ``funnel_current_members`` see
the old version or the new one, never a mix. The pointer only moves forward in logical time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import MySQLdb

from funnel import layout
from funnel.errors import StoreError
from funnel.stores.run_info import RunInfo, from_naive_utc, to_naive_utc

#: Rows deleted per statement when cleaning up, so no delete holds locks for long.
DELETE_CHUNK = 10_000

#: LOAD DATA's default escaping (FIELDS ESCAPED BY '\\'), applied to each user id.
LOAD_DATA_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
#: Server errors meaning "LOAD DATA LOCAL is not allowed here".
LOAD_DATA_REFUSED = {1148, 2068, 3948, 4166}  # MySQL and MariaDB codes

log = logging.getLogger(__name__)


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


class MySqlSegmentStore:
    """Versions and members of segments in MySQL, over one DB-API (mysqlclient) connection.

    With ``bulk_load`` (the connection must allow ``LOAD DATA LOCAL INFILE``), member
    batches are loaded from a temporary file, about 2.4x faster than multi-row INSERTs;
    if the server refuses, the store falls back to INSERTs for good and says so once.
    """

    def __init__(self, conn: Any, bulk_load: bool = False) -> None:
        self.conn = conn
        self.bulk_load = bulk_load

    def live_version(self, segment_id: str) -> LiveVersion | None:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT {_LIVE_COLUMNS} FROM {layout.LIVE_TABLE} WHERE segment_id = %s",
            (segment_id,),
        )
        row = cur.fetchone()
        self.conn.commit()
        return _live(row) if row else None

    def clear_staged(self, segment_id: str) -> int:
        """Delete what failed attempts left staged; return how many versions were cleaned.

        Their version rows stay, as ``dropped``, so a version number is never handed out
        twice: an earlier try that is somehow still writing writes only to its own number.
        The flip to ``discarded`` comes first, in one statement, so such a try can no longer
        promote its version either.
        """
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.VERSIONS_TABLE} SET state = 'discarded' WHERE segment_id = %s AND state = 'staging'",
            (segment_id,),
        )
        self.conn.commit()
        cur.execute(
            f"SELECT v.version, v.state FROM {layout.VERSIONS_TABLE} v"
            f" LEFT JOIN {layout.LIVE_TABLE} l ON l.segment_id = v.segment_id"
            " WHERE v.segment_id = %s AND (v.state = 'discarded'"
            "   OR (v.state = 'dropped' AND v.version > COALESCE(l.version, 0)))",
            (segment_id,),
        )
        versions = cur.fetchall()
        self.conn.commit()
        for version, _state in versions:
            self._delete_rows(segment_id, int(version))
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = 'dropped' WHERE segment_id = %s AND version = %s"
                " AND state = 'discarded'",
                (segment_id, version),
            )
            self.conn.commit()
        return sum(1 for _version, state in versions if state == "discarded")

    def _delete_rows(self, segment_id: str, version: int) -> None:
        """Delete one non-live version's members and changes in small chunks.

        Each chunk is its own short transaction on rows no reader of the live version needs,
        so cleaning never blocks ``funnel_current_members``.
        """
        cur = self.conn.cursor()
        for table in (layout.MEMBERS_TABLE, layout.CHANGES_TABLE):
            while True:
                cur.execute(
                    f"DELETE FROM {table} WHERE segment_id = %s AND version = %s LIMIT {DELETE_CHUNK}",
                    (segment_id, version),
                )
                deleted = cur.rowcount
                self.conn.commit()
                if deleted < DELETE_CHUNK:
                    break

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
        if self.bulk_load:
            try:
                return self._load_members(segment_id, version, user_ids)
            except MySQLdb.OperationalError as exc:
                if exc.args[0] not in LOAD_DATA_REFUSED:
                    raise
                self.conn.rollback()
                self.bulk_load = False
                log.warning("funnel: MySQL refused LOAD DATA LOCAL INFILE (%s); staging with INSERTs", exc)
        cur = self.conn.cursor()
        cur.executemany(
            f"INSERT IGNORE INTO {layout.MEMBERS_TABLE} (segment_id, version, user_id) VALUES (%s, %s, %s)",
            [(segment_id, version, user_id) for user_id in user_ids],
        )
        inserted = cur.rowcount
        self.conn.commit()
        return inserted

    def _load_members(self, segment_id: str, version: int, user_ids: Sequence[str]) -> int:
        body = "\n".join(user_id.translate(LOAD_DATA_ESCAPES) for user_id in user_ids).encode("ascii")
        with batch_file(body) as path:
            cur = self.conn.cursor()
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {layout.MEMBERS_TABLE} CHARACTER SET ascii"
                " (user_id) SET segment_id = %s, version = %s",
                (path, segment_id, version),
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
        self,
        segment_id: str,
        version: int,
        run: RunInfo,
        size: int,
        now: dt.datetime,
        entered: int | None = None,
        exited: int | None = None,
    ) -> tuple[bool, LiveVersion]:
        """Make ``version`` live unless a version for a later logical date already is.

        Returns whether it was promoted and the live version after the call. One transaction:
        the pointer row is locked, compared, moved, and the version states follow.
        """
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT {_LIVE_COLUMNS} FROM {layout.LIVE_TABLE} WHERE segment_id = %s FOR UPDATE",
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
            f"UPDATE {layout.VERSIONS_TABLE} SET state = 'live', size = %s, promoted_at = %s, entered = %s,"
            " exited = %s WHERE segment_id = %s AND version = %s AND state = 'staging'",
            (size, naive_now, entered, exited, segment_id, version),
        )
        if cur.rowcount != 1:
            self.conn.rollback()
            raise StoreError(
                f"segment {segment_id!r}: version {version} is no longer staged (a newer try of the refresh "
                "cleaned it up); nothing was swapped. Fix: none needed, the newer try refreshes the segment"
            )
        cur.execute(
            f"INSERT INTO {layout.LIVE_TABLE}"
            " (segment_id, version, logical_date, size, dag_id, run_id, refreshed_at, entered, exited)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON DUPLICATE KEY UPDATE version = VALUES(version), logical_date = VALUES(logical_date),"
            " size = VALUES(size), dag_id = VALUES(dag_id), run_id = VALUES(run_id),"
            " refreshed_at = VALUES(refreshed_at), entered = VALUES(entered), exited = VALUES(exited)",
            (
                segment_id,
                version,
                to_naive_utc(run.logical_date),
                size,
                run.dag_id,
                run.run_id,
                naive_now,
                entered,
                exited,
            ),
        )
        if current is not None:
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = 'retired' WHERE segment_id = %s AND version = %s",
                (segment_id, current.version),
            )
        self.conn.commit()
        return True, LiveVersion(version, run.logical_date, size, run.dag_id, run.run_id, now, entered, exited)

    def stage_changes(self, segment_id: str, version: int, previous: int | None) -> tuple[int, int]:
        """Record who entered and exited between ``previous`` (the live version) and ``version``.

        Two anti-joins run inside MySQL (no ids travel to the client); returns the counts.
        """
        cur = self.conn.cursor()
        cur.execute(f"DELETE FROM {layout.CHANGES_TABLE} WHERE segment_id = %s AND version = %s", (segment_id, version))
        counts = []
        for change, new, old in (("entered", version, previous), ("exited", previous, version)):
            if new is None:
                counts.append(0)
                continue
            cur.execute(
                f"INSERT INTO {layout.CHANGES_TABLE} (segment_id, version, change_type, user_id)"
                f" SELECT n.segment_id, %s, %s, n.user_id FROM {layout.MEMBERS_TABLE} n"
                f" LEFT JOIN {layout.MEMBERS_TABLE} o"
                "   ON o.segment_id = n.segment_id AND o.version = %s AND o.user_id = n.user_id"
                " WHERE n.segment_id = %s AND n.version = %s AND o.user_id IS NULL",
                (version, change, old if old is not None else 0, segment_id, new),
            )
            counts.append(cur.rowcount)
            self.conn.commit()
        return counts[0], counts[1]

    def iter_changes(self, segment_id: str, version: int, change: str, batch_size: int) -> Iterator[list[str]]:
        """Stream the ids that ``entered`` or ``exited`` in ``version``."""
        yield from self._iter_ids(
            f"SELECT user_id FROM {layout.CHANGES_TABLE}"
            " WHERE segment_id = %s AND version = %s AND change_type = %s AND user_id > %s ORDER BY user_id LIMIT %s",
            (segment_id, version, change),
            batch_size,
        )

    def iter_live_members(self, segment_id: str, batch_size: int) -> Iterator[list[str]]:
        """Stream the live members in batches."""
        live = self.live_version(segment_id)
        if live is None:
            return
        yield from self.iter_members(segment_id, live.version, batch_size)

    def iter_members(self, segment_id: str, version: int, batch_size: int) -> Iterator[list[str]]:
        yield from self._iter_ids(
            f"SELECT user_id FROM {layout.MEMBERS_TABLE}"
            " WHERE segment_id = %s AND version = %s AND user_id > %s ORDER BY user_id LIMIT %s",
            (segment_id, version),
            batch_size,
        )

    def _iter_ids(self, sql: str, params: tuple[object, ...], batch_size: int) -> Iterator[list[str]]:
        """Keyset pagination over user_id: short queries, no long-open cursor."""
        after = ""
        cur = self.conn.cursor()
        while True:
            cur.execute(sql, (*params, after, batch_size))
            batch = [row[0] for row in cur.fetchall()]
            self.conn.commit()
            if not batch:
                return
            yield batch
            after = batch[-1]

    def members_among(self, segment_id: str, version: int, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` are members of ``version`` (the API's answer when Redis is not whole)."""
        found: set[str] = set()
        cur = self.conn.cursor()
        for start in range(0, len(user_ids), 1000):
            chunk = user_ids[start : start + 1000]
            placeholders = ", ".join(["%s"] * len(chunk))
            cur.execute(
                f"SELECT user_id FROM {layout.MEMBERS_TABLE}"
                f" WHERE segment_id = %s AND version = %s AND user_id IN ({placeholders})",
                (segment_id, version, *chunk),
            )
            found.update(row[0] for row in cur.fetchall())
        self.conn.commit()
        return found

    def segments_with_live_versions(self) -> set[str]:
        cur = self.conn.cursor()
        cur.execute(f"SELECT segment_id FROM {layout.LIVE_TABLE}")
        found = {row[0] for row in cur.fetchall()}
        self.conn.commit()
        return found

    def has_version(self, segment_id: str, version: int) -> bool:
        """Whether ``version`` is still kept (live or retired): a pinned cursor may read it."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT 1 FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s"
            " AND state IN ('live', 'retired')",
            (segment_id, version),
        )
        found = cur.fetchone() is not None
        self.conn.commit()
        return found

    def page_members(self, segment_id: str, version: int, after: str, limit: int) -> list[str]:
        """Up to ``limit`` members of ``version`` after ``after``, in user id order."""
        return self._page(
            f"SELECT user_id FROM {layout.MEMBERS_TABLE}"
            " WHERE segment_id = %s AND version = %s AND user_id > %s ORDER BY user_id LIMIT %s",
            (segment_id, version, after, limit),
        )

    def page_changes(self, segment_id: str, version: int, change: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` ids that ``entered`` or ``exited`` in ``version``, after ``after``."""
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

    def prune(self, segment_id: str, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions (the live one always stays); return those deleted.

        Tombstones of failed attempts below the live version go too: the live version's row
        keeps the numbering moving forward.
        """
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version FROM {layout.VERSIONS_TABLE}"
            " WHERE segment_id = %s AND state = 'retired' ORDER BY version DESC",
            (segment_id,),
        )
        retired = [int(row[0]) for row in cur.fetchall()]
        self.conn.commit()
        doomed = retired[max(keep - 1, 0) :]
        for version in doomed:
            self._delete_rows(segment_id, version)
            cur.execute(
                f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s AND state = 'retired'",
                (segment_id, version),
            )
            self.conn.commit()
        cur.execute(
            f"SELECT v.version FROM {layout.VERSIONS_TABLE} v JOIN {layout.LIVE_TABLE} l"
            " ON l.segment_id = v.segment_id WHERE v.segment_id = %s AND v.state = 'dropped' AND v.version < l.version",
            (segment_id,),
        )
        tombstones = [int(row[0]) for row in cur.fetchall()]
        self.conn.commit()
        for version in tombstones:
            self._delete_rows(segment_id, version)  # rows a stray earlier try may have added since
            cur.execute(
                f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s AND state = 'dropped'",
                (segment_id, version),
            )
            self.conn.commit()
        return doomed


@contextlib.contextmanager
def batch_file(body: bytes) -> Iterator[str]:
    """A path the MySQL client can read ``body`` from, for LOAD DATA LOCAL INFILE.

    On Linux an anonymous in-memory file (``memfd_create``), read through
    ``/proc/self/fd``: nothing touches the disk and nothing outlives the process, even
    one killed mid-load. Elsewhere a temporary file, deleted when the load is done.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("funnel-batch", os.MFD_CLOEXEC)
        try:
            _write_all(fd, body)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".tsv", prefix="funnel-") as batch:
        batch.write(body)
        batch.flush()
        yield batch.name


def _write_all(fd: int, body: bytes) -> None:
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]


_LIVE_COLUMNS = "version, logical_date, size, dag_id, run_id, refreshed_at, entered, exited"


def _live(row: Sequence[Any]) -> LiveVersion:
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
