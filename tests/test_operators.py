"""The refresh operator as Airflow runs it, on the real services."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import insert_segments, mysql_live_members, redis_live_members

from funnel.plan import DYNAMIC_DAG_ID


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
