"""``GET /metrics``: what it counts and shows, who may read it, every worker added up, and a real
Prometheus scraping it (Debian's ``prometheus``, started here on loopback with a generated config)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import READ_TOKEN, WRITE_TOKEN, bearer, free_port, stop_process
from prometheus_client.parser import text_string_to_metric_families

from funnel import settings

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

SECRET_USER = "u-never-in-a-label-7f3a"
USERS_ROUTE = "/v1/users/{user_id}/segments"
METRICS_TOKEN = "metrics-token-41c9e0"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    assert found, "the exposition holds no sample"
    return found


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when the series is absent: a counter not counted yet)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_by_route_template_and_show_each_segment(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    tags_in_redis: None,
    post_events: Callable[..., httpx.Response],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("buyers")
    add_segment("vips", rule='{"tag": "order_count", "op": ">=", "value": 2}')
    refresh("buyers", ["u1", "u2"])
    before = api.get("/metrics").text

    for _ in range(3):
        assert api.get(f"/v1/users/{SECRET_USER}/segments").status_code == 200
    assert api.get("/v1/segments/buyers/members/u1").json()["member"] is True
    assert api.head("/v1/segments/buyers").status_code == 200
    assert api.get("/v1/segments/nobody").status_code == 404
    assert api.get(f"/no/such/{SECRET_USER}").status_code == 404
    first, second = event("m-1", "u1"), event("m-2", "u1")
    assert post_events(first, second).json()["accepted"] == 2
    assert post_events(first).json()["duplicates"] == 1
    after = api.get("/metrics")

    assert after.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = after.text
    assert SECRET_USER not in text  # no user id, no raw path in any label
    counted = {
        ("funnel_api_requests_total", (("route", USERS_ROUTE), ("method", "GET"), ("status", "200"))): 3,
        (
            "funnel_api_requests_total",
            (("route", "/v1/segments/{segment_id}"), ("method", "HEAD"), ("status", "200")),
        ): 1,
        (
            "funnel_api_requests_total",
            (("route", "/v1/segments/{segment_id}"), ("method", "GET"), ("status", "404")),
        ): 1,
        ("funnel_api_requests_total", (("route", "<unmatched>"), ("method", "GET"), ("status", "404"))): 1,
        ("funnel_api_answers_total", (("route", USERS_ROUTE), ("source", "redis"))): 3,
        (
            "funnel_api_answers_total",
            (("route", "/v1/segments/{segment_id}/members/{user_id}"), ("source", "redis")),
        ): 1,
        ("funnel_events_total", (("outcome", "accepted"),)): 2,
        ("funnel_events_total", (("outcome", "duplicate"),)): 1,
        ("funnel_event_batch_duration_seconds_count", ()): 2,
        ("funnel_api_request_duration_seconds_count", (("route", USERS_ROUTE), ("method", "GET"))): 3,
    }
    for (name, labels), delta in counted.items():
        assert value(text, name, **dict(labels)) - value(before, name, **dict(labels)) == delta, (name, labels)
    # A 1 ms p99 is told from a 2 ms one.
    buckets = {
        labels["le"] for (name, frozen) in samples(text) if name.endswith("_bucket") for labels in [dict(frozen)]
    }
    assert {"0.001", "0.0015", "0.002"} <= buckets

    # Per segment, from the catalog copy: size, live version, since refreshed, stale, last run.
    buyers = {"segment": "buyers", "kind": "dynamic"}
    assert value(text, "funnel_segment_members", **buyers) == 2
    assert value(text, "funnel_segment_live_version", **buyers) == 1
    assert 0 <= value(text, "funnel_segment_seconds_since_refresh", **buyers) < 600
    assert value(text, "funnel_segment_stale", **buyers) in (0, 1)
    assert value(text, "funnel_segment_enabled", segment="vips", kind="proxy") == 1
    assert ("funnel_segment_members", frozenset({"segment": "vips", "kind": "proxy"}.items())) not in samples(text)
    assert value(text, "funnel_store_up", store="redis") == value(text, "funnel_store_up", store="mysql") == 1
    assert ("funnel_tags_version", frozenset()) in samples(text)  # 0: no tag load yet (events apply to it)
    assert value(text, "funnel_api_catalog_read_timestamp_seconds") > time.time() - 600


def test_metrics_need_read_scope_or_the_metrics_token_or_loopback_when_configured(
    start_api: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnel.api.app import create_app

    anonymous = start_api(token=None)
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", headers=bearer("not-a-token")).status_code == 401
    assert anonymous.get("/metrics", headers=bearer(READ_TOKEN)).status_code == 200
    assert anonymous.get("/metrics", headers=bearer(WRITE_TOKEN)).status_code == 200

    monkeypatch.setattr(settings, "METRICS_TOKEN", METRICS_TOKEN)
    assert anonymous.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
    assert anonymous.get(f"/v1/users/{SECRET_USER}/segments", headers=bearer(METRICS_TOKEN)).status_code == 401

    with TestClient(create_app(), client=("127.0.0.1", 50000)) as loopback:
        assert loopback.get("/metrics").status_code == 401  # loopback alone is not enough by default
        monkeypatch.setattr(settings, "METRICS_OPEN_ON_LOOPBACK", True)
        assert loopback.get("/metrics").status_code == 200
        assert loopback.get("/v1/segments").status_code == 401  # the rest of the API is not opened
    assert anonymous.get("/metrics").status_code == 401  # a peer not on loopback still needs a token


@pytest.mark.single_redis  # the workers' counts and the scrape: no Redis code of their own
def test_every_worker_counts_and_a_real_prometheus_scrapes_the_sum(
    start_server: Callable[..., Any],
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    read_auth: dict[str, str],
    until: Callable[..., Any],
    tmp_path: Path,
) -> None:
    add_segment("buyers")
    refresh("buyers", ["u1", "u2"])
    client, log = start_server(workers=2, metrics_token=METRICS_TOKEN)
    base = str(client.base_url)
    requests = 40
    for n in range(requests):  # a new connection each: the kernel spreads them over both workers
        with httpx.Client(base_url=base, timeout=10) as fresh:
            answer = fresh.get(f"/v1/users/u{n}/segments", headers=read_auth)
            assert answer.status_code == 200

    def scraped() -> float:
        return value(client.get("/metrics", headers=bearer(METRICS_TOKEN)).text, "funnel_api_requests_total",
                     route=USERS_ROUTE, method="GET", status="200")  # fmt: skip

    # Whichever worker answers the scrape, it counts every worker's requests.
    assert [scraped() for _ in range(6)] == [float(requests)] * 6
    live = samples(client.get("/metrics", headers=read_auth).text)
    workers = {dict(labels).get("pid") for name, labels in live if name == "funnel_api_catalog_read_timestamp_seconds"}
    assert len(workers) == 2, f"both workers read the catalog and say when: {workers}"

    with prometheus(tmp_path, base.removeprefix("http://"), METRICS_TOKEN) as query:
        until(
            lambda: query(f'sum(funnel_api_requests_total{{route="{USERS_ROUTE}",status="200"}})') == requests,
            timeout=60,
            what=f"Prometheus to scrape {requests} requests",
        )
        assert query('funnel_segment_members{segment="buyers"}') == 2
        assert query('up{job="funnel"}') == 1
    assert "Traceback" not in log.read_text()


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str, token: str) -> Iterator[Callable[[str], float | None]]:
    """Debian's Prometheus on a free loopback port, scraping ``target`` every second with the
    metrics token; yields ``query(promql)``: the first result's value, None while there is none."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run scripts/bootstrap (it installs Debian's prometheus)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: funnel\n"
        f"    authorization: {{credentials: {token}}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def query(promql: str) -> float | None:
        assert process.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        try:
            result = http.get("/api/v1/query", params={"query": promql}).json()["data"]["result"]
        except (httpx.TransportError, ValueError, KeyError):
            return None  # not up yet
        return float(result[0]["value"][1]) if result else None

    try:
        yield query
    finally:
        http.close()
        stop_process(process)
