"""The Redis store against a real Redis: the staged set swaps in atomically, forward only."""

from __future__ import annotations

from typing import Any

from helpers import redis_live_members

from funnel import layout
from funnel.stores.redis_store import RedisSegmentStore


def test_promote_replaces_members_and_meta(redis_client: Any) -> None:
    store = RedisSegmentStore(redis_client, staging_ttl_seconds=60)
    redis_client.sadd(layout.members_key("s"), "old", "kept")
    store.add_members("s", ["kept", "new"])
    assert redis_live_members(redis_client, "s") == {"old", "kept"}
    assert store.promote("s", logical_ts_us=100, version=2, meta={"size": 2, "run_id": "r"})
    assert redis_live_members(redis_client, "s") == {"kept", "new"}
    assert store.live_meta("s") == {"size": "2", "run_id": "r", "logical_ts_us": "100", "version": "2"}
    assert not redis_client.exists(layout.staging_key("s"))
    assert redis_client.ttl(layout.members_key("s")) == -1


def test_staging_key_expires_when_abandoned(redis_client: Any) -> None:
    store = RedisSegmentStore(redis_client, staging_ttl_seconds=60)
    store.add_members("s", ["1"])
    assert 0 < redis_client.ttl(layout.staging_key("s")) <= 60


def test_promote_refuses_an_earlier_logical_date(redis_client: Any) -> None:
    store = RedisSegmentStore(redis_client, staging_ttl_seconds=60)
    store.add_members("s", ["late"])
    store.promote("s", logical_ts_us=200, version=1, meta={"size": 1})
    store.add_members("s", ["backfill"])
    assert not store.promote("s", logical_ts_us=100, version=2, meta={"size": 1})
    assert redis_live_members(redis_client, "s") == {"late"}
    assert store.live_version("s") == 1
    assert not redis_client.exists(layout.staging_key("s"))


def test_promote_of_empty_result_empties_the_set(redis_client: Any) -> None:
    store = RedisSegmentStore(redis_client, staging_ttl_seconds=60)
    redis_client.sadd(layout.members_key("s"), "gone")
    assert store.promote("s", logical_ts_us=1, version=1, meta={"size": 0})
    assert redis_live_members(redis_client, "s") == set()
    assert store.live_meta("s")["size"] == "0"
