"""Redis first, MySQL behind: keys lost in Redis are answered from MySQL, then restored once.

The restore runs in the background; the tests poll with a deadline until answers come
from Redis again, and compare Redis with MySQL through the stores' own tables and keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import mysql_live_members, redis_live_members

from funnel.core.segment import Kind
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'
SEGMENT_KEYS = {
    "members": lambda s: [layout.members_key(s)],
    "members and meta": lambda s: [layout.members_key(s), layout.meta_key(s)],
    "every key": lambda s: [
        layout.members_key(s),
        layout.meta_key(s),
        layout.entered_key(s),
        layout.exited_key(s),
    ],
}


def source(response: Any) -> str:
    return str(response.headers["X-Funnel-Source"])


def rebuilds(caplog: pytest.LogCaptureFixture, what: str) -> int:
    return sum(1 for r in caplog.records if "rebuilding Redis" in r.getMessage() and what in r.getMessage())


@pytest.mark.parametrize("lost", list(SEGMENT_KEYS))
def test_a_segment_lost_in_redis_is_answered_from_mysql_then_restored_once(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    mysql_conn: Any,
    redis_client: Any,
    until: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    lost: str,
) -> None:
    caplog.set_level(logging.INFO)
    add_segment("s")
    refresh("s", ["1", "2", "3"])
    refresh("s", ["2", "3", "4"])
    assert source(api.get("/v1/segments/s/members/2")) == "redis"
    redis_client.delete(*SEGMENT_KEYS[lost]("s"))

    first = api.get("/v1/segments/s/members/4")
    burst = [api.get(f"/v1/segments/s/members/{u}") for u in ("1", "2", "3", "4", "5")]

    assert (first.status_code, source(first)) == (200, "mysql")
    assert {k: first.json()[k] for k in ("member", "version", "source")} == {
        "member": True,
        "version": 2,
        "source": "mysql",
    }
    assert [r.json()["member"] for r in burst] == [False, True, True, True, False]  # right, whatever the source
    assert {r.json()["version"] for r in burst} == {2}
    back = until(lambda: source(r := api.get("/v1/segments/s/members/4")) == "redis" and r, what="restore of 's'")
    assert back.json()["member"] is True
    assert redis_live_members(redis_client, "s") == mysql_live_members(mysql_conn, "s") == {"2", "3", "4"}
    checked = api.post("/v1/segments/s/members:check", json={"user_ids": ["1", "4"]})
    assert (checked.json()["members"], source(checked)) == ({"1": False, "4": True}, "redis")
    assert rebuilds(caplog, "segment s:") == 1


def test_the_segments_meta_is_right_while_its_keys_are_lost(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], redis_client: Any, until: Any
) -> None:
    add_segment("s")
    refresh("s", ["1", "2", "3"])
    refresh("s", ["2", "3", "4"])
    before = api.get("/v1/segments/s").json()
    redis_client.delete(*SEGMENT_KEYS["every key"]("s"))

    during = api.get("/v1/segments/s").json()

    assert {k: during[k] for k in ("size", "version", "entered", "exited")} == {
        "size": 3,
        "version": 2,
        "entered": 1,
        "exited": 1,
    }
    assert during["refreshed_at"][:19] == before["refreshed_at"][:19]
    until(lambda: redis_client.exists(layout.meta_key("s")), what="the meta restored")
    assert api.get("/v1/segments/s").json() == before


def test_lost_user_tags_are_answered_from_mysql_then_restored_once(
    api: TestClient,
    add_segment: Callable[..., None],
    redis_client: Any,
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
    until: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    add_segment("vips", rule=VIPS_RULE)
    post_events(event("o-1", "u1"), event("o-2", "u1"), event("o-3", "u2"))
    redis_client.flushdb()  # Redis restarted empty

    first = api.get("/v1/segments/vips/members/u1")
    burst = [api.get(f"/v1/segments/vips/members/{u}") for u in ("u1", "u2", "u3")]

    assert (first.json()["member"], first.json()["version"], source(first)) == (True, 0, "mysql")
    assert [r.json()["member"] for r in burst] == [True, False, False]
    back = until(lambda: source(r := api.get("/v1/segments/vips/members/u1")) == "redis" and r, what="tags restored")
    assert back.json()["member"] is True
    assert api.get("/v1/segments/vips/members/u2").json()["member"] is False
    assert redis_client.zscore(layout.tag_keys().order_count, "u1") == 2
    assert rebuilds(caplog, "user tags:") == 1


def test_a_users_segments_are_right_while_redis_is_empty_and_come_from_redis_after(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    redis_client: Any,
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
    until: Callable[..., Any],
) -> None:
    add_segment("buyers")
    add_segment("launch", "static")
    add_segment("vips", rule=VIPS_RULE)
    refresh("buyers", ["u1", "u2"])
    refresh("launch", ["u1"], Kind.STATIC)
    post_events(event("o-1", "u1"), event("o-2", "u1"))
    expected = api.get("/v1/users/u1/segments").json()
    assert (expected.pop("segments"), expected.pop("source")) == (["buyers", "launch", "vips"], "redis")
    assert {sid: v["version"] for sid, v in expected["versions"].items()} == {"buyers": 1, "launch": 1, "vips": 0}
    expected["segments"] = ["buyers", "launch", "vips"]
    redis_client.flushdb()

    during = api.get("/v1/users/u1/segments")

    assert during.json() == {**expected, "source": "mysql"}
    assert source(during) == "mysql"
    after = until(lambda: source(r := api.get("/v1/users/u1/segments")) == "redis" and r, what="everything restored")
    assert after.json() == {**expected, "source": "redis"}


def test_a_lost_tag_set_is_answered_from_mysql_not_as_no_orders(
    api: TestClient,
    add_segment: Callable[..., None],
    redis_client: Any,
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    post_events(event("o-1", "u1"), event("o-2", "u1"))
    assert api.get("/v1/segments/vips/members/u1").json()["member"] is True
    redis_client.delete(layout.tag_keys().order_count)  # the meta stays: it still names version 0

    assert api.get("/v1/segments/vips/members/u1").json()["member"] is True


def test_a_segment_not_computed_yet_does_not_send_every_users_request_to_mysql(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    add_segment("launch", "static")  # not computed yet
    refresh("buyers", ["u1"])
    answers = [api.get("/v1/users/u1/segments") for _ in range(3)]
    assert [a.json()["segments"] for a in answers] == [["buyers"]] * 3
    assert [source(a) for a in answers] == ["redis"] * 3
