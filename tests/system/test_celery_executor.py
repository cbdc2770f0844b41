"""funnel under Airflow's CeleryExecutor: three Celery workers on this machine, a Redis broker.

A stack of its own (``airflow_stack.py`` with ``celery_workers``): api-server, scheduler,
dag-processor, triggerer and three ``airflow celery worker`` processes (one task slot each,
Celery hostnames ``funnel-w1..3@127.0.0.1``), all in one process group that is stopped at the
end, on data of its own: MySQL database ``funnel_celery``, Redis db 5, Celery's broker and result
backend in Redis db 6, Hive database ``funnel_celery``, Airflow home ``.run/airflow-celery``
(``FUNNEL_CELERY_MYSQL_DB``, ``FUNNEL_CELERY_REDIS_DB``, ``FUNNEL_CELERY_BROKER_REDIS_DB``,
``FUNNEL_CELERY_HIVE_DB``, ``FUNNEL_CELERY_AIRFLOW_HOME`` move them). The pool ``funnel_hive`` has
2 slots, fewer than the 3 workers' slots, so the pool, not the workers, is what caps the
segment tasks. The tests run in file order and build on each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_stack import AirflowClient, AirflowStack, StackSettings, clear_of_the_next_slot, eventually, parse_time
from helpers import hive_execute, hive_first_column, insert_segments, mysql_live_members, redis_live_members

from funnel.core.dag_plan import DYNAMIC_DAG_ID
from funnel.storage import layout

pytestmark = [pytest.mark.services, pytest.mark.celery]

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("FUNNEL_RUN_DIR", ROOT / ".run"))
MYSQL_DB = os.environ.get("FUNNEL_CELERY_MYSQL_DB", "funnel_celery")
REDIS_DB = int(os.environ.get("FUNNEL_CELERY_REDIS_DB", "5"))
BROKER_REDIS_DB = int(os.environ.get("FUNNEL_CELERY_BROKER_REDIS_DB", "6"))
HIVE_DB = os.environ.get("FUNNEL_CELERY_HIVE_DB", "funnel_celery")
AIRFLOW_HOME = Path(os.environ.get("FUNNEL_CELERY_AIRFLOW_HOME", RUN_DIR / "airflow-celery"))
WORKERS = ("funnel-w1", "funnel-w2", "funnel-w3")
POOL_SLOTS = 2
PARSE_TIMEOUT = 90
RUN_TIMEOUT = 240

USERS = 3000
GROUPS = 6
GROUP_QUERY = f"SELECT user_id FROM {HIVE_DB}.users WHERE user_id % {GROUPS} = {{grp}}"
GROUP_IDS = [f"cel_{grp}" for grp in range(GROUPS)]
# A segment whose query keeps HiveServer2 busy for a while (every user against every tick: about
# 8 s on an idle 2-core machine with a warm HiveServer2, 20 s or more on a loaded one), so that a
# second refresh of it starts while the first still holds its lock, and waits long enough to say so
# (the stack logs a lock wait every 0.5 s).
SLOW_ID = "cel_slow"
TICKS = 400_000
SLOW_QUERY = (
    f"SELECT u.user_id FROM {HIVE_DB}.users u CROSS JOIN {HIVE_DB}.ticks t WHERE u.user_id + t.k >= 0 "
    f"GROUP BY u.user_id HAVING COUNT(*) = {TICKS}"
)
PAST_SLOT = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)

os.environ["AIRFLOW_CONN_FUNNEL_CELERY_MYSQL"] = (
    f"mysql://root@{os.environ.get('FUNNEL_MYSQL_HOST', '127.0.0.1')}:{os.environ.get('FUNNEL_MYSQL_PORT', '3306')}"
    f"/{MYSQL_DB}"
)
os.environ["AIRFLOW_CONN_FUNNEL_CELERY_REDIS"] = (
    f"redis://{os.environ.get('FUNNEL_REDIS_HOST', '127.0.0.1')}:{os.environ.get('FUNNEL_REDIS_PORT', '6379')}"
    f"?db={REDIS_DB}"
)


def _check_isolated() -> None:
    """The stack wipes its database and Redis dbs: never the demo's or the other tests'."""
    taken_dbs = {
        os.environ.get("FUNNEL_MYSQL_DB", "funnel"),
        os.environ.get("FUNNEL_TEST_MYSQL_DB", "funnel_test"),
        os.environ.get("FUNNEL_SYSTEM_MYSQL_DB", "funnel_system"),
    }
    taken_redis = {
        int(os.environ.get("FUNNEL_REDIS_DB", "0")),
        int(os.environ.get("FUNNEL_TEST_REDIS_DB", "15")),
        int(os.environ.get("FUNNEL_SYSTEM_REDIS_DB", "12")),
    }
    if MYSQL_DB in taken_dbs or {REDIS_DB, BROKER_REDIS_DB} & taken_redis or REDIS_DB == BROKER_REDIS_DB:
        raise pytest.UsageError(
            f"FUNNEL_CELERY_MYSQL_DB={MYSQL_DB} / FUNNEL_CELERY_REDIS_DB={REDIS_DB} / "
            f"FUNNEL_CELERY_BROKER_REDIS_DB={BROKER_REDIS_DB} would wipe the demo's or the other tests' data; "
            "choose a database and two Redis dbs of their own"
        )


@pytest.fixture(scope="module")
def warehouse(hive_conn: Any) -> Any:
    hive_execute(
        hive_conn,
        f"CREATE DATABASE IF NOT EXISTS {HIVE_DB}",
        f"DROP TABLE IF EXISTS {HIVE_DB}.users",
        f"CREATE TABLE {HIVE_DB}.users STORED AS PARQUET AS SELECT id AS user_id FROM range(1, {USERS + 1})",
        f"DROP TABLE IF EXISTS {HIVE_DB}.ticks",
        f"CREATE TABLE {HIVE_DB}.ticks STORED AS PARQUET AS SELECT id AS k FROM range({TICKS})",
    )
    return hive_conn


@pytest.fixture(scope="module")
def celery_stack(warehouse: Any) -> Iterator[AirflowStack]:
    from airflow.providers.redis.hooks.redis import RedisHook

    from funnel.storage.hooks import FunnelMySqlHook

    _check_isolated()
    conn = FunnelMySqlHook(mysql_conn_id="funnel_celery_mysql", schema="information_schema").get_conn()
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")  # the stack's start migrates it
    finally:
        conn.close()
    redis = RedisHook(redis_conn_id="funnel_celery_redis").get_conn()
    redis.flushdb()
    redis.close()
    stack = AirflowStack(
        StackSettings(
            home=AIRFLOW_HOME,
            mysql_db=MYSQL_DB,
            redis_db=REDIS_DB,
            celery_workers=WORKERS,
            celery_redis_db=BROKER_REDIS_DB,
            worker_concurrency=1,
            extra_env={
                "AIRFLOW__FUNNEL__TAG_QUERY": "",
                "AIRFLOW__FUNNEL__HIVE_POOL_SLOTS": str(POOL_SLOTS),
                "AIRFLOW__FUNNEL__LOCK_LOG_EVERY_SECONDS": "0.5",
            },
        )
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def airflow(celery_stack: AirflowStack) -> Iterator[AirflowClient]:
    client = celery_stack.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def mysql(celery_stack: AirflowStack) -> Iterator[Any]:
    from funnel.storage.hooks import FunnelMySqlHook

    conn = FunnelMySqlHook(mysql_conn_id="funnel_celery_mysql").get_conn()
    conn.autocommit(True)
    yield conn
    with contextlib.suppress(Exception):
        conn.close()


@pytest.fixture(scope="module")
def redis(celery_stack: AirflowStack) -> Iterator[Any]:
    from airflow.providers.redis.hooks.redis import RedisHook

    client = RedisHook(redis_conn_id="funnel_celery_redis").get_conn()
    yield client
    client.close()


# ---------------------------------------------------------------- reading what happened


def task_instances(airflow: AirflowClient, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    tis = airflow.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti for ti in tis}


def most_at_once(tis: list[dict[str, Any]]) -> int:
    """The most task instances running at the same moment, from their start and end dates."""
    edges = sorted(
        [(parse_time(ti["start_date"]), 1) for ti in tis] + [(parse_time(ti["end_date"]), -1) for ti in tis],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def recorded_runs(conn: Any, run_id: str) -> dict[str, str]:
    cur = conn.cursor()
    cur.execute(f"SELECT segment_id, status FROM {layout.RUNS_TABLE} WHERE run_id = %s ORDER BY id", (run_id,))
    return dict(cur.fetchall())


def members_in_both_stores(conn: Any, redis: Any, segment_id: str) -> set[str]:
    in_mysql, in_redis = mysql_live_members(conn, segment_id), redis_live_members(redis, segment_id)
    assert in_mysql == in_redis, f"{segment_id}: MySQL and Redis disagree"
    return in_mysql


def task_log(stack: AirflowStack, run_id: str, task_id: str) -> str:
    """The task's log files (every attempt) as the workers wrote them under the stack's home."""
    folder = stack.home / "logs" / f"dag_id={DYNAMIC_DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=*.log")))


# ---------------------------------------------------------------- the tests


def test_every_worker_is_up_on_the_broker(celery_stack: AirflowStack) -> None:
    assert celery_stack.celery_workers_up() == {f"{name}@127.0.0.1" for name in WORKERS}
    assert celery_stack.env()["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_segment_tasks_spread_over_the_workers_within_the_pool(
    airflow: AirflowClient, mysql: Any, redis: Any, warehouse: Any
) -> None:
    insert_segments(
        mysql,
        *(
            {"segment_id": sid, "name": sid, "kind": "dynamic", "query": GROUP_QUERY.format(grp=grp)}
            for grp, sid in enumerate(GROUP_IDS)
        ),
    )
    eventually(lambda: airflow.task_ids(DYNAMIC_DAG_ID) == GROUP_IDS, PARSE_TIMEOUT, "the segments as tasks")
    pool = airflow.request("GET", "/api/v2/pools/funnel_hive")
    assert pool["slots"] == POOL_SLOTS
    airflow.set_paused(DYNAMIC_DAG_ID, False)
    clear_of_the_next_slot(airflow, DYNAMIC_DAG_ID, dt.timedelta(minutes=3), PARSE_TIMEOUT, RUN_TIMEOUT)

    run = airflow.trigger(DYNAMIC_DAG_ID)
    run = airflow.wait_for_run(DYNAMIC_DAG_ID, run["dag_run_id"], RUN_TIMEOUT)
    assert run["state"] == "success", run
    tis = task_instances(airflow, DYNAMIC_DAG_ID, run["dag_run_id"])
    assert {tid: ti["state"] for tid, ti in tis.items()} == dict.fromkeys(GROUP_IDS, "success")
    assert recorded_runs(mysql, run["dag_run_id"]) == dict.fromkeys(GROUP_IDS, "success")
    # Which worker ran which task, as the task instances tell it.
    by_worker = {
        ti["hostname"]: sorted(t for t, other in tis.items() if other["hostname"] == ti["hostname"])
        for ti in tis.values()
    }
    print("celery: tasks by worker:", by_worker)
    assert set(by_worker) <= set(WORKERS), by_worker
    assert len(by_worker) >= 2, f"every segment task ran on one worker: {by_worker}"
    assert {ti["pool"] for ti in tis.values()} == {"funnel_hive"}
    # Three workers with a free slot each, yet never more than the pool's two at once.
    peak = most_at_once(list(tis.values()))
    print(f"celery: at most {peak} segment tasks at once (pool {POOL_SLOTS}, {len(WORKERS)} worker slots)")
    assert peak == POOL_SLOTS
    for grp, sid in enumerate(GROUP_IDS):
        expected = hive_first_column(warehouse, GROUP_QUERY.format(grp=grp))
        assert len(expected) == USERS // GROUPS
        assert members_in_both_stores(mysql, redis, sid) == expected


def test_a_second_refresh_of_a_segment_on_another_worker_waits_for_the_lock_then_skips(
    airflow: AirflowClient, celery_stack: AirflowStack, mysql: Any, redis: Any, warehouse: Any
) -> None:
    mysql.cursor().execute(f"UPDATE {layout.SEGMENTS_TABLE} SET enabled = FALSE WHERE segment_id LIKE 'cel\\_%'")
    insert_segments(mysql, {"segment_id": SLOW_ID, "name": SLOW_ID, "kind": "dynamic", "query": SLOW_QUERY})
    eventually(lambda: airflow.task_ids(DYNAMIC_DAG_ID) == [SLOW_ID], PARSE_TIMEOUT, "the slow segment alone")
    clear_of_the_next_slot(airflow, DYNAMIC_DAG_ID, dt.timedelta(minutes=3), PARSE_TIMEOUT, RUN_TIMEOUT)

    # Run 1 (now) refreshes the segment; once it holds the lock (its attempt is recorded), a
    # backfill of a past slot refreshes the same segment: another run, so another worker's task.
    first = airflow.trigger(DYNAMIC_DAG_ID)["dag_run_id"]
    eventually(lambda: recorded_runs(mysql, first).get(SLOW_ID) == "running", RUN_TIMEOUT, "run 1 holding the lock")
    airflow.request(
        "POST",
        "/api/v2/backfills",
        json={
            "dag_id": DYNAMIC_DAG_ID,
            "from_date": PAST_SLOT.isoformat(),
            "to_date": PAST_SLOT.isoformat(),
            "max_active_runs": 1,
        },
    )
    second = eventually(
        lambda: next((r["dag_run_id"] for r in airflow.runs(DYNAMIC_DAG_ID, run_type="backfill")), None),
        PARSE_TIMEOUT,
        "the backfill's run",
    )
    first_run = airflow.wait_for_run(DYNAMIC_DAG_ID, first, RUN_TIMEOUT)
    second_run = airflow.wait_for_run(DYNAMIC_DAG_ID, second, RUN_TIMEOUT)
    assert (first_run["state"], second_run["state"]) == ("success", "success")
    assert parse_time(second_run["logical_date"]) == PAST_SLOT
    one = task_instances(airflow, DYNAMIC_DAG_ID, first)[SLOW_ID]
    two = task_instances(airflow, DYNAMIC_DAG_ID, second)[SLOW_ID]
    print(f"celery: run 1 on {one['hostname']}, run 2 on {two['hostname']}")
    # One slot per worker: two refreshes at once are necessarily on two workers.
    assert {one["hostname"], two["hostname"]} <= set(WORKERS)
    assert one["hostname"] != two["hostname"]
    assert parse_time(two["start_date"]) < parse_time(one["end_date"])
    # The second waited for the first's lock, then the overshoot rule skipped it: the segment was
    # refreshed (by run 1) after its slot.
    assert (one["state"], two["state"]) == ("success", "skipped")
    log = task_log(celery_stack, second, SLOW_ID)
    assert f"{SLOW_ID}: waiting for the refresh lock held by {DYNAMIC_DAG_ID}/{first}" in log
    assert f"on {one['hostname']} pid" in log  # the holder: the other worker
    assert recorded_runs(mysql, first) == {SLOW_ID: "success"}
    assert recorded_runs(mysql, second) == {SLOW_ID: "skipped"}
    assert members_in_both_stores(mysql, redis, SLOW_ID) == {str(user) for user in range(1, USERS + 1)}
    cur = mysql.cursor()
    cur.execute(f"SELECT run_id FROM {layout.LIVE_TABLE} WHERE segment_id = %s", (SLOW_ID,))
    assert cur.fetchone() == (first,)
