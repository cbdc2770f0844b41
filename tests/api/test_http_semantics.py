"""HTTP as RFC 9110 has it: HEAD wherever GET is, 405 with Allow, unknown routes in the error
shape, and entity tags on the catalog's answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/webhooks", "GET, HEAD, POST"),  # two routes at one path: both named
        ("PUT", "/v1/segments", "GET, HEAD, POST"),
        ("DELETE", "/v1/segments/s", "GET, HEAD, PATCH, PUT"),  # the reads' router and the definitions' one
        ("GET", "/v1/events", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
    ],
)
def test_a_method_the_path_does_not_take_is_405_naming_those_it_does(
    api: TestClient, write_auth: dict[str, str], method: str, path: str, allow: str
) -> None:
    response = api.request(method, path, headers=write_auth)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"error": "Method Not Allowed"}


def test_head_answers_as_get_does_without_the_body(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2"])
    paths = ["/healthz", "/v1/segments", "/v1/segments/buyers", "/v1/segments/buyers/members/1", "/v1/users/1/segments"]
    assert paths
    for path in paths:
        got, head = api.get(path), api.head(path)
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.content == b"", path
        assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content)), path
        assert head.headers["content-type"] == got.headers["content-type"], path


def test_an_unknown_route_answers_in_the_error_shape(api: TestClient) -> None:
    response = api.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


def test_the_catalog_answers_carry_an_etag_and_a_matching_if_none_match_is_304(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2"])
    for path in ("/v1/segments", "/v1/segments/buyers"):
        first = api.get(path)
        etag = first.headers["etag"]
        assert etag[0] == etag[-1] == '"'
        again = api.get(path, headers={"If-None-Match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
        assert api.get(path, headers={"If-None-Match": f'W/"other", {etag}'}).status_code == 304
        assert api.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    before = api.get("/v1/segments/buyers").headers["etag"]
    refresh("buyers", ["1", "2", "3"])
    after = api.get("/v1/segments/buyers", headers={"If-None-Match": before})
    assert after.status_code == 200
    assert after.headers["etag"] != before
    assert after.json()["size"] == 3
