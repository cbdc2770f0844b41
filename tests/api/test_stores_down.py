"""A store that does not answer: a 503 with a plain message, never a 500, a trace or a secret."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel import settings

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

PASSWORD = "pw-never-shown-4417"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_plain(response: Any, *secrets: str) -> None:
    assert response.status_code == 503, response.text
    body = response.text
    for secret in (PASSWORD, "mysql://", "redis://", *secrets):
        assert secret not in body


@pytest.fixture
def live_segment(add_segment: Callable[..., None], refresh: Callable[..., Any]) -> None:
    add_segment("s")
    refresh("s", ["1", "2", "3"])


def test_mysql_unreachable_from_the_start_is_503_without_the_connection_url(
    live_segment: None, start_api: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    url = f"mysql://root:{PASSWORD}@127.0.0.1:{port}/funnel_down"
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", url)
    api = start_api()

    for path in ("/v1/segments", "/v1/segments/s", "/v1/segments/s/members/1", "/v1/users/1/segments"):
        response = api.get(path)
        assert_plain(response, url, str(port), "funnel_down")
        assert response.json() == {"error": "a store (Redis or MySQL) did not answer; try again"}
    ready = api.get("/readyz")
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "failing": ["mysql"]})
    assert api.get("/healthz").status_code == 200


def test_mysql_lost_after_start_fails_the_listings_and_redis_keeps_answering(
    live_segment: None, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.get("/v1/segments/s/members/1").headers["X-Funnel-Source"] == "redis"  # catalog read
    port = closed_port()
    url = f"mysql://root:{PASSWORD}@127.0.0.1:{port}/funnel_down"
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", url)

    listing = api.get("/v1/segments/s/members")
    member = api.get("/v1/segments/s/members/1")

    assert_plain(listing, url, str(port), "funnel_down")
    assert listing.json()["error"] == "a store (Redis or MySQL) did not answer; try again"
    assert (member.status_code, member.json()["member"], member.headers["X-Funnel-Source"]) == (200, True, "redis")
    assert api.get("/v1/users/2/segments").json()["segments"] == ["s"]
    assert api.get("/readyz").json() == {"status": "unavailable", "failing": ["mysql"]}


def test_mysql_lost_longer_than_the_catalog_ttl_still_lets_redis_answer(
    live_segment: None, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.get("/v1/segments/s/members/1").json()["member"] is True
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", f"mysql://root@127.0.0.1:{closed_port()}/funnel_down")
    monkeypatch.setattr(settings, "API_CATALOG_TTL_SECONDS", 0.0)  # the TTL has passed

    member = api.get("/v1/segments/s/members/1")

    assert (member.status_code, member.headers.get("X-Funnel-Source")) == (200, "redis"), member.text


def test_redis_unreachable_is_503_and_readyz_names_it(
    live_segment: None, start_api: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}?db=13"
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_REDIS", url)
    api = start_api()

    started = time.monotonic()
    member = api.get("/v1/segments/s/members/1")
    seconds = time.monotonic() - started
    ready = api.get("/readyz")

    assert_plain(member, url, str(port))
    assert member.json() == {"error": "a store (Redis or MySQL) did not answer; try again"}
    assert seconds < settings.REDIS_TIMEOUT_SECONDS + 5
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "failing": ["redis"]})
