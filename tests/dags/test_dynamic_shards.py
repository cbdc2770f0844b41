"""Above ``dynamic_dag_max_tasks``, the dynamic segments are DAGs in shards, each a whole dynamic
DAG: the schedule, the deadline alert, the tags, a composite downstream of its operands."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import insert_segments

from funnel import settings
from funnel.core.dag_plan import DYNAMIC_DAG_ID

pytestmark = pytest.mark.services  # the catalog is read from the real MySQL (tests/conftest.py)

FRUITS = ["apples", "bananas", "cherries", "dates", "elder", "figs", "grapes"]
CATALOG = [
    *({"segment_id": f, "name": f, "kind": "dynamic", "query": f"SELECT user_id FROM dw.{f}"} for f in FRUITS),
    {"segment_id": "mix", "name": "mix", "kind": "composite", "rule": json.dumps({"union": ["apples", "cherries"]})},
]
#: sha256 buckets of the ids; the composite goes where its smallest member (apples) goes.
SHARDS = {
    "funnel_dynamic_segments_02": ["bananas", "figs"],
    "funnel_dynamic_segments_03": ["apples", "cherries", "mix"],
    "funnel_dynamic_segments_16": ["dates"],
    "funnel_dynamic_segments_89": ["elder"],
    "funnel_dynamic_segments_94": ["grapes"],
}


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW__FUNNEL__STRICT_CATALOG", "False")
    monkeypatch.setenv("AIRFLOW__FUNNEL__QUERY_CHECK_BUDGET_SECONDS", "60")
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))


def load_dags() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    return bag.dags


def test_over_the_cap_each_shard_is_a_whole_dynamic_dag(mysql_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    insert_segments(mysql_conn, *CATALOG)
    monkeypatch.setattr(settings, "DYNAMIC_DAG_MAX_TASKS", 3)
    dags = load_dags()
    dynamic = {dag_id: dag for dag_id, dag in dags.items() if "dynamic" in dag.tags}
    assert DYNAMIC_DAG_ID not in dags
    assert {dag_id: sorted(t.task_id for t in dag.tasks) for dag_id, dag in dynamic.items()} == SHARDS
    mixed = dynamic["funnel_dynamic_segments_03"]
    assert sorted(mixed.get_task("mix").upstream_task_ids) == ["apples", "cherries"]
    for dag in dynamic.values():
        back = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert back.timetable.summary == "0 9,18 * * *"
        assert sorted(back.tags) == ["dynamic", "funnel"]
        assert (back.max_active_runs, back.catchup) == (1, False)
        (alert,) = back.deadline
        assert alert["callback"]["__data__"]["path"] == "funnel.airflow.deadline_callback.slot_deadline_missed"
        assert "enabled dynamic segments of shard" in dag.description


def test_at_the_cap_the_single_dynamic_dag_is_unchanged(mysql_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    insert_segments(mysql_conn, *CATALOG)
    monkeypatch.setattr(settings, "DYNAMIC_DAG_MAX_TASKS", 8)
    dags = load_dags()
    assert [dag_id for dag_id, dag in dags.items() if "dynamic" in dag.tags] == [DYNAMIC_DAG_ID]
    assert sorted(t.task_id for t in dags[DYNAMIC_DAG_ID].tasks) == sorted([*FRUITS, "mix"])
    assert dags[DYNAMIC_DAG_ID].description.startswith("Refreshes every enabled dynamic segment at")


def test_a_shard_over_the_cap_is_logged(
    mysql_conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    insert_segments(mysql_conn, *CATALOG)
    monkeypatch.setattr(settings, "DYNAMIC_DAG_MAX_TASKS", 2)
    with caplog.at_level(logging.WARNING, logger="funnel.airflow.dag_factory"):
        dags = load_dags()
    assert sorted(t.task_id for t in dags["funnel_dynamic_segments_03"].tasks) == ["apples", "cherries", "mix"]
    assert (
        "funnel: funnel_dynamic_segments_03 has 3 tasks, over dynamic_dag_max_tasks (2): its largest group of a "
        "composite and its operands has 3 segments (from 'apples'), which stay together" in caplog.text
    )
