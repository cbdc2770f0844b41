"""Loading the tag baseline: swapped like a segment, and no event lost to a reload."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from funnel import wiring
from funnel.core.errors import RefreshRejected, RefreshSuperseded, TagRowError
from funnel.core.run_info import RunInfo
from funnel.core.user_events import Event, EventType
from funnel.services.event_ingest import ingest
from funnel.services.restore import restore_tags
from funnel.services.tag_load import TagLoader
from funnel.storage import layout
from funnel.storage.mysql.event_ledger import EventLedger
from funnel.storage.redis.segment_lock import SegmentLock

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

AS_OF = dt.datetime(2026, 11, 29, 6, tzinfo=dt.UTC)
NOW = AS_OF + dt.timedelta(hours=3)


def run(day: int = 29) -> RunInfo:
    return RunInfo("funnel_user_tags", f"scheduled__{day}", dt.datetime(2026, 11, day, 6, tzinfo=dt.UTC))


def rows(*items: tuple[Any, Any, Any]) -> Callable[[], Iterator[list[tuple[Any, Any, Any]]]]:
    return lambda: iter([list(items)])


@pytest.fixture
def loader(mysql_conn: Any, redis_client: Any) -> Iterator[TagLoader]:
    with wiring.tag_loader(redis_client=redis_client, batch_size=2) as tag_loader:
        yield tag_loader


def lock(client: Any) -> SegmentLock:
    return SegmentLock(client, layout.TAGS_ID, {"run_id": "test"}, ttl_seconds=30, wait_seconds=1)


def tags(loader: TagLoader, *user_ids: str) -> tuple[list[Any], list[Any]]:
    in_mysql = loader.mysql.tags_of(list(user_ids))
    mysql = [(in_mysql[u].first_seen, in_mysql[u].order_count) if u in in_mysql else None for u in user_ids]
    redis = [(t.first_seen, t.order_count) if t else None for t in loader.redis.tags_of(list(user_ids))]
    return mysql, redis


def ledger(loader: TagLoader) -> EventLedger:
    """The events ledger on the loader's MySQL connection (as the API records events)."""
    return wiring.event_ledger(loader.mysql.conn)


def order(event_id: str, user_id: str, at: dt.datetime) -> Event:
    return Event(event_id, EventType.ORDER, user_id, at)


def test_a_load_swaps_the_baseline_into_both_stores(loader: TagLoader, redis_client: Any) -> None:
    result = loader.load(
        run(),
        AS_OF,
        rows((1, "2026-11-01 10:00:00", 3), ("u2", None, None), (3, "2025-01-01", "7")),
        lock(redis_client),
    )
    assert (result.version, result.size, result.replayed) == (1, 3, 0)
    expected = [
        (dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC), 3),
        (None, 0),
        (dt.datetime(2025, 1, 1, tzinfo=dt.UTC), 7),
    ]
    assert tags(loader, "1", "u2", "3") == (expected, expected)
    assert loader.redis.serving() == (1, 3)
    assert loader.mysql.live().as_of == AS_OF


def test_a_fractional_user_id_fails_the_load_and_swaps_nothing(loader: TagLoader, redis_client: Any) -> None:
    loader.load(run(28), AS_OF - dt.timedelta(days=1), rows((1, None, 2)), lock(redis_client))
    with pytest.raises(TagRowError, match="a fraction") as caught:
        loader.load(run(), AS_OF, rows((1, None, 3), (1.5, None, 1)), lock(redis_client))
    assert "1.5" in str(caught.value)
    assert (loader.mysql.live().version, loader.redis.serving()) == (1, (1, 1))
    assert tags(loader, "1", "1.5") == ([(None, 2), None], [(None, 2), None])


def test_an_integral_float_user_id_is_stored_as_its_integer(loader: TagLoader, redis_client: Any) -> None:
    loader.load(run(), AS_OF, rows((7.0, "2026-11-01 10:00:00", 2)), lock(redis_client))
    expected = [(dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC), 2), None]
    assert tags(loader, "7", "7.0") == (expected, expected)


def test_an_order_posted_while_a_load_runs_is_counted_after_the_swap(loader: TagLoader, redis_client: Any) -> None:
    with wiring.tag_loader(redis_client=redis_client) as other:  # another process: the API
        loader.load(run(28), AS_OF - dt.timedelta(days=1), rows(("u1", None, 2)), lock(redis_client))

        def baseline() -> Iterator[list[tuple[Any, Any, Any]]]:
            yield [("u1", None, 2)]  # the warehouse as of AS_OF: two orders
            # Mid-load, the user orders again (after AS_OF): applied to the live version now...
            outcome, _ = ingest([order("late-1", "u1", AS_OF + dt.timedelta(hours=1))], ledger(other), other.redis, NOW)
            assert outcome.accepted == 1
            assert tags(other, "u1")[1] == [(None, 3)]
            yield [("u2", None, 1)]

        result = loader.load(run(), AS_OF, baseline, lock(redis_client))
    # ...and replayed on the new baseline when it swaps in: still counted, once.
    assert result.replayed == 1
    assert tags(loader, "u1", "u2") == ([(None, 3), (None, 1)], [(None, 3), (None, 1)])


def test_events_before_as_of_are_left_to_the_warehouse_and_later_ones_replayed(
    loader: TagLoader, redis_client: Any
) -> None:
    ingest(
        [order("before", "u1", AS_OF - dt.timedelta(hours=1)), order("after", "u1", AS_OF + dt.timedelta(hours=1))],
        ledger(loader),
        loader.redis,
        NOW,
    )
    loader.load(run(), AS_OF, rows(("u1", None, 5)), lock(redis_client))  # the warehouse has "before"
    assert tags(loader, "u1") == ([(None, 6)], [(None, 6)])
    cur = loader.mysql.conn.cursor()
    cur.execute(f"SELECT event_id FROM {layout.EVENTS_TABLE}")
    assert cur.fetchall() == (("after",),)  # pruned: no load will replay "before" again
    loader.mysql.conn.commit()


def test_an_older_load_never_replaces_a_newer_one(loader: TagLoader, redis_client: Any) -> None:
    loader.load(run(), AS_OF, rows(("u1", None, 5)), lock(redis_client))
    with pytest.raises(RefreshSuperseded, match="live data only moves forward"):
        loader.load(run(28), AS_OF - dt.timedelta(days=1), rows(("u1", None, 1)), lock(redis_client))
    assert tags(loader, "u1") == ([(None, 5)], [(None, 5)])


def test_the_guards_refuse_an_empty_or_shrunk_baseline(loader: TagLoader, redis_client: Any) -> None:
    loader.load(run(28), AS_OF - dt.timedelta(days=1), rows(*[(i, None, 1) for i in range(10)]), lock(redis_client))
    with pytest.raises(RefreshRejected, match="user tags: the query returned no users"):
        loader.load(run(), AS_OF, rows(), lock(redis_client))
    with pytest.raises(RefreshRejected, match="user tags: the new result has 2 users against 10 live"):
        loader.load(run(), AS_OF, rows((1, None, 1), (2, None, 1)), lock(redis_client))
    assert loader.redis.serving() == (1, 10)


class CommitFailsAfterRedisSwap:
    """The tag store's MySQL connection, whose commit fails once Redis serves ``version``."""

    def __init__(self, conn: Any, redis: Any, version: int) -> None:
        self._conn, self._redis, self._version = conn, redis, version
        self.failed = 0

    def commit(self) -> None:
        if self._redis.serving()[0] == self._version:
            self.failed += 1
            raise RuntimeError("MySQL went away at commit")
        self._conn.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_mysql_failure_after_the_redis_swap_puts_redis_back(loader: TagLoader, redis_client: Any) -> None:
    loader.load(run(28), AS_OF - dt.timedelta(days=1), rows(("u1", None, 1)), lock(redis_client))
    real = loader.mysql.conn
    loader.mysql.conn = flaky = CommitFailsAfterRedisSwap(real, loader.redis, version=2)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            loader.load(run(), AS_OF, rows(("u1", None, 9)), lock(redis_client))
    finally:
        loader.mysql.conn = real
    assert flaky.failed == 1
    assert loader.redis.serving() == (1, 1)
    assert tags(loader, "u1") == ([(None, 1)], [(None, 1)])
    assert loader.mysql.live().version == 1


def test_redis_lost_its_tags_and_gets_them_back_with_the_events(loader: TagLoader, redis_client: Any) -> None:
    loader.load(run(), AS_OF, rows(("u1", None, 1), ("u2", "2026-11-20", 0)), lock(redis_client))
    ingest([order("o", "u2", NOW - dt.timedelta(minutes=5))], ledger(loader), loader.redis, NOW)
    redis_client.flushdb()
    with lock(redis_client) as held:
        assert restore_tags(loader.mysql, ledger(loader), loader.redis, 1, held)
        assert not restore_tags(loader.mysql, ledger(loader), loader.redis, 1, held)
    assert tags(loader, "u1", "u2")[1] == [(None, 1), (dt.datetime(2026, 11, 20, tzinfo=dt.UTC), 1)]
