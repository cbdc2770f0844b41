"""The dynamic DAG as Airflow sees it carries the deadline alert, serialized the same every parse."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import insert_segments

from funnel.core.dag_plan import DYNAMIC_DAG_ID

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

SEGMENTS = [
    {"segment_id": "alpha", "name": "Alpha", "kind": "dynamic", "query": "SELECT user_id FROM dw.a"},
    {"segment_id": "beta", "name": "Beta", "kind": "dynamic", "query": "SELECT user_id FROM dw.b"},
]


@pytest.fixture
def catalog(mysql_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))
    insert_segments(mysql_conn, *SEGMENTS)


def dynamic_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    return bag.dags[DYNAMIC_DAG_ID]


def test_the_dynamic_dag_alerts_half_an_hour_before_the_next_slot(catalog: None) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    first = DagSerialization.to_dict(dynamic_dag())["dag"]["deadline"]
    again = DagSerialization.to_dict(dynamic_dag())["dag"]["deadline"]

    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)  # no new DAG version per parse
    (alert,) = first
    assert alert["reference"] == {"reference_type": "DagRunLogicalDateDeadline"}
    assert alert["interval"]["__data__"] == dt.timedelta(hours=8, minutes=30).total_seconds()  # 09:00 -> 17:30
    assert alert["callback"]["__classname__"] == "airflow.sdk.definitions.callback.AsyncCallback"
    assert alert["callback"]["__data__"] == {
        "path": "funnel.airflow.deadline_callback.slot_deadline_missed",
        "kwargs": {"minutes_before_next_slot": 30},
    }


def test_the_scheduler_reads_the_deadline_back(catalog: None) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    back = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dynamic_dag()))))
    (alert,) = back.deadline
    assert alert["interval"]["__data__"] == 30600.0
    assert alert["callback"]["__data__"]["path"] == "funnel.airflow.deadline_callback.slot_deadline_missed"


def _deadline_in_a_new_process(**settings: str) -> Any:
    """The dynamic DAG's deadline when the DAG processor runs with these [funnel] settings."""
    code = (
        "import json, os; from airflow.dag_processing.dagbag import DagBag;"
        "from airflow.serialization.serialized_objects import DagSerialization;"
        "dag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER']).dags['funnel_dynamic_segments'];"
        "print(json.dumps(DagSerialization.to_dict(dag)['dag']['deadline']))"
    )
    env = {**os.environ, **{f"AIRFLOW__FUNNEL__{name.upper()}": value for name, value in settings.items()}}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout + out.stderr


def test_the_deadline_follows_the_schedule_and_the_setting(catalog: None) -> None:
    deadline, _ = _deadline_in_a_new_process(
        dynamic_schedule="0 6,12,20 * * *", timezone="Europe/Berlin", deadline_minutes_before_next_slot="45"
    )
    (alert,) = deadline
    assert alert["interval"]["__data__"] == dt.timedelta(hours=5, minutes=15).total_seconds()  # 6 h gap - 45 min
    assert alert["callback"]["__data__"]["kwargs"] == {"minutes_before_next_slot": 45}


def test_a_setting_that_leaves_no_time_builds_the_dag_without_an_alert_and_logs_why(catalog: None) -> None:
    deadline, log = _deadline_in_a_new_process(deadline_minutes_before_next_slot="600")
    assert deadline is None
    assert "deadline_minutes_before_next_slot is 600, which leaves no time before the next slot" in log


def test_dag_test_runs_the_dag_and_keeps_its_deadline(
    mysql_conn: Any, airflow_db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``dag.test()`` (and ``airflow dags test``, what the demo runs) ends well although Airflow
    3.3.2's own crashes on a DAG with a deadline (apache/airflow#73428; ``DeadlineDag``)."""
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))
    dag = dynamic_dag()  # no dynamic segment: a run with nothing to do, so no Hive needed
    assert dag.tasks == []

    run = dag.test(logical_date=dt.datetime(2030, 3, 1, 9, tzinfo=dt.UTC))

    assert run.state == "success"
    assert [alert.interval for alert in dag.deadline] == [dt.timedelta(hours=8, minutes=30)]
