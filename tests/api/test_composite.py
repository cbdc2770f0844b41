"""Composite segments through the API: listed with their operands, described by their set
expression, served like any stored segment, and their runs name the versions they used."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

RULE = {"minus": [{"union": ["buyers", "browsers"]}, ["churned"]]}


def test_a_composite_is_listed_with_its_operands_and_served_like_any_segment(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    refresh_composite: Callable[..., Any],
) -> None:
    for segment_id in ("buyers", "browsers", "churned"):
        add_segment(segment_id)
    add_segment("engaged", "composite", rule=json.dumps(RULE))
    refresh("buyers", ["1", "2", "3"])
    refresh("browsers", ["3", "4", "5"])
    refresh("churned", ["2", "5", "9"])
    refresh_composite("engaged", RULE)

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
