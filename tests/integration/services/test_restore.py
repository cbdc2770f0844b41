"""Restoring a segment into Redis also publishes a live version its change feed lacks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from helpers import feed_versions, insert_segments, redis_live_members

from funnel import wiring
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.services.refresh import RefreshRequest
from funnel.services.restore import restore_into_redis
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


def refresh(redis_client: Any, run_day: int, ids: list[str], fail_publish: bool = False) -> None:
    run = RunInfo("d", f"r{run_day}", dt.datetime(2030, 1, run_day, 9, tzinfo=dt.UTC))
    with wiring.refresher(redis_client=redis_client) as refresher:
        if fail_publish:
            refresher.feed.publish_version = _boom  # type: ignore[method-assign,union-attr]
        lock = wiring.segment_lock(redis_client, "s", {"run_id": run.run_id})
        refresher.refresh(RefreshRequest("s", Kind.DYNAMIC, run), lambda: iter([ids]), lock)


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionError("injected: the process died between the swap and the publish")


def test_restore_publishes_a_live_version_the_feed_lacks(mysql_conn: Any, redis_client: Any) -> None:
    insert_segments(mysql_conn, {"segment_id": "s", "name": "S", "kind": "dynamic", "query": "SELECT 1"})
    refresh(redis_client, 1, ["1", "2", "3"])
    refresh(redis_client, 2, ["2", "3", "4"], fail_publish=True)
    assert set(feed_versions(redis_client, "s")) == {1}
    assert restore_into_redis("s", wiring, wait_seconds=0, by="test") is False  # Redis serves v2 in full: only the feed
    assert feed_versions(redis_client, "s")[2] == {"entered": {"4"}, "exited": {"1"}, "ends": [(1, 1)]}
    assert redis_client.hget(layout.meta_key("s"), "feed_version") == b"2"


def test_restore_after_redis_lost_everything_publishes_the_live_version_again(
    mysql_conn: Any, redis_client: Any
) -> None:
    insert_segments(mysql_conn, {"segment_id": "s", "name": "S", "kind": "dynamic", "query": "SELECT 1"})
    refresh(redis_client, 1, ["1", "2", "3"])
    refresh(redis_client, 2, ["2", "3", "4"])
    for key in (layout.members_key("s"), layout.meta_key("s"), layout.feed_key("s")):
        redis_client.delete(key)
    assert restore_into_redis("s", wiring, wait_seconds=0, by="test") is True
    assert redis_live_members(redis_client, "s") == {"2", "3", "4"}
    assert feed_versions(redis_client, "s") == {2: {"entered": {"4"}, "exited": {"1"}, "ends": [(1, 1)]}}
