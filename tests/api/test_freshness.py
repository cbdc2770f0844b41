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

from funnel import settings, wiring
from funnel.core.errors import HiveQueryError, RefreshRejected
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.core.states import RunStatus
from funnel.services.refresh import RefreshRequest
from funnel.storage import layout
from funnel.storage.mysql.run_history import Outcome, RunHistory

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

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


def age_history(mysql_conn: Any, segment_id: str, days: int = 3) -> None:
    """Move a segment's refresh attempts ``days`` back, as if nothing had refreshed it since."""
    cur = mysql_conn.cursor()
    cur.execute(
        f"UPDATE {layout.RUNS_TABLE} SET started_at = started_at - INTERVAL %s DAY,"
        " finished_at = finished_at - INTERVAL %s DAY WHERE segment_id = %s",
        (days, days, segment_id),
    )
    mysql_conn.commit()


def test_membership_answers_say_stale_once_the_background_reread_sees_it(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    mysql_conn: Any,
    monkeypatch: pytest.MonkeyPatch,
    until: Callable[..., Any],
) -> None:
    add_segment("s")
    add_segment("t")
    refresh("s", ["1", "2"])
    refresh("t", ["1"])
    first = api.get("/v1/segments/s/members/1").json()
    assert (first["member"], first["version"], first["stale"]) == (True, 1, False)
    assert first["refreshed_at"] == api.get("/v1/segments/s").json()["refreshed_at"]

    age_history(mysql_conn, "s")  # its last success started 3 days ago: two slots passed without one
    monkeypatch.setattr(settings, "API_CATALOG_TTL_SECONDS", 0.0)  # re-read at the next request, in the background
    stale = until(lambda: (r := api.get("/v1/segments/s/members/1").json())["stale"] and r, what="s answered stale")

    assert (stale["member"], stale["version"], stale["refreshed_at"]) == (True, 1, first["refreshed_at"])
    assert api.get("/v1/segments/s/members/9").json()["stale"] is True  # a "no" is just as old
    checked = api.post("/v1/segments/s/members:check", json={"user_ids": ["1", "9"]}).json()
    assert (checked["members"], checked["stale"], checked["refreshed_at"]) == (
        {"1": True, "9": False},
        True,
        first["refreshed_at"],
    )
    listed = api.get("/v1/segments/s/members").json()
    assert (listed["members"], listed["version"], listed["refreshed_at"], listed["stale"]) == (
        ["1", "2"],
        1,
        first["refreshed_at"],
        True,
    )
    users = api.get("/v1/users/1/segments").json()
    assert (users["segments"], users["stale"]) == (["s", "t"], ["s"])
    assert (users["versions"]["s"]["stale"], users["versions"]["t"]["stale"]) == (True, False)
    assert api.get("/v1/users/9/segments").json()["stale"] == ["s"]  # member of nothing, from stale data
    assert api.get("/v1/segments/t/members/1").json()["stale"] is False


def test_a_failing_segment_whose_data_is_in_its_objective_is_not_stale(catalog: None, api: TestClient) -> None:
    broken = api.get("/v1/segments/broken/members/1").json()  # failing: its last attempt failed just after a success
    assert (broken["member"], broken["stale"]) == (True, False)
    vip = api.get("/v1/segments/vips/members/1").json()
    assert (vip["version"], vip["stale"]) == (0, False)  # proxy: the tag version, never stale
    newbie = api.get("/v1/segments/newbie/members/1")  # stale because never computed: it has no answer at all
    assert newbie.status_code == 409
    assert api.get("/v1/users/1/segments").json()["not_computed"] == ["launch", "newbie", "stale"]
