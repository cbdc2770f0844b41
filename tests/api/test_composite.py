"""Composite segments through the API: listed with their operands, described by their set
expression, served like any stored segment, and their runs name the versions they used."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from funnel import wiring
from funnel.composite.compute import composite_batches
from funnel.composite.expr import parse_expression
from funnel.refresh import RefreshRequest
from funnel.segments import Kind
from funnel.stores.run_info import RunInfo

RULE = {"minus": [{"union": ["buyers", "browsers"]}, ["churned"]]}


def refresh_composite(redis_client: Any, segment_id: str, rule: object) -> None:
    """What the composite's Airflow task does, for one slot."""
    info = RunInfo("funnel_test_api", "scheduled__composite", dt.datetime(2031, 1, 1, 9, tzinfo=dt.UTC))
    expr = parse_expression(segment_id, json.dumps(rule))
    with wiring.refresher(redis_client=redis_client) as refresher, wiring.composite_source() as source:
        lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
        batches = composite_batches(
            segment_id, expr, source, info, refresher.note_inputs, 1000, logging.getLogger("test")
        )
        refresher.refresh(RefreshRequest(segment_id, Kind.COMPOSITE, info), batches, lock)


def test_a_composite_is_listed_with_its_operands_and_served_like_any_segment(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], redis_client: Any
) -> None:
    for segment_id in ("buyers", "browsers", "churned"):
        add_segment(segment_id)
    add_segment("engaged", "composite", rule=json.dumps(RULE))
    refresh("buyers", ["1", "2", "3"])
    refresh("browsers", ["3", "4", "5"])
    refresh("churned", ["2", "5", "9"])
    refresh_composite(redis_client, "engaged", RULE)

    listed = {s["segment_id"]: s for s in api.get("/v1/segments").json()["segments"]}
    assert listed["engaged"]["kind"] == "composite"
    assert listed["engaged"]["operands"] == ["browsers", "buyers", "churned"]
    assert (listed["engaged"]["size"], listed["engaged"]["version"]) == (3, 1)
    assert "operands" not in listed["buyers"]

    detail = api.get("/v1/segments/engaged").json()
    assert detail["rule"] == RULE
    assert detail["expression"] == "(buyers | browsers) - churned"

    assert api.get("/v1/segments/engaged/members/4").json()["member"] is True
    assert api.get("/v1/segments/engaged/members/5").json()["member"] is False
    members = api.get("/v1/segments/engaged/members").json()["members"]
    assert sorted(members) == ["1", "3", "4"]

    (run,) = api.get("/v1/segments/engaged/runs").json()["runs"]
    assert run["status"] == "success"
    assert [(i["segment_id"], i["version"], i["this_run"]) for i in run["inputs"]] == [
        ("browsers", 1, False),
        ("buyers", 1, False),
        ("churned", 1, False),
    ]
    (plain,) = api.get("/v1/segments/buyers/runs").json()["runs"]
    assert plain["inputs"] is None
