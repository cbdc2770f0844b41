"""The check every API test's answers go through (``answer_contract.check_answer``) catches an
undocumented status, a field the model lacks and a field of the wrong type; and the routes'
declared answers are what the routes send, on a run through every kind of answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from answer_contract import check_answer

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

MEMBER = {
    "segment_id": "s",
    "user_id": "1",
    "member": True,
    "version": 1,
    "refreshed_at": "2026-12-07T15:06:16.443947+00:00",
    "stale": False,
    "source": "redis",
}


def test_the_contract_check_refuses_what_the_document_does_not_say(start_api: Callable[..., Any]) -> None:
    app = start_api().app
    path = "/v1/segments/s/members/1"
    check_answer(app, "GET", path, 200, orjson.dumps(MEMBER))
    check_answer(app, "GET", path, 404, orjson.dumps({"error": "segment 's' does not exist"}))
    with pytest.raises(AssertionError, match="does not document"):
        check_answer(app, "GET", path, 413, orjson.dumps({"error": "too large"}))
    with pytest.raises(AssertionError, match=r"is not .*Membership"):
        check_answer(app, "GET", path, 200, orjson.dumps({**MEMBER, "extra": 1}))
    with pytest.raises(ValueError, match="member"):
        check_answer(app, "GET", path, 200, orjson.dumps({**MEMBER, "member": "yes"}))
    with pytest.raises(ValueError, match="error"):
        check_answer(app, "GET", "/v1/nowhere", 404, orjson.dumps({"detail": "Not Found"}))


def test_every_answer_of_a_tour_is_its_declared_model(
    start_api: Callable[..., Any],
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    write_auth: dict[str, str],
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3"])
    api = start_api()  # every answer below goes through check_answer (tests/api/conftest.py)
    paths = [
        "/healthz",
        "/readyz",
        "/v1/segments",
        "/v1/segments/buyers",
        "/v1/segments/buyers/versions",
        "/v1/segments/buyers/runs",
        "/v1/segments/buyers/members/1",
        "/v1/segments/buyers/members?limit=2",
        "/v1/segments/buyers/changes?limit=2",
        "/v1/users/1/segments",
        "/v1/users/1/history",
        "/v1/segments/nosuch",
    ]
    statuses = [api.get(path, headers=write_auth).status_code for path in paths]
    assert statuses == [200] * 11 + [404]
    assert api.post("/v1/segments/buyers/members:check", json={"user_ids": ["1", "9"]}).status_code == 200
