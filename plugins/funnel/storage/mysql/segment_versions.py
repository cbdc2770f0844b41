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

Reading (the live pointer, a version's members and changes) is
``funnel.storage.mysql.segment_version_reader``; this store writes and reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from funnel.core.errors import StoreError
from funnel.core.run_info import RunInfo
from funnel.core.states import LOGGED_STATES, ChangeType, VersionState
from funnel.core.utc_time import to_naive_utc, utc_now
from funnel.storage import layout
from funnel.storage.mysql.bulk_load import write_rows
from funnel.storage.mysql.segment_version_reader import LIVE_COLUMNS, LiveVersion, SegmentVersionReader, live_from_row
from funnel.storage.mysql.sql_params import in_chunks, marks

#: Rows deleted or updated per statement when cleaning up, so no statement holds locks long.

# Joins between the change log and the spans go from the log (STRAIGHT_JOIN): the log holds
# the few users a version changed, the spans every member; the other order would read the
# whole segment.


class MySqlSegmentStore(SegmentVersionReader):
    """Writes segments' versions and member spans in MySQL (and reads them, as a
    ``SegmentVersionReader``), over one DB-API (mysqlclient) connection.

    With ``bulk_load`` (the connection must allow ``LOAD DATA LOCAL INFILE``), batches of
    ids are loaded from an in-memory file, about 2.4x faster than multi-row INSERTs; if the
    server refuses, the store falls back to INSERTs for good and says so once
    (``funnel.storage.mysql.bulk_load``).
    """

    def __init__(self, conn: Any, bulk_load: bool = False) -> None:
        super().__init__(conn)
        self.bulk_load = bulk_load

    # ------------------------------------------------------------------ versions

    def begin_version(
        self, segment_id: str, run: RunInfo, now: dt.datetime, logged: bool = True, definition_digest: str | None = None
    ) -> int:
        """Reserve the segment's next version number, in state 'staging'.

        ``logged``: its changes go to the change log (False for a first version).
        ``definition_digest``: the digest of the definition it is computed from; the version
        records the latest revision with that definition (none: NULL).
        """
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COALESCE(MAX(version), 0) + 1 FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s FOR UPDATE",
            (segment_id,),
        )
        version = int(cur.fetchone()[0])
        cur.execute(
            f"INSERT INTO {layout.VERSIONS_TABLE}"
            " (segment_id, version, state, logical_date, dag_id, run_id, created_at, logged, revision)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            f" (SELECT MAX(revision) FROM {layout.REVISIONS_TABLE} WHERE segment_id = %s AND digest = %s))",
            (
                segment_id,
                version,
                VersionState.STAGING.value,
                to_naive_utc(run.logical_date),
                run.dag_id,
                run.run_id,
                to_naive_utc(now),
                logged,
                segment_id,
                definition_digest,
            ),
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
                change = {"segment_id": segment_id, "version": version, "change_type": ChangeType.ENTERED.value}
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
            change = {"segment_id": segment_id, "version": version, "change_type": ChangeType.EXITED.value}
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
                " WHERE c.segment_id = %s AND c.version = %s AND c.change_type = %s"
                " AND m.exited IS NULL AND m.entered < %s",
                (version, segment_id, version, ChangeType.EXITED.value, version),
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
        if row is None or row[0] != VersionState.STAGING:
            raise StoreError(
                f"segment {segment_id!r}: version {version} is no longer staged (a newer try of the refresh "
                "cleaned it up); nothing more was written. Fix: none needed, the newer try refreshes the segment"
            )

    def _load_ids(self, table: str, constants: dict[str, object], user_ids: Sequence[str]) -> int:
        """Insert one row per id into ``table``: ``user_id`` and the same ``constants`` each time;
        rows already there are ignored. Returns how many were inserted."""
        columns = {"user_id": sorted(user_ids)}  # InnoDB inserts in key order faster than at random
        added, self.bulk_load = write_rows(
            self.conn, table, columns, constants, on_duplicate="IGNORE", bulk=self.bulk_load
        )
        return added

    def clear_staged(self, segment_id: str) -> int:
        """Undo what failed attempts staged; return how many versions were cleaned.

        Their version rows stay, as ``dropped``, so a version number is never handed out
        twice. The flip to ``discarded`` comes first, in one statement, so an earlier try
        that is somehow still running can no longer write to or promote its version.
        """
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.VERSIONS_TABLE} SET state = %s WHERE segment_id = %s AND state = %s",
            (VersionState.DISCARDED.value, segment_id, VersionState.STAGING.value),
        )
        self.conn.commit()
        cur.execute(
            f"SELECT version, logged FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND state = %s",
            (segment_id, VersionState.DISCARDED.value),
        )
        versions = [(int(version), bool(logged)) for version, logged in cur.fetchall()]
        self.conn.commit()
        for version, logged in versions:
            self._undo(segment_id, version, logged)
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = %s WHERE segment_id = %s AND version = %s AND state = %s",
                (VersionState.DROPPED.value, segment_id, version, VersionState.DISCARDED.value),
            )
            self.conn.commit()
        return len(versions)

    def _undo(self, segment_id: str, version: int, logged: bool) -> None:
        """Remove a never-live version's spans and re-open the spans it closed."""
        if logged:  # the change log says exactly whom it touched
            self._chunked(
                f"DELETE m FROM {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id"
                " WHERE c.segment_id = %s AND c.version = %s AND c.change_type = %s AND m.entered = %s",
                (segment_id, version, ChangeType.ENTERED.value, version),
                limit=False,
            )
            self._chunked(
                f"UPDATE {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id"
                " SET m.exited = NULL"
                " WHERE c.segment_id = %s AND c.version = %s AND c.change_type = %s AND m.exited = %s",
                (segment_id, version, ChangeType.EXITED.value, version),
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
        if limit:
            in_chunks(self.conn, sql, params)
            return
        self.conn.cursor().execute(sql, params)
        self.conn.commit()

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
            f"SELECT {LIVE_COLUMNS} FROM {layout.LIVE_TABLE} WHERE segment_id = %s FOR UPDATE",
            (segment_id,),
        )
        row = cur.fetchone()
        current = live_from_row(row) if row else None
        if current is not None and current.is_after(run, version):
            cur.execute(
                f"UPDATE {layout.VERSIONS_TABLE} SET state = %s, size = %s WHERE segment_id = %s AND version = %s",
                (VersionState.DISCARDED.value, size, segment_id, version),
            )
            self.conn.commit()
            return False, current
        naive_now = to_naive_utc(now)
        cur.execute(
            f"UPDATE {layout.VERSIONS_TABLE} SET state = %s, size = %s, promoted_at = %s, entered = %s,"
            " exited = %s WHERE segment_id = %s AND version = %s AND state = %s",
            (
                VersionState.LIVE.value,
                size,
                naive_now,
                entered,
                exited,
                segment_id,
                version,
                VersionState.STAGING.value,
            ),
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
                f"UPDATE {layout.VERSIONS_TABLE} SET state = %s WHERE segment_id = %s AND version = %s",
                (VersionState.RETIRED.value, segment_id, current.version),
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
            f" WHERE segment_id = %s AND state IN ({marks(LOGGED_STATES)}) ORDER BY version DESC",
            (segment_id, *LOGGED_STATES),
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
                    f"UPDATE {layout.VERSIONS_TABLE} SET state = %s"
                    " WHERE segment_id = %s AND version = %s AND state = %s",
                    (VersionState.ARCHIVED.value, segment_id, version, VersionState.RETIRED.value),
                )
            self.conn.commit()
        if doomed:
            self._chunked(
                f"DELETE m FROM {layout.CHANGES_TABLE} c STRAIGHT_JOIN {layout.MEMBERSHIPS_TABLE} m"
                " ON m.segment_id = c.segment_id AND m.user_id = c.user_id AND m.exited = c.version"
                " WHERE c.segment_id = %s AND c.change_type = %s AND c.version <= %s",
                (segment_id, ChangeType.EXITED.value, oldest_kept),
                limit=False,
            )
            self._chunked(
                f"DELETE FROM {layout.CHANGES_TABLE} WHERE segment_id = %s AND version < %s",
                (segment_id, oldest_kept),
            )
            for version in doomed:
                cur.execute(
                    f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s AND state IN (%s, %s)",
                    (segment_id, version, VersionState.RETIRED.value, VersionState.ARCHIVED.value),
                )
            self.conn.commit()
        cur.execute(
            f"SELECT v.version FROM {layout.VERSIONS_TABLE} v JOIN {layout.LIVE_TABLE} l"
            " ON l.segment_id = v.segment_id WHERE v.segment_id = %s AND v.state = %s AND v.version < l.version",
            (segment_id, VersionState.DROPPED.value),
        )
        tombstones = [int(row[0]) for row in cur.fetchall()]
        self.conn.commit()
        for version in tombstones:
            cur.execute(
                f"DELETE FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version = %s AND state = %s",
                (segment_id, version, VersionState.DROPPED.value),
            )
            self.conn.commit()
        return doomed
