"""funnel inside a running Airflow 3: the scheduler, the DAG processor, the REST API, backfill.

One stack for the whole file (``conftest.py``), driven the way a data engineer drives it: rows
written to ``funnel_segments``, Airflow's REST API v2, ``airflow backfill create``, funnel's API
under ``/funnel``. The tests run in file order and build on each other's segments; every wait is
a poll with a deadline. The static segment is inserted by the first test and checked by the
last, so its minute of waiting overlaps the others.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from typing import Any

import pytest
from airflow_stack import AirflowClient, AirflowStack, clear_of_the_next_slot, eventually, parse_time
from helpers import hive_execute, hive_first_column, insert_segments, mysql_live_members, redis_live_members

from funnel.core.dag_plan import DYNAMIC_DAG_ID, static_dag_id
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

# Deadlines, generous for a loaded 2-core machine (a run takes about 5 s here, a parse 5 to 10 s).
PARSE_TIMEOUT = 90
RUN_TIMEOUT = 180
BACKFILL_TIMEOUT = 300

# The Hive database is the stack's own (as in conftest.py).
HIVE_DB = os.environ.get("FUNNEL_SYSTEM_HIVE_DB", "funnel_system")
GROUP_QUERY = f"SELECT user_id FROM {HIVE_DB}.events WHERE grp = {{grp}}"
LAUNCH_QUERY = f"SELECT user_id FROM {HIVE_DB}.launch"
STATIC_ID = "sys_launch"
STATIC_LEAD = dt.timedelta(seconds=60)
# Two past days to backfill: four slots, 09:00 and 18:00 (the dynamic DAG's cron, UTC).
BACKFILL_FROM = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
BACKFILL_SLOTS = [
    dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 5, 18, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 6, 18, tzinfo=dt.UTC),
]
FORCED_DAY = dt.datetime(2026, 1, 7, tzinfo=dt.UTC)


def dynamic_row(segment_id: str, grp: int) -> dict[str, Any]:
    return {"segment_id": segment_id, "name": segment_id, "kind": "dynamic", "query": GROUP_QUERY.format(grp=grp)}


def recorded_runs(conn: Any, run_id: str) -> dict[str, str]:
    """funnel_segment_runs as a user reads it: segment -> status of each attempt of one Airflow run."""
    cur = conn.cursor()
    cur.execute(f"SELECT segment_id, status FROM {layout.RUNS_TABLE} WHERE run_id = %s ORDER BY id", (run_id,))
    return dict(cur.fetchall())


def live(conn: Any, segment_id: str) -> tuple[int, dt.datetime] | None:
    """The live (version, logical date) of a segment in MySQL."""
    cur = conn.cursor()
    cur.execute(f"SELECT version, logical_date FROM {layout.LIVE_TABLE} WHERE segment_id = %s", (segment_id,))
    row = cur.fetchone()
    return None if row is None else (row[0], row[1].replace(tzinfo=dt.UTC))


def members_in_both_stores(conn: Any, redis: Any, segment_id: str) -> set[str]:
    in_mysql, in_redis = mysql_live_members(conn, segment_id), redis_live_members(redis, segment_id)
    assert in_mysql == in_redis, f"{segment_id}: MySQL and Redis disagree"
    return in_mysql


def backfill(
    airflow: AirflowClient, stack: AirflowStack, start: dt.datetime, end: dt.datetime, force: bool = False
) -> list[dict[str, Any]]:
    """``airflow backfill create`` over [start, end], one run at a time; wait until its runs
    finished and return them, oldest slot first."""
    # One backfill per DAG at a time: the scheduler marks the previous one complete (every 30 s).
    airflow.wait_for_backfills(DYNAMIC_DAG_ID, BACKFILL_TIMEOUT)
    args = ["--dag-id", DYNAMIC_DAG_ID, "--from-date", start.isoformat(), "--to-date", end.isoformat()]
    args += ["--max-active-runs", "1", *(["--dag-run-conf", '{"force": true}'] if force else [])]
    deadline = time.monotonic() + 60
    while True:  # SQLite (the stack's metadata DB) refuses the write now and then while the scheduler writes
        created = stack.airflow("backfill", "create", *args)
        locked = "database is locked" in created.stderr or "not supported on SQLite" in created.stderr
        if created.returncode == 0 or not locked or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert created.returncode == 0, created.stderr[-2000:]

    def finished() -> list[dict[str, Any]]:
        runs = [
            r
            for r in airflow.runs(DYNAMIC_DAG_ID, run_type="backfill", order_by="logical_date")
            if start <= parse_time(r["logical_date"]) <= end
        ]
        return runs if runs and all(r["state"] in AirflowClient.FINISHED for r in runs) else []

    return eventually(finished, BACKFILL_TIMEOUT, f"the backfill of {start:%Y-%m-%d} to {end:%Y-%m-%d} to finish")


@pytest.fixture(scope="module")
def events(system_hive: Any) -> Any:
    hive_execute(
        system_hive,
        f"DROP TABLE IF EXISTS {HIVE_DB}.events",
        f"CREATE TABLE {HIVE_DB}.events STORED AS PARQUET AS SELECT id AS user_id, id % 3 AS grp FROM range(3000)",
    )
    return system_hive


@pytest.fixture(scope="module")
def static_segment(system_hive: Any, system_mysql: Any, airflow: AirflowClient) -> dt.datetime:
    """A static row whose run_at is a minute ahead; returns run_at."""
    hive_execute(
        system_hive,
        f"DROP TABLE IF EXISTS {HIVE_DB}.launch",
        f"CREATE TABLE {HIVE_DB}.launch STORED AS PARQUET AS SELECT id AS user_id FROM range(5000, 5700)",
    )
    run_at = (dt.datetime.now(dt.UTC) + STATIC_LEAD).replace(microsecond=0)
    row = {"segment_id": STATIC_ID, "name": "Launch", "kind": "static", "query": LAUNCH_QUERY}
    insert_segments(system_mysql, {**row, "run_at": run_at.replace(tzinfo=None)})
    return run_at


def test_a_static_row_gets_an_unpaused_dag_scheduled_at_its_run_at(
    airflow: AirflowClient, static_segment: dt.datetime
) -> None:
    run_at = static_segment
    lead = (run_at - dt.datetime.now(dt.UTC)).total_seconds()
    dag = eventually(lambda: airflow.dag(static_dag_id(STATIC_ID)), lead - 5, "the static DAG before its run_at")
    assert dag["is_paused"] is False
    assert parse_time(dag["next_dagrun_run_after"]) == run_at


def test_a_new_dynamic_row_becomes_a_task_at_the_next_parse(
    airflow: AirflowClient, system_mysql: Any, events: Any
) -> None:
    assert airflow.task_ids(DYNAMIC_DAG_ID) == []
    insert_segments(system_mysql, dynamic_row("sys_zero", 0), dynamic_row("sys_one", 1))
    eventually(
        lambda: airflow.task_ids(DYNAMIC_DAG_ID) == ["sys_one", "sys_zero"],
        PARSE_TIMEOUT,
        "the new rows as tasks of the running dynamic DAG",
    )


def test_rest_triggers_with_and_without_force_succeed_and_are_recorded(
    airflow: AirflowClient, system_mysql: Any, system_redis: Any, events: Any
) -> None:
    airflow.set_paused(DYNAMIC_DAG_ID, False)
    clear_of_the_next_slot(airflow, DYNAMIC_DAG_ID, dt.timedelta(minutes=2), PARSE_TIMEOUT, RUN_TIMEOUT)
    for conf in (None, {"force": True}):
        triggered = airflow.trigger(DYNAMIC_DAG_ID, conf)
        assert triggered["conf"] == (conf or {})
        run = airflow.wait_for_run(DYNAMIC_DAG_ID, triggered["dag_run_id"], RUN_TIMEOUT)
        assert run["state"] == "success", run
        assert run["run_type"] == "manual"
        assert airflow.task_states(DYNAMIC_DAG_ID, run["dag_run_id"]) == {"sys_one": "success", "sys_zero": "success"}
        assert recorded_runs(system_mysql, run["dag_run_id"]) == {"sys_one": "success", "sys_zero": "success"}
        assert {r["dag_run_id"] for r in airflow.runs(DYNAMIC_DAG_ID, run_type="manual")} >= {run["dag_run_id"]}
    for segment_id, grp in (("sys_zero", 0), ("sys_one", 1)):
        expected = hive_first_column(events, GROUP_QUERY.format(grp=grp))
        assert len(expected) == 1000
        assert members_in_both_stores(system_mysql, system_redis, segment_id) == expected


def test_a_disabled_row_loses_its_task_and_keeps_its_members(
    airflow: AirflowClient, system_mysql: Any, system_redis: Any
) -> None:
    before = members_in_both_stores(system_mysql, system_redis, "sys_one")
    assert len(before) == 1000
    system_mysql.cursor().execute(f"UPDATE {layout.SEGMENTS_TABLE} SET enabled = FALSE WHERE segment_id = 'sys_one'")
    eventually(
        lambda: airflow.task_ids(DYNAMIC_DAG_ID) == ["sys_zero"],
        PARSE_TIMEOUT,
        "the disabled row's task to go",
    )
    assert members_in_both_stores(system_mysql, system_redis, "sys_one") == before


def test_backfill_runs_four_slots_in_order_and_never_rolls_a_segment_back(
    airflow: AirflowClient, airflow_stack: AirflowStack, system_mysql: Any, system_redis: Any, events: Any
) -> None:
    clear_of_the_next_slot(airflow, DYNAMIC_DAG_ID, dt.timedelta(minutes=3), PARSE_TIMEOUT, RUN_TIMEOUT)
    # The warehouse moves on: recomputing sys_zero now would give other members.
    hive_execute(
        events,
        f"INSERT OVERWRITE TABLE {HIVE_DB}.events SELECT id AS user_id, (id + 1) % 3 AS grp FROM range(1500, 4500)",
    )
    zero_live = live(system_mysql, "sys_zero")
    zero_members = members_in_both_stores(system_mysql, system_redis, "sys_zero")
    assert zero_members != hive_first_column(events, GROUP_QUERY.format(grp=0))
    # sys_two was never computed.
    insert_segments(system_mysql, dynamic_row("sys_two", 2))
    eventually(lambda: "sys_two" in airflow.task_ids(DYNAMIC_DAG_ID), PARSE_TIMEOUT, "sys_two as a task")

    runs = backfill(airflow, airflow_stack, BACKFILL_FROM, BACKFILL_FROM + dt.timedelta(days=2))
    assert [parse_time(r["logical_date"]) for r in runs] == BACKFILL_SLOTS
    assert [r["state"] for r in runs] == ["success"] * 4
    # In order, one at a time: each slot started after the one before had finished.
    for earlier, later in itertools.pairwise(runs):
        assert parse_time(later["start_date"]) >= parse_time(earlier["end_date"])
    # Overshoot: sys_zero was refreshed today, after every backfilled slot; sys_two is computed
    # by the first slot, and that refresh is after the later slots.
    states = [airflow.task_states(DYNAMIC_DAG_ID, r["dag_run_id"]) for r in runs]
    assert (
        states == [{"sys_two": "success", "sys_zero": "skipped"}] + [{"sys_two": "skipped", "sys_zero": "skipped"}] * 3
    )
    assert [recorded_runs(system_mysql, r["dag_run_id"]) for r in runs] == [
        {"sys_zero": "skipped", "sys_two": "success"},
        *[{"sys_zero": "skipped", "sys_two": "skipped"}] * 3,
    ]
    assert live(system_mysql, "sys_two") == (1, BACKFILL_SLOTS[0])
    assert members_in_both_stores(system_mysql, system_redis, "sys_two") == hive_first_column(
        events, GROUP_QUERY.format(grp=2)
    )

    # Forced past the overshoot rule, a backfill computes every segment, and still never puts an
    # older slot's result over a newer live one: sys_zero is superseded, sys_two moves forward.
    forced_runs = backfill(airflow, airflow_stack, FORCED_DAY, FORCED_DAY + dt.timedelta(days=1), force=True)
    assert [parse_time(r["logical_date"]) for r in forced_runs] == [
        FORCED_DAY.replace(hour=9),
        FORCED_DAY.replace(hour=18),
    ]
    assert [r["state"] for r in forced_runs] == ["success", "success"]
    assert [recorded_runs(system_mysql, r["dag_run_id"]) for r in forced_runs] == [
        {"sys_zero": "superseded", "sys_two": "success"}
    ] * 2
    assert live(system_mysql, "sys_two") == (3, FORCED_DAY.replace(hour=18))
    assert live(system_mysql, "sys_zero") == zero_live
    assert members_in_both_stores(system_mysql, system_redis, "sys_zero") == zero_members


def test_the_serving_api_answers_inside_the_api_server(airflow: AirflowClient, airflow_stack: AirflowStack) -> None:
    """The API under Airflow's API server, asked as a product service asks it (``funnel.client``)."""
    from funnel.client import ApiError, FunnelClient

    api = f"{airflow.base_url}/funnel"
    with FunnelClient(api, timeout=30) as anonymous, pytest.raises(ApiError) as refused:
        anonymous.segments()
    assert refused.value.http_status == 401
    with FunnelClient(api, airflow_stack.funnel_tokens()["read"], timeout=30) as funnel:
        assert {"sys_zero", "sys_one", "sys_two"} <= {s.segment_id for s in funnel.segments().segments}
        # sys_zero still holds the members of its first query (ids 0, 3, 6, ...).
        member = funnel.is_member("sys_zero", "3")
        assert (member.member, member.source) == (True, "redis")
        assert funnel.is_member("sys_zero", "4").member is False


@pytest.mark.browser
def test_the_segments_page_in_airflows_navigation_lists_shows_and_answers(airflow: AirflowClient) -> None:
    """The page as a logged-in Airflow user opens it: Airflow's own login (its ``_token``
    cookie) is what reads funnel's API; no funnel token is typed in."""
    from browser_driver import Chromium

    frame = "iframe[title=Segments]"
    page = f"document.querySelector({frame!r})?.contentDocument"
    doc = f"document.querySelector({frame!r}).contentDocument"
    with Chromium() as browser:
        browser.set_cookie("_token", airflow.token, airflow.base_url, http_only=False)  # as Airflow's login page does
        browser.goto(f"{airflow.base_url}/plugin/funnel-segments")
        browser.wait_for(f"{page}?.body?.dataset.state === 'ready'", timeout=90, what="the page's list in Airflow")
        listed = browser.evaluate(f"[...{page}.querySelectorAll('#segments tbody tr')].map(r => r.dataset.segment)")
        assert {"sys_zero", "sys_one", "sys_two"} <= set(listed)
        assert browser.evaluate(f"{page}.getElementById('token-form').hidden")  # no funnel token asked for
        browser.click("#segments tr[data-segment=sys_zero] a", frame=frame)
        browser.wait_for(f"{page}.getElementById('detail').dataset.state === 'ready'", what="sys_zero's detail")
        answers = {}
        for user_id in ("3", "4"):
            browser.evaluate(f"{doc}.getElementById('member-id').value = ''")  # no ?. left of an assignment
            browser.click("#member-id", frame=frame)
            browser.type_text(user_id)
            browser.press_enter()
            answers[user_id] = browser.wait_for(
                f"(() => {{ const a = {page}.getElementById('member-answer');"
                f" return a.className && a.textContent.startsWith({user_id!r} + ' ') ? a.className : null; }})()",
                what=f"the member box's answer for {user_id}",
            )
        assert answers == {"3": "yes", "4": "no"}
        assert browser.problems == []


def test_the_static_segment_ran_at_its_run_at_with_no_manual_step(
    airflow: AirflowClient, static_segment: dt.datetime, system_mysql: Any, system_redis: Any, system_hive: Any
) -> None:
    run_at = static_segment
    dag_id = static_dag_id(STATIC_ID)
    wait = max(0.0, (run_at - dt.datetime.now(dt.UTC)).total_seconds()) + RUN_TIMEOUT
    runs = eventually(lambda: airflow.runs(dag_id, state=["success", "failed"]), wait, "the static segment's run")
    assert len(runs) == 1
    run = runs[0]
    assert (run["run_type"], run["state"], parse_time(run["logical_date"])) == ("scheduled", "success", run_at)
    started = parse_time(run["start_date"])
    assert run_at <= started < run_at + dt.timedelta(minutes=2)
    assert recorded_runs(system_mysql, run["dag_run_id"]) == {STATIC_ID: "success"}
    expected = hive_first_column(system_hive, LAUNCH_QUERY)
    assert len(expected) == 700
    assert members_in_both_stores(system_mysql, system_redis, STATIC_ID) == expected
