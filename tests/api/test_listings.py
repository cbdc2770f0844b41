"""Paged listings: members (a cursor pins its version), proxy members, and the latest changes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from funnel import settings

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


def ids(start: int, stop: int) -> list[str]:
    return [f"u{i:03d}" for i in range(start, stop)]


def page_through(
    api: TestClient, path: str, limit: int, key: str = "members", **query: str
) -> tuple[list[str], list[Any]]:
    """Every page of a listing: the ids in order, and each page's version."""
    found: list[str] = []
    versions: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {**query, "limit": limit} | ({"cursor": cursor} if cursor else {})
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body[key]
        versions.append(body["version"])
        cursor = body["next_cursor"]
        if cursor is None:
            return found, versions


def cursor_of(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def test_members_come_in_pages_in_user_id_order(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    members = ids(0, 23)
    refresh("s", list(reversed(members)))

    found, versions = page_through(api, "/v1/segments/s/members", limit=10)

    assert found == members
    assert versions == [1, 1, 1]
    whole = api.get("/v1/segments/s/members").json()  # the default limit holds them all
    assert (whole["members"], whole["next_cursor"]) == (members, None)


def test_a_cursor_pins_its_version_through_a_refresh_until_the_version_is_pruned(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    old = ids(0, 25)
    refresh("s", old)
    first = api.get("/v1/segments/s/members", params={"limit": 10}).json()
    assert (first["version"], first["members"]) == (1, old[:10])

    refresh("s", ids(5, 30))  # version 2 is live now: u000-u004 left, u025-u029 came in
    second = api.get("/v1/segments/s/members", params={"limit": 10, "cursor": first["next_cursor"]}).json()
    third = api.get("/v1/segments/s/members", params={"limit": 10, "cursor": second["next_cursor"]}).json()

    assert (second["version"], third["version"], third["next_cursor"]) == (1, 1, None)
    pages = first["members"] + second["members"] + third["members"]
    assert pages == sorted(set(pages))  # no id twice
    assert set(pages) == set(old)  # the old version exactly
    assert page_through(api, "/v1/segments/s/members", limit=10) == (ids(5, 30), [2, 2, 2])

    resume = {"limit": 10, "cursor": first["next_cursor"]}
    refresh("s", ids(5, 31))  # version 3: version 1 is still kept (keep_versions is 3)
    assert api.get("/v1/segments/s/members", params=resume).json()["members"] == old[10:20]

    refresh("s", ids(5, 32))  # version 4: version 1 is pruned
    gone = api.get("/v1/segments/s/members", params=resume)
    assert gone.status_code == 410
    assert settings.KEEP_VERSIONS == 3
    assert gone.json() == {
        "error": "version 1 of segment 's' is no longer kept (MySQL keeps the last 3); start again without a "
        "cursor to page the live version"
    }
    assert page_through(api, "/v1/segments/s/members", limit=10) == (ids(5, 32), [4, 4, 4])


def test_a_proxy_segments_members_page_from_the_live_tags(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    vips = ["v1", "v2", "v3", "v4", "v5"]
    batch = [event(f"o-{u}-{n}", u) for u in vips for n in (1, 2)] + [event("o-x", "one-order")]
    assert post_events(*batch).json()["accepted"] == 11

    found, versions = page_through(api, "/v1/segments/vips/members", limit=2)

    assert found == vips
    assert versions == [None, None, None]  # answered live: no version to pin


def test_changes_list_who_entered_and_who_exited_in_the_latest_refresh(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ids(0, 10))
    refresh("s", ids(3, 15))

    entered, entered_versions = page_through(api, "/v1/segments/s/changes", 2, "user_ids", type="entered")
    exited, _ = page_through(api, "/v1/segments/s/changes", 2, "user_ids", type="exited")

    assert entered == ids(10, 15)
    assert entered_versions == [2, 2, 2]
    assert exited == ids(0, 3)
    default = api.get("/v1/segments/s/changes").json()
    assert (default["type"], default["user_ids"]) == ("entered", ids(10, 15))
    assert api.get("/v1/segments/s").json()["entered"] == 5


def test_changes_of_a_proxy_segment_or_of_an_unknown_type_are_refused(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    add_segment("vips", rule=VIPS_RULE)
    refresh("s", ["1"])

    proxy = api.get("/v1/segments/vips/changes")
    unknown = api.get("/v1/segments/s/changes?type=joined")

    assert (proxy.status_code, unknown.status_code) == (409, 422)
    assert proxy.json() == {"error": "segment 'vips' is a proxy segment: it is answered live and has no refreshes"}
    assert unknown.json() == {"error": "type must be 'entered' or 'exited'"}


@pytest.mark.parametrize("limit", ["0", "10001", "-1", "abc", "1.5", "", "+5", " 5", "1e3"])
@pytest.mark.parametrize("listing", ["members", "changes"])
def test_a_limit_out_of_range_is_422(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], listing: str, limit: str
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.get(f"/v1/segments/s/{listing}", params={"limit": limit})
    assert response.status_code == 422
    assert response.json() == {"error": "limit must be a whole number from 1 to 10000"}


def test_a_limit_in_superscript_digits_is_422(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.get("/v1/segments/s/members", params={"limit": "²"})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "%%%",
        base64.urlsafe_b64encode(b"not json").decode(),
        cursor_of([1, 2]),  # type: ignore[arg-type]
        cursor_of({"v": 1}),
        cursor_of({"v": 1, "a": 7}),
        "é",
    ],
)
@pytest.mark.parametrize("listing", ["members", "changes"])
def test_a_cursor_this_api_did_not_give_out_is_422(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], listing: str, cursor: str
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.get(f"/v1/segments/s/{listing}", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json() == {
        "error": "cursor is not one this API gave out for this listing; start again without a cursor"
    }


def test_a_members_cursor_with_a_version_that_is_not_a_number_is_422(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.get("/v1/segments/s/members", params={"cursor": cursor_of({"v": "abc", "a": ""})})
    assert response.status_code == 422


def test_a_changes_cursor_with_a_version_that_is_not_a_number_is_422(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.get("/v1/segments/s/changes", params={"cursor": cursor_of({"v": "abc", "a": ""})})
    assert response.status_code == 422, response.text


def test_a_changes_cursor_of_a_pruned_version_is_410_like_members(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ids(0, 10))
    refresh("s", ids(2, 14))
    first = api.get("/v1/segments/s/changes", params={"limit": 2}).json()
    assert (first["version"], first["user_ids"]) == (2, ids(10, 12))
    for last in (15, 16, 17):
        refresh("s", ids(2, last))  # versions 3, 4, 5: version 2 is pruned
    response = api.get("/v1/segments/s/changes", params={"limit": 2, "cursor": first["next_cursor"]})
    assert response.status_code == 410, response.text
