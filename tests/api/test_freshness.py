"""Freshness in the API: each segment says fresh / stale / failing and why, with its last run;
``GET /v1/segments?stale=true`` lists the ones that need a look."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from funnel import wiring
from funnel.errors import HiveQueryError, RefreshRejected, RunStatus
from funnel.refresh import RefreshRequest
from funnel.segments import Kind
from funnel.stores.history import Outcome, RunHistory
from funnel.stores.run_info import RunInfo

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'
HIVE_ERROR = "Table or view not found: dw.users"


@pytest.fixture
def failed_refresh(redis_client: Any) -> Callable[[str], None]:
    """A refresh whose Hive query fails, recorded as the refresh task records it."""

    def run(segment_id: str) -> None:
        def fetch() -> Iterator[list[str]]:
            raise HiveQueryError(HIVE_ERROR)

        info = RunInfo("funnel_dynamic_segments", "manual__broken", dt.datetime(2030, 2, 1, 9, tzinfo=dt.UTC))
        with wiring.refresher(redis_client=redis_client) as refresher:
            lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
            with pytest.raises(HiveQueryError):
                refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, info), fetch, lock)

    return run


@pytest.fixture
def catalog(
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    failed_refresh: Callable[[str], None],
    mysql_conn: Any,
    tags_in_redis: None,
) -> None:
    """One segment in each situation a data engineer meets."""
    for segment_id in ("broken", "emptied", "fresh", "newbie", "stale"):
        add_segment(segment_id)
    add_segment("launch", "static")  # run_at 2030: not due yet
    add_segment("paused", enabled=False)
    add_segment("vips", rule=VIPS_RULE)
    refresh("fresh", ["1", "2"])
    refresh("broken", ["1", "2"])
    failed_refresh("broken")
    refresh("emptied", ["1", "2"])
    with pytest.raises(RefreshRejected):
        refresh("emptied", [])  # the empty-result guard refuses it
    # "stale" was last refreshed three days ago and nothing since.
    history = RunHistory(mysql_conn)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    old = RunInfo("funnel_dynamic_segments", "scheduled__old", long_ago)
    attempt = history.start("stale", old, long_ago)
    history.finish(attempt, Outcome(RunStatus.SUCCESS, version=1, size=5), long_ago + dt.timedelta(minutes=4))


def by_id(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {s["segment_id"]: s for s in response.json()["segments"]}


def test_every_segment_says_how_fresh_it_is_and_why(catalog: None, api: TestClient) -> None:
    segments = by_id(api.get("/v1/segments"))

    assert {sid: s["freshness"] for sid, s in segments.items()} == {
        "broken": "failing",
        "emptied": "failing",
        "fresh": "fresh",
        "launch": "fresh",
        "newbie": "stale",
        "paused": "fresh",
        "stale": "stale",
        "vips": "fresh",
    }
    broken = segments["broken"]
    assert broken["last_run"]["status"] == "failed"
    assert HIVE_ERROR in broken["last_run"]["error"]
    assert (broken["last_run"]["run_id"], broken["last_run"]["try_number"]) == ("manual__broken", 1)
    assert "the last attempt (manual__broken, try 1) failed at " in broken["freshness_reason"]
    assert HIVE_ERROR in broken["freshness_reason"]
    assert broken["size"] == 2  # its members are still served
    assert segments["emptied"]["last_run"]["status"] == "rejected"
    assert "the query returned no users" in segments["emptied"]["freshness_reason"]
    assert "a whole slot passed without one" in segments["stale"]["freshness_reason"]
    assert segments["newbie"]["freshness_reason"].startswith("never computed")
    assert segments["newbie"]["last_run"] is None
    assert (segments["fresh"]["last_run"]["status"], segments["fresh"]["last_run"]["error"]) == ("success", None)
    assert segments["launch"]["freshness_reason"] == "not due yet: it runs at 2030-01-01 00:00 UTC"
    assert segments["paused"]["freshness_reason"].startswith("disabled: not refreshed")
    assert segments["vips"]["freshness_reason"] == "proxy segment: answered at request time from the users' tags"
    assert segments["vips"]["last_run"] is None


def test_stale_true_lists_the_stale_and_failing_segments_only(catalog: None, api: TestClient) -> None:
    assert list(by_id(api.get("/v1/segments?stale=true"))) == ["broken", "emptied", "newbie", "stale"]
    assert list(by_id(api.get("/v1/segments?stale=false"))) == ["fresh", "launch", "paused", "vips"]
    wrong = api.get("/v1/segments?stale=yes")
    assert (wrong.status_code, wrong.json()) == (
        422,
        {"error": "stale must be 'true' (the stale and failing segments) or 'false' (the fresh ones)"},
    )


def test_one_segment_carries_the_same_freshness(catalog: None, api: TestClient) -> None:
    listed = by_id(api.get("/v1/segments"))
    for segment_id in ("broken", "fresh", "newbie", "vips"):
        one = api.get(f"/v1/segments/{segment_id}").json()
        assert {k: one[k] for k in ("freshness", "freshness_reason", "last_run")} == {
            k: listed[segment_id][k] for k in ("freshness", "freshness_reason", "last_run")
        }


def test_a_successful_refresh_makes_a_failing_segment_fresh_again(
    catalog: None, api: TestClient, refresh: Callable[..., Any]
) -> None:
    refresh("broken", ["1", "2", "3"])
    broken = api.get("/v1/segments/broken").json()
    assert (broken["freshness"], broken["last_run"]["status"], broken["size"]) == ("fresh", "success", 3)
    assert "broken" not in by_id(api.get("/v1/segments?stale=true"))


def test_the_served_api_lists_stale_segments_over_http(
    catalog: None, server: tuple[httpx.Client, Path], read_auth: dict[str, str]
) -> None:
    client, _ = server
    stale = client.get("/v1/segments?stale=true", headers=read_auth)
    assert [(s["segment_id"], s["freshness"]) for s in stale.json()["segments"]] == [
        ("broken", "failing"),
        ("emptied", "failing"),
        ("newbie", "stale"),
        ("stale", "stale"),
    ]
    one = client.get("/v1/segments/broken", headers=read_auth).json()
    assert one["last_run"]["status"] == "failed"
    assert client.get("/v1/segments?stale=true").status_code == 401
