"""The change feed against a real Redis (single and cluster): entries, the closing entry and its
marker, the length bound, and a consumer group that resumes across a restart missing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import feed_entries, feed_versions

from funnel import wiring
from funnel.core.states import FeedChange
from funnel.storage import layout
from funnel.storage.redis.change_feed import SegmentFeed

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


@pytest.fixture
def feed(redis_client: Any) -> SegmentFeed:
    return SegmentFeed(redis_client, max_len=1000, batch_ids=2)


def changes(entered: list[str], exited: list[str]) -> Any:
    def batches(change: FeedChange) -> Iterator[list[str]]:
        ids = entered if change is FeedChange.ENTERED else exited
        for start in range(0, len(ids), 3):  # MySQL's batches need not match the feed's
            yield ids[start : start + 3]

    return batches


def test_a_version_is_published_in_batches_then_closed(feed: SegmentFeed, redis_client: Any) -> None:
    redis_client.hset(layout.meta_key("s"), mapping={"version": 4, "size": 3})
    assert feed.publish_version("s", 4, changes(["1", "2", "a,b c"], ["9"])) == (3, 1)
    assert feed_entries(redis_client, "s") == [
        {"version": "4", "change": "entered", "batch": "0", "ids": "1\n2"},
        {"version": "4", "change": "entered", "batch": "1", "ids": "a,b c"},  # commas and spaces are id characters
        {"version": "4", "change": "exited", "batch": "0", "ids": "9"},
        {"version": "4", "change": "end", "entered": "3", "exited": "1"},
    ]
    assert feed.published_version("s") == 4


def test_the_marker_is_set_only_while_meta_describes_that_version(feed: SegmentFeed, redis_client: Any) -> None:
    redis_client.hset(layout.meta_key("s"), mapping={"version": 5, "size": 0})
    feed.publish_version("s", 4, changes([], []))
    assert feed.published_version("s") is None
    assert feed_entries(redis_client, "s") == [{"version": "4", "change": "end", "entered": "0", "exited": "0"}]


def test_publish_marks_entries_with_the_version_or_the_event(feed: SegmentFeed, redis_client: Any) -> None:
    assert feed.publish("s", FeedChange.ENTERED, iter(["7"]), event="o-981") == 1
    assert feed.publish("s", FeedChange.EXITED, ["1", "2", "3"], version=2, first_batch=5) == 2
    assert feed_entries(redis_client, "s") == [
        {"event": "o-981", "change": "entered", "batch": "0", "ids": "7"},
        {"version": "2", "change": "exited", "batch": "5", "ids": "1\n2"},
        {"version": "2", "change": "exited", "batch": "6", "ids": "3"},
    ]
    with pytest.raises(ValueError, match="either the version or the event"):
        feed.publish("s", FeedChange.ENTERED, ["1"])


def test_the_stream_stays_near_its_max_len(redis_client: Any) -> None:
    feed = SegmentFeed(redis_client, max_len=100, batch_ids=1)
    feed.publish("s", FeedChange.ENTERED, [str(i) for i in range(2000)], version=1)
    length = redis_client.xlen(layout.feed_key("s"))
    assert 100 <= length < 300  # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default)
    last = feed_entries(redis_client, "s")[-1]
    assert last["ids"] == "1999"  # the newest are kept, the oldest trimmed


def test_a_consumer_group_resumes_across_a_restart_missing_nothing(feed: SegmentFeed, redis_client: Any) -> None:
    key = layout.feed_key("s")
    redis_client.xgroup_create(key, "mailer", id="0", mkstream=True)
    redis_client.hset(layout.meta_key("s"), mapping={"version": 1, "size": 5})
    feed.publish_version("s", 1, changes(["1", "2", "3", "4", "5"], []))  # 3 entries + end

    first = wiring.redis_client()  # a consumer process: reads 2, handles (acks) 1, then dies
    (_, entries), *_ = _streams(first.xreadgroup("mailer", "worker-1", {key: ">"}, count=2))
    handled = [_fields(entries[0][1])]
    first.xack(key, "mailer", entries[0][0])
    first.close()

    redis_client.hset(layout.meta_key("s"), mapping={"version": 2, "size": 4})
    feed.publish_version("s", 2, changes(["6"], ["1", "2"]))  # published while no consumer runs

    second = wiring.redis_client()  # restarted with the same group and consumer name
    pending = second.xpending(key, "mailer")
    assert pending["pending"] == 1
    (_, again), *_ = _streams(second.xreadgroup("mailer", "worker-1", {key: "0"}))  # its own pending first
    assert [_fields(f)["batch"] for _, f in again] == ["1"]
    (_, rest), *_ = _streams(second.xreadgroup("mailer", "worker-1", {key: ">"}))
    for entry_id, fields in [*again, *rest]:
        handled.append(_fields(fields))
        second.xack(key, "mailer", entry_id)
    assert second.xpending(key, "mailer")["pending"] == 0
    second.close()

    assert handled == [_fields(f) for f in _all_fields(redis_client, key)]  # every entry, in order, once here
    got: dict[tuple[str, str], set[str]] = {}
    for fields in handled:
        if fields["change"] != "end":
            got.setdefault((fields["version"], fields["change"]), set()).update(fields["ids"].split("\n"))
    assert got == {("1", "entered"): {"1", "2", "3", "4", "5"}, ("2", "entered"): {"6"}, ("2", "exited"): {"1", "2"}}
    assert [v["ends"] for v in feed_versions(redis_client, "s").values()] == [[(5, 0)], [(1, 2)]]


def _streams(reply: Any) -> list[Any]:
    """XREADGROUP's reply as a list of [stream, entries] (RESP2 list or RESP3 map)."""
    return list(reply.items()) if isinstance(reply, dict) else list(reply)


def _fields(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in fields.items()}


def _all_fields(client: Any, key: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(key)]
