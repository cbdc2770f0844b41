"""The refresh operator as Airflow runs it, on the real services."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import insert_segments, mysql_live_members, redis_live_members

from funnel.core.dag_plan import DYNAMIC_DAG_ID

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


def test_a_query_that_slipped_past_parse_checks_is_refused_before_hive_sees_it(
    mysql_conn: Any,
    redis_client: Any,
    hive_conn: Any,
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    # A parse whose check budget is spent builds the task unchecked (the next parse would
    # turn it into a marker DAG); the operator checks the rendered query before running it.
    monkeypatch.setenv("AIRFLOW__FUNNEL__STRICT_CATALOG", "False")
    monkeypatch.setenv("AIRFLOW__FUNNEL__QUERY_CHECK_BUDGET_SECONDS", "0")
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))
    cursor = hive_conn.cursor()
    cursor.execute("CREATE TABLE IF NOT EXISTS funnel_test.keep_me AS SELECT 1 AS user_id")
    insert_segments(
        mysql_conn, {"segment_id": "evil", "name": "Evil", "kind": "dynamic", "query": "DROP TABLE funnel_test.keep_me"}
    )
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags[DYNAMIC_DAG_ID]
    run = dag.test(logical_date=dt.datetime(2030, 2, 1, 9, tzinfo=dt.UTC))
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"evil": "failed"}
    cursor.execute("SELECT COUNT(*) FROM funnel_test.keep_me")
    assert cursor.fetchall() == [(1,)]
    assert mysql_live_members(mysql_conn, "evil") == set()
    assert redis_live_members(redis_client, "evil") == set()


def test_a_run_without_logical_date_renders_date_macros_from_run_after(
    mysql_conn: Any,
    redis_client: Any,
    hive_conn: Any,
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    # What a REST trigger with {"logical_date": null} gives: no logical date, so Airflow
    # itself defines no {{ ds }}; the operator supplies it from the run's run_after.
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))
    cursor = hive_conn.cursor()
    cursor.execute("DROP TABLE IF EXISTS funnel_test.dated")
    cursor.execute("CREATE TABLE funnel_test.dated AS SELECT id AS user_id, current_date() AS d FROM range(5)")
    query = "SELECT user_id FROM funnel_test.dated WHERE CAST(d AS STRING) = '{{ ds }}'"
    insert_segments(mysql_conn, {"segment_id": "dated", "name": "Dated", "kind": "dynamic", "query": query})
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags[DYNAMIC_DAG_ID]
    run = dag.test(logical_date=None)
    assert run.logical_date is None
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"dated": "success"}
    assert redis_live_members(redis_client, "dated") == {"0", "1", "2", "3", "4"}
