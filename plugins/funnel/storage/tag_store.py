"""The user tags in MySQL (durable, versioned) and Redis (serving), and the events.

MySQL holds every user's tags per tag version (``funnel_user_tags``), the live pointer
(``funnel_tag_live``, one row) and the events (``funnel_user_events``). The pointer row
is where events and loads meet: an event batch reads it ``LOCK IN SHARE MODE`` and applies its
events to the live version; a load's swap holds it ``FOR UPDATE`` while it replays the
events after its ``as_of`` onto the new version, so no event falls between the two.

Redis holds the live tags as two sorted sets (``first_seen`` by epoch seconds,
``order_count`` by count): one user's check is two ``ZSCORE``s, a tag's range is one
``ZCOUNT``. Writes carry absolute values read back from MySQL with the user's ``seq``
(events applied since the load), so a late or repeated write never undoes a newer one,
and a retried batch brings Redis level with MySQL.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import MySQLdb

from funnel.core.errors import EventConflict, LockLost, StoreError
from funnel.core.proxy_changes import ProxyChange, crossings
from funnel.core.proxy_matching import Tags, cutoff
from funnel.core.proxy_rule import AllOf, NewUser, Not, OldUser, OrderCount, Rule
from funnel.core.run_info import RunInfo
from funnel.core.states import ChangeType
from funnel.core.user_events import Event, net_changes
from funnel.core.user_tags import TagRow
from funnel.core.utc_time import from_epoch, from_naive_utc, to_naive_utc
from funnel.storage import layout
from funnel.storage.layout import TagsMetaField
from funnel.storage.mysql.segment_versions import LOAD_DATA_ESCAPES, LOAD_DATA_REFUSED, batch_file
from funnel.storage.redis.replies import int_or_none, text

log = logging.getLogger(__name__)

_NULL = "\\N"  # LOAD DATA's NULL


@dataclass(frozen=True)
class TagVersion:
    """The tag version readers see, and the time its baseline is as of."""

    version: int
    as_of: dt.datetime
    size: int
    refreshed_at: dt.datetime


@dataclass(frozen=True)
class EventsOutcome:
    """What a batch of events did."""

    accepted: int  # new events applied to the tags
    duplicates: int  # event ids already recorded (a retry): not applied again
    before_baseline: int  # new events at or before the live load's as_of: recorded, not applied
    version: int  # the tag version they were applied to
    rows: tuple[TagRow, ...]  # the batch's users' tags after it, for Redis
    #: the proxy segments' rule crossings the batch caused, as recorded in ``funnel_proxy_changes``
    proxy_changes: tuple[ProxyChange, ...] = ()


class MySqlTagStore:
    """Tag versions, user tags and events in MySQL, over one DB-API (mysqlclient) connection."""

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

    def tags_of(self, user_ids: Sequence[str], version: int | None = None) -> dict[str, TagRow]:
        """The tags of these users in ``version`` (default: live); users without tags are absent."""
        if not user_ids:
            return {}
        if version is None:
            version = self.live().version
        cur = self.conn.cursor()
        placeholders = ", ".join(["%s"] * len(user_ids))
        cur.execute(
            f"SELECT user_id, first_seen, order_count, seq FROM {layout.USER_TAGS_TABLE}"
            f" WHERE version = %s AND user_id IN ({placeholders})",
            (version, *user_ids),
        )
        rows = {row[0]: _tag_row(row) for row in cur.fetchall()}
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
            batch = [_tag_row(row) for row in cur.fetchall()]
            self.conn.commit()
            if not batch:
                return
            yield batch
            after = batch[-1].user_id

    def last_event_id(self) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {layout.EVENTS_TABLE}")
        (value,) = cur.fetchone()
        self.conn.commit()
        return int(value)

    def users_with_events_after(self, event_id: int, version: int, batch_size: int) -> Iterator[list[TagRow]]:
        """The current tags of every user with an event recorded after ``event_id``."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT t.user_id, t.first_seen, t.order_count, t.seq FROM {layout.USER_TAGS_TABLE} t"
            f" JOIN (SELECT DISTINCT user_id FROM {layout.EVENTS_TABLE} WHERE id > %s) e ON e.user_id = t.user_id"
            " WHERE t.version = %s",
            (event_id, version),
        )
        while batch := cur.fetchmany(batch_size):
            yield [_tag_row(row) for row in batch]
        self.conn.commit()

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

    # ------------------------------------------------------------------ events

    def record_events(
        self,
        events: Sequence[Event],
        request_id: str,
        now: dt.datetime,
        rules: Mapping[str, Rule] | None = None,
    ) -> EventsOutcome:
        """Record a batch and apply its new events to the live version, in one transaction.

        Waits while a load swaps (the pointer row is read ``LOCK IN SHARE MODE``). Events already
        recorded (same ``event_id``) are duplicates and change nothing; new events at or
        before the live ``as_of`` are recorded but not applied (the warehouse has them).
        ``rules``: the enabled proxy segments' rules; an applied event that moves a user across
        one is recorded in ``funnel_proxy_changes`` in the same transaction
        (``funnel.core.proxy_changes``). Returns the batch's users' tags afterwards (duplicates'
        users too), for Redis, and the changes recorded.
        """
        cur = self.conn.cursor()
        try:
            cur.execute(f"SELECT version, as_of FROM {layout.TAG_LIVE_TABLE} WHERE id = 1 LOCK IN SHARE MODE")
            version, as_of_naive = cur.fetchone()
            as_of = from_naive_utc(as_of_naive)
            unique = list({event.event_id: event for event in events}.values())
            cur.executemany(
                f"INSERT IGNORE INTO {layout.EVENTS_TABLE} (event_id, type, user_id, at, received_at, request_id)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (e.event_id, e.type.value, e.user_id, to_naive_utc(e.at), to_naive_utc(now), request_id)
                    for e in unique
                ],
            )
            new_ids = self._inserted_by(request_id, [e.event_id for e in unique])
            self._check_repeats(events, [e for e in unique if e.event_id not in new_ids])
            new = [e for e in unique if e.event_id in new_ids]
            applied = [e for e in new if e.at > as_of]
            changes: list[ProxyChange] = []
            if rules and applied:
                before = self.tags_of_locked(cur, int(version), sorted({e.user_id for e in applied}), for_update=True)
                tags = {row.user_id: Tags(row.first_seen, row.order_count) for row in before}
                changes = crossings(rules, tags, applied)
            self._apply(int(version), applied)
            self._record_changes(changes, now)
            rows = self.tags_of_locked(cur, int(version), sorted({e.user_id for e in events}))
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return EventsOutcome(
            accepted=len(applied),
            duplicates=len(events) - len(new),
            before_baseline=len(new) - len(applied),
            version=int(version),
            rows=tuple(rows),
            proxy_changes=tuple(changes),
        )

    def _record_changes(self, changes: Sequence[ProxyChange], now: dt.datetime) -> None:
        """Inside the caller's transaction: log proxy segments' rule crossings."""
        if not changes:
            return
        cur = self.conn.cursor()
        cur.executemany(
            f"INSERT INTO {layout.PROXY_CHANGES_TABLE} (segment_id, user_id, at, change_type, event_id, recorded_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (c.segment_id, c.user_id, to_naive_utc(c.at), c.change.value, c.event_id, to_naive_utc(now))
                for c in changes
            ],
        )

    def unpublished_changes(self, limit: int) -> list[tuple[int, ProxyChange]]:
        """Up to ``limit`` proxy changes not yet in their change feeds, oldest first, with their ids."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT id, segment_id, user_id, at, change_type, event_id FROM {layout.PROXY_CHANGES_TABLE}"
            " WHERE published = FALSE ORDER BY id LIMIT %s",
            (limit,),
        )
        rows = cur.fetchall()
        self.conn.commit()
        return [
            (int(row_id), ProxyChange(segment_id, user_id, from_naive_utc(at), ChangeType(change), event_id))
            for row_id, segment_id, user_id, at, change, event_id in rows
        ]

    def mark_published(self, change_ids: Sequence[int]) -> None:
        """Note that these proxy changes are in their change feeds."""
        if not change_ids:
            return
        cur = self.conn.cursor()
        marks = ", ".join(["%s"] * len(change_ids))
        cur.execute(
            f"UPDATE {layout.PROXY_CHANGES_TABLE} SET published = TRUE WHERE id IN ({marks})", tuple(change_ids)
        )
        self.conn.commit()

    def prune_proxy_changes(self, older_than: dt.datetime) -> int:
        """Delete proxy segments' changes from before ``older_than`` (by the ``at`` index, in chunks)."""
        cur = self.conn.cursor()
        deleted = 0
        while True:
            cur.execute(
                f"DELETE FROM {layout.PROXY_CHANGES_TABLE} WHERE at < %s LIMIT 10000", (to_naive_utc(older_than),)
            )
            chunk = int(cur.rowcount)
            self.conn.commit()
            deleted += chunk
            if chunk < 10_000:
                return deleted

    def _check_repeats(self, batch: Sequence[Event], repeats: Sequence[Event]) -> None:
        """A repeated ``event_id`` must be the same event (a retry); anything else is refused."""
        by_id: dict[str, Event] = {}
        for event in batch:
            if by_id.setdefault(event.event_id, event) != event:
                raise EventConflict(
                    f"event_id {event.event_id!r} appears twice in the batch for different events. "
                    "Fix: give each event its own id"
                )
        if not repeats:
            return
        cur = self.conn.cursor()
        placeholders = ", ".join(["%s"] * len(repeats))
        cur.execute(
            f"SELECT event_id, type, user_id, at FROM {layout.EVENTS_TABLE} WHERE event_id IN ({placeholders})",
            [e.event_id for e in repeats],
        )
        for event_id, kind, user_id, at in cur.fetchall():
            sent = by_id[event_id]
            if (sent.type.value, sent.user_id, to_naive_utc(sent.at)) != (kind, user_id, at):
                raise EventConflict(
                    f"event_id {event_id!r} was already recorded for a different event ({kind} of user {user_id!r} "
                    f"at {from_naive_utc(at).isoformat()}); nothing in this batch was recorded. Fix: a retry must "
                    "send the same event; give a new event a new id"
                )

    def _inserted_by(self, request_id: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        cur = self.conn.cursor()
        placeholders = ", ".join(["%s"] * len(event_ids))
        cur.execute(
            f"SELECT event_id FROM {layout.EVENTS_TABLE} WHERE request_id = %s AND event_id IN ({placeholders})",
            (request_id, *event_ids),
        )
        return {row[0] for row in cur.fetchall()}

    def _apply(self, version: int, events: Sequence[Event]) -> None:
        changes = net_changes(events)
        if not changes:
            return
        cur = self.conn.cursor()
        cur.executemany(
            f"INSERT INTO {layout.USER_TAGS_TABLE} (version, user_id, first_seen, order_count, seq)"
            " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
            f" first_seen = {_EARLIEST.format(old='first_seen', new='VALUES(first_seen)')},"
            " order_count = order_count + VALUES(order_count), seq = seq + VALUES(seq)",
            [
                (
                    version,
                    user_id,
                    None if change.first_seen is None else to_naive_utc(change.first_seen),
                    change.order_delta,
                    change.events,
                )
                for user_id, change in sorted(changes.items())
            ],
        )
        self._floor_order_counts(version, list(changes))

    def _floor_order_counts(self, version: int, user_ids: Sequence[str]) -> None:
        cur = self.conn.cursor()
        placeholders = ", ".join(["%s"] * len(user_ids))
        cur.execute(
            f"UPDATE {layout.USER_TAGS_TABLE} SET order_count = 0"
            f" WHERE version = %s AND order_count < 0 AND user_id IN ({placeholders})",
            (version, *user_ids),
        )

    def tags_of_locked(self, cur: Any, version: int, user_ids: Sequence[str], for_update: bool = False) -> list[TagRow]:
        if not user_ids:
            return []
        placeholders = ", ".join(["%s"] * len(user_ids))
        cur.execute(
            f"SELECT user_id, first_seen, order_count, seq FROM {layout.USER_TAGS_TABLE}"
            f" WHERE version = %s AND user_id IN ({placeholders})" + (" FOR UPDATE" if for_update else ""),
            (version, *user_ids),
        )
        return [_tag_row(row) for row in cur.fetchall()]

    # ------------------------------------------------------------------ loading

    def clear_staged(self) -> int:
        """Delete what failed loads left staged (their rows stay numbered as ``dropped``)."""
        cur = self.conn.cursor()
        cur.execute(f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = 'discarded' WHERE state = 'staging'")
        self.conn.commit()
        cur.execute(f"SELECT version FROM {layout.TAG_VERSIONS_TABLE} WHERE state = 'discarded'")
        versions = [int(row[0]) for row in cur.fetchall()]
        self.conn.commit()
        for version in versions:
            self._delete_rows(version)
            cur.execute(f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = 'dropped' WHERE version = %s", (version,))
            self.conn.commit()
        return len(versions)

    def _delete_rows(self, version: int) -> None:
        cur = self.conn.cursor()
        while True:
            cur.execute(f"DELETE FROM {layout.USER_TAGS_TABLE} WHERE version = %s LIMIT 10000", (version,))
            deleted = cur.rowcount
            self.conn.commit()
            if deleted < 10_000:
                return

    def begin_version(self, run: RunInfo, as_of: dt.datetime, now: dt.datetime) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT COALESCE(MAX(version), 0) + 1 FROM {layout.TAG_VERSIONS_TABLE} FOR UPDATE")
        version = int(cur.fetchone()[0])
        cur.execute(
            f"INSERT INTO {layout.TAG_VERSIONS_TABLE} (version, state, as_of, dag_id, run_id, created_at)"
            " VALUES (%s, 'staging', %s, %s, %s, %s)",
            (version, to_naive_utc(as_of), run.dag_id, run.run_id, to_naive_utc(now)),
        )
        self.conn.commit()
        return version

    def add_rows(self, version: int, rows: Sequence[TagRow]) -> None:
        """Stage a batch of users' tags (a user twice in one load: the last row wins)."""
        if not rows:
            return
        if self.bulk_load:
            try:
                self._load_rows(version, rows)
                return
            except MySQLdb.OperationalError as exc:
                if exc.args[0] not in LOAD_DATA_REFUSED:
                    raise
                self.conn.rollback()
                self.bulk_load = False
                log.warning("funnel: MySQL refused LOAD DATA LOCAL INFILE (%s); staging tags with INSERTs", exc)
        cur = self.conn.cursor()
        cur.executemany(
            f"REPLACE INTO {layout.USER_TAGS_TABLE} (version, user_id, first_seen, order_count, seq)"
            " VALUES (%s, %s, %s, %s, 0)",
            [
                (version, r.user_id, None if r.first_seen is None else to_naive_utc(r.first_seen), r.order_count)
                for r in rows
            ],
        )
        self.conn.commit()

    def _load_rows(self, version: int, rows: Sequence[TagRow]) -> None:
        lines = (
            "\t".join(
                (
                    r.user_id.translate(LOAD_DATA_ESCAPES),
                    _NULL if r.first_seen is None else to_naive_utc(r.first_seen).isoformat(sep=" "),
                    str(r.order_count),
                )
            )
            for r in rows
        )
        with batch_file("\n".join(lines).encode("ascii")) as path:
            cur = self.conn.cursor()
            cur.execute(
                f"LOAD DATA LOCAL INFILE %s REPLACE INTO TABLE {layout.USER_TAGS_TABLE} CHARACTER SET ascii"
                " (user_id, first_seen, order_count) SET version = %s, seq = 0",
                (path, version),
            )
        self.conn.commit()

    def count(self, version: int) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {layout.USER_TAGS_TABLE} WHERE version = %s", (version,))
        (value,) = cur.fetchone()
        self.conn.commit()
        return int(value)

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
                    f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = 'discarded' WHERE version = %s", (version,)
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
                f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = 'live', size = %s, replayed = %s, promoted_at = %s"
                " WHERE version = %s AND state = 'staging'",
                (size, replayed, to_naive_utc(now), version),
            )
            if cur.rowcount != 1:
                raise LockLost(
                    f"tag version {version} is no longer staged (a newer load cleaned it up); nothing swapped"
                )
            cur.execute(
                f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = 'retired' WHERE version = %s", (current.version,)
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
            " SELECT %s, user_id, MIN(CASE WHEN type = 'signup' THEN at END),"
            "  SUM(CASE type WHEN 'order' THEN 1 WHEN 'order_cancelled' THEN -1 ELSE 0 END), COUNT(*)"
            f" FROM {layout.EVENTS_TABLE} WHERE at > %s GROUP BY user_id"
            " ON DUPLICATE KEY UPDATE"
            f" first_seen = {_EARLIEST.format(old='first_seen', new='VALUES(first_seen)')},"
            " order_count = order_count + VALUES(order_count), seq = VALUES(seq)",
            (version, to_naive_utc(as_of)),
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
            yield [_tag_row(row) for row in rows[start : start + batch_size]]

    def prune(self, keep: int) -> list[int]:
        """Delete retired tag versions beyond the newest ``keep`` (the live one included), and
        events at or before the live ``as_of`` (never replayed again; a retry of one is ignored)."""
        live = self.live()
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version FROM {layout.TAG_VERSIONS_TABLE}"
            " WHERE state IN ('retired', 'dropped') ORDER BY version DESC"
        )
        older = [int(row[0]) for row in cur.fetchall() if int(row[0]) < live.version]
        self.conn.commit()
        doomed = older[max(keep - 1, 0) :]
        for version in doomed:
            self._delete_rows(version)
            cur.execute(f"DELETE FROM {layout.TAG_VERSIONS_TABLE} WHERE version = %s", (version,))
            self.conn.commit()
        while True:
            cur.execute(f"DELETE FROM {layout.EVENTS_TABLE} WHERE at <= %s LIMIT 10000", (to_naive_utc(live.as_of),))
            deleted = cur.rowcount
            self.conn.commit()
            if deleted < 10_000:
                break
        return doomed


_LIVE_COLUMNS = "version, as_of, size, refreshed_at"


def rule_sql(rule: Rule, now: dt.datetime) -> tuple[str, list[object]]:
    """A proxy rule as a SQL condition over ``t.first_seen`` and ``t.order_count``, with its
    parameters. Every leaf is true or false, never NULL, so ``NOT`` agrees with ``matches``."""
    if isinstance(rule, NewUser | OldUser):
        compare = ">=" if isinstance(rule, NewUser) else "<"
        return f"(t.first_seen IS NOT NULL AND t.first_seen {compare} %s)", [to_naive_utc(cutoff(rule.days, now))]
    if isinstance(rule, OrderCount):
        if rule.op == "between":
            return "(t.order_count BETWEEN %s AND %s)", [rule.low, rule.high]
        return f"(t.order_count {_SQL_OPS[rule.op]} %s)", [rule.low]
    if isinstance(rule, Not):
        inner, params = rule_sql(rule.rule, now)
        return f"(NOT {inner})", params
    parts = [rule_sql(child, now) for child in rule.rules]
    joiner = " AND " if isinstance(rule, AllOf) else " OR "
    return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, params in parts for p in params]


_SQL_OPS = {"<": "<", "<=": "<=", "=": "=", "!=": "<>", ">=": ">=", ">": ">"}

#: The earlier of two nullable times, in SQL.
_EARLIEST = "CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL THEN {new} ELSE LEAST({old}, {new}) END"


def _tag_version(row: Sequence[Any]) -> TagVersion:
    version, as_of, size, refreshed_at = row
    return TagVersion(int(version), from_naive_utc(as_of), int(size), from_naive_utc(refreshed_at))


def _tag_row(row: Sequence[Any]) -> TagRow:
    user_id, first_seen, order_count, seq = row
    return TagRow(user_id, None if first_seen is None else from_naive_utc(first_seen), int(order_count), int(seq))


# ---------------------------------------------------------------------------- Redis

# KEYS: first_seen, order_count, seq, meta. ARGV: version, then user, first_seen score
# ('' for none), order_count, seq per user. Writes a user only when Redis serves ``version``
# and the user's stored seq is not newer. Returns how many users were written.
_APPLY_LUA = """
if redis.call('HGET', KEYS[4], 'version') ~= ARGV[1] then return -1 end
local written = 0
for i = 2, #ARGV, 4 do
  local user, first_seen, orders, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if seq >= tonumber(redis.call('HGET', KEYS[3], user) or '0') then
    if first_seen == '' then
      redis.call('HINCRBY', KEYS[4], 'with_first_seen', 0 - redis.call('ZREM', KEYS[1], user))
    else
      redis.call('HINCRBY', KEYS[4], 'with_first_seen', redis.call('ZADD', KEYS[1], first_seen, user))
    end
    redis.call('HINCRBY', KEYS[4], 'users', redis.call('ZADD', KEYS[2], orders, user))
    if seq > 0 then redis.call('HSET', KEYS[3], user, seq) end
    written = written + 1
  end
end
return written
"""

# KEYS: live first_seen, order_count, seq; staging ...; previous ...; meta.
# ARGV: meta field/value pairs. Live keys become previous, staging becomes live; the meta
# also counts the users (``users``, ``with_first_seen``) so readers can tell a whole set.
_SWAP_LUA = """
local users = redis.call('ZCARD', KEYS[5])
local with_first_seen = redis.call('ZCARD', KEYS[4])
for i = 1, 3 do
  redis.call('UNLINK', KEYS[6 + i])
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[6 + i]) end
  if redis.call('EXISTS', KEYS[3 + i]) == 1 then
    redis.call('RENAME', KEYS[3 + i], KEYS[i])
    redis.call('PERSIST', KEYS[i])
  end
end
local previous = redis.call('HGETALL', KEYS[10])
redis.call('DEL', KEYS[10])
redis.call('HSET', KEYS[10], 'users', users, 'with_first_seen', with_first_seen, unpack(ARGV))
return previous
"""

# KEYS as for the swap. ARGV: the previous meta's field/value pairs (none: delete meta).
_REVERT_LUA = """
for i = 1, 3 do
  redis.call('UNLINK', KEYS[i])
  if redis.call('EXISTS', KEYS[6 + i]) == 1 then redis.call('RENAME', KEYS[6 + i], KEYS[i]) end
end
redis.call('DEL', KEYS[10])
if #ARGV > 0 then redis.call('HSET', KEYS[10], unpack(ARGV)) end
return 1
"""


class RedisTagStore:
    """The live user tags in Redis, over a redis-py client."""

    def __init__(self, client: Any, staging_ttl_seconds: int) -> None:
        self.client = client
        self.staging_ttl_seconds = staging_ttl_seconds
        self.live_keys = layout.tag_keys("live")
        self.staging_keys = layout.tag_keys("staging")
        self.previous_keys = layout.tag_keys("previous")
        self._apply = client.register_script(_APPLY_LUA)
        self._swap = client.register_script(_SWAP_LUA)
        self._revert = client.register_script(_REVERT_LUA)

    def meta(self) -> dict[str, str]:
        return {text(k): text(v) for k, v in self.client.hgetall(layout.tags_meta_key()).items()}

    def whole(self) -> bool:
        """Whether the live sorted sets hold as many users as the meta counted (none lost)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(layout.tags_meta_key(), TagsMetaField.VERSION, TagsMetaField.USERS, TagsMetaField.WITH_FIRST_SEEN)
        pipe.zcard(self.live_keys.order_count)
        pipe.zcard(self.live_keys.first_seen)
        (version, users, with_first_seen), orders, first_seen = pipe.execute()
        return version is not None and int_or_none(users) == orders and int_or_none(with_first_seen) == first_seen

    def serving(self) -> tuple[int | None, int]:
        """The tag version Redis serves and how many users it holds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(layout.tags_meta_key(), TagsMetaField.VERSION)
        pipe.zcard(self.live_keys.order_count)
        version, size = pipe.execute()
        return (int(version) if version is not None else None), int(size)

    def tags_of(self, user_ids: Sequence[str]) -> list[TagRow | None]:
        """Each user's live tags (None: no tags), in one round trip."""
        if not user_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(self.live_keys.first_seen, list(user_ids))
        pipe.zmscore(self.live_keys.order_count, list(user_ids))
        first_seen, orders = pipe.execute()
        return [
            None if count is None else TagRow(user, None if fs is None else from_epoch(fs), int(count))
            for user, fs, count in zip(user_ids, first_seen, orders, strict=True)
        ]

    def count_range(self, tag: str, low: float | str, high: float | str) -> int:
        """How many users have ``tag`` (``first_seen`` or ``order_count``) in [low, high]."""
        return int(self.client.zcount(getattr(self.live_keys, tag), low, high))

    # ------------------------------------------------------------------ writing

    def apply(self, version: int, rows: Iterable[TagRow]) -> int:
        """Write users' current tags if Redis serves ``version``; -1 when it serves another."""
        args: list[object] = [version]
        for row in rows:
            score = row.first_seen_score
            args += [row.user_id, "" if score is None else repr(score), row.order_count, row.seq]
        if len(args) == 1:
            return 0
        keys = [*self.live_keys, layout.tags_meta_key()]
        return int(self._apply(keys=keys, args=args))

    def clear_staged(self) -> None:
        self.client.unlink(*self.staging_keys)

    def add_staged(self, rows: Sequence[TagRow]) -> None:
        """Stage a batch of users' tags (baseline rows and replayed ones) in one round trip."""
        if not rows:
            return
        first_seen = {r.user_id: r.first_seen_score for r in rows if r.first_seen is not None}
        missing = [r.user_id for r in rows if r.first_seen is None]
        pipe = self.client.pipeline(transaction=False)
        if first_seen:
            pipe.zadd(self.staging_keys.first_seen, first_seen)
        if missing:
            pipe.zrem(self.staging_keys.first_seen, *missing)
        pipe.zadd(self.staging_keys.order_count, {r.user_id: r.order_count for r in rows})
        seqs = {r.user_id: r.seq for r in rows if r.seq}
        if seqs:
            pipe.hset(self.staging_keys.seq, mapping=seqs)
        for key in self.staging_keys:
            pipe.expire(key, self.staging_ttl_seconds)
        pipe.execute()

    def staged_size(self) -> int:
        return int(self.client.zcard(self.staging_keys.order_count))

    def swap(self, live: Any) -> dict[str, str]:
        """Staging becomes live (the old live keys are kept as ``previous``); return the old meta."""
        fields: list[object] = []
        for name, value in {
            TagsMetaField.VERSION: live.version,
            TagsMetaField.AS_OF: live.as_of.isoformat(),
            TagsMetaField.SIZE: live.size,
            TagsMetaField.REFRESHED_AT: live.refreshed_at.isoformat(),
        }.items():
            fields += [name, str(value)]
        keys = [*self.live_keys, *self.staging_keys, *self.previous_keys, layout.tags_meta_key()]
        previous = self._swap(keys=keys, args=fields)
        return {text(previous[i]): text(previous[i + 1]) for i in range(0, len(previous), 2)}

    def drop_previous(self) -> None:
        self.client.unlink(*self.previous_keys)

    def revert(self, previous_meta: dict[str, str]) -> None:
        """Undo ``swap`` (MySQL did not commit): the previous keys and meta come back."""
        keys = [*self.live_keys, *self.staging_keys, *self.previous_keys, layout.tags_meta_key()]
        args = [item for pair in previous_meta.items() for item in pair]
        self._revert(keys=keys, args=args)
