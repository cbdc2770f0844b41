"""The users' tags in MySQL: every user's tags per tag version, and the loads that make a version live.

``funnel_user_tags`` holds every user's tags per tag version, ``funnel_tag_versions`` one row per
load and its state, and ``funnel_tag_live`` the live pointer (one row). A load stages a new
version, then swaps: holding the pointer row ``FOR UPDATE`` (event batches wait meanwhile), it
replays the events recorded after its ``as_of`` onto the new version and moves the pointer, so
no event falls between the load and the events (``funnel.storage.mysql.event_ledger`` reads the
same row ``LOCK IN SHARE MODE``). Old versions, and the events no load will replay again, are
pruned after the swap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.errors import LockLost, StoreError
from funnel.core.proxy_rule import Rule
from funnel.core.run_info import RunInfo
from funnel.core.states import VersionState
from funnel.core.user_events import EventType
from funnel.core.user_tags import TagRow
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.bulk_load import write_rows
from funnel.storage.mysql.rule_sql import rule_sql
from funnel.storage.mysql.sql_params import in_chunks, marks

#: The earlier of two nullable times, in SQL.
EARLIEST = "CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL THEN {new} ELSE LEAST({old}, {new}) END"


@dataclass(frozen=True)
class TagVersion:
    """The tag version readers see, and the time its baseline is as of."""

    version: int
    as_of: dt.datetime
    size: int
    refreshed_at: dt.datetime


class MySqlTagStore:
    """Tag versions and users' tags in MySQL, over one DB-API (mysqlclient) connection.

    With ``bulk_load`` (the connection must allow ``LOAD DATA LOCAL INFILE``), a load's batches
    go in by ``LOAD DATA`` (``funnel.storage.mysql.bulk_load``); if the server refuses, the
    store falls back to INSERTs for good and says so once.
    """

    def __init__(self, conn: Any, bulk_load: bool = False) -> None:
        self.conn = conn
        self.bulk_load = bulk_load

    # ------------------------------------------------------------------ reading

    def live(self) -> TagVersion:
        cur = self.conn.cursor()
        cur.execute(f"SELECT {_LIVE_COLUMNS} FROM {layout.TAG_LIVE_TABLE} WHERE id = 1")
        row = cur.fetchone()
        self.conn.commit()
        if row is None:
            raise StoreError("the user tags' live row is missing. Fix: run python -m funnel.cli migrate")
        return _tag_version(row)

    def users_with_tags(self) -> int | None:
        """How many users the live tag version holds (None: no tags loaded yet)."""
        live = self.live()
        return live.size if live.version else None

    def tags_of(self, user_ids: Sequence[str], version: int | None = None) -> dict[str, TagRow]:
        """The tags of these users in ``version`` (default: live); users without tags are absent."""
        if not user_ids:
            return {}
        if version is None:
            version = self.live().version
        rows = {row.user_id: row for row in read_tag_rows(self.conn, version, user_ids)}
        self.conn.commit()
        return rows

    def iter_rows(self, version: int, batch_size: int) -> Iterator[list[TagRow]]:
        """Every user's tags in ``version``, in user id order, in batches (keyset pagination)."""
        after = ""
        cur = self.conn.cursor()
        while True:
            cur.execute(
                f"SELECT user_id, first_seen, order_count, seq FROM {layout.USER_TAGS_TABLE}"
                " WHERE version = %s AND user_id > %s ORDER BY user_id LIMIT %s",
                (version, after, batch_size),
            )
            batch = [tag_row(row) for row in cur.fetchall()]
            self.conn.commit()
            if not batch:
                return
            yield batch
            after = batch[-1].user_id

    def count(self, version: int) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {layout.USER_TAGS_TABLE} WHERE version = %s", (version,))
        (value,) = cur.fetchone()
        self.conn.commit()
        return int(value)

    def count_matching(self, rule: Rule, now: dt.datetime) -> int:
        """How many users of the live version a proxy rule holds for (counted inside MySQL)."""
        where, params = rule_sql(rule, now)
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COUNT(*) FROM {layout.USER_TAGS_TABLE} t JOIN {layout.TAG_LIVE_TABLE} l"
            f" ON l.id = 1 AND t.version = l.version WHERE {where}",
            params,
        )
        (value,) = cur.fetchone()
        self.conn.commit()
        return int(value)

    def page_matching(self, rule: Rule, now: dt.datetime, after: str, limit: int) -> list[str]:
        """Up to ``limit`` users a proxy rule holds for, after ``after``, in user id order."""
        where, params = rule_sql(rule, now)
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT t.user_id FROM {layout.USER_TAGS_TABLE} t JOIN {layout.TAG_LIVE_TABLE} l"
            f" ON l.id = 1 AND t.version = l.version WHERE t.user_id > %s AND ({where}) ORDER BY t.user_id LIMIT %s",
            (after, *params, limit),
        )
        page = [row[0] for row in cur.fetchall()]
        self.conn.commit()
        return page

    # ------------------------------------------------------------------ loading

    def clear_staged(self) -> int:
        """Delete what failed loads left staged (their rows stay numbered as ``dropped``)."""
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = %s WHERE state = %s",
            (VersionState.DISCARDED.value, VersionState.STAGING.value),
        )
        self.conn.commit()
        cur.execute(
            f"SELECT version FROM {layout.TAG_VERSIONS_TABLE} WHERE state = %s", (VersionState.DISCARDED.value,)
        )
        versions = [int(row[0]) for row in cur.fetchall()]
        self.conn.commit()
        for version in versions:
            self._delete_rows(version)
            cur.execute(
                f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = %s WHERE version = %s",
                (VersionState.DROPPED.value, version),
            )
            self.conn.commit()
        return len(versions)

    def _delete_rows(self, version: int) -> None:
        in_chunks(self.conn, f"DELETE FROM {layout.USER_TAGS_TABLE} WHERE version = %s", (version,))

    def begin_version(self, run: RunInfo, as_of: dt.datetime, now: dt.datetime) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT COALESCE(MAX(version), 0) + 1 FROM {layout.TAG_VERSIONS_TABLE} FOR UPDATE")
        version = int(cur.fetchone()[0])
        cur.execute(
            f"INSERT INTO {layout.TAG_VERSIONS_TABLE} (version, state, as_of, dag_id, run_id, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (version, VersionState.STAGING.value, to_naive_utc(as_of), run.dag_id, run.run_id, to_naive_utc(now)),
        )
        self.conn.commit()
        return version

    def add_rows(self, version: int, rows: Sequence[TagRow]) -> None:
        """Stage a batch of users' tags (a user twice in one load: the last row wins)."""
        if not rows:
            return
        columns = {
            "user_id": [r.user_id for r in rows],
            "first_seen": [None if r.first_seen is None else to_naive_utc(r.first_seen) for r in rows],
            "order_count": [r.order_count for r in rows],
        }
        _, self.bulk_load = write_rows(
            self.conn,
            layout.USER_TAGS_TABLE,
            columns,
            {"version": version, "seq": 0},
            on_duplicate="REPLACE",
            bulk=self.bulk_load,
        )
        self.conn.commit()

    def swap(
        self,
        version: int,
        as_of: dt.datetime,
        size: int,
        now: dt.datetime,
        in_redis: Callable[[Iterator[list[TagRow]], TagVersion], Callable[[], None]],
        batch_size: int,
    ) -> tuple[bool, int, TagVersion]:
        """Make ``version`` live, replaying the events after ``as_of`` onto it first.

        One transaction on the pointer row (``FOR UPDATE``: event batches wait meanwhile).
        ``in_redis(replayed_rows, new_live)`` writes the replayed users into Redis staging and
        swaps Redis, before MySQL commits, and returns how to undo that: if MySQL then fails,
        Redis is swapped back.
        Returns (swapped, replayed users, the live version afterwards). A load whose
        ``as_of`` is older than the live one's is not swapped: live data only moves forward.
        """
        cur = self.conn.cursor()
        undo: Callable[[], None] | None = None
        try:
            cur.execute(f"SELECT {_LIVE_COLUMNS} FROM {layout.TAG_LIVE_TABLE} WHERE id = 1 FOR UPDATE")
            current = _tag_version(cur.fetchone())
            if current.as_of > as_of:
                cur.execute(
                    f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = %s WHERE version = %s",
                    (VersionState.DISCARDED.value, version),
                )
                self.conn.commit()
                return False, 0, current
            replayed = self._replay(version, as_of)
            new_live = TagVersion(version, as_of, size, now)
            undo = in_redis(self._replayed_rows(version, as_of, batch_size), new_live)
            cur.execute(
                f"UPDATE {layout.TAG_LIVE_TABLE} SET version = %s, as_of = %s, size = %s, refreshed_at = %s"
                " WHERE id = 1",
                (version, to_naive_utc(as_of), size, to_naive_utc(now)),
            )
            cur.execute(
                f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = %s, size = %s, replayed = %s, promoted_at = %s"
                " WHERE version = %s AND state = %s",
                (VersionState.LIVE.value, size, replayed, to_naive_utc(now), version, VersionState.STAGING.value),
            )
            if cur.rowcount != 1:
                raise LockLost(
                    f"tag version {version} is no longer staged (a newer load cleaned it up); nothing swapped"
                )
            cur.execute(
                f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = %s WHERE version = %s",
                (VersionState.RETIRED.value, current.version),
            )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            if undo is not None:
                undo()
            raise
        return True, replayed, new_live

    def _replay(self, version: int, as_of: dt.datetime) -> int:
        """Apply every recorded event after ``as_of`` onto ``version``; return how many users it touched."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.USER_TAGS_TABLE} (version, user_id, first_seen, order_count, seq)"
            " SELECT %s, user_id, MIN(CASE WHEN type = %s THEN at END),"
            "  SUM(CASE type WHEN %s THEN 1 WHEN %s THEN -1 ELSE 0 END), COUNT(*)"
            f" FROM {layout.EVENTS_TABLE} WHERE at > %s GROUP BY user_id"
            " ON DUPLICATE KEY UPDATE"
            f" first_seen = {EARLIEST.format(old='first_seen', new='VALUES(first_seen)')},"
            " order_count = order_count + VALUES(order_count), seq = VALUES(seq)",
            (version, EventType.SIGNUP, EventType.ORDER, EventType.ORDER_CANCELLED, to_naive_utc(as_of)),
        )
        cur.execute(
            f"UPDATE {layout.USER_TAGS_TABLE} SET order_count = 0 WHERE version = %s AND order_count < 0", (version,)
        )
        cur.execute(f"SELECT COUNT(DISTINCT user_id) FROM {layout.EVENTS_TABLE} WHERE at > %s", (to_naive_utc(as_of),))
        return int(cur.fetchone()[0])

    def _replayed_rows(self, version: int, as_of: dt.datetime, batch_size: int) -> Iterator[list[TagRow]]:
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT t.user_id, t.first_seen, t.order_count, t.seq FROM {layout.USER_TAGS_TABLE} t"
            f" JOIN (SELECT DISTINCT user_id FROM {layout.EVENTS_TABLE} WHERE at > %s) e ON e.user_id = t.user_id"
            " WHERE t.version = %s",
            (to_naive_utc(as_of), version),
        )
        rows = cur.fetchall()  # bounded by the events since as_of; read before Redis is written
        for start in range(0, len(rows), batch_size):
            yield [tag_row(row) for row in rows[start : start + batch_size]]

    def prune(self, keep: int) -> list[int]:
        """Delete retired tag versions beyond the newest ``keep`` (the live one included), and
        events at or before the live ``as_of`` (never replayed again; a retry of one is ignored)."""
        live = self.live()
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version FROM {layout.TAG_VERSIONS_TABLE} WHERE state IN (%s, %s) ORDER BY version DESC",
            (VersionState.RETIRED.value, VersionState.DROPPED.value),
        )
        older = [int(row[0]) for row in cur.fetchall() if int(row[0]) < live.version]
        self.conn.commit()
        doomed = older[max(keep - 1, 0) :]
        for version in doomed:
            self._delete_rows(version)
            cur.execute(f"DELETE FROM {layout.TAG_VERSIONS_TABLE} WHERE version = %s", (version,))
            self.conn.commit()
        in_chunks(self.conn, f"DELETE FROM {layout.EVENTS_TABLE} WHERE at <= %s", (to_naive_utc(live.as_of),))
        return doomed


_LIVE_COLUMNS = "version, as_of, size, refreshed_at"


def _tag_version(row: Sequence[Any]) -> TagVersion:
    version, as_of, size, refreshed_at = row
    return TagVersion(int(version), from_naive_utc(as_of), int(size), from_naive_utc(refreshed_at))


def read_tag_rows(conn: Any, version: int, user_ids: Sequence[str], for_update: bool = False) -> list[TagRow]:
    """These users' tags in ``version``, inside the caller's transaction (``for_update``: locked);
    users without tags are absent."""
    if not user_ids:
        return []
    cur = conn.cursor()
    cur.execute(
        f"SELECT user_id, first_seen, order_count, seq FROM {layout.USER_TAGS_TABLE}"
        f" WHERE version = %s AND user_id IN ({marks(user_ids)})" + (" FOR UPDATE" if for_update else ""),
        (version, *user_ids),
    )
    return [tag_row(row) for row in cur.fetchall()]


def tag_row(row: Sequence[Any]) -> TagRow:
    """A ``(user_id, first_seen, order_count, seq)`` row of ``funnel_user_tags`` as a ``TagRow``."""
    user_id, first_seen, order_count, seq = row
    return TagRow(user_id, None if first_seen is None else from_naive_utc(first_seen), int(order_count), int(seq))
