"""The API under Schemathesis: requests generated from its own OpenAPI document, on the real
stores, with every check (``schemathesis.toml``: the same settings as the README's ``st run``),
a fixed seed and a small budget.

- every operation: positive and negative requests, each answer checked against its declared
  status, headers and schema; no 5xx;
- the stateful phase: the document's links followed (list segments -> one -> its versions, runs,
  members and changes; subscribe a webhook -> its deliveries -> pause -> remove).

The Airflow-mounted API (``/funnel``) is fuzzed the same way in ``test_airflow_login.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from api_fuzzing import fuzz_every_operation, fuzz_the_links, load_schema

from funnel import wiring

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


@pytest.fixture
def api_app(start_api: Callable[..., Any], add_segment: Callable[..., None], refresh: Callable[..., Any]) -> Any:
    """The app with a segment live, so that reads and subscriptions reach the stores."""
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3"])
    return start_api().app


def test_every_operation_meets_its_document(api_app: Any, write_auth: dict[str, str]) -> None:
    assert fuzz_every_operation(load_schema(api_app), write_auth) == 27


def test_the_links_of_the_document_hold(api_app: Any, write_auth: dict[str, str]) -> None:
    schema = load_schema(api_app)
    operations = {op.ok().label for op in schema.get_all_operations()}
    assert {"POST /v1/webhooks", "GET /v1/segments/{segment_id}", "POST /v1/segments"} <= operations
    subscription = {"segment_id": "buyers", "url": "https://hooks.example.com/funnel"}
    fuzz_the_links(schema, write_auth, subscription, reset=restore_retired)


def restore_retired() -> None:
    """Bring back every segment a sequence retired (``POST /v1/segments/{id}:retire``)."""
    with contextlib.closing(wiring.mysql_connection()) as conn:
        admin = wiring.segment_admin(conn)
        for segment_id in admin.retired():
            admin.restore(segment_id, "fuzz:reset")
