"""POST /v1/events: write scope, idempotent by event id, and proxy segments move at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import insert_segments

from funnel import settings
from funnel.storage import layout
from funnel.storage.mysql.tag_versions import MySqlTagStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


def order_count(mysql_conn: Any, user_id: str) -> int | None:
    row = MySqlTagStore(mysql_conn).tags_of([user_id]).get(user_id)
    return None if row is None else row.order_count


def test_a_second_order_moves_the_user_into_a_proxy_segment_at_once(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    assert post_events(event("o-1", "u1")).status_code == 200
    assert api.get("/v1/segments/vips/members/u1").json()["member"] is False

    posted = post_events(event("o-2", "u1"))

    assert posted.status_code == 200
    assert posted.json() == {"accepted": 1, "duplicates": 0, "before_baseline": 0, "tags_version": 0}
    answer = api.get("/v1/segments/vips/members/u1")  # no wait: the very next request
    assert (answer.json()["member"], answer.headers["X-Funnel-Source"]) == (True, "redis")
    assert api.get("/v1/users/u1/segments").json()["segments"] == ["vips"]
    cancelled = post_events(event("c-1", "u1", kind="order_cancelled"))
    assert cancelled.json()["accepted"] == 1
    assert api.get("/v1/segments/vips/members/u1").json()["member"] is False


def test_an_empty_batch_is_answered_with_nothing_done(
    add_segment: Callable[..., None], tags_in_redis: None, post_events: Callable[..., Any]
) -> None:
    add_segment("vips", rule=VIPS_RULE)

    posted = post_events()

    assert posted.status_code == 200
    assert posted.json() == {"accepted": 0, "duplicates": 0, "before_baseline": 0, "tags_version": 0}


def test_the_same_batch_twice_counts_once(
    api: TestClient,
    add_segment: Callable[..., None],
    mysql_conn: Any,
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    add_segment("three", rule='{"tag": "order_count", "op": ">=", "value": 3}')
    batch = [event("o-1", "u1"), event("o-2", "u1"), event("s-1", "u1", kind="signup", minutes_ago=90)]

    first = post_events(*batch)
    again = post_events(*batch)  # a client retry
    third = event("o-3", "u1")
    repeated_inside = post_events(third, third)

    assert first.json() == {"accepted": 3, "duplicates": 0, "before_baseline": 0, "tags_version": 0}
    assert again.json() == {"accepted": 0, "duplicates": 3, "before_baseline": 0, "tags_version": 0}
    assert (repeated_inside.json()["accepted"], repeated_inside.json()["duplicates"]) == (1, 1)
    assert order_count(mysql_conn, "u1") == 3
    checked = api.post("/v1/segments/three/members:check", json={"user_ids": ["u1"]}).json()
    assert checked["members"] == {"u1": True}


def test_events_need_a_token_with_the_write_scope(
    start_api: Callable[..., TestClient],
    mysql_conn: Any,
    read_auth: dict[str, str],
    write_auth: dict[str, str],
    event: Callable[..., dict[str, str]],
) -> None:
    insert_segments(mysql_conn, {"segment_id": "vips", "name": "V", "kind": "proxy", "rule": VIPS_RULE})
    api = start_api(token=None)
    body = {"events": [event("o-1", "u1")]}

    forbidden = api.post("/v1/events", json=body, headers=read_auth)
    anonymous = api.post("/v1/events", json=body)
    allowed = api.post("/v1/events", json=body, headers=write_auth)

    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "this endpoint needs a token with the write scope; this token can only read"}
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert allowed.json()["accepted"] == 1  # the refused requests recorded nothing
    assert order_count(mysql_conn, "u1") == 1


def test_too_many_events_in_one_request_is_413_and_records_none(
    api: TestClient, mysql_conn: Any, post_events: Callable[..., Any], event: Callable[..., dict[str, str]]
) -> None:
    most = settings.MAX_EVENTS_PER_REQUEST
    response = post_events(*[event(f"o-{i}", f"u{i}") for i in range(most + 1)])
    assert response.status_code == 413
    assert response.json() == {"error": f"at most {most} events per request; got {most + 1}"}
    assert order_count(mysql_conn, "u0") is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": "refund"}, "events[1].type is 'refund'. Fix: use one of 'signup', 'order', 'order_cancelled'"),
        ({"user_id": " u2"}, "events[1].user_id ' u2' has leading or trailing whitespace"),
        ({"user_id": "u\n2"}, "events[1].user_id 'u\\n2' holds a character that is not printable ASCII"),
        ({"event_id": ""}, "events[1].event_id '' is not 1 to 128 printable ASCII characters"),
        ({"at": "2026-11-29T10:00:00"}, "events[1].at '2026-11-29T10:00:00' has no time zone"),
        ({"at": "2999-01-01T00:00:00Z"}, "events[1].at '2999-01-01T00:00:00Z' is in the future"),
        ({"at": "yesterday"}, "events[1].at 'yesterday' is not an ISO-8601 time"),
        ({"amount": 3}, "events[1] has unknown field(s) amount"),
    ],
)
def test_a_bad_event_is_422_naming_it_and_nothing_is_recorded(
    mysql_conn: Any,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
    bad: dict[str, Any],
    message: str,
) -> None:
    response = post_events(event("o-1", "u1"), {**event("o-2", "u2"), **bad})
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)
    assert order_count(mysql_conn, "u1") is None


@pytest.mark.parametrize("body", [b"", b"{", b"null", b"[]", b"{}", b'{"events": {}}', b'{"events": "o-1"}'])
def test_a_body_that_is_not_a_list_of_events_is_422(api: TestClient, write_auth: dict[str, str], body: bytes) -> None:
    response = api.post("/v1/events", content=body, headers={**write_auth, "Content-Type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]  # what is wrong (the field, when there is one), then the body to send
    assert error == "the body is not valid JSON" or error.endswith(
        'send {"events": [{"event_id", "type", "user_id", "at"}, ...]}'
    )


def test_an_event_while_redis_serves_no_tags_is_kept_and_redis_catches_up(
    api: TestClient,
    add_segment: Callable[..., None],
    redis_client: Any,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
    until: Callable[..., Any],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    assert redis_client.exists(layout.tags_meta_key()) == 0  # Redis holds no tags at all

    posted = post_events(event("o-1", "u1"), event("o-2", "u1"))

    assert posted.json()["accepted"] == 2
    assert api.get("/v1/segments/vips/members/u1").json()["member"] is True  # from MySQL, or restored
    answer = until(
        lambda: (r := api.get("/v1/segments/vips/members/u1")).headers["X-Funnel-Source"] == "redis" and r,
        what="the tags restored into Redis",
    )
    assert answer.json()["member"] is True


def test_an_event_id_reused_for_a_different_event_is_409_and_records_nothing(
    api: TestClient, mysql_conn: Any, tags_in_redis: None, post_events: Callable[..., Any], event: Callable[..., Any]
) -> None:
    first = event("o-1", "u1")
    assert post_events(first).status_code == 200
    clash = post_events(event("o-2", "u2"), {**first, "user_id": "u2"})
    assert clash.status_code == 409
    assert "event_id 'o-1' was already recorded for a different event (order of user 'u1'" in clash.json()["error"]
    assert order_count(mysql_conn, "u2") is None  # o-2 was not recorded either


def test_a_cursor_from_another_segment_is_refused(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("a")
    add_segment("b")
    refresh("a", ["1", "2", "3"])
    refresh("b", ["1", "2", "3"])
    cursor = api.get("/v1/segments/a/members?limit=1").json()["next_cursor"]
    refused = api.get(f"/v1/segments/b/members?limit=1&cursor={cursor}")
    assert refused.status_code == 422
