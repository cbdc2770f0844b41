"""The serving API's fixtures: ``create_app()`` over the real MySQL and Redis, live segments.

Every response any test gets is checked on the way in (``check_response``): never a 500,
never a stack trace, never a token or a connection URL in the body.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from answer_contract import check_answer
from fastapi.testclient import TestClient
from helpers import API_TOKENS as TOKENS
from helpers import READ_TOKEN, WRITE_TOKEN, bearer, free_port, insert_segments, stop_process

from funnel import wiring
from funnel.core.composite_expr import parse_expression
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.services.composite_input import composite_batches
from funnel.services.refresh import RefreshRequest, RefreshResult
from funnel.storage.mysql.tag_versions import MySqlTagStore
from funnel.storage.redis.tag_sets import RedisTagStore

#: What no response body may ever hold.
NEVER_IN_A_BODY = ("Traceback", 'File "', READ_TOKEN, WRITE_TOKEN, "mysql://", "redis://")

T = TypeVar("T")
#: How long ``serve`` may take to answer: each worker imports Airflow (tens of seconds on a busy 2-core machine).
SERVER_START_SECONDS = 120


def check_response(response: httpx.Response, app: Any = None) -> None:
    """Every response of the suite: a JSON answer (but a 304, and the metrics), no 500, no stack trace, no secret;
    with the ``app``, the answer its route declares (``answer_contract.check_answer``)."""
    response.read()
    body = response.text
    assert response.status_code != 500, body
    for text in NEVER_IN_A_BODY:
        assert text not in body, f"{response.request.method} {response.request.url}: {body[:500]}"
    if response.status_code == 200 and response.request.url.path.endswith("/metrics"):
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4"), response.headers
        return  # Prometheus's text format
    if response.status_code != 304:  # Not Modified carries no body, so no type
        assert response.headers["content-type"].startswith("application/json"), response.headers
    if app is not None and not response.request.url.path.startswith("/ui"):
        request = response.request
        check_answer(app, request.method, request.url.path, response.status_code, response.content)


@pytest.fixture
def start_api(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Start the app (its lifespan too) on emptied test stores; ``start_api(token=None)`` sends no token.

    The tokens are set before ``create_app()`` reads them. The app makes its clients and
    reads the catalog at its first request, so write segments before asking.
    """
    from funnel.api.app import create_app

    monkeypatch.setenv("AIRFLOW__FUNNEL__API_TOKENS", TOKENS)
    started: list[tuple[Any, TestClient]] = []

    def start(token: str | None = READ_TOKEN) -> TestClient:
        app = create_app()
        client = TestClient(app, raise_server_exceptions=False, headers=bearer(token) if token else None)
        client.event_hooks = {"request": [], "response": [functools.partial(check_response, app=app)]}
        client.__enter__()
        started.append((app, client))
        return client

    yield start
    for app, client in started:
        client.__exit__(None, None, None)
        service = getattr(app.state, "service", None)
        if service is not None:  # a background restore must not write into the next test's Redis
            service.restorer._pool.shutdown(wait=True)


@pytest.fixture
def api(start_api: Callable[..., TestClient]) -> TestClient:
    """The app, asked with the read token by default (pass ``headers=`` for another)."""
    return start_api()


@pytest.fixture
def add_segment(mysql_conn: Any) -> Callable[..., None]:
    """Write a catalog row: ``add_segment("s")`` (dynamic), ``kind="static"``, ``rule=...`` (proxy), or
    ``kind="composite", rule=...``."""

    def add(segment_id: str, kind: str = "dynamic", *, rule: str | None = None, enabled: bool = True) -> None:
        row: dict[str, Any] = {"segment_id": segment_id, "name": segment_id.title(), "kind": kind, "enabled": enabled}
        if rule is not None:
            row.update(kind="composite" if kind == "composite" else "proxy", rule=rule)
        else:
            row["query"] = "SELECT user_id FROM dw.users"
        if kind == "static":
            row["run_at"] = "2030-01-01 00:00:00"
        insert_segments(mysql_conn, row)

    return add


@pytest.fixture
def refresh(mysql_conn: Any, redis_client: Any) -> Callable[..., RefreshResult]:
    """Make a new version of a segment live, as its Airflow task would (each call a later slot)."""
    slots = itertools.count()

    def run(
        segment_id: str, members: list[str], kind: Kind = Kind.DYNAMIC, definition_digest: str | None = None
    ) -> RefreshResult:
        slot = next(slots)
        logical_date = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=slot)
        info = RunInfo("funnel_test_api", f"scheduled__{slot}", logical_date)
        request = RefreshRequest(segment_id, kind, info, definition_digest=definition_digest)
        with wiring.refresher(redis_client=redis_client) as refresher:
            lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
            return refresher.refresh(request, lambda: iter([list(members)]), lock)

    return run


@pytest.fixture
def refresh_composite(mysql_conn: Any, redis_client: Any) -> Callable[..., RefreshResult]:
    """Refresh a composite segment as its Airflow task would: its operands' live versions, set in MySQL."""
    slots = itertools.count()

    def run(segment_id: str, rule: object) -> RefreshResult:
        slot = next(slots)
        logical_date = dt.datetime(2031, 1, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=slot)
        info = RunInfo("funnel_test_api", f"composite__{slot}", logical_date)
        expr = parse_expression(segment_id, json.dumps(rule))
        with wiring.refresher(redis_client=redis_client) as refresher, wiring.composite_source() as source:
            lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
            batches = composite_batches(
                segment_id, expr, source, info, refresher.note_inputs, 1000, logging.getLogger("test")
            )
            return refresher.refresh(RefreshRequest(segment_id, Kind.COMPOSITE, info), batches, lock)

    return run


@pytest.fixture
def tags_in_redis(mysql_conn: Any, redis_client: Any) -> None:
    """Redis serves the live tag version (0, as the migration leaves it), as a restore would set it up."""
    RedisTagStore(redis_client, staging_ttl_seconds=600).swap(MySqlTagStore(mysql_conn).live())


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s (last: {result!r})")
        time.sleep(0.02)


@pytest.fixture
def until() -> Callable[..., Any]:
    """``wait_until`` as a fixture (test modules are not importable from one another)."""
    return wait_until


def order(event_id: str, user_id: str, minutes_ago: int = 5, kind: str = "order") -> dict[str, str]:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    return {"event_id": event_id, "type": kind, "user_id": user_id, "at": at.isoformat().replace("+00:00", "Z")}


@pytest.fixture
def event() -> Callable[..., dict[str, str]]:
    """An event as ``POST /v1/events`` takes it: ``event("o-1", "u1")`` is an order 5 minutes ago."""
    return order


@pytest.fixture
def response_check() -> Callable[[httpx.Response], None]:
    """``check_response``, for clients the tests make themselves (``httpx.Client(event_hooks=...)``)."""
    return check_response


@pytest.fixture
def api_tokens() -> str:
    """The tokens setting the tests' apps run with (``AIRFLOW__FUNNEL__API_TOKENS``)."""
    return TOKENS


@pytest.fixture
def read_auth() -> dict[str, str]:
    return bearer(READ_TOKEN)


@pytest.fixture
def write_auth() -> dict[str, str]:
    return bearer(WRITE_TOKEN)


@pytest.fixture
def post_events(api: TestClient) -> Callable[..., httpx.Response]:
    """Post a batch of events with the write token."""

    def post(*events: dict[str, str]) -> httpx.Response:
        return api.post("/v1/events", json={"events": list(events)}, headers=bearer(WRITE_TOKEN))

    return post


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server_env() -> dict[str, str | None]:
    """Changes to the served API's environment (None: the variable is removed, so the setting takes
    its default); a test overrides this with ``@pytest.mark.parametrize("server_env", [{...}])``."""
    return {}


@pytest.fixture
def server(start_server: Callable[..., Any]) -> tuple[httpx.Client, Path]:
    """The API as deployed, one worker (``start_server``)."""
    return start_server()


@pytest.fixture
def start_server(
    mysql_conn: Any, redis_client: Any, api_tokens: str, tmp_path: Path, server_env: dict[str, str | None]
) -> Iterator[Callable[..., tuple[httpx.Client, Path]]]:
    """``start_server(workers=1, **settings)``: the API as deployed, ``python -m funnel.cli serve``
    (uvicorn) on a free loopback port, with the tests' connections and tokens, ``server_env`` and
    the given ``[funnel]`` settings, asked over HTTP; stopped at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []

    def start(workers: int = 1, **funnel_settings: str) -> tuple[httpx.Client, Path]:
        port = free_port()
        env = {
            **os.environ,  # AIRFLOW_HOME and AIRFLOW_CONN_FUNNEL_* of the test databases (tests/conftest.py)
            "AIRFLOW__FUNNEL__API_TOKENS": api_tokens,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            **{f"AIRFLOW__FUNNEL__{name.upper()}": value for name, value in funnel_settings.items()},
        }
        for name, value in server_env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        log = tmp_path / f"server-{port}.log"
        command = [sys.executable, "-m", "funnel.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen([*command, "--workers", str(workers)], cwd=ROOT, env=env, stdout=out, stderr=out)
        processes.append(process)
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, event_hooks={"response": [check_response]}
        )
        clients.append(client)
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
            try:
                if client.get("/healthz").status_code == 200:
                    return client, log
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"no /healthz within {SERVER_START_SECONDS} s: {log.read_text()[-3000:]}"
            )
            time.sleep(0.1)

    yield start
    for client in clients:
        client.close()
    for process in processes:
        stop_process(process)
