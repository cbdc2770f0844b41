"""Inside Airflow's API server: the plugin mounts the API under ``/funnel`` and puts the
Segments page in Airflow's navigation; an Airflow login reads, a user who may edit DAGs also
changes segment definitions (from the page), and no login writes anything else.

Airflow's own app (``airflow.api_fastapi.app.create_app``) with its plugins, auth manager
(the simple one, with a passwords file) and metadata database, in process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_fuzzing import BUDGET, fuzz_every_operation, load_schema
from fastapi.testclient import TestClient
from helpers import API_TOKENS
from hypothesis import settings

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

USER, PASSWORD = "segment-viewer", "pw-8c1e53b0"
EDITOR, EDITOR_PASSWORD = "segment-editor", "pw-41d7a9c2"


@pytest.fixture
def airflow_api(airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """Airflow's API server app, a viewer in the simple auth manager, and funnel's test stores."""
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD, EDITOR: EDITOR_PASSWORD}))
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{USER}:viewer,{EDITOR}:user")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "funnel-test-jwt-secret-" + "0d4b" * 12)
    monkeypatch.setenv("AIRFLOW__FUNNEL__API_TOKENS", API_TOKENS)  # funnel's own tokens work under /funnel too
    from airflow.api_fastapi.app import create_app, purge_cached_app

    purge_cached_app()
    with TestClient(create_app("core"), raise_server_exceptions=False) as client:
        yield client
    purge_cached_app()


def login(client: TestClient, user: str = USER, password: str = PASSWORD) -> str:
    """A JWT for the viewer (or ``user``), as the login page gets it (``POST /auth/token``)."""
    response = client.post("/auth/token", json={"username": user, "password": password})
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def test_the_segments_page_is_in_airflows_navigation_and_served_under_funnel(
    airflow_api: TestClient, mysql_conn: Any, redis_client: Any
) -> None:
    token = login(airflow_api)

    plugins = airflow_api.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}).json()["plugins"]
    (funnel,) = [p for p in plugins if p["name"] == "funnel"]
    (view,) = funnel["external_views"]
    page = airflow_api.get(view["href"])
    icon = airflow_api.get(view["icon"])

    assert (view["name"], view["destination"], view["url_route"]) == ("Segments", "nav", "funnel-segments")
    assert view["href"] == "/funnel/ui/"
    assert page.status_code == 200
    assert "<title>funnel · Segments</title>" in page.text
    assert icon.headers["content-type"] == "image/svg+xml"


def test_a_logged_in_browser_reads_with_its_cookie_and_cannot_write(
    airflow_api: TestClient, mysql_conn: Any, redis_client: Any
) -> None:
    token = login(airflow_api)
    cookie = {"Cookie": f"_token={token}"}  # what a logged-in browser sends with the page's requests

    listed = airflow_api.get("/funnel/v1/segments", headers=cookie)
    member = airflow_api.get("/funnel/v1/segments/nope/members/1", headers=cookie)  # the membership fast path
    anonymous = airflow_api.get("/funnel/v1/segments")
    posted = airflow_api.post("/funnel/v1/events", json={"events": []}, headers=cookie)
    checked = airflow_api.post("/funnel/v1/segments/nope/members:check", json={"user_ids": ["1"]}, headers=cookie)

    assert (listed.status_code, listed.json()) == (200, {"segments": []})
    assert (member.status_code, member.json()) == (404, {"error": "segment 'nope' does not exist"})
    assert anonymous.status_code == 401
    assert "log in to Airflow" in anonymous.json()["error"]
    # The cookie counts on GET only: another site can never make a logged-in browser post.
    assert posted.status_code == 401
    assert checked.status_code == 401


def test_a_user_who_may_edit_dags_changes_definitions_from_the_page_and_nothing_else(
    airflow_api: TestClient, mysql_conn: Any, redis_client: Any
) -> None:
    editor = {"Cookie": f"_token={login(airflow_api, EDITOR, EDITOR_PASSWORD)}"}
    viewer = {"Cookie": f"_token={login(airflow_api)}"}
    page = {"X-Funnel-Page": "1"}  # what the Segments page sends with every request
    definition = {"segment_id": "nl", "name": "NL", "kind": "proxy", "rule": {"tag": "new_user"}}

    access = airflow_api.get("/funnel/v1/access", headers=editor).json()
    forged = airflow_api.post("/funnel/v1/segments", json=definition, headers=editor)  # another site's form
    viewed = airflow_api.post("/funnel/v1/segments", json=definition, headers={**viewer, **page})
    added = airflow_api.post("/funnel/v1/segments", json=definition, headers={**editor, **page})
    events = airflow_api.post("/funnel/v1/events", json={"events": []}, headers={**editor, **page})

    assert access == {"scope": "define", "actor": f"airflow:{EDITOR}"}
    assert airflow_api.get("/funnel/v1/access", headers=viewer).json() == {"scope": "read", "actor": f"airflow:{USER}"}
    assert forged.status_code == 401  # without the page's header the cookie counts on GET only
    assert (viewed.status_code, viewed.json()["error"]) == (
        403,
        "this endpoint needs a token with the write scope, or inside Airflow a login that may edit DAGs; "
        "this one can only read",
    )
    assert (added.status_code, added.json()["actor"]) == (201, f"airflow:{EDITOR}")
    assert (events.status_code, events.json()["error"]) == (
        403,
        "this endpoint needs a token with the write scope; an Airflow login can only read, preview and change "
        "segment definitions",
    )


def test_an_airflow_token_reads_as_a_bearer_token_but_never_writes(
    airflow_api: TestClient, mysql_conn: Any, redis_client: Any
) -> None:
    bearer = {"Authorization": f"Bearer {login(airflow_api)}"}

    listed = airflow_api.get("/funnel/v1/segments", headers=bearer)
    posted = airflow_api.post("/funnel/v1/events", json={"events": []}, headers=bearer)
    forged = airflow_api.get("/funnel/v1/segments", headers={"Authorization": "Bearer not-a-jwt"})

    assert listed.status_code == 200
    assert (posted.status_code, posted.json()) == (
        403,
        {"error": "this endpoint needs a token with the write scope; this token can only read"},
    )
    assert (forged.status_code, forged.json()) == (401, {"error": "the token is not valid for this service"})


def test_an_expired_or_logged_out_login_reads_nothing(
    airflow_api: TestClient, mysql_conn: Any, redis_client: Any
) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = get_auth_manager()
    expired = manager.generate_jwt(
        SimpleAuthManagerUser(username=USER, role="viewer"), expiration_time_in_seconds=-3600
    )
    token = login(airflow_api)
    assert airflow_api.get("/funnel/v1/segments", headers={"Cookie": f"_token={token}"}).status_code == 200
    airflow_api.get("/api/v2/auth/logout", headers={"Cookie": f"_token={token}"}, follow_redirects=False)

    too_old = airflow_api.get("/funnel/v1/segments", headers={"Cookie": f"_token={expired}"})
    logged_out = airflow_api.get("/funnel/v1/segments", headers={"Cookie": f"_token={token}"})

    assert (too_old.status_code, too_old.json()) == (
        401,
        {"error": "the Airflow login has expired: log in to Airflow again"},
    )
    assert (logged_out.status_code, logged_out.json()) == (401, {"error": "the token is not valid for this service"})


def test_the_mounted_api_meets_its_document(
    airflow_api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], write_auth: dict[str, str]
) -> None:
    """Schemathesis on the API as Airflow's API server serves it, under /funnel: every
    operation, every check (tests/api/test_fuzzed.py), a smaller budget."""
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3"])
    document = airflow_api.get("/funnel/openapi.json").json()
    assert document["servers"] == [{"url": "/funnel"}]
    schema = load_schema(airflow_api.app, "/funnel/openapi.json")
    assert fuzz_every_operation(schema, write_auth, settings(BUDGET, max_examples=8)) == 27
