"""The API as deployed: ``python -m funnel.cli serve`` (uvicorn) in its own process, asked over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from funnel.segments import Kind

ROOT = Path(__file__).resolve().parents[2]
VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(
    mysql_conn: Any, redis_client: Any, api_tokens: str, tmp_path: Path, response_check: Callable[..., None]
) -> Iterator[tuple[httpx.Client, Path]]:
    """The server on a free loopback port, with the tests' connections and tokens; stopped at the end."""
    port = free_port()
    env = {
        **os.environ,  # AIRFLOW_HOME and AIRFLOW_CONN_FUNNEL_* of the test databases (tests/conftest.py)
        "AIRFLOW__FUNNEL__API_TOKENS": api_tokens,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "funnel.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, "--workers", "1"], cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10, event_hooks={"response": [response_check]}) as client:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"no /healthz within 30 s: {log.read_text()[-3000:]}"
                time.sleep(0.1)
            yield client, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


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
    assert segments.json() == {"user_id": "u1", "segments": ["buyers", "launch", "vips"], "source": "redis"}
    assert bad_id.status_code == 422
    assert (listed["members"], listed["version"]) == (["u1"], 1)
    second = client.get(
        "/v1/segments/buyers/members", params={"limit": 1, "cursor": listed["next_cursor"]}, headers=read_auth
    )
    assert second.json()["members"] == ["u2"]
    assert "Traceback" not in log.read_text()
