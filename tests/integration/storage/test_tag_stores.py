"""User tags and events against real MySQL and Redis: idempotent events, absolute writes
ordered by seq, and the version check that keeps a late write out of a newer load."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from funnel.core.run_info import RunInfo
from funnel.core.user_events import Event, EventType
from funnel.core.user_tags import TagRow
from funnel.services.event_ingest import ingest
from funnel.storage import layout
from funnel.storage.mysql.event_ledger import EventLedger
from funnel.storage.mysql.tag_versions import MySqlTagStore, TagVersion
from funnel.storage.redis.tag_sets import RedisTagStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)


def at(minutes_ago: int) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes_ago)


def event(event_id: str, kind: str, user_id: str, minutes_ago: int = 1) -> Event:
    return Event(event_id, EventType(kind), user_id, at(minutes_ago))


@pytest.fixture
def stores(mysql_conn: Any, redis_client: Any) -> tuple[EventLedger, RedisTagStore]:
    redis = RedisTagStore(redis_client, staging_ttl_seconds=600)
    live = MySqlTagStore(mysql_conn).live()
    redis.swap(live)  # Redis serves version 0, as a restore would set it up
    return EventLedger(mysql_conn, lock_retries=0), redis


def both(stores: tuple[EventLedger, RedisTagStore], *user_ids: str) -> tuple[list[Any], list[Any]]:
    ledger, redis = stores
    in_mysql = MySqlTagStore(ledger.conn).tags_of(list(user_ids))
    from_mysql = [None if u not in in_mysql else (in_mysql[u].first_seen, in_mysql[u].order_count) for u in user_ids]
    from_redis = [None if t is None else (t.first_seen, t.order_count) for t in redis.tags_of(list(user_ids))]
    return from_mysql, from_redis


def test_events_change_both_stores_at_once(stores: Any) -> None:
    ledger, redis = stores
    outcome, in_redis = ingest(
        [
            event("s1", "signup", "u1", 30),
            event("o1", "order", "u1"),
            event("o2", "order", "u1"),
            event("o3", "order", "u2"),
        ],
        ledger,
        redis,
        NOW,
    )
    assert (outcome.accepted, outcome.duplicates, outcome.before_baseline, in_redis) == (4, 0, 0, True)
    expected = [(at(30), 2), (None, 1)]
    assert both(stores, "u1", "u2") == (expected, expected)


def test_a_retried_event_never_counts_twice(stores: Any) -> None:
    ledger, redis = stores
    batch = [event("o1", "order", "u1"), event("o2", "order", "u1")]
    ingest(batch, ledger, redis, NOW)
    outcome, _ = ingest([*batch, event("o2", "order", "u1")], ledger, redis, NOW)  # a retry, with a repeat inside
    assert (outcome.accepted, outcome.duplicates) == (0, 3)
    assert both(stores, "u1") == ([(None, 2)], [(None, 2)])


def test_cancellations_never_take_the_count_below_zero(stores: Any) -> None:
    ledger, redis = stores
    ingest([event("o1", "order", "u1"), event("c1", "order_cancelled", "u1")], ledger, redis, NOW)
    ingest([event("c2", "order_cancelled", "u1")], ledger, redis, NOW)
    assert both(stores, "u1") == ([(None, 0)], [(None, 0)])


def test_the_earliest_signup_wins(stores: Any) -> None:
    ledger, redis = stores
    ingest([event("s1", "signup", "u1", 10)], ledger, redis, NOW)
    ingest([event("s2", "signup", "u1", 50), event("s3", "signup", "u1", 5)], ledger, redis, NOW)
    assert both(stores, "u1") == ([(at(50), 0)], [(at(50), 0)])


def test_events_at_or_before_the_loads_as_of_are_recorded_not_applied(stores: Any, mysql_conn: Any) -> None:
    ledger, redis = stores
    cur = mysql_conn.cursor()
    cur.execute(f"UPDATE {layout.TAG_LIVE_TABLE} SET as_of = %s", (at(60).replace(tzinfo=None),))
    mysql_conn.commit()
    outcome, _ = ingest([event("old", "order", "u1", 90), event("new", "order", "u1", 30)], ledger, redis, NOW)
    assert (outcome.accepted, outcome.before_baseline) == (1, 1)
    assert both(stores, "u1") == ([(None, 1)], [(None, 1)])


def test_a_late_write_never_undoes_a_newer_one(stores: Any) -> None:
    _, redis = stores
    assert redis.apply(0, [TagRow("u1", None, 5, seq=3)]) == 1
    assert redis.apply(0, [TagRow("u1", None, 4, seq=2)]) == 0  # older: dropped
    assert redis.apply(0, [TagRow("u1", None, 5, seq=3)]) == 1  # the same again: harmless
    assert [t.order_count for t in redis.tags_of(["u1"])] == [5]


def test_a_write_for_another_tag_version_is_dropped(stores: Any) -> None:
    _, redis = stores
    assert redis.apply(7, [TagRow("u1", None, 5, seq=1)]) == -1
    assert redis.tags_of(["u1"]) == [None]


def test_redis_swap_keeps_the_old_tags_until_mysql_commits_and_can_go_back(stores: Any, redis_client: Any) -> None:
    ledger, redis = stores
    ingest([event("o1", "order", "u1")], ledger, redis, NOW)
    redis.add_staged([TagRow("u2", at(1), 3)])
    previous = redis.swap(TagVersion(9, NOW, 1, NOW))
    assert redis.serving() == (9, 1)
    assert redis.tags_of(["u1", "u2"])[0] is None
    redis.revert(previous)
    assert redis.serving() == (0, 1)
    assert [t.order_count if t else None for t in redis.tags_of(["u1", "u2"])] == [1, None]


def test_rule_crossings_are_logged_with_the_batch_once_and_pruned_by_age(stores: Any, mysql_conn: Any) -> None:
    from funnel.core.proxy_rule import parse_rule
    from funnel.core.states import ChangeType

    ledger, redis = stores
    rules = {"two": parse_rule("two", '{"tag": "order_count", "op": ">=", "value": 2}', 30)}
    batch = [event("o1", "order", "u1", 50), event("o2", "order", "u1", 40), event("o3", "order", "u2", 30)]
    outcome, _ = ingest(batch, ledger, redis, NOW, rules)
    assert [(c.user_id, c.change, c.event_id, c.at) for c in outcome.proxy_changes] == [
        ("u1", ChangeType.ENTERED, "o2", at(40))
    ]
    again, _ = ingest(batch, ledger, redis, NOW, rules)  # a retry: duplicates change nothing, log nothing
    assert again.proxy_changes == ()
    ingest([event("c1", "order_cancelled", "u1", 10)], ledger, redis, NOW, rules)
    logged = f"SELECT user_id, change_type, event_id FROM {layout.PROXY_CHANGES_TABLE} ORDER BY at"
    cur = mysql_conn.cursor()
    cur.execute(logged)
    assert cur.fetchall() == (("u1", "entered", "o2"), ("u1", "exited", "c1"))
    mysql_conn.commit()
    assert ledger.proxy_changes.prune(older_than=at(20)) == 1  # the entered, 40 minutes old
    cur.execute(logged)
    assert cur.fetchall() == (("u1", "exited", "c1"),)
    mysql_conn.commit()


AWKWARD_ROWS = [
    TagRow("c\\d", at(5), 3),
    TagRow("\\N", None, 0),
    TagRow('q"uote', at(90), 1),
    TagRow("in ner", at(1), 2),
    TagRow("c\\d", None, 4),  # the same user again: the last row wins
]


@pytest.mark.parametrize("bulk", [False, True], ids=["inserts", "load_data"])
def test_both_load_paths_stage_the_same_tags(mysql_conn: Any, bulk_conn: Any, bulk: bool) -> None:
    store = MySqlTagStore(bulk_conn if bulk else mysql_conn, bulk_load=bulk)
    version = store.begin_version(RunInfo("funnel_user_tags", "r", NOW), NOW, NOW)
    store.add_rows(version, AWKWARD_ROWS[:2])
    store.add_rows(version, AWKWARD_ROWS[2:])
    assert store.bulk_load is bulk
    assert store.count(version) == 4
    assert store.tags_of(["c\\d", "\\N", 'q"uote', "in ner"], version) == {
        "c\\d": TagRow("c\\d", None, 4),
        "\\N": TagRow("\\N", None, 0),
        'q"uote': TagRow('q"uote', at(90), 1),
        "in ner": TagRow("in ner", at(1), 2),
    }


def test_a_server_that_refuses_load_data_stages_tags_with_inserts(bulk_conn: Any, caplog: Any) -> None:
    cur = bulk_conn.cursor()
    cur.execute("SELECT @@GLOBAL.local_infile")
    (before,) = cur.fetchone()
    cur.execute("SET GLOBAL local_infile = 0")  # the server now refuses LOAD DATA LOCAL
    try:
        store = MySqlTagStore(bulk_conn, bulk_load=True)
        version = store.begin_version(RunInfo("funnel_user_tags", "r", NOW), NOW, NOW)
        store.add_rows(version, AWKWARD_ROWS[:2])
    finally:
        cur.execute(f"SET GLOBAL local_infile = {int(before)}")
    assert store.bulk_load is False
    assert "refused LOAD DATA LOCAL INFILE" in caplog.text
    assert store.count(version) == 2
