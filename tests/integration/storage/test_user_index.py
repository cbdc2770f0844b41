"""The user index against a real Redis: every swap brings it level, by the change log when it held
the version before in full, else whole under a new number; a writer that lost its lock or its
change sets never marks a version; a purge drops the segment's number."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import SEGMENT_LOCK

from funnel.storage import layout
from funnel.storage.layout import MetaField
from funnel.storage.redis.segment_sets import RedisSegmentStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

LOCK = SEGMENT_LOCK


@pytest.fixture
def store(segment_store: RedisSegmentStore) -> RedisSegmentStore:
    return segment_store


def swap(store: RedisSegmentStore, version: int, members: list[str], logged: bool = True) -> None:
    """A refresh of ``s`` to ``members``, its entered and exited staged as a refresh stages them."""
    entered = store.stage_diff("s", members, against_live=version > 1)
    exited = [user for batch in store.staged_exited("s", 100) for user in batch] if version > 1 else []
    counts = (len(members), len(entered) if logged and version > 1 else None, len(exited))
    meta = {MetaField.SIZE: len(members), MetaField.REFRESHED_AT: f"2030-01-0{version}T09:00:00+00:00"}
    assert store.promote("s", version, version, meta, LOCK, counts)


def users_in(redis_client: Any, number: bytes, users: list[str]) -> set[str]:
    assert users
    return {u for u in users if redis_client.sismember(layout.user_segments_key(u), number)}


def number_of(redis_client: Any, segment_id: str) -> bytes:
    return redis_client.hget(layout.meta_key(segment_id), MetaField.INDEX_NUMBER)


def test_each_swap_follows_the_change_log_under_the_same_number(store: RedisSegmentStore, redis_client: Any) -> None:
    everyone = ["a", "b", "c", "d"]
    swap(store, 1, ["a", "b", "c"])
    first = number_of(redis_client, "s")
    assert users_in(redis_client, first, everyone) == {"a", "b", "c"}

    swap(store, 2, ["b", "c", "d"])

    assert number_of(redis_client, "s") == first
    assert users_in(redis_client, first, everyone) == {"b", "c", "d"}
    assert store.live_meta("s")[MetaField.INDEXED] == "2"
    assert not redis_client.exists(layout.user_segments_key("a"))  # its last segment gone: no key
    assert redis_client.object("encoding", layout.user_segments_key("b")) == b"intset"
    snapshot = store.user_index.snapshot(["s"])
    assert (snapshot.segments["s"].number, snapshot.segments["s"].version) == (first, 2)
    assert not redis_client.smembers(layout.index_keys().updating)


def test_a_version_without_its_change_log_is_indexed_whole_under_a_new_number(
    store: RedisSegmentStore, redis_client: Any
) -> None:
    swap(store, 1, ["a", "b"])
    first = number_of(redis_client, "s")

    swap(store, 2, ["b", "c"], logged=False)  # a restore: no change log

    second = number_of(redis_client, "s")
    assert second != first
    assert users_in(redis_client, second, ["a", "b", "c"]) == {"b", "c"}
    assert store.user_index.snapshot(["s"]).segments["s"].number == second


def test_an_update_that_never_finished_is_rebuilt_whole_by_the_next_swap(
    store: RedisSegmentStore, redis_client: Any
) -> None:
    swap(store, 1, ["a", "b"])
    first = number_of(redis_client, "s")
    store.user_index.begin("s")  # died before its end: the segment stays "updating"
    redis_client.hdel(layout.meta_key("s"), MetaField.INDEXED)
    assert "s" not in store.user_index.snapshot(["s"]).segments

    swap(store, 2, ["b", "c"])

    assert number_of(redis_client, "s") != first
    assert users_in(redis_client, number_of(redis_client, "s"), ["a", "b", "c"]) == {"b", "c"}
    assert "s" in store.user_index.snapshot(["s"]).segments


def test_a_purged_segment_loses_its_number(store: RedisSegmentStore, redis_client: Any) -> None:
    swap(store, 1, ["a"])
    store.forget("s")
    assert number_of(redis_client, "s") is None
    assert store.user_index.snapshot(["s"]).segments == {}


def test_a_readers_next_snapshot_reads_only_the_segments_that_swapped(
    store: RedisSegmentStore, redis_client: Any
) -> None:
    swap(store, 1, ["a"])
    first = store.user_index.snapshot(["s"])
    redis_client.hset(layout.meta_key("s"), MetaField.REFRESHED_AT, "not read again")  # no swap: not looked at

    assert store.user_index.snapshot(["s"], first).segments == first.segments

    swap(store, 2, ["a", "b"])  # a swap: read again
    after = store.user_index.snapshot(["s"], first).segments["s"]
    assert (after.version, after.refreshed_at) == (2, "2030-01-02T09:00:00+00:00")
    assert store.user_index.snapshot([], first).segments == {}  # only the segments asked for


def test_a_writer_that_lost_its_lock_or_its_change_sets_never_marks_a_version(
    store: RedisSegmentStore, redis_client: Any
) -> None:
    swap(store, 1, ["a", "b"])
    number = number_of(redis_client, "s")
    redis_client.hdel(layout.meta_key("s"), MetaField.INDEXED)

    assert not store.user_index.follow("s", 1, "another-holder", None, None)  # a zombie after a takeover
    assert not store.user_index.follow("s", 1, LOCK, number, (5, 0))  # the change sets expired or changed
    assert MetaField.INDEXED not in store.live_meta("s")
    assert "s" not in store.user_index.snapshot(["s"]).segments
    assert store.user_index.follow("s", 1, LOCK, None, None)  # the writer that holds the lock: marked
    assert "s" in store.user_index.snapshot(["s"]).segments


def test_a_lower_gen_makes_the_next_snapshot_read_every_segment_again(
    store: RedisSegmentStore, redis_client: Any
) -> None:
    swap(store, 1, ["a"])
    swap(store, 2, ["a", "b"])
    first = store.user_index.snapshot(["s"])
    redis_client.hset(layout.meta_key("s"), MetaField.REFRESHED_AT, "read again")
    redis_client.hincrby(layout.index_keys().state, "gen", -1)  # a Redis rolled back to an older state

    assert store.user_index.snapshot(["s"], first).segments["s"].refreshed_at == "read again"


def test_a_writers_marker_is_its_own(store: RedisSegmentStore, redis_client: Any) -> None:
    swap(store, 1, ["a"])
    zombie = store.user_index.begin("s")  # lost the lock (or died) before its end
    current = store.user_index.begin("s")  # the lock's new holder: the zombie's marker goes
    assert redis_client.smembers(layout.index_keys().updating) == {current.marker.encode()}
    store.user_index.finish("s", zombie.marker)  # the zombie ends late: the current writer still counts

    assert "s" not in store.user_index.snapshot(["s"]).segments
    store.user_index.finish("s", current.marker)
    assert "s" in store.user_index.snapshot(["s"]).segments


def test_an_index_failure_fails_no_swap(
    store: RedisSegmentStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def redis_refused(*args: Any) -> bool:
        raise ConnectionError("Redis went away")  # the index writes fail after the swap

    monkeypatch.setattr(store.user_index, "follow", redis_refused)

    swap(store, 1, ["a"])  # swapped: the version is live

    assert store.serving("s") == (1, 1)
    assert "s" not in store.user_index.snapshot(["s"]).segments  # not marked: read from its own keys
    assert "the user index update for version 1 failed (Redis went away)" in caplog.text
