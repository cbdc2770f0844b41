"""The Airflow pool ``funnel_hive`` caps how many segment queries HiveServer2 runs at once.

The running stack (``conftest.py``: LocalExecutor, ``parallelism`` 4) gets the pool resized to
2 slots through Airflow's REST API, and six new dynamic segments whose queries keep the local
HiveServer2 busy for a few seconds each. One forced run of the dynamic DAG refreshes them all.
funnel's run history (``funnel_segment_runs``: each attempt's ``started_at`` / ``finished_at``,
which enclose its Hive query from submit to the last fetched row) and Airflow's task instances
then show at most two refreshes at any moment, and two at some moment: the executor had room
for four, so the pool is what held the others back. The pool's size is put back at the end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from airflow_stack import AirflowClient, eventually, parse_time
from helpers import insert_segments

from funnel import settings
from funnel.core.dag_plan import DYNAMIC_DAG_ID
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

POOL_SLOTS = 2
SEGMENTS = [f"pool_{n}" for n in range(6)]
# About 2 s alone on a quiet local HiveServer2 (10^9 joined rows; 857 members each, disjoint):
# long beside the 1 s or so between the starts of two tasks, so two refreshes overlap.
SLOW_QUERY = (
    "SELECT a.id + {offset} AS user_id FROM range(1000) a CROSS JOIN range(1000000) b "
    "WHERE (a.id * b.id) % 7 = 3 GROUP BY a.id"
)
MEMBERS = 857
PARSE_TIMEOUT = 90
# A scheduled slot may run first (max_active_runs 1); then ours: six refreshes, two at a time.
RUN_TIMEOUT = 420


def max_overlap(intervals: Iterable[tuple[dt.datetime, dt.datetime]]) -> int:
    """The largest number of [start, end) intervals that hold at one instant (an end before a start)."""
    events = sorted(event for start, end in intervals for event in ((start, 1), (end, -1)))
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_max_overlap_counts_touching_intervals_once() -> None:
    t = [dt.datetime(2026, 1, 1, 9, 0, s) for s in range(10)]
    assert max_overlap([]) == 0
    assert max_overlap([(t[0], t[2]), (t[2], t[4]), (t[4], t[6])]) == 1
    assert max_overlap([(t[0], t[5]), (t[1], t[3]), (t[2], t[4]), (t[4], t[6])]) == 3


@pytest.fixture
def pool_of_two(airflow: AirflowClient) -> Iterator[None]:
    path = f"/api/v2/pools/{settings.HIVE_POOL}"
    before = airflow.request("GET", path)

    def resize(slots: int) -> None:
        body = {"pool": settings.HIVE_POOL, "slots": slots, "include_deferred": before["include_deferred"]}
        airflow.request("PATCH", path, params={"update_mask": ["slots"]}, json=body)

    resize(POOL_SLOTS)
    try:
        yield
    finally:
        resize(before["slots"])


def run_rows(
    conn: Any, since: dt.datetime, until: dt.datetime
) -> list[tuple[str, str, str, dt.datetime, dt.datetime | None]]:
    """Every attempt that started between ``since`` and ``until`` (stored as naive UTC):
    (segment, run_id, status, started_at, finished_at)."""
    cur = conn.cursor()
    cur.execute(
        f"SELECT segment_id, run_id, status, started_at, finished_at FROM {layout.RUNS_TABLE} "
        "WHERE started_at >= %s AND started_at < %s ORDER BY started_at",
        (since.replace(tzinfo=None), until.astimezone(dt.UTC).replace(tzinfo=None)),
    )
    return list(cur.fetchall())


def test_the_pool_caps_concurrent_hive_queries(airflow: AirflowClient, system_mysql: Any, pool_of_two: None) -> None:
    since = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    insert_segments(
        system_mysql,
        *(
            {"segment_id": sid, "name": sid, "kind": "dynamic", "query": SLOW_QUERY.format(offset=n * 10_000)}
            for n, sid in enumerate(SEGMENTS)
        ),
    )
    eventually(
        lambda: airflow.dag(DYNAMIC_DAG_ID) is not None and set(SEGMENTS) <= set(airflow.task_ids(DYNAMIC_DAG_ID)),
        PARSE_TIMEOUT,
        "the six slow segments as tasks of the dynamic DAG",
    )
    airflow.set_paused(DYNAMIC_DAG_ID, False)
    triggered = airflow.trigger(DYNAMIC_DAG_ID, {"force": True})
    run = airflow.wait_for_run(DYNAMIC_DAG_ID, triggered["dag_run_id"], RUN_TIMEOUT)
    assert run["state"] == "success", run

    tis = airflow.request("GET", f"/api/v2/dags/{DYNAMIC_DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")
    ours = [ti for ti in tis["task_instances"] if ti["task_id"] in SEGMENTS]
    assert sorted(ti["task_id"] for ti in ours) == SEGMENTS
    assert {(ti["state"], ti["pool"]) for ti in ours} == {("success", settings.HIVE_POOL)}
    ti_peak = max_overlap(
        (parse_time(ti["start_date"]), parse_time(ti["end_date"]))
        for ti in tis["task_instances"]
        if ti["pool"] == settings.HIVE_POOL and ti["start_date"]
    )

    # funnel's own record: every refresh since the test began, of any run (a scheduled slot
    # that ran first shares the pool), each interval enclosing its Hive query.
    # (A slot due after our run ended may already have started: not counted.)
    rows = run_rows(system_mysql, since, parse_time(run["end_date"]))
    ours_recorded = {(sid, status) for sid, run_id, status, *_ in rows if run_id == run["dag_run_id"]}
    assert {(sid, "success") for sid in SEGMENTS} <= ours_recorded
    assert all(finished is not None for *_, finished in rows), rows
    history_peak = max_overlap((started, finished) for *_, started, finished in rows)

    assert (history_peak, ti_peak) == (POOL_SLOTS, POOL_SLOTS), (
        f"at most and at some moment {POOL_SLOTS} refreshes at once; the run history shows {history_peak}, "
        f"the task instances {ti_peak}: {rows}"
    )
    cur = system_mysql.cursor()
    cur.execute(f"SELECT segment_id, size FROM {layout.LIVE_TABLE} WHERE segment_id LIKE %s", ("pool\\_%",))
    assert dict(cur.fetchall()) == dict.fromkeys(SEGMENTS, MEMBERS)
