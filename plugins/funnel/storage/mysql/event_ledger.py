"""The real-time events in MySQL (``funnel_user_events``), applied to the live users' tags.

An event batch is one transaction: it reads the live pointer (``funnel_tag_live``) ``LOCK IN
SHARE MODE``, records its events (unique by ``event_id``: a retry's are duplicates), applies the
new ones after the live load's ``as_of`` to the live version's tags, and logs the rule crossings
they cause (``funnel.storage.mysql.proxy_change_log``). A load's swap holds the same row ``FOR
UPDATE`` while it replays the events after its own ``as_of`` (``funnel.storage.mysql.tag_versions``),
so no event falls between the two. Each user's ``seq`` counts the events applied since the load,
so Redis can drop a write older than the one it holds.

Every batch takes its locks in one order, so two batches never wait on each other in a circle:
the live pointer (shared), then its events' ``event_id`` index entries in event id order, then its
users' tag rows in user id order, in one pass (with proxy rules, a user new to the version gets
a placeholder row in the same statement that locks the others, so the batch never comes back to
insert into a gap), then the change log's new rows. The batch runs READ COMMITTED and never
reads with locks: a locking read may scan, and a range holds other batches' users out of order
(as the old floor of ``order_count`` over its index did). What conflicts remain (a load's swap,
a long transaction elsewhere) are tried again (``funnel.storage.mysql.lock_conflicts``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from funnel.core.errors import EventConflict
from funnel.core.proxy_changes import ProxyChange, crossings
from funnel.core.proxy_matching import Tags
from funnel.core.proxy_rule import Rule
from funnel.core.user_events import Event, net_changes
from funnel.core.user_tags import TagRow
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.lock_conflicts import retried
from funnel.storage.mysql.proxy_change_log import ProxyChangeLog
from funnel.storage.mysql.sql_params import marks
from funnel.storage.mysql.tag_versions import EARLIEST, read_tag_rows, tag_row


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
    retries: int = 0  # times MySQL rolled the batch back on a lock conflict before it went through


#: ``order_count`` of a placeholder row (``EventLedger._lock_tags``): never committed, as a committed
#: count is never below 0.
_PLACEHOLDER = -1


class EventLedger:
    """Events recorded and applied to the live tags in MySQL, over one DB-API (mysqlclient) connection.

    ``proxy_changes``: the proxy segments' change log on the same connection (a batch records
    its crossings in its own transaction). ``lock_retries``: how many times a batch MySQL rolled
    back on a lock conflict is tried again before ``LockConflict``.
    """

    def __init__(self, conn: Any, lock_retries: int) -> None:
        self.conn = conn
        self.lock_retries = lock_retries
        self.proxy_changes = ProxyChangeLog(conn)

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

        A lock conflict rolls the batch back and it is tried again, up to ``lock_retries`` times
        with one warning line each; then ``LockConflict`` (nothing recorded).
        """
        tries = 0

        def attempt() -> EventsOutcome:
            nonlocal tries
            tries += 1
            return self._record(events, request_id, now, rules)

        outcome = retried(self.conn, attempt, self.lock_retries, f"event batch of {len(events)} event(s)")
        return replace(outcome, retries=tries - 1)

    def _record(
        self, events: Sequence[Event], request_id: str, now: dt.datetime, rules: Mapping[str, Rule] | None
    ) -> EventsOutcome:
        cur = self.conn.cursor()
        # Each read sees what is committed when it runs (and takes no gap locks): the tags read after
        # this batch locked its users' rows are their latest.
        cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        try:
            cur.execute(f"SELECT version, as_of FROM {layout.TAG_LIVE_TABLE} WHERE id = 1 LOCK IN SHARE MODE")
            version, as_of_naive = cur.fetchone()
            as_of = from_naive_utc(as_of_naive)
            # One lock order for every batch: event ids, then user ids, sorted (no two batches wait on each other).
            unique = sorted({event.event_id: event for event in events}.values(), key=lambda e: e.event_id)
            cur.executemany(
                f"INSERT IGNORE INTO {layout.EVENTS_TABLE} (event_id, type, user_id, at, received_at, request_id)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (e.event_id, e.type.value, e.user_id, to_naive_utc(e.at), to_naive_utc(now), request_id)
                    for e in unique
                ],
            )
            new_ids = self._inserted_by(request_id, unique, inserted=int(cur.rowcount))
            self._check_repeats(events, [e for e in unique if e.event_id not in new_ids])
            new = [e for e in unique if e.event_id in new_ids]
            applied = [e for e in new if e.at > as_of]
            changes: list[ProxyChange] = []
            after: dict[str, TagRow] = {}
            if rules and applied:
                before = {
                    row.user_id: row for row in self._lock_tags(int(version), sorted({e.user_id for e in applied}))
                }
                tags = {row.user_id: Tags(row.first_seen, row.order_count) for row in before.values()}
                changes = crossings(rules, tags, applied)
                # The rows are locked: what the upsert makes of them is known without reading them again.
                after = {
                    user: change.applied_to(user, before.get(user)) for user, change in net_changes(applied).items()
                }
            self._apply(int(version), applied, rows_exist=bool(after))
            self.proxy_changes.record(changes, now)
            users = sorted({e.user_id for e in events})
            after.update(
                (row.user_id, row) for row in self._tags_of(int(version), [u for u in users if u not in after])
            )
            rows = [after[user] for user in users if user in after]
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

    def last_event_id(self) -> int:
        """The newest event's id (0: none): a watermark for ``users_with_events_after``."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {layout.EVENTS_TABLE}")
        (value,) = cur.fetchone()
        self.conn.commit()
        return int(value)

    def users_with_events_after(self, event_id: int, version: int, batch_size: int) -> Iterator[list[TagRow]]:
        """The current tags in ``version`` of every user with an event recorded after ``event_id``."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT t.user_id, t.first_seen, t.order_count, t.seq FROM {layout.USER_TAGS_TABLE} t"
            f" JOIN (SELECT DISTINCT user_id FROM {layout.EVENTS_TABLE} WHERE id > %s) e ON e.user_id = t.user_id"
            " WHERE t.version = %s",
            (event_id, version),
        )
        while batch := cur.fetchmany(batch_size):
            yield [tag_row(row) for row in batch]
        self.conn.commit()

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
        cur.execute(
            f"SELECT event_id, type, user_id, at FROM {layout.EVENTS_TABLE} WHERE event_id IN ({marks(repeats)})",
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

    def _inserted_by(self, request_id: str, unique: Sequence[Event], inserted: int) -> set[str]:
        """The ids of ``unique`` this batch's INSERT IGNORE recorded (``inserted`` of them): all or none
        without asking MySQL, which ones otherwise."""
        event_ids = [e.event_id for e in unique]
        if not event_ids or inserted <= 0:  # an empty batch (executemany of nothing: rowcount -1), or all repeats
            return set()
        if inserted == len(event_ids):
            return set(event_ids)
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT event_id FROM {layout.EVENTS_TABLE} WHERE request_id = %s AND event_id IN ({marks(event_ids)})",
            (request_id, *event_ids),
        )
        return {row[0] for row in cur.fetchall()}

    def _lock_tags(self, version: int, user_ids: Sequence[str]) -> list[TagRow]:
        """Lock these users' tag rows in ``version`` (sorted ids), in one pass, and read them.

        A user new to the version gets a placeholder row in the same statement (no tags yet:
        ``_PLACEHOLDER``, left out of the answer), so ``_apply`` only updates rows already locked.
        """
        cur = self.conn.cursor()
        cur.executemany(  # one multi-row statement: the rows are locked in this order
            f"INSERT INTO {layout.USER_TAGS_TABLE} (version, user_id, order_count) VALUES (%s, %s, %s)"
            " ON DUPLICATE KEY UPDATE seq = seq",
            [(version, user_id, _PLACEHOLDER) for user_id in user_ids],
        )
        # A plain read (READ COMMITTED: the latest committed, and this batch's placeholders): a locking
        # read may scan and lock rows of other batches' users, out of order.
        return [row for row in read_tag_rows(self.conn, version, user_ids) if row.order_count >= 0]

    def _apply(self, version: int, events: Sequence[Event], rows_exist: bool) -> None:
        """Add the events' net changes to their users' tags, in user id order. ``rows_exist``: every
        user's row is there and locked (``_lock_tags``); otherwise a new user whose events cancel
        more orders than they place is floored to 0 after the insert."""
        changes = net_changes(events)
        if not changes:
            return
        cur = self.conn.cursor()
        cur.executemany(
            f"INSERT INTO {layout.USER_TAGS_TABLE} (version, user_id, first_seen, order_count, seq)"
            " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
            f" first_seen = {EARLIEST.format(old='first_seen', new='VALUES(first_seen)')},"
            " order_count = GREATEST(GREATEST(order_count, 0) + VALUES(order_count), 0), seq = seq + VALUES(seq)",
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
        if not rows_exist:
            self._floor_new_users(
                version, [user_id for user_id, change in sorted(changes.items()) if change.order_delta < 0]
            )

    def _floor_new_users(self, version: int, user_ids: Sequence[str]) -> None:
        """A user new to ``version`` whose first events cancel more orders than they place starts at 0
        (a user already there is floored by the upsert). By the primary key only, on rows this batch
        holds: a range of the ``order_count`` index would lock other batches' users (deadlocks)."""
        if not user_ids:
            return
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.USER_TAGS_TABLE} FORCE INDEX (PRIMARY) SET order_count = 0"
            f" WHERE version = %s AND user_id IN ({marks(user_ids)}) AND order_count < 0",
            (version, *user_ids),
        )

    def _tags_of(self, version: int, user_ids: Sequence[str]) -> list[TagRow]:
        """Inside the caller's transaction: these users' tags in ``version``."""
        return read_tag_rows(self.conn, version, user_ids)
