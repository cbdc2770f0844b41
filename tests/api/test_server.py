"""The API as deployed: ``python -m funnel.cli serve`` (uvicorn) in its own process, asked over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from funnel.core.segment import Kind

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


def test_the_served_api_answers_over_http(
    server: tuple[httpx.Client, Path],
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    tags_in_redis: None,
    read_auth: dict[str, str],
    write_auth: dict[str, str],
    event: Callable[..., dict[str, str]],
) -> None:
    client, log = server
    add_segment("buyers")
    add_segment("launch", "static")
    add_segment("vips", rule=VIPS_RULE)
    refresh("buyers", ["u1", "u2"])
    refresh("launch", ["u1"], Kind.STATIC)

    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/v1/segments").status_code == 401
    posted = client.post("/v1/events", json={"events": [event("o-1", "u1"), event("o-2", "u1")]}, headers=write_auth)
    assert posted.json()["accepted"] == 2
    assert client.post("/v1/events", json={"events": [event("o-3", "u1")]}, headers=read_auth).status_code == 403

    member = client.get("/v1/segments/buyers/members/u2", headers=read_auth)
    vip = client.get("/v1/segments/vips/members/u1", headers=read_auth)
    checked = client.post("/v1/segments/launch/members:check", json={"user_ids": ["u1", "u2"]}, headers=read_auth)
    segments = client.get("/v1/users/u1/segments", headers=read_auth)
    bad_id = client.get("/v1/segments/buyers/members/u%091", headers=read_auth)
    listed = client.get("/v1/segments/buyers/members", params={"limit": 1}, headers=read_auth).json()

    assert (member.json()["member"], member.headers["X-Funnel-Source"]) == (True, "redis")
    assert (vip.json()["member"], vip.json()["version"]) == (True, 0)
    assert checked.json()["members"] == {"u1": True, "u2": False}
    assert segments.json()["segments"] == ["buyers", "launch", "vips"]
    assert (segments.json()["versions"]["vips"]["version"], segments.json()["source"]) == (0, "redis")
    assert bad_id.status_code == 422
    assert (listed["members"], listed["version"], listed["stale"]) == (["u1"], 1, False)
    assert listed["refreshed_at"] == member.json()["refreshed_at"]
    second = client.get(
        "/v1/segments/buyers/members", params={"limit": 1, "cursor": listed["next_cursor"]}, headers=read_auth
    )
    assert second.json()["members"] == ["u2"]
    assert "Traceback" not in log.read_text()
