"""Schemathesis over the API's own document, for the suite (``tests/api/test_fuzzed.py`` and the
Airflow-mounted API in ``tests/api/test_airflow_login.py``): the project's settings
(``schemathesis.toml``, as the README's ``st run``), every check, a fixed seed, a small budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.config import SchemathesisConfig

CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
BUDGET = settings(
    max_examples=25, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)


def load_schema(app: Any, path: str = "/openapi.json") -> Any:
    """The app's own document with the project's Schemathesis settings; the preview (HiveServer2,
    seconds per query) is left to its own tests."""
    return schemathesis.openapi.from_asgi(path, app, config=SchemathesisConfig.from_path(CONFIG)).exclude(
        path_regex="/v1/preview$"
    )


def fuzz_every_operation(schema: Any, headers: dict[str, str], budget: settings = BUDGET) -> int:
    """Every operation's generated requests, all checks; how many operations ran."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 15
    for operation in operations:

        @budget
        @given(case=operation.as_strategy())
        def all_checks(case: Any) -> None:
            case.call_and_validate(headers=headers)

        all_checks()
    return len(operations)


#: The segment the stateful phase adds, so that the links of ``POST /v1/segments`` lead somewhere.
NEW_SEGMENT = {"segment_id": "fuzzed", "name": "Fuzzed", "kind": "proxy", "rule": {"tag": "new_user"}}


def fuzz_the_links(
    schema: Any,
    headers: dict[str, str],
    subscription: dict[str, str],
    steps: int = 25,
    reset: Callable[[], None] = lambda: None,
) -> None:
    """The stateful phase: sequences of calls along the document's links, all checks. Each
    ``POST /v1/webhooks`` sends ``subscription`` (a generated segment id is not in the catalog:
    its webhook would not exist to read, pause and remove). ``reset`` runs after each sequence,
    so that each starts from the same catalog (Hypothesis replays a sequence and expects the
    same answers)."""
    links = schema.as_state_machine()

    class Calls(links):  # type: ignore[misc, valid-type]
        def teardown(self) -> None:
            reset()
            super().teardown()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": headers}

        def before_call(self, case: Any) -> None:
            if case.operation.label == "POST /v1/webhooks":  # a subscription that exists, to follow its links
                case.body = subscription
            elif case.operation.label == "POST /v1/segments":  # a segment that exists (then 409), likewise
                case.body = NEW_SEGMENT

    run_state_machine_as_test(
        Calls,
        settings=settings(BUDGET, max_examples=steps, stateful_step_count=6),
    )
