"""The DAG folder as Airflow sees it, built from a real catalog and run on real services."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import pytest
from helpers import hive_execute, hive_first_column, insert_segments, mysql_live_members, redis_live_members

from funnel.core.dag_plan import DYNAMIC_DAG_ID, TAGS_DAG_ID

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

#: The suite's Hive database (tests/conftest.py creates it; FUNNEL_TEST_HIVE_DB keeps runs apart).
HIVE_DB = os.environ.get("FUNNEL_TEST_HIVE_DB", "funnel_test")

RUN_AT = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)
GROUP_QUERY = f"SELECT user_id FROM {HIVE_DB}.events WHERE grp = {{grp}}"
# Templated: the task renders {{ ds }} before the query reaches Hive.
TEMPLATED_QUERY = f"SELECT user_id FROM {HIVE_DB}.events WHERE grp = 1 AND '{{{{ ds }}}}' = '2030-01-20'"
RENDERED_QUERY = TEMPLATED_QUERY.replace("{{ ds }}", "2030-01-20")
# Dynamic runs use future slots: a past slot after which the segment was already refreshed
# is skipped by the overshoot rule (tested on its own below).
MORNING = dt.datetime(2030, 1, 20, 9, tzinfo=dt.UTC)
EVENING = dt.datetime(2030, 1, 20, 18, tzinfo=dt.UTC)
CATALOG = [
    {"segment_id": "group_zero", "name": "Group zero", "kind": "dynamic", "query": GROUP_QUERY.format(grp=0)},
    {"segment_id": "group_one", "name": "Group one", "kind": "dynamic", "query": TEMPLATED_QUERY},
    {
        "segment_id": "group_two_paused",
        "name": "Paused",
        "kind": "dynamic",
        "query": GROUP_QUERY.format(grp=2),
        "enabled": False,
    },
    {
        "segment_id": "launch_week",
        "name": "Launch week",
        "kind": "static",
        "query": GROUP_QUERY.format(grp=2),
        "run_at": RUN_AT.replace(tzinfo=None),
    },
    {"segment_id": "new_users", "name": "New users", "kind": "proxy", "rule": json.dumps({"tag": "new_user"})},
]


def load_dagbag() -> Any:
    import os

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def serialized(dag: Any) -> Any:
    """The DAG as the scheduler sees it: serialized to JSON and back."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))


# The users' tags, as of the run's data interval end (here every test user signed up before it).
TAG_QUERY = (
    "SELECT user_id, CAST('2026-11-01 10:00:00' AS TIMESTAMP) AS first_seen, grp AS order_count"
    f" FROM {HIVE_DB}.events WHERE '{{{{ data_interval_end.isoformat() }}}}' > '2026-11-02'"
)


@pytest.fixture
def catalog(mysql_conn: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    insert_segments(mysql_conn, *CATALOG)
    monkeypatch.setenv("AIRFLOW__FUNNEL__TAG_QUERY", TAG_QUERY)
    return mysql_conn


@pytest.fixture
def events(hive_conn: Any) -> Any:
    hive_execute(
        hive_conn,
        f"DROP TABLE IF EXISTS {HIVE_DB}.events",
        f"CREATE TABLE {HIVE_DB}.events STORED AS PARQUET AS SELECT id AS user_id, id % 3 AS grp FROM range(3000)",
    )
    return hive_conn


def test_dag_folder_imports_without_errors(catalog: Any) -> None:
    bag = load_dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [
        DYNAMIC_DAG_ID,
        "funnel_example_big_spenders_consumer",
        "funnel_purge_retired",
        "funnel_restore_redis",
        "funnel_static_launch_week",
        TAGS_DAG_ID,
        "funnel_webhooks",
    ]


def test_every_dag_survives_serialization_round_trip(catalog: Any) -> None:
    summaries = {}
    for dag in load_dagbag().dags.values():
        back = serialized(dag)
        assert back.dag_id == dag.dag_id
        assert [t.task_id for t in back.tasks] == [t.task_id for t in dag.tasks]
        summaries[back.dag_id] = back.timetable.summary
    assert summaries == {
        "funnel_example_big_spenders_consumer": "Asset",
        DYNAMIC_DAG_ID: "0 9,18 * * *",
        "funnel_static_launch_week": "once at 2026-11-20T09:00:00+00:00",
        TAGS_DAG_ID: "0 6 * * *",
        "funnel_restore_redis": "None",
        "funnel_purge_retired": "30 3 * * *",
        "funnel_webhooks": "None",  # no subscription yet (tests/dags/test_webhooks_dag.py schedules it)
    }


def test_dynamic_dag_matches_catalog(catalog: Any) -> None:
    dag = load_dagbag().dags[DYNAMIC_DAG_ID]
    assert serialized(dag).timetable.summary == "0 9,18 * * *"
    assert [t.task_id for t in dag.tasks] == ["group_one", "group_zero"]
    assert sorted(dag.tags) == ["dynamic", "funnel"]
    assert dag.tasks[0].query == TEMPLATED_QUERY


def test_static_dag_runs_once_at_run_at(catalog: Any) -> None:
    from airflow.timetables.base import TimeRestriction

    dag = load_dagbag().dags["funnel_static_launch_week"]
    timetable = serialized(dag).timetable
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first is not None
    assert first.logical_date == RUN_AT
    assert timetable.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction) is None


def test_dynamic_dag_run_puts_exactly_the_query_result_in_both_stores(
    catalog: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    dag = load_dagbag().dags[DYNAMIC_DAG_ID]
    run = dag.test(logical_date=MORNING)
    assert run.state == "success"
    for query, segment_id in ((GROUP_QUERY.format(grp=0), "group_zero"), (RENDERED_QUERY, "group_one")):
        expected = hive_first_column(events, query)
        assert len(expected) == 1000
        assert mysql_live_members(catalog, segment_id) == expected
        assert redis_live_members(redis_client, segment_id) == expected
    assert redis_live_members(redis_client, "group_two_paused") == set()

    hive_execute(
        events,
        f"INSERT OVERWRITE TABLE {HIVE_DB}.events SELECT id AS user_id, (id + 1) % 3 AS grp FROM range(1500, 4500)",
    )
    run = dag.test(logical_date=EVENING)
    assert run.state == "success"
    for query, segment_id in ((GROUP_QUERY.format(grp=0), "group_zero"), (RENDERED_QUERY, "group_one")):
        expected = hive_first_column(events, query)
        assert mysql_live_members(catalog, segment_id) == expected
        assert redis_live_members(redis_client, segment_id) == expected
        assert redis_client.hget(f"funnel:{{{segment_id}}}:meta", "size") == str(len(expected)).encode()


def test_static_dag_run_at_run_at_fills_the_segment(
    catalog: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    dag = load_dagbag().dags["funnel_static_launch_week"]
    run = dag.test(logical_date=RUN_AT)
    assert run.state == "success"
    expected = hive_first_column(events, GROUP_QUERY.format(grp=2))
    assert mysql_live_members(catalog, "launch_week") == expected
    assert redis_live_members(redis_client, "launch_week") == expected


def test_disabled_segment_loses_its_task_but_keeps_its_members(
    catalog: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    dag = load_dagbag().dags[DYNAMIC_DAG_ID]
    assert dag.test(logical_date=MORNING).state == "success"
    before = redis_live_members(redis_client, "group_zero")
    assert before
    cur = catalog.cursor()
    cur.execute("UPDATE funnel_segments SET enabled = FALSE WHERE segment_id = 'group_zero'")
    catalog.commit()
    assert [t.task_id for t in load_dagbag().dags[DYNAMIC_DAG_ID].tasks] == ["group_one"]
    assert redis_live_members(redis_client, "group_zero") == before
    assert mysql_live_members(catalog, "group_zero") == before


def task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_refresh_emits_an_asset_event_with_version_size_and_changes(
    catalog: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    bag = load_dagbag()
    dag = bag.dags[DYNAMIC_DAG_ID]
    assert [o.uri for o in dag.get_task("group_zero").outlets] == ["funnel://segment/group_zero"]
    consumer = bag.dags["funnel_example_big_spenders_consumer"]
    assert [a.uri for a in consumer.timetable.asset_condition.objects] == ["funnel://segment/big_spenders"]
    run = dag.test(logical_date=MORNING)
    assert run.state == "success"
    with create_session() as session:
        extras = [
            event.extra
            for event, uri in session.query(AssetEvent, AssetModel.uri)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_run_id == run.run_id)
            if uri == "funnel://segment/group_zero"
        ]
    assert extras == [{"segment_id": "group_zero", "version": 1, "size": 1000, "entered": 1000, "exited": 0}]


def test_overshoot_and_static_freeze_skip_tasks_and_force_runs_them(
    mysql_conn: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    insert_segments(mysql_conn, CATALOG[0], CATALOG[3])  # group_zero (dynamic), launch_week (static)
    bag = load_dagbag()
    dynamic, static = bag.dags[DYNAMIC_DAG_ID], bag.dags["funnel_static_launch_week"]
    morning, evening = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC), dt.datetime(2026, 1, 5, 18, tzinfo=dt.UTC)
    assert task_states(dynamic.test(logical_date=morning)) == {"group_zero": "success"}
    # Refreshed just now by the 09:00 run, i.e. after the 18:00 slot: the 18:00 run skips it.
    assert task_states(dynamic.test(logical_date=evening)) == {"group_zero": "skipped"}
    forced = dynamic.test(logical_date=evening + dt.timedelta(minutes=1), run_conf={"force": True})
    assert task_states(forced) == {"group_zero": "success"}

    assert task_states(static.test(logical_date=RUN_AT)) == {"launch_week": "success"}
    frozen = redis_live_members(redis_client, "launch_week")
    hive_execute(events, f"INSERT OVERWRITE TABLE {HIVE_DB}.events SELECT id AS user_id, 2 AS grp FROM range(10)")
    assert task_states(static.test(logical_date=RUN_AT + dt.timedelta(minutes=1))) == {"launch_week": "skipped"}
    assert redis_live_members(redis_client, "launch_week") == frozen
    refrozen = static.test(logical_date=RUN_AT + dt.timedelta(minutes=2), run_conf={"force": True})
    assert task_states(refrozen) == {"launch_week": "success"}
    assert redis_live_members(redis_client, "launch_week") == {str(i) for i in range(10)}


def test_the_tags_dag_loads_every_users_tags_into_both_stores(
    catalog: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    from funnel import wiring

    run = load_dagbag().dags[TAGS_DAG_ID].test(logical_date=MORNING)
    assert task_states(run) == {"load_user_tags": "success"}
    mysql = wiring.mysql_tag_store(catalog)
    live = mysql.live()
    assert (live.version, live.size) == (1, 3000)
    assert live.as_of == MORNING  # the data interval's end: a cron run's interval ends at its logical date
    redis = wiring.redis_tag_store(redis_client)
    assert redis.serving() == (1, 3000)
    first_seen = dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert [(t.first_seen, t.order_count) for t in redis.tags_of(["3", "4", "5"])] == [
        (first_seen, 0),
        (first_seen, 1),
        (first_seen, 2),
    ]
    assert mysql.tags_of(["5"])["5"].order_count == 2


def test_without_a_tag_query_the_tags_dag_says_what_to_set(catalog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__FUNNEL__TAG_QUERY")
    dag = load_dagbag().dags[TAGS_DAG_ID]
    assert dag.schedule is None
    assert [t.task_id for t in dag.tasks] == ["explain"]
    assert "Fix: set [funnel] tag_query" in dag.tasks[0].message


def test_the_restore_dag_brings_back_every_segment_and_the_tags_after_redis_lost_them(
    catalog: Any, events: Any, redis_client: Any, airflow_db: None
) -> None:
    from funnel import wiring

    bag = load_dagbag()
    assert task_states(bag.dags[DYNAMIC_DAG_ID].test(logical_date=MORNING)) == {
        "group_one": "success",
        "group_zero": "success",
    }
    assert task_states(bag.dags[TAGS_DAG_ID].test(logical_date=MORNING)) == {"load_user_tags": "success"}
    before = {s: redis_live_members(redis_client, s) for s in ("group_zero", "group_one")}
    redis_client.flushdb()  # Redis restarted empty: it keeps nothing on disk
    run = bag.dags["funnel_restore_redis"].test(logical_date=MORNING)
    assert task_states(run) == {"restore_redis": "success"}
    assert {s: redis_live_members(redis_client, s) for s in before} == before
    assert wiring.redis_tag_store(redis_client).serving() == (1, 3000)


def test_the_purge_dag_deletes_what_was_retired_over_the_horizon_ago(
    catalog: Any, events: Any, redis_client: Any, mysql_conn: Any, airflow_db: None
) -> None:
    from funnel import wiring

    bag = load_dagbag()
    assert task_states(bag.dags[DYNAMIC_DAG_ID].test(logical_date=MORNING)) == {
        "group_one": "success",
        "group_zero": "success",
    }
    admin = wiring.segment_admin(mysql_conn)
    admin.retire("group_one", "cli:ann")
    admin.retire("group_zero", "cli:ann")
    cur = mysql_conn.cursor()  # group_one was retired 100 days ago, group_zero just now
    cur.execute("UPDATE funnel_segment_revisions SET at = at - INTERVAL 100 DAY WHERE segment_id = 'group_one'")
    mysql_conn.commit()
    assert task_states(load_dagbag().dags["funnel_purge_retired"].test(logical_date=MORNING)) == {
        "purge_retired": "success"
    }
    assert mysql_live_members(mysql_conn, "group_one") == set()
    assert redis_live_members(redis_client, "group_one") == set()
    assert len(redis_live_members(redis_client, "group_zero")) == 1000  # within change_history_days: kept
    assert admin.history("group_one")[-1].change.value == "retired"  # its history stays
