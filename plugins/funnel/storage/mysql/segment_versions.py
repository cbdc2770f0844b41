"""The durable, versioned member store in MySQL, kept as spans of versions.

``funnel_memberships`` holds one row per stay of a user in a segment: the version it
entered and the version it exited (NULL while it is a member). The members of version
``v`` are the rows with ``entered <= v`` and (``exited`` NULL or ``> v``). So:

- a refresh writes only who entered (new rows) and who exited (their row's ``exited``),
  never the users that stayed: its MySQL work is the size of the change, not the segment;
- a version being written is invisible to readers of the live one (its rows have
  ``entered`` above the live version, and an ``exited`` above it still covers it), and the
  swap moves only the live pointer (``funnel_live_versions``), in one transaction;
- retiring a version deletes only the spans that ended at or before the oldest kept
  version, found through the change log: the cost of the changes, not of the segment.
  Versions are kept by count (``keep_versions``, pageable) and by age (``change_history_days``,
  ``archived``: spans and change log kept for the membership history, ``funnel.storage.mysql.membership_history``).

``funnel_segment_changes`` logs who entered and exited in each version; a segment's first
version (everyone entered) is not logged (``funnel_segment_versions.logged``), its
entered are its members. Every write of a staging version first checks, in the same
transaction, that the version is still ``staging``: an earlier try that a retry has
taken over can write nothing more once its version is discarded.
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

from funnel.core.errors import StoreError
from funnel.core.run_info import RunInfo
from funnel.core.states import VersionState
from funnel.core.utc_time import from_naive_utc, to_naive_utc, utc_now
from funnel.storage import layout

#: Rows deleted or updated per statement when cleaning up, so no statement holds locks long.
DELETE_CHUNK = 10_000

#: LOAD DATA's default escaping (FIELDS ESCAPED BY '\\'), applied to each user id.
LOAD_DATA_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
#: Server errors meaning "LOAD DATA LOCAL is not allowed here".
LOAD_DATA_REFUSED = {1148, 2068, 3948, 4166}  # MySQL and MariaDB codes

log = logging.getLogger(__name__)

# Joins between the change log and the spans go from the log (STRAIGHT_JOIN): the log holds
# the few users a version changed, the spans every member; the other order would read the
# whole segment.

#: The rows of a version: ``{m}`` is the memberships alias, ``%s`` the version, twice.
_IN_VERSION = "{m}.entered <= %s AND ({m}.exited IS NULL OR {m}.exited > %s)"


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
    """Versions and member spans of segments in MySQL, over one DB-API (mysqlclient) connection.

    With ``bulk_load`` (the connection must allow ``LOAD DATA LOCAL INFILE``), batches of
    ids are loaded from an in-memory file, about 2.4x faster than multi-row INSERTs; if the
    server refuses, the store falls back to INSERTs for good and says so once.
    """

    def __init__(self, conn: Any, bulk_load: bool = False) -> None:
        self.conn = conn
        self.bulk_load = bulk_load

    # ------------------------------------------------------------------ versions

    def live_version(self, segment_id: str) -> LiveVersion | None:
        cur = self.conn.cursor()
        cur.execute(f"SELECT {_LIVE_COLUMNS} FROM {layout.LIVE_TABLE} WHERE segment_id = %s", (segment_id,))
        row = cur.fetchone()
        self.conn.commit()
        return _live(row) if row else None

    def live_versions(self) -> dict[str, LiveVersion]:
        """Every segment's live version, in one read."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT segment_id, {_LIVE_COLUMNS} FROM {layout.LIVE_TABLE}")
        found = {row[0]: _live(row[1:]) for row in cur.fetchall()}
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

    def kept_refreshed_at(self, segment_id: str, version: int) -> tuple[bool, dt.datetime | None]:
        """Whether ``version`` is still kept (live or retired), and when it was made live."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT promoted_at FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s"
            " AND state IN ('live', 'retired')",
            (segment_id, version),
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

    def begin_version(self, segment_id: str, run: RunInfo, now: dt.datetime, logged: bool = True) -> int:
        """Reserve the segment's next version number, in state 'staging'.

        ``logged``: its changes go to the change log (False for a first version).
        """
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COALESCE(MAX(version), 0) + 1 FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s FOR UPDATE",
            (segment_id,),
        )
        version = int(cur.fetchone()[0])
        cur.execute(
            f"INSERT INTO {layout.VERSIONS_TABLE}"
            " (segment_id, version, state, logical_date, dag_id, run_id, created_at, logged)"
            " VALUES (%s, %s, 'staging', %s, %s, %s, %s, %s)",
            (segment_id, version, to_naive_utc(run.logical_date), run.dag_id, run.run_id, to_naive_utc(now), logged),
        )
        self.conn.commit()
        return version

    # ------------------------------------------------------------------ staging

    def add_entered(self, segment_id: str, version: int, user_ids: Sequence[str], logged: bool) -> int:
        """Record users entering in ``version`` (one transaction); return how many were new.

        The same id twice (in one batch or two) counts once.
        """
        if not user_ids:
            return 0
        try:
            self._fence(segment_id, version)
            if logged:
                change = {"segment_id": segment_id, "version": version, "change_type": "entered"}
                self._load_ids(layout.CHANGES_TABLE, change, user_ids)
            added = self._load_ids(layout.MEMBERSHIPS_TABLE, {"segment_id": segment_id, "entered": version}, user_ids)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return added

    def add_exited(self, segment_id: str, version: int, user_ids: Sequence[str]) -> int:
        """Log users exiting in ``version`` (one transaction); their spans close in ``close_exited``."""
        if not user_ids:
            return 0
        try:
            self._fence(segment_id, version)
            change = {"segment_id": segment_id, "version": version, "change_type": "exited"}
            logged = self._load_ids(layout.CHANGES_TABLE, change, user_ids)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return logged

    def close_exited(self, segment_id: str, version: int) -> int:
        """Close the spans of everyone logged as exiting in ``version``, in one statement;
        return how many spans it closed."""
        try:
            self._fence(segment_id, version)
            cur = self.conn.cursor()
            cur.execute(
                f"UPDATE {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id"
                " SET m.exited = %s"
                " WHERE c.segment_id = %s AND c.version = %s AND c.change_type = 'exited'"
                " AND m.exited IS NULL AND m.entered < %s",
                (version, segment_id, version, version),
            )
            closed = int(cur.rowcount)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return closed

    def _fence(self, segment_id: str, version: int) -> None:
        """Inside the caller's transaction: lock the version's row; it must still be 'staging'."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT state FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s FOR UPDATE",
            (segment_id, version),
        )
        row = cur.fetchone()
        if row is None or row[0] != "staging":
            raise StoreError(
                f"segment {segment_id!r}: version {version} is no longer staged (a newer try of the refresh "
                "cleaned it up); nothing more was written. Fix: none needed, the newer try refreshes the segment"
            )

    def _load_ids(self, table: str, constants: dict[str, object], user_ids: Sequence[str]) -> int:
        """Insert one row per id into ``table``: ``user_id`` and the same ``constants`` each time;
        rows already there are ignored. Returns how many were inserted."""
        names = list(constants)
        values = tuple(constants.values())
        user_ids = sorted(user_ids)  # InnoDB inserts in key order faster than at random
        if self.bulk_load:
            try:
                body = "\n".join(user_id.translate(LOAD_DATA_ESCAPES) for user_id in user_ids).encode("ascii")
                assignments = ", ".join(f"{name} = %s" for name in names)
                with batch_file(body) as path:
                    cur = self.conn.cursor()
                    cur.execute(
                        f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE {table} CHARACTER SET ascii"
                        f" (user_id) SET {assignments}",
                        (path, *values),
                    )
                return int(cur.rowcount)
            except MySQLdb.OperationalError as exc:
                if exc.args[0] not in LOAD_DATA_REFUSED:
                    raise
                self.bulk_load = False
                log.warning("funnel: MySQL refused LOAD DATA LOCAL INFILE (%s); staging with INSERTs", exc)
        cur = self.conn.cursor()
        placeholders = ", ".join(["%s"] * (len(names) + 1))
        cur.executemany(
            f"INSERT IGNORE INTO {table} (user_id, {', '.join(names)}) VALUES ({placeholders})",
            [(user_id, *values) for user_id in user_ids],
        )
        return int(cur.rowcount)

    def clear_staged(self, segment_id: str) -> int:
        """Undo what failed attempts staged; return how many versions were cleaned.

        Their version rows stay, as ``dropped``, so a version number is never handed out
        twice. The flip to ``discarded`` comes first, in one statement, so an earlier try
        that is somehow still running can no longer write to or promote its version.
        """
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.VERSIONS_TABLE} SET state = 'discarded' WHERE segment_id = %s AND state = 'staging'",
            (segment_id,),
        )
        self.conn.commit()
        cur.execute(
            f"SELECT version, logged FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND state = 'discarded'",
            (segment_id,),
        )
        versions = [(int(version), bool(logged)) for version, logged in cur.fetchall()]
        self.conn.commit()
        for version, logged in versions:
            self._undo(segment_id, version, logged)
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = 'dropped' WHERE segment_id = %s AND version = %s"
                " AND state = 'discarded'",
                (segment_id, version),
            )
            self.conn.commit()
        return len(versions)

    def _undo(self, segment_id: str, version: int, logged: bool) -> None:
        """Remove a never-live version's spans and re-open the spans it closed."""
        if logged:  # the change log says exactly whom it touched
            self._chunked(
                f"DELETE m FROM {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id"
                " WHERE c.segment_id = %s AND c.version = %s AND c.change_type = 'entered' AND m.entered = %s",
                (segment_id, version, version),
                limit=False,
            )
            self._chunked(
                f"UPDATE {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id"
                " SET m.exited = NULL"
                " WHERE c.segment_id = %s AND c.version = %s AND c.change_type = 'exited' AND m.exited = %s",
                (segment_id, version, version),
                limit=False,
            )
            self._chunked(
                f"DELETE FROM {layout.CHANGES_TABLE} WHERE segment_id = %s AND version = %s",
                (segment_id, version),
            )
        else:  # a first version: the segment has no live version, and nobody exited
            self._chunked(
                f"DELETE FROM {layout.MEMBERSHIPS_TABLE} WHERE segment_id = %s AND entered = %s",
                (segment_id, version),
            )

    def _chunked(self, sql: str, params: tuple[object, ...], limit: bool = True) -> None:
        """Run a DELETE/UPDATE in short transactions of ``DELETE_CHUNK`` rows (MySQL allows LIMIT
        only on single-table statements; a join runs once)."""
        cur = self.conn.cursor()
        while True:
            cur.execute(f"{sql} LIMIT {DELETE_CHUNK}" if limit else sql, params)
            affected = cur.rowcount
            self.conn.commit()
            if not limit or affected < DELETE_CHUNK:
                return

    # ------------------------------------------------------------------ swap and prune

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

    def prune(self, segment_id: str, keep: int, history_days: float = 0, now: dt.datetime | None = None) -> list[int]:
        """Retire versions by count and by age; return the versions deleted.

        The newest ``keep`` versions stay pageable (the live one always stays). Older versions
        promoted within the last ``history_days`` days, and the one that was live at that
        horizon, become ``archived``: their members are no longer pageable, but their spans and
        change log stay, for the membership history. Only older versions are deleted, with the
        spans that ended at or before the oldest version kept and the log of the versions
        before it, found through the change log: the cost is the changes, not the size.
        ``history_days`` 0: nothing is kept beyond ``keep`` (no history).
        """
        keep = max(keep, 1)
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version, state, promoted_at FROM {layout.VERSIONS_TABLE}"
            " WHERE segment_id = %s AND state IN ('live', 'retired', 'archived') ORDER BY version DESC",
            (segment_id,),
        )
        found = [(int(version), state, promoted_at) for version, state, promoted_at in cur.fetchall()]
        self.conn.commit()
        doomed: list[int] = []
        oldest_kept = found[-1][0] if found else 0
        if found:
            horizon = to_naive_utc((now or utc_now()) - dt.timedelta(days=history_days))
            # the newest version promoted at or before the horizon was live at it: history starts there
            live_at_horizon = next(
                (i for i, (_, _, promoted) in enumerate(found) if promoted is not None and promoted <= horizon),
                len(found) - 1,
            )
            last = max(live_at_horizon, min(keep, len(found)) - 1)
            oldest_kept = found[last][0]
            doomed = [version for version, _, _ in found[last + 1 :]]
            archived = [version for version, state, _ in found[keep : last + 1] if state == VersionState.RETIRED]
            for version in archived:
                cur.execute(
                    f"UPDATE {layout.VERSIONS_TABLE} SET state = 'archived'"
                    " WHERE segment_id = %s AND version = %s AND state = 'retired'",
                    (segment_id, version),
                )
            self.conn.commit()
        if doomed:
            self._chunked(
                f"DELETE m FROM {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id AND m.exited = c.version"
                " WHERE c.segment_id = %s AND c.change_type = 'exited' AND c.version <= %s",
                (segment_id, oldest_kept),
                limit=False,
            )
            self._chunked(
                f"DELETE FROM {layout.CHANGES_TABLE} WHERE segment_id = %s AND version < %s",
                (segment_id, oldest_kept),
            )
            for version in doomed:
                cur.execute(
                    f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s"
                    " AND state IN ('retired', 'archived')",
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
            cur.execute(
                f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s AND state = 'dropped'",
                (segment_id, version),
            )
            self.conn.commit()
        return doomed

    # ------------------------------------------------------------------ reading

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
        return counts.get("entered", 0), counts.get("exited", 0)

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
            placeholders = ", ".join(["%s"] * len(chunk))
            cur.execute(
                f"SELECT m.user_id FROM {layout.MEMBERSHIPS_TABLE} m"
                f" WHERE m.segment_id = %s AND m.user_id IN ({placeholders}) AND " + _IN_VERSION.format(m="m"),
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
            return self.page_members(segment_id, version, after, limit) if change == "entered" else []
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
