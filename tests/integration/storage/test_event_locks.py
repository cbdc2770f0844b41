"""Event batches at once on real MySQL: one lock order, so two batches never deadlock; a lock
conflict caused elsewhere is tried again with one warning line, then answered as ``LockConflict``."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from funnel import settings, wiring
from funnel.core.errors import LockConflict
from funnel.core.proxy_rule import parse_rule
from funnel.core.user_events import Event, EventType
from funnel.storage import layout
from funnel.storage.hooks import FunnelMySqlHook
from funnel.storage.mysql.tag_versions import MySqlTagStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
CANCEL_USERS = [f"c{n}" for n in range(10)]
PRELOADED = 30  # each c user's orders before the race: at most this many cancellations of it follow
BATCHES = 800
SIDES = 4  # connections posting at once: two in ascending, two in descending user id order

Expected = dict[str, tuple[dt.datetime | None, int]]


def at(seconds_ago: int) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds_ago)


@pytest.fixture
def second_conn(mysql_conn: Any) -> Iterator[Any]:
    """Another connection to the emptied test database."""
    conn = FunnelMySqlHook().get_conn()
    yield conn
    conn.close()


def race(seed: int) -> tuple[list[list[list[Event]]], Expected]:
    """``SIDES`` sides' batches of 20 events over the same users, in ascending (even sides) or
    descending (odd sides) user id order: orders, sign-ups (of users new to MySQL, racing their
    orders) and cancellations
    (only of the ``c`` users, never more than their ``PRELOADED`` orders, so no count reaches the
    floor and the expected counts hold in any interleaving). A quarter of each side's batches is
    sent again by the next side, reversed. Returns the sides and each user's expected tags."""
    rnd = random.Random(seed)
    users = [f"r{n:02}" for n in range(20)] + CANCEL_USERS
    cancels_left = dict.fromkeys(CANCEL_USERS, PRELOADED)
    expected: Expected = dict.fromkeys(CANCEL_USERS, (None, PRELOADED))
    sides: list[list[list[Event]]] = [[] for _ in range(SIDES)]
    for b in range(BATCHES):
        side = b % SIDES
        batch = []
        for k in range(20):
            user = rnd.choice(users)
            first_seen, orders = expected.get(user, (None, 0))
            kind = rnd.choice((EventType.ORDER, EventType.ORDER, EventType.SIGNUP, EventType.ORDER_CANCELLED))
            if kind is EventType.ORDER_CANCELLED and not cancels_left.get(user):
                kind = EventType.ORDER
            when = at(rnd.randrange(1, 3600))
            if kind is EventType.SIGNUP:
                first_seen = when if first_seen is None else min(first_seen, when)
            elif kind is EventType.ORDER:
                orders += 1
            else:
                orders -= 1
                cancels_left[user] -= 1
            expected[user] = (first_seen, orders)
            batch.append(Event(f"e{b}-{k}", kind, user, when))
        batch.sort(key=lambda e: e.user_id, reverse=bool(side % 2))
        sides[side].append(batch)
        if rnd.random() < 0.25:
            sides[(side + 1) % SIDES].append(list(reversed(batch)))
    return sides, expected


def test_batches_over_the_same_users_in_opposite_orders_never_deadlock(
    mysql_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No retries: a deadlock between the sides would escape, so only the lock order keeps them apart.
    monkeypatch.setattr(settings, "MYSQL_LOCK_RETRIES", 0, raising=False)
    rules = {"three": parse_rule("three", '{"tag": "order_count", "op": ">=", "value": 3}', 30)}
    wiring.event_ledger(mysql_conn).record_events(
        [Event(f"pre-{u}-{k}", EventType.ORDER, u, at(7200)) for u in CANCEL_USERS for k in range(PRELOADED)],
        "p" * 32,
        NOW,
    )
    sides, expected = race(seed=19)
    conns = [FunnelMySqlHook().get_conn() for _ in sides]
    failures: list[str] = []

    def post(conn: Any, name: str, batches: list[list[Event]]) -> None:
        ledger = wiring.event_ledger(conn)
        for n, batch in enumerate(batches):
            try:
                ledger.record_events(batch, f"{name}{n:031}", NOW, rules)
            except Exception as exc:  # counted; the batch is not sent again
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=post, args=(conns[n], "abcd"[n], side)) for n, side in enumerate(sides)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for conn in conns:
        conn.close()
    assert failures == []
    in_mysql = MySqlTagStore(mysql_conn).tags_of(sorted(expected))
    assert {u: (row.first_seen, row.order_count) for u, row in in_mysql.items()} == expected
    cur = mysql_conn.cursor()
    cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {layout.EVENTS_TABLE}")
    assert cur.fetchone() == (len(CANCEL_USERS) * PRELOADED + BATCHES * 20,) * 2  # every event recorded once
    mysql_conn.commit()


def _in_lock_wait(watcher: Any, connection_id: int) -> bool:
    cur = watcher.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS w JOIN information_schema.INNODB_TRX t"
        " ON t.trx_id = w.requesting_trx_id WHERE t.trx_mysql_thread_id = %s",
        (connection_id,),
    )
    (waiting,) = cur.fetchone()
    watcher.commit()
    return bool(waiting)


def _deadlock_one_batch(mysql_conn: Any, second_conn: Any, record: Callable[[], Any]) -> Any:
    """Run ``record()`` (a batch over u1 and u2 on ``mysql_conn``) into a real deadlock: another
    transaction, heavier so InnoDB picks the batch as the victim, holds u2 and then asks for u1,
    which the batch locked first. Returns what ``record()`` returned or raised."""
    other = second_conn.cursor()
    other.executemany(
        f"INSERT INTO {layout.USER_TAGS_TABLE} (version, user_id, order_count) VALUES (99, %s, 0)",
        [(f"w{n:03}",) for n in range(200)],
    )
    other.execute(f"SELECT order_count FROM {layout.USER_TAGS_TABLE} WHERE version = 0 AND user_id = 'u2' FOR UPDATE")
    result: list[Any] = []
    batch_connection = mysql_conn.thread_id()
    batch = threading.Thread(target=lambda: result.append(_outcome(record)))
    batch.start()
    watcher = FunnelMySqlHook().get_conn()
    try:
        deadline = time.monotonic() + 10
        while not _in_lock_wait(watcher, batch_connection):
            assert time.monotonic() < deadline, "the batch never waited for u2"
            time.sleep(0.2)  # InnoDB refreshes these tables only when unread for 0.1 s
        other.execute(
            f"SELECT order_count FROM {layout.USER_TAGS_TABLE} WHERE version = 0 AND user_id = 'u1' FOR UPDATE"
        )
    finally:
        second_conn.rollback()
        watcher.close()
    batch.join(timeout=30)
    return result[0]


def _outcome(record: Callable[[], Any]) -> Any:
    try:
        return record()
    except Exception as exc:
        return exc


def _two_users(mysql_conn: Any) -> None:
    wiring.event_ledger(mysql_conn).record_events(
        [Event("s1", EventType.ORDER, "u1", at(60)), Event("s2", EventType.ORDER, "u2", at(60))], "r" * 32, NOW
    )


def test_a_deadlocked_batch_is_tried_again_with_one_warning_line(
    mysql_conn: Any, second_conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings, "MYSQL_LOCK_RETRIES", 2)
    _two_users(mysql_conn)
    ledger = wiring.event_ledger(mysql_conn)
    batch = [Event("o2", EventType.ORDER, "u2", at(1)), Event("o1", EventType.ORDER, "u1", at(1))]
    with caplog.at_level(logging.WARNING):
        outcome = _deadlock_one_batch(mysql_conn, second_conn, lambda: ledger.record_events(batch, "q" * 32, NOW))
    assert (outcome.accepted, outcome.duplicates, outcome.retries) == (2, 0, 1)
    assert {u: row.order_count for u, row in MySqlTagStore(mysql_conn).tags_of(["u1", "u2"]).items()} == {
        "u1": 2,
        "u2": 2,
    }
    warnings = [(r.name, r.getMessage(), r.exc_info) for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        (
            "funnel.storage.mysql.lock_conflicts",
            "event batch of 2 event(s): MySQL deadlock (1213), trying again (1 of 2)",
            None,
        )
    ]


def test_a_batch_still_in_conflict_after_its_retries_is_refused_whole(
    mysql_conn: Any, second_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "MYSQL_LOCK_RETRIES", 0)
    _two_users(mysql_conn)
    ledger = wiring.event_ledger(mysql_conn)
    batch = [Event("o1", EventType.ORDER, "u1", at(1)), Event("o2", EventType.ORDER, "u2", at(1))]
    error = _deadlock_one_batch(mysql_conn, second_conn, lambda: ledger.record_events(batch, "q" * 32, NOW))
    assert isinstance(error, LockConflict)
    assert error.http_status == 503
    assert str(error) == (
        "event batch of 2 event(s): MySQL rolled it back on a lock conflict (deadlock, 1213) 1 time(s) in a row; "
        "nothing of it was written. Fix: send it again; if this keeps happening, look for a long transaction "
        "holding the same rows, or raise mysql_lock_retries (now 0)"
    )
    cur = mysql_conn.cursor()
    cur.execute(f"SELECT COUNT(*) FROM {layout.EVENTS_TABLE} WHERE event_id IN ('o1', 'o2')")
    assert cur.fetchone() == (0,)
    mysql_conn.commit()
