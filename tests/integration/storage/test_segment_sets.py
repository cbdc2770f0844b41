"""The Redis store against a real Redis: the staged set swaps in atomically, forward only,
and only for the lock's holder with exactly the ids MySQL counted."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import SEGMENT_LOCK, redis_live_members

from funnel.core.errors import LockLost, StoreError
from funnel.storage import layout
from funnel.storage.redis.segment_sets import RedisSegmentStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

LOCK = SEGMENT_LOCK


@pytest.fixture
def store(segment_store: RedisSegmentStore) -> RedisSegmentStore:
    return segment_store


def promote(store: RedisSegmentStore, ts: int, version: int, size: int, lock: str = LOCK, **meta: Any) -> bool:
    return store.promote("s", ts, version, {"size": size, **meta}, lock, (size, None, None))


def test_promote_replaces_members_and_meta(store: RedisSegmentStore, redis_client: Any) -> None:
    redis_client.sadd(layout.members_key("s"), "old", "kept")
    store.add_members("s", ["kept", "new"])
    assert redis_live_members(redis_client, "s") == {"old", "kept"}
    assert promote(store, 100, 2, 2, run_id="r")
    assert redis_live_members(redis_client, "s") == {"kept", "new"}
    assert store.live_meta("s") == {
        "size": "2",
        "run_id": "r",
        "logical_ts_us": "100",
        "version": "2",
        "indexed": "2",  # the user index holds it in full, under number 1
        "index_number": "1",
    }
    assert not redis_client.exists(layout.staging_key("s"))
    assert redis_client.ttl(layout.members_key("s")) == -1
    assert store.serving("s") == (2, 2)


def test_staging_key_expires_when_abandoned(store: RedisSegmentStore, redis_client: Any) -> None:
    store.add_members("s", ["1"])
    assert 0 < redis_client.ttl(layout.staging_key("s")) <= 60


def test_promote_refuses_an_earlier_logical_date(store: RedisSegmentStore, redis_client: Any) -> None:
    store.add_members("s", ["late"])
    promote(store, 200, 1, 1)
    store.add_members("s", ["backfill"])
    assert not promote(store, 100, 2, 1)
    assert redis_live_members(redis_client, "s") == {"late"}
    assert store.live_version("s") == 1
    assert not redis_client.exists(layout.staging_key("s"))


def test_promote_of_empty_result_empties_the_set(store: RedisSegmentStore, redis_client: Any) -> None:
    redis_client.sadd(layout.members_key("s"), "gone")
    assert promote(store, 1, 1, 0)
    assert redis_live_members(redis_client, "s") == set()
    assert store.live_meta("s")["size"] == "0"


def test_only_the_lock_holder_can_swap(store: RedisSegmentStore, redis_client: Any) -> None:
    redis_client.sadd(layout.members_key("s"), "live")
    store.add_members("s", ["zombie"])
    with pytest.raises(LockLost, match="lock was lost before the Redis swap"):
        promote(store, 100, 2, 1, lock="an earlier try's token")
    assert redis_live_members(redis_client, "s") == {"live"}


def test_a_staged_set_with_extra_ids_is_never_swapped(store: RedisSegmentStore, redis_client: Any) -> None:
    # Another writer (an earlier try still running) added ids MySQL did not count.
    redis_client.sadd(layout.members_key("s"), "live")
    store.add_members("s", ["1", "2", "stray"])
    with pytest.raises(StoreError, match="does not hold the 2 ids MySQL staged"):
        promote(store, 100, 2, 2)
    assert redis_live_members(redis_client, "s") == {"live"}


def test_exit_walk_finds_every_exit_across_many_steps_and_stages_them(
    store: RedisSegmentStore, redis_client: Any
) -> None:
    live = [f"u{i}" for i in range(5_000)] + ["tab\tid", "quote'\"", "ünï", "x" * 64]
    staged = [user for i, user in enumerate(live) if i % 7]
    redis_client.sadd(layout.members_key("s"), *live)
    store.add_members("s", staged)
    found = [user for step in store.staged_exited("s", 100) for user in step]
    expected = set(live) - set(staged)
    assert len(found) == len(expected)
    assert set(found) == expected
    assert {m.decode() for m in redis_client.smembers(layout.staging_exited_key("s"))} == expected
    assert 0 < redis_client.ttl(layout.staging_exited_key("s")) <= 60


def test_exit_walk_stops_once_the_counted_exits_are_found(store: RedisSegmentStore, redis_client: Any) -> None:
    redis_client.sadd(layout.members_key("s"), *[str(i) for i in range(5_000)])
    store.add_members("s", [str(i) for i in range(0, 5_000, 2)])  # 2,500 exited
    steps = list(store.staged_exited("s", 10, expected=1))
    assert len(steps) == 1
    assert 1 <= len(steps[0]) <= 30
    assert sum(len(step) for step in store.staged_exited("s", 10)) == 2_500
