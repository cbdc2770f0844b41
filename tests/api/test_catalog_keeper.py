"""Each API worker keeps its catalog copy fresh by itself: a row written during a quiet spell is
served by the first request after it (issue 19: the copy used to be re-read only when a request
came, and that request was answered from the old copy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel import settings

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


def test_a_row_added_in_a_quiet_spell_is_served_by_the_first_request_after_it(
    start_api: Callable[..., TestClient], add_segment: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "API_CATALOG_TTL_SECONDS", 0.3)
    add_segment("first")
    api = start_api()
    assert api.get("/v1/segments/first").status_code == 200  # the first read; the keeper starts
    add_segment("quiet")
    time.sleep(6 * 0.3)  # no request at all
    answer = api.get("/v1/segments/quiet")
    assert answer.status_code == 200, answer.text


def test_the_keeper_stops_with_the_app(
    start_api: Callable[..., TestClient], add_segment: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "API_CATALOG_TTL_SECONDS", 0.3)
    add_segment("first")
    api = start_api()
    assert api.get("/v1/segments").status_code == 200
    service = api.app.state.service
    keeper = service._catalog._keeper  # what this test is about
    assert keeper is not None
    assert not keeper.done()
    api.__exit__(None, None, None)  # the lifespan's end closes the Service
    assert keeper.cancelled() or keeper.done()
