"""Proxy changes in the segments' change feeds: every rule crossing an event batch records is
published to ``funnel:{<id>}:feed`` (marked by its event), at least once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel import wiring
from funnel.services.event_ingest import publish_proxy_changes
from funnel.storage import layout
from funnel.storage.redis.change_feed import SegmentFeed

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

LOYAL = '{"tag": "order_count", "op": ">=", "value": 2}'


def entries(redis_client: Any, segment_id: str) -> list[tuple[str, str, str]]:
    found = []
    for _, fields in redis_client.xrange(layout.feed_key(segment_id)):
        text = {k.decode(): v.decode() for k, v in fields.items()}
        found.append((text["event"], text["change"], text["ids"]))
    return found


def test_an_event_batch_publishes_its_crossings_to_the_segments_feed(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
    redis_client: Any,
) -> None:
    add_segment("loyal", rule=LOYAL)
    assert post_events(event("o-1", "u1", minutes_ago=30), event("o-2", "u2", minutes_ago=25)).status_code == 200
    assert entries(redis_client, "loyal") == []  # one order each: nobody crossed
    assert post_events(event("o-3", "u1", minutes_ago=20)).status_code == 200
    assert post_events(event("c-1", "u1", minutes_ago=10, kind="order_cancelled")).status_code == 200
    assert entries(redis_client, "loyal") == [("o-3", "entered", "u1"), ("c-1", "exited", "u1")]


def test_a_crossing_the_feed_missed_is_published_by_the_next_sweep(
    mysql_conn: Any,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
    redis_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_segment("loyal", rule=LOYAL)

    def down(*args: Any, **kwargs: Any) -> int:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(SegmentFeed, "publish", down)
    assert post_events(event("o-1", "u9", minutes_ago=30), event("o-2", "u9", minutes_ago=20)).status_code == 200
    monkeypatch.undo()
    assert entries(redis_client, "loyal") == []  # recorded in MySQL, not in the stream yet
    changes = wiring.proxy_change_log(mysql_conn)
    assert [change.event_id for _, change in changes.unpublished(10)] == ["o-2"]
    assert publish_proxy_changes(changes, wiring.segment_feed(redis_client)) == 1
    assert entries(redis_client, "loyal") == [("o-2", "entered", "u9")]
    assert changes.unpublished(10) == []
    assert publish_proxy_changes(changes, wiring.segment_feed(redis_client)) == 0  # each once
