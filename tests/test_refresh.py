"""A refresh against real Redis and MySQL: exact sets, nothing half-done, forward only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import mysql_live_members, redis_live_members

from funnel import layout
from funnel.refresh import UserIdError, normalize_user_ids, refresh_segment, sync_redis_from_mysql
from funnel.stores.mysql_store import MySqlSegmentStore
from funnel.stores.redis_store import RedisSegmentStore
from funnel.stores.run_info import RunInfo


def run_at(day: int) -> RunInfo:
    return RunInfo("funnel_dynamic_segments", f"scheduled__{day}", dt.datetime(2026, 11, day, 9, tzinfo=dt.UTC))


@pytest.fixture
def stores(mysql_conn: Any, redis_client: Any) -> tuple[MySqlSegmentStore, RedisSegmentStore]:
    return MySqlSegmentStore(mysql_conn), RedisSegmentStore(redis_client, staging_ttl_seconds=600)


def batches_of(ids: list[Any], size: int = 3) -> Iterator[list[Any]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def live(stores: tuple[MySqlSegmentStore, RedisSegmentStore], segment_id: str) -> tuple[set[str], set[str]]:
    mysql, redis = stores
    return mysql_live_members(mysql.conn, segment_id), redis_live_members(redis.client, segment_id)


def test_refresh_replaces_members_in_both_stores(stores: Any) -> None:
    mysql, redis = stores
    first = refresh_segment("s", batches_of([1, 2, 3, 4, 4]), mysql, redis, run_at(20), batch_size=3)
    assert (first.version, first.size, first.promoted) == (1, 4, True)
    assert live(stores, "s") == ({"1", "2", "3", "4"}, {"1", "2", "3", "4"})
    second = refresh_segment("s", batches_of([3, 4, 5]), mysql, redis, run_at(21), batch_size=3)
    assert (second.version, second.size) == (2, 3)
    assert live(stores, "s") == ({"3", "4", "5"}, {"3", "4", "5"})
    meta = redis.live_meta("s")
    assert meta["size"] == "3"
    assert meta["version"] == "2"
    assert meta["run_id"] == "scheduled__21"
    assert dt.datetime.fromisoformat(meta["refreshed_at"]).tzinfo is not None


def test_failure_mid_stream_leaves_live_data_and_retry_equals_clean_run(stores: Any) -> None:
    mysql, redis = stores
    refresh_segment("s", batches_of([1, 2]), mysql, redis, run_at(20), batch_size=3)

    def broken() -> Iterator[list[int]]:
        yield [7, 8, 9]
        raise ConnectionError("Hive went away")

    with pytest.raises(ConnectionError):
        refresh_segment("s", broken(), mysql, redis, run_at(21), batch_size=3)
    assert live(stores, "s") == ({"1", "2"}, {"1", "2"})

    retry = refresh_segment("s", batches_of([7, 8, 9, 10]), mysql, redis, run_at(21), batch_size=3)
    assert live(stores, "s") == ({"7", "8", "9", "10"}, {"7", "8", "9", "10"})
    cur = mysql.conn.cursor()
    cur.execute(f"SELECT version, state FROM {layout.VERSIONS_TABLE} WHERE segment_id = 's' ORDER BY version")
    assert cur.fetchall() == ((1, "retired"), (retry.version, "live"))
    assert not redis.client.exists(layout.staging_key("s"))


def test_backfill_never_rolls_back_a_later_version(stores: Any) -> None:
    mysql, redis = stores
    refresh_segment("s", batches_of([1]), mysql, redis, run_at(25), batch_size=3)
    late = refresh_segment("s", batches_of([2]), mysql, redis, run_at(18), batch_size=3)
    assert not late.promoted
    assert late.live_version == 1
    assert live(stores, "s") == ({"1"}, {"1"})


def test_redis_behind_mysql_is_rebuilt_from_mysql(stores: Any) -> None:
    mysql, redis = stores
    refresh_segment("s", batches_of(list(range(10))), mysql, redis, run_at(20), batch_size=3)
    redis.client.delete(layout.members_key("s"), layout.meta_key("s"))  # as if Redis lost it
    assert sync_redis_from_mysql("s", mysql, redis, batch_size=4)
    assert redis_live_members(redis.client, "s") == {str(i) for i in range(10)}
    assert not sync_redis_from_mysql("s", mysql, redis, batch_size=4)


def test_null_ids_are_skipped_and_counted(stores: Any) -> None:
    mysql, redis = stores
    result = refresh_segment("s", batches_of([1, None, "", 2.0]), mysql, redis, run_at(20), batch_size=3)
    assert (result.size, result.null_ids, result.rows_read) == (2, 2, 4)
    assert live(stores, "s") == ({"1", "2"}, {"1", "2"})


def test_unusable_user_id_names_segment_and_fix() -> None:
    with pytest.raises(UserIdError, match=r"segment 'seg'.*Fix: make the query's first column the user id"):
        normalize_user_ids("seg", ["x" * 65])
    with pytest.raises(UserIdError, match="a fraction"):
        normalize_user_ids("seg", [1.5])
