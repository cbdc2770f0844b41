"""Bearer tokens, health checks, and user ids and routes the API must refuse with a plain 4xx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel.core.segment import Kind

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

ENDPOINTS = [
    ("GET", "/v1/segments"),
    ("GET", "/v1/segments/s"),
    ("GET", "/v1/segments/s/members/1"),
    ("POST", "/v1/segments/s/members:check"),
    ("GET", "/v1/segments/s/members"),
    ("GET", "/v1/segments/s/changes"),
    ("GET", "/v1/users/1/segments"),
    ("POST", "/v1/events"),
]


@pytest.fixture
def anonymous(
    start_api: Callable[..., TestClient], add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> Any:
    """The app with one live segment ``s``, asked without a default token."""
    add_segment("s")
    refresh("s", ["1", "2"], Kind.DYNAMIC)
    return start_api(token=None)


def test_healthz_and_readyz_need_no_token(anonymous: TestClient) -> None:
    health = anonymous.get("/healthz")
    ready = anonymous.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "this endpoint needs a token: send the header 'Authorization: Bearer <token>'"),
        ("Bearer not-a-token", "the token is not valid for this service"),
        ("Bearer ", "send the token as 'Authorization: Bearer <token>'"),
        ("Basic cmVhZDpzZWNyZXQ=", "send the token as 'Authorization: Bearer <token>'"),
        ("<the read token alone>", "send the token as 'Authorization: Bearer <token>'"),
    ],
)
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_but_health_is_401_without_a_valid_token(
    anonymous: TestClient,
    read_auth: dict[str, str],
    method: str,
    path: str,
    authorization: str | None,
    message: str,
) -> None:
    if authorization == "<the read token alone>":
        authorization = read_auth["Authorization"].removeprefix("Bearer ")
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = anonymous.request(method, path, headers=headers, json={"user_ids": ["1"]} if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"error": message}


def test_the_token_is_checked_before_the_segment_or_the_user_id(anonymous: TestClient) -> None:
    """A client without a token learns nothing: not whether a segment exists, nor what an id is wrong with."""
    for path in ("/v1/segments/nope", "/v1/segments/s/members/%09", "/v1/segments/s/members?limit=0"):
        assert anonymous.get(path).status_code == 401


def test_a_write_token_reads_too_and_the_scheme_is_case_insensitive(
    anonymous: TestClient, write_auth: dict[str, str], read_auth: dict[str, str]
) -> None:
    assert anonymous.get("/v1/segments/s/members/1", headers=write_auth).json()["member"] is True
    lower = {"Authorization": read_auth["Authorization"].replace("Bearer", "bearer")}
    assert anonymous.get("/v1/segments/s/members/1", headers=lower).status_code == 200


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "user_id '' is empty"),
        ("x" * 65, f"user_id '{'x' * 65}' is 65 characters long (at most 64)"),
        ("a%09b", "user_id 'a\\tb' holds a character that is not printable ASCII"),
        pytest.param(
            "a%0Ab",
            "user_id 'a\\nb' holds a character that is not printable ASCII",
        ),
        pytest.param(
            "7%0A",
            "user_id '7\\n' holds a character that is not printable ASCII",
        ),
        ("a%0Db", "user_id 'a\\rb' holds a character that is not printable ASCII"),
        ("a%00b", "user_id 'a\\x00b' holds a character that is not printable ASCII"),
        ("caf%C3%A9", "user_id 'café' holds a character that is not printable ASCII"),
        ("%207", "user_id ' 7' has leading or trailing whitespace"),
        ("7%20", "user_id '7 ' has leading or trailing whitespace"),
    ],
)
@pytest.mark.parametrize("template", ["/v1/segments/s/members/{}", "/v1/users/{}/segments"])
def test_a_user_id_the_stores_cannot_hold_is_422(
    api: TestClient, refresh: Any, add_segment: Any, template: str, raw: str, message: str
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.get(template.format(raw))
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize("user_id", ["x" * 64, "a b", "o'brien", "back\\slash", "\\N", "a/b", "42"])
def test_ids_the_stores_hold_are_asked_as_they_are(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], user_id: str
) -> None:
    add_segment("s")
    refresh("s", [user_id])
    response = api.get(f"/v1/segments/s/members/{user_id}")
    assert response.status_code == 200
    assert (response.json()["user_id"], response.json()["member"]) == (user_id, True)
    assert api.get(f"/v1/users/{user_id}/segments").json()["segments"] == ["s"]


def test_unknown_routes_and_methods_answer_json_errors(api: TestClient) -> None:
    missing = api.get("/v2/segments")
    wrong_method = api.delete("/v1/segments")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed"})
