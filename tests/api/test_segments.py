"""GET /v1/segments and /v1/segments/{id}: what each segment is, over the real stores."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel.core.segment import Kind

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


def test_the_list_has_every_kind_with_its_size_version_and_refresh_time(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], tags_in_redis: None
) -> None:
    add_segment("buyers")
    add_segment("launch", "static")
    add_segment("vips", rule=VIPS_RULE)
    add_segment("paused", enabled=False)
    refresh("buyers", ["1", "2", "3"])
    refresh("launch", ["1", "9"], Kind.STATIC)

    response = api.get("/v1/segments")

    assert response.status_code == 200
    segments = {s["segment_id"]: s for s in response.json()["segments"]}
    assert list(segments) == ["buyers", "launch", "paused", "vips"]  # sorted by id
    assert {k: segments["buyers"][k] for k in ("kind", "size", "version", "enabled", "entered", "exited")} == {
        "kind": "dynamic",
        "size": 3,
        "version": 1,
        "enabled": True,
        "entered": 3,
        "exited": 0,
    }
    assert (segments["launch"]["kind"], segments["launch"]["size"]) == ("static", 2)
    refreshed = dt.datetime.fromisoformat(segments["buyers"]["refreshed_at"])
    assert abs(dt.datetime.now(dt.UTC) - refreshed) < dt.timedelta(minutes=1)
    assert (segments["paused"]["enabled"], segments["paused"]["version"]) == (False, None)
    assert segments["vips"]["rule"] == {"tag": "order_count", "op": ">=", "value": 2}
    assert (segments["vips"]["size"], segments["vips"]["version"]) == (0, 0)


def test_a_segments_meta_counts_who_entered_and_exited_in_its_latest_refresh(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3", "4"])
    refresh("buyers", ["3", "4", "5"])  # 1 and 2 left, 5 came in

    response = api.get("/v1/segments/buyers")

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("segment_id", "name", "kind", "size", "version", "entered", "exited")} == {
        "segment_id": "buyers",
        "name": "Buyers",
        "kind": "dynamic",
        "size": 3,
        "version": 2,
        "entered": 1,
        "exited": 2,
    }


def test_a_proxy_segment_shows_its_rule_and_how_many_users_it_holds_now(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    assert post_events(event("o1", "u1"), event("o2", "u1"), event("o3", "u2")).status_code == 200

    body = api.get("/v1/segments/vips").json()

    assert body["kind"] == "proxy"
    assert body["rule"] == {"tag": "order_count", "op": ">=", "value": 2}
    assert body["size"] == 1  # u1 has two orders, u2 one
    assert body["version"] == 0  # the tag version (no load yet: the migration's version 0)
    assert "entered" not in body


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_a_segment_never_computed_is_described_and_its_members_are_409(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], read_auth: dict[str, str], kind: str
) -> None:
    add_segment("launch", kind)  # static: its run_at has not come yet; dynamic: its first slot has not run
    add_segment("buyers")
    refresh("buyers", ["1"])

    described = api.get("/v1/segments/launch")
    assert described.status_code == 200
    assert {k: described.json()[k] for k in ("size", "version", "refreshed_at")} == {
        "size": None,
        "version": None,
        "refreshed_at": None,
    }
    for response in (
        api.get("/v1/segments/launch/members/1"),
        api.post("/v1/segments/launch/members:check", json={"user_ids": ["1", "2"]}),
        api.get("/v1/segments/launch/members"),
        api.get("/v1/segments/launch/changes"),
    ):
        assert response.status_code == 409, response.request.url
        assert response.json()["error"].startswith("segment 'launch' is not computed yet")
    users = api.get("/v1/users/1/segments").json()  # one new segment never fails everyone's answer: it is named
    assert (users["segments"], users["not_computed"]) == (["buyers"], ["launch"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/segments/nope"),
        ("GET", "/v1/segments/nope/members/1"),
        ("POST", "/v1/segments/nope/members:check"),
        ("GET", "/v1/segments/nope/members"),
        ("GET", "/v1/segments/nope/changes"),
    ],
)
def test_an_unknown_segment_is_404_naming_it(
    api: TestClient, add_segment: Callable[..., None], method: str, path: str
) -> None:
    add_segment("buyers")
    response = api.request(method, path, json={"user_ids": ["1"]} if method == "POST" else None)
    assert response.status_code == 404
    assert response.json() == {"error": "segment 'nope' does not exist"}
