"""A segment's past, as the Segments page reads it: its definition, its kept versions
(``GET /v1/segments/{id}/versions``) and its recent attempts (``GET /v1/segments/{id}/runs``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel.core.errors import RefreshRejected
from funnel.core.segment import Kind

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


def test_the_kept_versions_give_each_refreshs_size_entered_and_exited_oldest_first(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3"])
    refresh("buyers", ["2", "3", "4", "5"])  # 1 left; 4 and 5 came in
    refresh("buyers", ["2", "3", "4", "5", "6"])
    refresh("buyers", ["5", "6", "7"])  # the first version is pruned (keep_versions 3)

    body = api.get("/v1/segments/buyers/versions").json()

    assert body["keep_versions"] == 3
    rows = [(v["version"], v["state"], v["size"], v["entered"], v["exited"]) for v in body["versions"]]
    assert rows == [(2, "retired", 4, 2, 1), (3, "retired", 5, 1, 0), (4, "live", 3, 1, 3)]
    first = body["versions"][0]
    assert dt.datetime.fromisoformat(first["logical_date"]) == dt.datetime(2030, 1, 2, 9, tzinfo=dt.UTC)
    assert (first["dag_id"], first["run_id"]) == ("funnel_test_api", "scheduled__1")
    assert dt.datetime.fromisoformat(first["promoted_at"]) >= dt.datetime.fromisoformat(first["created_at"])


def test_the_runs_list_every_attempt_newest_first_with_its_outcome_and_error(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3", "4"])
    with pytest.raises(RefreshRejected):
        refresh("buyers", ["1"])  # shrinks by 75 %: refused by the guard
    refresh("buyers", ["1", "2", "3"])

    runs = api.get("/v1/segments/buyers/runs").json()["runs"]

    assert [(r["status"], r["version"], r["size"]) for r in runs] == [
        ("success", 3, 3),
        ("rejected", 2, 1),  # version 2 was computed, never made live
        ("success", 1, 4),
    ]
    assert runs[0]["error"] is None
    assert (runs[0]["entered"], runs[0]["exited"]) == (0, 1)
    assert runs[1]["error"].startswith("segment 'buyers': the new result has 1 users against 4 live, a 75.0% shrink")
    assert runs[2]["run_id"] == "scheduled__0"
    assert runs[2]["try_number"] == 1
    started, finished = (dt.datetime.fromisoformat(runs[0][k]) for k in ("started_at", "finished_at"))
    assert started <= finished

    assert [r["status"] for r in api.get("/v1/segments/buyers/runs", params={"limit": 1}).json()["runs"]] == ["success"]


def test_a_segment_never_refreshed_has_no_versions_and_no_runs(
    api: TestClient, add_segment: Callable[..., None]
) -> None:
    add_segment("fresh_out_of_the_box")

    assert api.get("/v1/segments/fresh_out_of_the_box/versions").json()["versions"] == []
    assert api.get("/v1/segments/fresh_out_of_the_box/runs").json()["runs"] == []


def test_the_detail_shows_the_query_or_the_rule_and_a_static_segments_run_at(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], tags_in_redis: None
) -> None:
    add_segment("buyers")
    add_segment("launch", "static")
    add_segment("vips", rule=VIPS_RULE)
    refresh("launch", ["1"], Kind.STATIC)

    buyers = api.get("/v1/segments/buyers").json()
    launch = api.get("/v1/segments/launch").json()
    vips = api.get("/v1/segments/vips").json()

    assert buyers["query"] == "SELECT user_id FROM dw.users"
    assert "run_at" not in buyers
    assert dt.datetime.fromisoformat(launch["run_at"]).replace(tzinfo=dt.UTC) == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert vips["rule"] == {"tag": "order_count", "op": ">=", "value": 2}
    assert "query" not in vips


def test_a_proxy_segment_has_no_versions_or_runs_and_an_unknown_one_is_404(
    api: TestClient, add_segment: Callable[..., None], tags_in_redis: None
) -> None:
    add_segment("vips", rule=VIPS_RULE)

    for path in ("versions", "runs"):
        proxy = api.get(f"/v1/segments/vips/{path}")
        unknown = api.get(f"/v1/segments/nope/{path}")
        assert proxy.status_code == 409
        assert "proxy segment" in proxy.json()["error"]
        assert (unknown.status_code, unknown.json()) == (404, {"error": "segment 'nope' does not exist"})


def test_the_history_needs_a_token_and_a_sane_limit(
    start_api: Callable[..., TestClient], add_segment: Callable[..., None]
) -> None:
    add_segment("buyers")
    anonymous, reader = start_api(token=None), start_api()

    assert anonymous.get("/v1/segments/buyers/versions").status_code == 401
    assert anonymous.get("/v1/segments/buyers/runs").status_code == 401
    for bad in ("0", "-1", "ten", "100001"):
        response = reader.get("/v1/segments/buyers/runs", params={"limit": bad})
        assert response.status_code == 422
        assert "limit" in response.json()["error"]
