"""A segment's whole life through funnel's API while Airflow's scheduler and DAG processor run:
added (previewed first), refreshed, edited (a new revision, and the next version says so),
disabled (refused while a composite uses it), retired and restored; the DAGs, the stores and the
revisions follow. Runs on the session's stack (``conftest.py``), after the other system tests
(it adds its own segments and leaves theirs alone)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

import pytest
from airflow_stack import AirflowClient, AirflowStack, clear_of_the_next_slot, eventually
from helpers import hive_execute, mysql_live_members, redis_live_members

from funnel.core.dag_plan import DYNAMIC_DAG_ID

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

PARSE_TIMEOUT = 90
RUN_TIMEOUT = 180
HIVE_DB = os.environ.get("FUNNEL_SYSTEM_HIVE_DB", "funnel_system")
EVENS = f"SELECT user_id FROM {HIVE_DB}.people WHERE half = 0"
FEW_EVENS = f"{EVENS} AND user_id < 300"  # 150 of the 200: within max_shrink_pct
ODDS = f"SELECT user_id FROM {HIVE_DB}.people WHERE half = 1"


@pytest.fixture(scope="module")
def people(system_hive: Any) -> None:
    hive_execute(
        system_hive,
        f"DROP TABLE IF EXISTS {HIVE_DB}.people",
        f"CREATE TABLE {HIVE_DB}.people STORED AS PARQUET AS SELECT id AS user_id, id % 2 AS half FROM range(400)",
    )


@pytest.fixture(scope="module")
def api(airflow: AirflowClient, airflow_stack: AirflowStack) -> Iterator[Any]:
    """funnel's API under Airflow's API server, with the stack's write token (``funnel.client``)."""
    from funnel.client import FunnelClient

    with FunnelClient(f"{airflow.base_url}/funnel", airflow_stack.funnel_tokens()["write"], timeout=60) as client:
        yield client


def run_dynamic_dag(airflow: AirflowClient) -> dict[str, str]:
    """Trigger the dynamic DAG now and wait for it (after any scheduled run due); its task states."""
    airflow.set_paused(DYNAMIC_DAG_ID, False)
    clear_of_the_next_slot(airflow, DYNAMIC_DAG_ID, dt.timedelta(minutes=2), PARSE_TIMEOUT, RUN_TIMEOUT)
    run = airflow.wait_for_run(DYNAMIC_DAG_ID, airflow.trigger(DYNAMIC_DAG_ID)["dag_run_id"], RUN_TIMEOUT)
    return airflow.task_states(DYNAMIC_DAG_ID, run["dag_run_id"])


def tasks_then(airflow: AirflowClient, present: set[str], absent: set[str], what: str) -> dict[str, Any]:
    """Wait until the dynamic DAG has the ``present`` tasks and none of the ``absent`` ones."""

    def probe() -> dict[str, Any] | None:
        tasks = airflow.tasks(DYNAMIC_DAG_ID)
        return tasks if present <= set(tasks) and not absent & set(tasks) else None

    return eventually(probe, PARSE_TIMEOUT, what)


def task_doc_says(airflow: AirflowClient, task_id: str, text: str) -> bool:
    return text in (airflow.tasks(DYNAMIC_DAG_ID).get(task_id, {}).get("doc_md") or "")


def test_a_segments_life_through_the_api_while_the_scheduler_runs(
    airflow: AirflowClient, api: Any, people: None, system_mysql: Any, system_redis: Any
) -> None:
    from funnel.client import ApiError

    # Added: previewed first (its size and sample are in the answer), a revision, a task.
    evens = {"segment_id": "life_evens", "name": "Evens", "kind": "dynamic", "query": EVENS, "owner": "growth"}
    added = api.add_segment(evens, comment="launch")
    assert (added.revision, added.actor, added.preview.size) == (1, "api:write-token", 200)
    api.add_segment({"segment_id": "life_odds", "name": "Odds", "kind": "dynamic", "query": ODDS})
    both = {
        "segment_id": "life_all",
        "name": "All",
        "kind": "composite",
        "rule": {"union": ["life_evens", "life_odds"]},
    }
    assert api.add_segment(both).preview is None  # its operands have no live version yet: nothing to preview
    tasks = tasks_then(airflow, {"life_evens", "life_odds", "life_all"}, set(), "the new segments' tasks")
    assert tasks["life_evens"]["owner"] == "growth"

    states = run_dynamic_dag(airflow)
    assert {states[t] for t in ("life_evens", "life_odds", "life_all")} == {"success"}
    assert len(mysql_live_members(system_mysql, "life_all")) == 400
    assert redis_live_members(system_redis, "life_evens") == {str(i) for i in range(0, 400, 2)}
    assert api.versions("life_evens").versions[-1].revision == 1  # "v1 from r1" (a scheduled run may have made v1)

    # Edited: a new revision; the task follows at the next parse and the next version says so.
    edited = api.edit_segment("life_evens", {"query": FEW_EVENS}, expect_revision=1)
    assert (edited.revision, edited.preview.size, list(edited.changed)) == (2, 150, ["query"])
    eventually(lambda: task_doc_says(airflow, "life_evens", "user_id < 300"), PARSE_TIMEOUT, "the edited query")
    run_dynamic_dag(airflow)
    newest = api.versions("life_evens").versions[-1]
    assert (newest.revision, newest.size) == (2, 150)  # "v2 from r2"
    assert redis_live_members(system_redis, "life_evens") == {str(i) for i in range(0, 300, 2)}

    # Disabled: refused while the composite uses it, naming it.
    with pytest.raises(ApiError) as in_use:
        api.edit_segment("life_evens", {"enabled": False})
    assert (in_use.value.http_status, "composite life_all depend on it" in in_use.value.message) == (409, True)

    # Retired: no task, its answers are 410 with retired_at, its data kept.
    retired = api.retire_segment("life_all", comment="campaign over")
    tasks_then(airflow, {"life_evens"}, {"life_all"}, "the retired segment's task to go")
    with pytest.raises(ApiError) as gone:
        api.is_member("life_all", "3")
    assert (gone.value.http_status, retired.at.isoformat() in gone.value.message) == (410, True)
    assert len(mysql_live_members(system_mysql, "life_all")) == 350  # 150 evens and 200 odds, from the second run

    # Now the operand can be disabled; a restore is checked against the catalog as it is now.
    assert api.edit_segment("life_evens", {"enabled": False}).change.value == "disabled"
    tasks_then(airflow, {"life_odds"}, {"life_evens"}, "the disabled segment's task to go")
    with pytest.raises(ApiError) as refused:
        api.restore_segment("life_all")
    assert (refused.value.http_status, "life_evens" in refused.value.message) == (422, True)
    assert api.edit_segment("life_evens", {"enabled": True}).change.value == "enabled"
    assert api.restore_segment("life_all").change.value == "restored"
    tasks_then(airflow, {"life_evens", "life_all"}, set(), "the restored segment's task")
    assert api.is_member("life_all", "3").member is True  # its data was kept

    assert [r.change.value for r in api.revisions("life_evens").revisions] == [
        "created",
        "edited",
        "disabled",
        "enabled",
    ]
    assert [(r.change.value, r.actor) for r in api.revisions("life_all").revisions] == [
        ("created", "api:write-token"),
        ("retired", "api:write-token"),
        ("restored", "api:write-token"),
    ]
