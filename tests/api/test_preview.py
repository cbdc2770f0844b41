"""``POST /v1/preview``: a preview over the API (write scope), nothing written, the errors in words."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import mysql_fingerprint, redis_dump

from funnel import settings
from funnel.services.catalog import validate_rows
from funnel.services.refresh import RefreshResult

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

#: Keeps HiveServer2 busy for minutes before its first row (tests/integration/storage/test_hive_query.py).
SLOW_QUERY = "SELECT a.id FROM range(100000) a CROSS JOIN range(100000) b WHERE a.id + b.id < 0"
FORBIDDEN = {
    "error": "this endpoint needs a token with the write scope, or inside Airflow a login that may edit DAGs; "
    "this one can only read"
}


@pytest.fixture
def live(
    add_segment: Callable[..., None], refresh: Callable[..., RefreshResult], hive_conn: Any, redis_client: Any
) -> Any:
    """``evens`` (0, 2, ... 98) and ``low`` (0..9) live, ``buyers`` a proxy; returns the Redis client."""
    add_segment("evens")
    add_segment("low")
    add_segment("buyers", rule='{"tag": "order_count", "op": ">=", "value": 5}')
    refresh("evens", [str(i) for i in range(0, 100, 2)])
    refresh("low", [str(i) for i in range(10)])
    return redis_client


def test_a_preview_answers_with_the_write_token_and_writes_nothing(
    live: Any, mysql_conn: Any, start_api: Callable[..., TestClient], write_auth: dict[str, str]
) -> None:
    api = start_api(token=None)
    before = (redis_dump(live), mysql_fingerprint(mysql_conn))
    response = api.post(
        "/v1/preview", json={"segment_id": "evens", "query": "SELECT id FROM range(0, 60)"}, headers=write_auth
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {k: answer[k] for k in ("segment_id", "kind", "size", "capped", "rows_read", "null_ids")} == {
        "segment_id": "evens",
        "kind": "dynamic",
        "size": 60,
        "capped": False,
        "rows_read": 60,
        "null_ids": 0,
    }
    assert answer["sample"] == [str(i) for i in range(20)]
    assert {o["segment_id"]: (o["overlap"], o["size"]) for o in answer["overlap"]} == {
        "evens": (30, 50),
        "low": (10, 10),
        "buyers": (None, None),  # no tags in Redis: not compared, and the reason says so
    }
    assert answer["against_live"] == {
        "version": 1,
        "size": 50,
        "entered": 30,
        "exited": 20,
        "guard": None,
        "would_refuse": False,
        "reason": None,
    }
    assert (redis_dump(live), mysql_fingerprint(mysql_conn)) == before


def test_a_preview_needs_the_write_scope(live: Any, start_api: Callable[..., TestClient]) -> None:
    body = {"query": "SELECT 1"}
    forbidden = start_api().post("/v1/preview", json=body)
    anonymous = start_api(token=None).post("/v1/preview", json=body)
    assert (forbidden.status_code, forbidden.json()) == (403, FORBIDDEN)
    assert anonymous.status_code == 401


def test_a_bad_query_or_rule_gets_the_catalogs_message_as_422(
    live: Any, mysql_conn: Any, start_api: Callable[..., TestClient], write_auth: dict[str, str]
) -> None:
    api = start_api(token=None)
    before = (redis_dump(live), mysql_fingerprint(mysql_conn))
    query = "SELECT reflect('java.lang.System', 'exit', 0) FROM range(1)"
    row = {"segment_id": "evens", "name": "Evens", "kind": "dynamic", "query": query}
    (expected,) = validate_rows([(row, "mysql")]).errors
    response = api.post("/v1/preview", json={"segment_id": "evens", "query": query}, headers=write_auth)
    assert (response.status_code, response.json()) == (422, {"error": str(expected)})
    rule = {"tag": "order_count", "op": "gte", "value": 3}
    proxy_row = {"segment_id": "preview", "name": "preview", "kind": "proxy", "rule": json.dumps(rule)}
    (expected,) = validate_rows([(proxy_row, "mysql")]).errors
    response = api.post("/v1/preview", json={"rule": rule}, headers=write_auth)
    assert (response.status_code, response.json()) == (422, {"error": str(expected)})
    assert (redis_dump(live), mysql_fingerprint(mysql_conn)) == before


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"rule": {"union": ["evens", "nosuch"]}}, 422, "segment 'preview': field 'rule' uses segment 'nosuch', which"),
        ({"segment_id": "nosuch"}, 404, "segment 'nosuch' is not in the catalog. Fix: "),
        ({}, 422, 'send {"segment_id": "..."}, {"query": "SELECT ..."} or {"rule": {...}}'),
        ([1], 422, 'send {"segment_id": "..."}'),
        ({"query": 7}, 422, "query must be a string"),
        ({"rule": [1]}, 422, "rule must be a JSON object"),
        ({"sql": "SELECT 1"}, 422, "'sql' is not a preview field; use segment_id, query, rule and kind"),
        ({"query": "SELECT 1", "rule": {"tag": "new_user"}}, 422, "both a query and a rule were given. Fix: "),
        ({"query": "SELECT user_id FROM funnel_test_nowhere.t"}, 422, "segment 'preview': Hive query failed: "),
    ],
)
def test_what_cannot_be_previewed_is_answered_in_words(
    live: Any,
    start_api: Callable[..., TestClient],
    write_auth: dict[str, str],
    body: Any,
    status: int,
    error: str,
) -> None:
    response = start_api(token=None).post("/v1/preview", json=body, headers=write_auth)
    assert response.status_code == status
    assert response.json()["error"].startswith(error)


def test_the_time_limit_is_504_naming_the_setting(
    live: Any, start_api: Callable[..., TestClient], write_auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "PREVIEW_TIMEOUT_SECONDS", 2.0)
    started = time.monotonic()
    response = start_api(token=None).post("/v1/preview", json={"query": SLOW_QUERY}, headers=write_auth)
    assert time.monotonic() - started < 2 + 8
    assert response.status_code == 504
    assert response.json()["error"].startswith(
        "the preview was still running after preview_timeout_seconds (2 s), so its query was cancelled on HiveServer2"
    )
    assert response.json()["error"].endswith(
        "Fix: narrow the query (a filter, a shorter date range), or raise [funnel] preview_timeout_seconds"
    )


def test_hive_unreachable_is_503_without_the_address(
    live: Any, start_api: Callable[..., TestClient], write_auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis_cluster import free_ports

    nowhere = f"hiveserver2://funnel@127.0.0.1:{free_ports(1)[0]}/default?auth_mechanism=NONE"
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_HIVE", nowhere)
    response = start_api(token=None).post("/v1/preview", json={"query": "SELECT 1"}, headers=write_auth)
    assert (response.status_code, response.json()) == (
        503,
        {"error": "HiveServer2 did not answer, so the query was not previewed; nothing was written. Try again"},
    )


@pytest.fixture
def one_preview_at_a_time(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, mysql_conn: Any, redis_client: Any
) -> httpx.Client:
    """The API as deployed (uvicorn), with ``preview_concurrency`` 1 and a 6 s time limit (set
    before ``server`` starts it)."""
    monkeypatch.setenv("AIRFLOW__FUNNEL__PREVIEW_CONCURRENCY", "1")
    monkeypatch.setenv("AIRFLOW__FUNNEL__PREVIEW_TIMEOUT_SECONDS", "6")
    client, _log = request.getfixturevalue("server")
    return client


def test_previews_beyond_the_concurrency_get_429_while_the_server_keeps_answering(
    one_preview_at_a_time: httpx.Client, hive_conn: Any, write_auth: dict[str, str], read_auth: dict[str, str]
) -> None:
    client = one_preview_at_a_time
    slow: list[httpx.Response] = []

    def post_slow() -> None:  # again while a probe holds the slot, until it holds it itself
        deadline = time.monotonic() + 15
        while not slow or (slow[-1].status_code == 429 and time.monotonic() < deadline):
            slow.append(client.post("/v1/preview", json={"query": SLOW_QUERY}, headers=write_auth, timeout=30))

    worker = threading.Thread(target=post_slow)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while True:  # a probe that takes the slot for a moment (refused before Hive) until the slow one holds it
            busy = client.post("/v1/preview", json={"query": "DROP TABLE t"}, headers=write_auth, timeout=30)
            if busy.status_code == 429 or time.monotonic() > deadline:
                break
        assert (busy.status_code, busy.json()) == (
            429,
            {
                "error": "1 previews are running, as many as preview_concurrency (1) allows; try again when one "
                "has finished, or raise [funnel] preview_concurrency"
            },
        )
        started = time.monotonic()  # the Hive work runs in a thread: the event loop still answers at once
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/segments", headers=read_auth).status_code == 200
        assert time.monotonic() - started < 1
    finally:
        worker.join(timeout=40)
    assert slow[-1].status_code == 504
    after = client.post("/v1/preview", json={"query": "SELECT 1"}, headers=write_auth, timeout=30)
    assert (after.status_code, after.json()["size"]) == (200, 1)  # the slot is free again
