"""What a data engineer sees in Airflow as the catalog changes, breaks or goes offline."""

from __future__ import annotations

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

EXAMPLE_DAG_ID = "funnel_example_big_spenders_consumer"

ALPHA_QUERY = "SELECT user_id FROM dw.a WHERE d = '{{ ds }}'"
SEGMENTS = [
    {
        "segment_id": "zeta",
        "name": "Zeta",
        "kind": "dynamic",
        "query": "SELECT user_id FROM dw.z",
        "max_shrink_pct": 80,
    },
    {
        "segment_id": "alpha",
        "name": "Alpha",
        "kind": "dynamic",
        "query": "SELECT user_id FROM dw.a WHERE d = '{{ ds }}'",
    },
    {
        "segment_id": "launch",
        "name": "Launch",
        "kind": "static",
        "query": "SELECT user_id FROM dw.l",
        "run_at": "2026-12-01 09:00:00",
    },
]
BROKEN = {"segment_id": "broken", "name": "Broken", "kind": "dynamic", "query": "DELETE FROM dw.users"}


def load_dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def serialized_json(bag: Any) -> dict[str, str]:
    from airflow.serialization.serialized_objects import DagSerialization

    return {
        dag_id: json.dumps(DagSerialization.to_dict(dag), sort_keys=True) for dag_id, dag in sorted(bag.dags.items())
    }


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW__FUNNEL__STRICT_CATALOG", "False")
    # These tests are about what checks find, not the parse-time budget (tested on its own).
    monkeypatch.setenv("AIRFLOW__FUNNEL__QUERY_CHECK_BUDGET_SECONDS", "60")
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))


def test_invalid_segment_gets_a_marker_dag_and_the_rest_build(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *SEGMENTS, BROKEN)
    bag = load_dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [
        DYNAMIC_DAG_ID,
        EXAMPLE_DAG_ID,
        "funnel_invalid_broken",
        "funnel_purge_retired",
        "funnel_restore_redis",
        "funnel_static_launch",
        "funnel_user_tags",
        "funnel_webhooks",
    ]
    assert [t.task_id for t in bag.dags[DYNAMIC_DAG_ID].tasks] == ["alpha", "zeta"]
    marker = bag.dags["funnel_invalid_broken"]
    assert marker.description.startswith("segment 'broken': field 'query' contains DELETE")
    assert "Fix: make query a single HiveQL SELECT" in marker.description
    assert sorted(marker.tags) == ["funnel", "invalid"]


def test_strict_mode_turns_an_invalid_segment_into_an_import_error(
    mysql_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_segments(mysql_conn, *SEGMENTS, BROKEN)
    monkeypatch.setenv("AIRFLOW__FUNNEL__STRICT_CATALOG", "True")
    bag = load_dagbag()
    assert bag.dag_ids == [EXAMPLE_DAG_ID]  # only the other file's DAG
    [message] = bag.import_errors.values()
    assert "1 invalid segment(s) (strict_catalog is on)" in message
    assert "segment 'broken': field 'query' contains DELETE" in message


def test_catalog_changes_show_at_next_parse(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *SEGMENTS)
    assert [t.task_id for t in load_dagbag().dags[DYNAMIC_DAG_ID].tasks] == ["alpha", "zeta"]
    insert_segments(mysql_conn, {**SEGMENTS[0], "segment_id": "middle"}, {**SEGMENTS[0], "enabled": False})
    bag = load_dagbag()
    assert [t.task_id for t in bag.dags[DYNAMIC_DAG_ID].tasks] == ["alpha", "middle"]
    cur = mysql_conn.cursor()
    cur.execute("DELETE FROM funnel_segments WHERE segment_id = 'launch'")
    mysql_conn.commit()
    assert "funnel_static_launch" not in load_dagbag().dag_ids


def test_same_catalog_serializes_byte_for_byte_even_from_the_snapshot(
    mysql_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_segments(mysql_conn, *SEGMENTS)
    first = serialized_json(load_dagbag())
    assert serialized_json(load_dagbag()) == first
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", "mysql://root@127.0.0.1:1/funnel_test")
    offline = load_dagbag()
    assert offline.import_errors == {}
    assert serialized_json(offline) == first


def test_worker_parse_builds_only_the_dag_it_runs(mysql_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    insert_segments(mysql_conn, *SEGMENTS)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "funnel_static_launch")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "launch")
    assert sorted(load_dagbag().dag_ids) == [EXAMPLE_DAG_ID, "funnel_static_launch"]


def test_tasks_document_their_segment_and_run_in_the_hive_pool(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *SEGMENTS)
    dag = load_dagbag().dags[DYNAMIC_DAG_ID]
    alpha = dag.get_task("alpha")
    assert alpha.pool == "funnel_hive"
    assert alpha.doc_md == (
        "### Alpha\n\n- segment: `alpha`\n- kind: dynamic\n- source: MySQL table funnel_segments\n\n"
        "```sql\nSELECT user_id FROM dw.a WHERE d = '{{ ds }}'\n```"
    )
    assert (alpha.kind, alpha.max_shrink_pct) == ("dynamic", None)
    assert dag.get_task("zeta").max_shrink_pct == 80.0
    assert alpha.template_fields == ("query",)
    assert alpha.template_fields_renderers == {"query": "sql"}
    assert sorted(dag.tags) == ["dynamic", "funnel"]
    # The pool caps how many queries Hive sees; Airflow's default of 16 tasks per DAG must not.
    assert dag.max_active_tasks == 1024


def test_a_segments_owner_owns_its_task_and_a_static_segments_labels_tag_its_dag(mysql_conn: Any) -> None:
    owned = {**SEGMENTS[1], "owner": "growth@example.com", "labels": '["nl"]'}
    labelled = {**SEGMENTS[2], "owner": "crm", "labels": '["launch", "nl"]'}
    insert_segments(mysql_conn, SEGMENTS[0], owned, labelled)
    bag = load_dagbag()
    alpha = bag.dags[DYNAMIC_DAG_ID].get_task("alpha")
    assert (alpha.owner, bag.dags[DYNAMIC_DAG_ID].get_task("zeta").owner) == ("growth@example.com", "airflow")
    assert "- owner: growth@example.com\n- labels: nl\n" in alpha.doc_md
    static = bag.dags["funnel_static_launch"]
    assert (static.get_task("launch").owner, sorted(static.tags)) == ("crm", ["funnel", "launch", "nl", "static"])


def test_changes_made_by_hand_are_recorded_as_revisions_by_the_next_parse(mysql_conn: Any) -> None:
    from funnel import wiring

    def revisions(segment_id: str) -> list[tuple[int, str, str, list[str]]]:
        history = wiring.segment_admin(mysql_conn).history(segment_id)
        return [(r.revision, r.change.value, r.actor, list(r.changed)) for r in history]

    insert_segments(mysql_conn, SEGMENTS[0], BROKEN)
    load_dagbag()
    first = ["segment_id", "name", "kind", "query", "max_shrink_pct", "enabled"]
    assert revisions("zeta") == [(1, "catalog", "catalog", first)]
    assert revisions("broken") == []  # an invalid row is not a definition: its error DAG says what is wrong
    wiring.segment_admin(mysql_conn).edit("zeta", {"name": "Zeta 2"}, "cli:ann")  # through the write path
    cur = mysql_conn.cursor()
    cur.execute("UPDATE funnel_segments SET query = 'SELECT user_id FROM dw.z2' WHERE segment_id = 'zeta'")
    mysql_conn.commit()
    load_dagbag()
    load_dagbag()  # nothing moved since: nothing recorded (and MySQL is not asked)
    assert revisions("zeta")[1:] == [
        (2, "edited", "cli:ann", ["name"]),
        (3, "catalog", "catalog", ["query"]),
    ]
    cur.execute("DELETE FROM funnel_segments WHERE segment_id = 'zeta'")
    mysql_conn.commit()
    load_dagbag()
    assert revisions("zeta")[-1][:3] == (4, "retired", "catalog")
    assert wiring.segment_admin(mysql_conn).restore("zeta", "cli:ann").change.value == "restored"
    load_dagbag()
    assert len(revisions("zeta")) == 5  # a restore through the write path is no change by hand


def test_dynamic_schedule_and_timezone_are_settings(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *SEGMENTS)
    code = (
        "import os; from airflow.dag_processing.dagbag import DagBag;"
        "dag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER']).dags['funnel_dynamic_segments'];"
        "print(dag.timetable.expression, dag.timetable.timezone, dag.start_date.isoformat())"
    )
    env = {
        **os.environ,
        "AIRFLOW__FUNNEL__DYNAMIC_SCHEDULE": "30 8,17 * * *",
        "AIRFLOW__FUNNEL__TIMEZONE": "Asia/Kolkata",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "30 8,17 * * * Asia/Kolkata 2023-12-31T18:30:00+00:00"
