"""Composite segments in the dynamic DAG: tasks downstream of their operands, computed from
the operands' live versions without Hive, on real services."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import pytest
from helpers import hive_execute, insert_segments, mysql_live_members, redis_live_members

from funnel.core.dag_plan import DYNAMIC_DAG_ID
from funnel.storage import layout

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

#: The suite's Hive database (tests/conftest.py creates it; FUNNEL_TEST_HIVE_DB keeps runs apart).
HIVE_DB = os.environ.get("FUNNEL_TEST_HIVE_DB", "funnel_test")

# Future slots, one after the other: none is skipped by the overshoot rule unless a test wants it.
SLOTS = [dt.datetime(2031, 3, 1, 9, tzinfo=dt.UTC) + dt.timedelta(hours=9 * i) for i in range(6)]
RUN_AT = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
MOD_QUERY = f"SELECT user_id FROM {HIVE_DB}.people WHERE user_id % {{m}} = 0"


def row(segment_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"segment_id": segment_id, "name": segment_id.replace("_", " "), "kind": kind, **fields}


CATALOG = [
    row("by_two", "dynamic", query=MOD_QUERY.format(m=2)),
    row("by_three", "dynamic", query=MOD_QUERY.format(m=3)),
    row("by_five", "dynamic", query=MOD_QUERY.format(m=5), max_shrink_pct=10),
    row("launch", "static", query=f"SELECT user_id FROM {HIVE_DB}.people WHERE user_id < 50", run_at=RUN_AT),
    row("two_or_three", "composite", rule=json.dumps({"union": ["by_two", "by_three"]})),
    row("six", "composite", rule=json.dumps({"intersect": ["by_two", "by_three"]})),
    row("odd_not_five", "composite", rule=json.dumps({"minus": ["two_or_three", ["by_two", "by_five"]]})),
    row("early_six", "composite", rule=json.dumps({"intersect": ["launch", "six"]})),
]


def people(n: int) -> set[int]:
    return set(range(1, n + 1))


def ids(values: set[int]) -> set[str]:
    return {str(v) for v in values}


@pytest.fixture
def warehouse(hive_conn: Any) -> Any:
    fill(hive_conn, 600)
    return hive_conn


def fill(hive_conn: Any, n: int) -> None:
    hive_execute(
        hive_conn,
        f"DROP TABLE IF EXISTS {HIVE_DB}.people",
        f"CREATE TABLE {HIVE_DB}.people STORED AS PARQUET AS SELECT id AS user_id FROM range(1, {n + 1})",
    )


def load_dags() -> Any:
    import os

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    return bag.dags


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def expected(n: int) -> dict[str, set[str]]:
    everyone = people(n)
    by = {m: {p for p in everyone if p % m == 0} for m in (2, 3, 5)}
    union = by[2] | by[3]
    return {
        "two_or_three": ids(union),
        "six": ids(by[2] & by[3]),
        "odd_not_five": ids(union - by[2] - by[5]),
    }


def history_inputs(conn: Any, segment_id: str) -> list[dict[str, Any]]:
    cur = conn.cursor()
    cur.execute(f"SELECT inputs FROM {layout.RUNS_TABLE} WHERE segment_id = %s ORDER BY id DESC LIMIT 1", (segment_id,))
    (inputs,) = cur.fetchone()
    conn.commit()
    return json.loads(inputs)


def test_composites_are_tasks_downstream_of_their_operands(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *CATALOG)
    dag = load_dags()[DYNAMIC_DAG_ID]
    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
    assert upstream == {
        "by_five": [],
        "by_three": [],
        "by_two": [],
        "two_or_three": ["by_three", "by_two"],
        "six": ["by_three", "by_two"],
        "odd_not_five": ["by_five", "by_two", "two_or_three"],
        "early_six": ["six"],  # launch is static: its own DAG, its frozen version is used
    }
    assert dag.get_task("six").trigger_rule == "all_done"
    assert dag.get_task("six").pool != dag.get_task("by_two").pool  # sends Hive nothing
    assert "(by_two | by_three)" not in dag.get_task("odd_not_five").doc_md
    assert "`two_or_three - by_two - by_five`" in dag.get_task("odd_not_five").doc_md


def test_a_dynamic_run_computes_composites_exactly_in_both_stores_without_hive(
    mysql_conn: Any, warehouse: Any, redis_client: Any, airflow_db: None
) -> None:
    insert_segments(mysql_conn, *CATALOG)
    dags = load_dags()
    dag = dags[DYNAMIC_DAG_ID]
    first = dag.test(logical_date=SLOTS[0])
    # early_six waits for launch, a static segment never computed yet: skipped, not failed.
    assert states(first) == {
        "by_two": "success",
        "by_three": "success",
        "by_five": "success",
        "two_or_three": "success",
        "six": "success",
        "odd_not_five": "success",
        "early_six": "skipped",
    }
    for segment_id, members in expected(600).items():
        assert mysql_live_members(mysql_conn, segment_id) == members, segment_id
        assert redis_live_members(redis_client, segment_id) == members, segment_id
    meta = redis_client.hgetall(layout.meta_key("odd_not_five"))
    assert int(meta[b"size"]) == len(expected(600)["odd_not_five"])

    assert states(dags["funnel_static_launch"].test(logical_date=RUN_AT)) == {"launch": "success"}
    fill(warehouse, 660)  # 60 more people: the composites' next version has entered ids
    second = dag.test(logical_date=SLOTS[1])
    assert set(states(second).values()) == {"success"}
    for segment_id, members in expected(660).items():
        assert mysql_live_members(mysql_conn, segment_id) == members, segment_id
        assert redis_live_members(redis_client, segment_id) == members, segment_id
    assert redis_live_members(redis_client, "early_six") == ids({p for p in range(1, 50) if p % 6 == 0})
    meta = redis_client.hgetall(layout.meta_key("six"))
    assert (int(meta[b"version"]), int(meta[b"entered"]), int(meta[b"exited"])) == (2, 10, 0)
    inputs = {i["segment_id"]: (i["version"], i["this_run"]) for i in history_inputs(mysql_conn, "early_six")}
    assert inputs == {"launch": (1, False), "six": (2, True)}


def test_an_operand_refused_by_its_guard_leaves_the_composite_on_its_live_version(
    mysql_conn: Any, warehouse: Any, redis_client: Any, airflow_db: None
) -> None:
    insert_segments(mysql_conn, *CATALOG[:3], CATALOG[5], CATALOG[6], CATALOG[4])
    dag = load_dags()[DYNAMIC_DAG_ID]
    assert set(states(dag.test(logical_date=SLOTS[2])).values()) == {"success"}
    fill(warehouse, 300)  # by_five shrinks by half: over its 10% limit, refused
    run = dag.test(logical_date=SLOTS[3])
    assert states(run)["by_five"] == "failed"
    assert states(run)["odd_not_five"] == "success"  # all_done: it ran on by_five's live version
    by_five_live = {p for p in people(600) if p % 5 == 0}
    union = {p for p in people(300) if p % 2 == 0 or p % 3 == 0}
    want = ids(union - {p for p in people(300) if p % 2 == 0} - by_five_live)
    assert redis_live_members(redis_client, "odd_not_five") == want
    assert mysql_live_members(mysql_conn, "odd_not_five") == want
    inputs = {i["segment_id"]: (i["version"], i["this_run"]) for i in history_inputs(mysql_conn, "odd_not_five")}
    assert inputs == {"by_five": (1, False), "by_two": (2, True), "two_or_three": (2, True)}


def test_the_overshoot_rule_skips_a_composite_refreshed_after_the_slot(
    mysql_conn: Any, warehouse: Any, redis_client: Any, airflow_db: None
) -> None:
    insert_segments(mysql_conn, CATALOG[0], CATALOG[1], CATALOG[5])
    dag = load_dags()[DYNAMIC_DAG_ID]
    morning, evening = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC), dt.datetime(2026, 1, 5, 18, tzinfo=dt.UTC)
    assert set(states(dag.test(logical_date=morning)).values()) == {"success"}
    assert states(dag.test(logical_date=evening)) == {"by_two": "skipped", "by_three": "skipped", "six": "skipped"}


def test_a_bad_composite_becomes_an_invalid_dag_naming_the_field_and_the_fix(
    mysql_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__FUNNEL__STRICT_CATALOG", "False")  # the lenient path: marker DAGs
    insert_segments(
        mysql_conn,
        CATALOG[0],
        row("loop_a", "composite", rule=json.dumps({"union": ["by_two", "loop_b"]})),
        row("loop_b", "composite", rule=json.dumps({"minus": ["loop_a", "by_two"]})),
        row("ghostly", "composite", rule=json.dumps({"intersect": ["by_two", "nobody"]})),
        row("mixed", "composite", query="SELECT 1", rule=json.dumps({"union": ["by_two", "by_two"]})),
    )
    dags = load_dags()
    assert [t.task_id for t in dags[DYNAMIC_DAG_ID].tasks] == ["by_two"]
    described = {dag_id: dags[dag_id].description for dag_id in dags if dag_id.startswith("funnel_invalid_")}
    assert sorted(described) == [
        "funnel_invalid_ghostly",
        "funnel_invalid_loop_a",
        "funnel_invalid_loop_b",
        "funnel_invalid_mixed",
    ]
    assert "is part of a cycle of composite segments (loop_a → loop_b → loop_a)" in described["funnel_invalid_loop_b"]
    assert "uses segment 'nobody', which is not in the catalog" in described["funnel_invalid_ghostly"]
    assert "field 'query' is set but a composite segment does not use it" in described["funnel_invalid_mixed"]
