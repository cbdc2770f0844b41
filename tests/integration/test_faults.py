"""The fault suite: each fault injected into a real refresh against the real servers.

Every case drives ``SegmentRefreshOperator.execute`` (the code Airflow runs) with a real
HiveServer2 query, real MySQL and real Redis, injects one fault, then checks the same
things: the live members in both stores are exactly what they were (contents, not counts),
the attempt's history row says what went wrong, the next attempt succeeds with exactly the
new members, and nothing staged is left behind. ``docs/reliability.md`` lists the cases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import mysql_live_members, redis_live_members, silent_server

from funnel import settings
from funnel.airflow.refresh_operators import SegmentRefreshOperator
from funnel.core.errors import FunnelError, HiveQueryError, HiveUnavailable, SegmentBusy, StoreError
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

SEGMENT = "s"
SLOT = dt.datetime(2030, 3, 1, 9, tzinfo=dt.UTC)  # a future slot: the overshoot rule stays out of the way
SEED = {str(i) for i in range(3000)}
SEED_QUERY = "SELECT id FROM range(3000)"
NEXT = {str(i) for i in range(1000, 301_000)}  # 300,000 ids: a load long enough to hit mid-way
NEXT_QUERY = "SELECT id FROM range(1000, 301000)"
SLOW_QUERY = "SELECT a.id FROM range(100000) a CROSS JOIN range(100000) b WHERE a.id + b.id < 0"


def context(run_id: str, try_number: int = 1, logical_date: dt.datetime = SLOT) -> dict[str, Any]:
    """The parts of an Airflow task context the operator reads."""
    dag_run = SimpleNamespace(
        dag_id="funnel_dynamic_segments", run_id=run_id, logical_date=logical_date, run_after=logical_date, conf={}
    )
    return {
        "dag_run": dag_run,
        "ti": SimpleNamespace(try_number=try_number),
        "outlet_events": defaultdict(SimpleNamespace),
    }


def operator(query: str, batch_size: int = 10_000) -> SegmentRefreshOperator:
    return SegmentRefreshOperator(task_id=SEGMENT, segment_id=SEGMENT, query=query, batch_size=batch_size)


def refresh(query: str, run_id: str, try_number: int = 1, **kw: Any) -> dict[str, Any]:
    return operator(query, **kw).execute(context(run_id, try_number))


def live(mysql_conn: Any, redis_client: Any) -> tuple[set[str], set[str]]:
    return mysql_live_members(mysql_conn, SEGMENT), redis_live_members(redis_client, SEGMENT)


def rows(conn: Any, sql: str) -> tuple[tuple[Any, ...], ...]:
    cur = conn.cursor()
    cur.execute(sql)
    found = cur.fetchall()
    conn.commit()
    return found


def leftovers(mysql_conn: Any, redis_client: Any) -> dict[str, Any]:
    """Anything staged that is not part of a kept version: must be empty after a clean attempt."""
    return {
        "redis staging keys": sorted(k.decode() for k in redis_client.keys(f"funnel:{{{SEGMENT}}}:staging*")),
        "mysql staged versions": rows(
            mysql_conn, f"SELECT version, state FROM {layout.VERSIONS_TABLE} WHERE state IN ('staging', 'discarded')"
        ),
        "mysql orphan rows": rows(
            mysql_conn,
            f"SELECT m.entered, COUNT(*) FROM {layout.MEMBERSHIPS_TABLE} m LEFT JOIN {layout.VERSIONS_TABLE} v"
            " ON v.segment_id = m.segment_id AND v.version = m.entered"
            " WHERE v.state IS NULL OR v.state NOT IN ('live', 'retired', 'archived') GROUP BY m.entered",
        ),
        "lock": redis_client.get(layout.lock_key(SEGMENT)),
    }


def history(mysql_conn: Any) -> tuple[tuple[Any, ...], ...]:
    return rows(mysql_conn, f"SELECT run_id, try_number, status, error FROM {layout.RUNS_TABLE} ORDER BY id")


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def staging_started(redis_client: Any) -> Callable[[], bool]:
    return lambda: bool(redis_client.exists(layout.staging_key(SEGMENT)))


# ---------------------------------------------------------------- the faults


@dataclass(frozen=True)
class Fault:
    """One fault: ``inject`` runs the faulty attempt (run ``fault``, try 1) and checks how it
    failed; the history row of that attempt must say ``recorded``; the next attempt is
    ``retry_try`` of run ``retry_run`` (a retry of the same task, or another run)."""

    name: str
    inject: Callable[[Any, Any, pytest.MonkeyPatch], None]
    recorded: str | None
    retry_run: str = "fault"
    retry_try: int = 2


def _child_refresh(query: str, lock_ttl: float, temp_dir: str) -> None:
    """In a child process: a whole refresh, as a task process would run it."""
    settings.LOCK_TTL_SECONDS = lock_ttl
    tempfile.tempdir = temp_dir  # where a temporary file of ids would land
    refresh(query, "fault", batch_size=1000)


def sigkill_mid_load(lock_ttl: float) -> Callable[[Any, Any, pytest.MonkeyPatch], None]:
    def inject(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        with tempfile.TemporaryDirectory() as temp_dir:
            args = (NEXT_QUERY, lock_ttl, temp_dir)
            child = multiprocessing.get_context("fork").Process(target=_child_refresh, args=args)
            child.start()
            try:
                wait_until(staging_started(redis_client), "the child to start staging")
                time.sleep(0.3)  # well into LOAD DATA batches
                os.kill(child.pid, signal.SIGKILL)
            finally:
                child.join(10)
            assert child.exitcode == -signal.SIGKILL
            assert os.listdir(temp_dir) == [], "the killed load left a file behind"

    return inject


def mysql_connection_killed(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    database = rows(mysql_conn, "SELECT DATABASE()")[0][0]

    def killer() -> None:
        wait_until(staging_started(redis_client), "staging to start")
        others = rows(
            mysql_conn,
            f"SELECT id FROM information_schema.processlist WHERE db = '{database}' AND id <> CONNECTION_ID()",
        )
        for (thread_id,) in others:  # the refresh's staging and history connections
            with contextlib.suppress(Exception):
                mysql_conn.cursor().execute(f"KILL {int(thread_id)}")

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(FunnelError, match=r"OperationalError|Lost connection|server has gone away|killed"):
        refresh(NEXT_QUERY, "fault", batch_size=1000)
    thread.join()


def mysql_unreachable(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", "mysql://root@127.0.0.1:1/funnel_test")
    with pytest.raises(StoreError, match=r"cannot connect to MySQL connection 'funnel_mysql'.*Fix: check that MySQL"):
        refresh(NEXT_QUERY, "fault")


def mysql_hanging(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "MYSQL_CONNECT_TIMEOUT_SECONDS", 1)
    with silent_server() as port:
        monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", f"mysql://root@127.0.0.1:{port}/funnel_test")
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot connect to MySQL connection 'funnel_mysql' within 1s"):
            refresh(NEXT_QUERY, "fault")
        assert time.monotonic() - started < 10


def hive_down(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_HIVE", "hiveserver2://funnel@127.0.0.1:1/default?auth_mechanism=NONE")
    with pytest.raises(HiveUnavailable, match=r"HiveServer2 connection 'funnel_hive' at 127.0.0.1:1"):
        refresh(NEXT_QUERY, "fault")


def hive_hanging(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "HIVE_CONNECT_TIMEOUT_SECONDS", 1.0)
    with silent_server() as port:
        monkeypatch.setenv(
            "AIRFLOW_CONN_FUNNEL_HIVE", f"hiveserver2://funnel@127.0.0.1:{port}/default?auth_mechanism=NONE"
        )
        started = time.monotonic()
        with pytest.raises(HiveUnavailable, match="did not answer"):
            refresh(NEXT_QUERY, "fault")
        assert time.monotonic() - started < 10


def hive_query_fails(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HiveQueryError, match=r"Hive query failed: \[TABLE_OR_VIEW_NOT_FOUND\]"):
        refresh("SELECT user_id FROM funnel_test.no_such_table", "fault")


def redis_keys_deleted(*suffixes: str) -> Callable[[Any, Any, pytest.MonkeyPatch], None]:
    """Keys of the segment vanish from Redis (whole or in part), then an attempt fails at Hive:
    the attempt first brings Redis level with MySQL, so readers get every member back."""

    def inject(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        for suffix in suffixes:
            if suffix == "members-part":
                redis_client.srem(layout.members_key(SEGMENT), *[str(i) for i in range(0, 3000, 2)])
            else:
                redis_client.delete(f"funnel:{{{SEGMENT}}}:{suffix}")
        hive_query_fails(mysql_conn, redis_client, monkeypatch)

    return inject


def guard_rejects(mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from funnel.core.errors import RefreshRejected

    with pytest.raises(RefreshRejected, match=r"has 10 users against 3,000 live"):
        refresh("SELECT id FROM range(10)", "fault")
    assert rows(mysql_conn, f"SELECT size, version FROM {layout.RUNS_TABLE} WHERE status = 'rejected'") == ((10, 2),)


FAULTS = [
    Fault("sigkill-mid-load", sigkill_mid_load(lock_ttl=2), "process killed or lost", "next_slot", retry_try=1),
    Fault("retry-inside-the-lock-lease", sigkill_mid_load(lock_ttl=30), "process killed or lost"),
    Fault("mysql-connection-killed", mysql_connection_killed, "OperationalError"),
    Fault("mysql-unreachable", mysql_unreachable, None),
    Fault("mysql-hanging", mysql_hanging, None),
    Fault("hive-down", hive_down, "HiveUnavailable: HiveServer2 connection 'funnel_hive' at 127.0.0.1:1"),
    Fault("hive-hanging", hive_hanging, "did not answer the handshake in time"),
    Fault("hive-query-fails", hive_query_fails, "HiveQueryError: segment 's': Hive query failed: [TABLE_OR_VIEW_NOT_"),
    Fault("redis-members-deleted", redis_keys_deleted("members"), "TABLE_OR_VIEW_NOT_FOUND"),
    Fault("redis-members-partly-deleted", redis_keys_deleted("members-part"), "TABLE_OR_VIEW_NOT_FOUND"),
    Fault("redis-meta-deleted", redis_keys_deleted("meta"), "TABLE_OR_VIEW_NOT_FOUND"),
    Fault("redis-all-keys-deleted", redis_keys_deleted("members", "meta", "entered"), "TABLE_OR_VIEW_NOT_FOUND"),
    Fault("guard-rejects", guard_rejects, "a 99.7% shrink over the 50% limit"),
]


#: Faults of MySQL or Hive go through no Redis code of their own: the single Redis is enough.
_NOT_REDIS = ("mysql-", "hive-", "guard-")


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(f, id=f.name, marks=[pytest.mark.single_redis] if f.name.startswith(_NOT_REDIS) else [])
        for f in FAULTS
    ],
)
def test_a_fault_loses_nothing_and_the_next_attempt_succeeds(
    fault: Fault, mysql_conn: Any, redis_client: Any, hive_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh(SEED_QUERY, "seed")
    assert live(mysql_conn, redis_client) == (SEED, SEED)

    with monkeypatch.context() as patched:
        fault.inject(mysql_conn, redis_client, patched)

    assert live(mysql_conn, redis_client) == (SEED, SEED), "live data changed"
    started = time.monotonic()
    result = refresh(NEXT_QUERY, fault.retry_run, fault.retry_try)
    retry_seconds = time.monotonic() - started
    assert live(mysql_conn, redis_client) == (NEXT, NEXT)
    assert result["size"] == len(NEXT)
    assert leftovers(mysql_conn, redis_client) == {
        "redis staging keys": [],
        "mysql staged versions": (),
        "mysql orphan rows": (),
        "lock": None,
    }
    attempts = history(mysql_conn)
    faulty = [a for a in attempts if a[:2] == ("fault", 1)]
    if fault.recorded is None:  # MySQL itself was out of reach: nothing could be recorded
        assert faulty == []
    else:
        assert len(faulty) == 1
        assert faulty[0][2] in ("failed", "rejected")
        assert fault.recorded in faulty[0][3]
    assert attempts[-1][2] == "success"
    assert not [a for a in attempts if a[2] == "running"]
    if fault.name == "retry-inside-the-lock-lease":
        assert retry_seconds < 15, "the retry waited for a dead try's lock"  # the lease is 30 s


def test_two_refreshes_of_one_segment_at_once_take_turns(
    mysql_conn: Any, redis_client: Any, hive_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "LOCK_POLL_SECONDS", 0.05)
    refresh(SEED_QUERY, "seed")
    results: dict[str, Any] = {}

    def run(run_id: str, query: str) -> None:
        results[run_id] = refresh(query, run_id, batch_size=1000)

    first = threading.Thread(target=run, args=("first", NEXT_QUERY))
    first.start()
    wait_until(staging_started(redis_client), "the first refresh to start staging")
    second = threading.Thread(target=run, args=("second", "SELECT id FROM range(500, 300500)"))
    second.start()
    first.join(120)
    second.join(120)
    assert [results["first"]["version"], results["second"]["version"]] == [2, 3]
    assert live(mysql_conn, redis_client) == ({str(i) for i in range(500, 300500)},) * 2
    spans = rows(
        mysql_conn,
        f"SELECT run_id, started_at, finished_at, status FROM {layout.RUNS_TABLE} WHERE run_id <> 'seed' ORDER BY id",
    )
    assert [(run_id, status) for run_id, _, _, status in spans] == [("first", "success"), ("second", "success")]
    assert spans[1][1] >= spans[0][2], "the second refresh started before the first finished"
    assert leftovers(mysql_conn, redis_client)["mysql staged versions"] == ()


def test_a_refresh_kept_waiting_past_its_limit_fails_for_a_retry(
    mysql_conn: Any, redis_client: Any, hive_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnel.storage.redis.segment_lock import SegmentLock

    monkeypatch.setattr(settings, "LOCK_WAIT_SECONDS", 0.5)
    refresh(SEED_QUERY, "seed")
    holder = SegmentLock(redis_client, SEGMENT, {"dag_id": "d", "run_id": "other"}, 30, 0)
    with holder, pytest.raises(SegmentBusy, match=r"being refreshed by d/other"):
        refresh(NEXT_QUERY, "waiting")
    assert history(mysql_conn)[-1][2] == "failed"
    assert live(mysql_conn, redis_client) == (SEED, SEED)


# ---------------------------------------------------------------- on_kill and execution_timeout


@contextlib.contextmanager
def running_in_thread(op: SegmentRefreshOperator, ctx: dict[str, Any]) -> Iterator[dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = op.execute(ctx)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(60)
        assert not thread.is_alive(), "the refresh did not stop"


@pytest.mark.single_redis  # Hive or MySQL: the same on either Redis
def test_on_kill_cancels_the_query_records_the_attempt_and_frees_the_lock(
    mysql_conn: Any, redis_client: Any, hive_conn: Any
) -> None:
    refresh(SEED_QUERY, "seed")
    op = operator(SLOW_QUERY)
    with running_in_thread(op, context("killed")) as outcome:
        wait_until(lambda: op._running is not None and op._running.query is not None, "the Hive query to start")
        wait_until(lambda: op._running.query.operation_handle is not None, "the Hive query to be submitted")
        started = time.monotonic()
        op.on_kill()  # what Airflow's SIGTERM handler calls
        assert redis_client.get(layout.lock_key(SEGMENT)) is None, "the lock outlived the kill"
        assert history(mysql_conn)[-1][2:] == ("failed", "killed by Airflow: " + KILLED_TAIL)
    assert time.monotonic() - started < 10
    assert "cancelled" in str(outcome["error"])
    assert live(mysql_conn, redis_client) == (SEED, SEED)
    refresh(NEXT_QUERY, "killed", try_number=2)  # the retry starts at once and succeeds
    assert live(mysql_conn, redis_client) == (NEXT, NEXT)


KILLED_TAIL = "the task was stopped (marked failed or success, cleared, or past its execution_timeout)"


@pytest.mark.single_redis  # Hive or MySQL: the same on either Redis
def test_execution_timeout_records_the_timeout_and_stops_the_query(
    mysql_conn: Any, redis_client: Any, hive_conn: Any
) -> None:
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    refresh(SEED_QUERY, "seed")
    op = operator(SLOW_QUERY)
    started = time.monotonic()
    with pytest.raises(AirflowTaskTimeout), timeout(3):  # what Airflow does with execution_timeout
        op.execute(context("slow"))
    op.on_kill()  # Airflow calls it after the timeout: nothing is left to stop
    assert time.monotonic() - started < 20
    status, error = history(mysql_conn)[-1][2:]
    assert (status, error) == ("failed", "AirflowTaskTimeout: the task ran past its execution_timeout and was stopped")
    assert redis_client.get(layout.lock_key(SEGMENT)) is None
    assert live(mysql_conn, redis_client) == (SEED, SEED)
    assert op.execution_timeout == dt.timedelta(seconds=settings.REFRESH_TIMEOUT_SECONDS)


# ---------------------------------------------------------------- faults at parse time


@contextlib.contextmanager
def mysql_down() -> Iterator[str]:
    yield "mysql://root@127.0.0.1:1/funnel_test"


@contextlib.contextmanager
def mysql_silent() -> Iterator[str]:
    with silent_server() as port:
        yield f"mysql://root@127.0.0.1:{port}/funnel_test"


@pytest.mark.single_redis  # Hive or MySQL: the same on either Redis
@pytest.mark.parametrize("outage", [mysql_down, mysql_silent], ids=["mysql-unreachable", "mysql-hanging"])
def test_a_catalog_outage_at_parse_builds_the_last_good_dags(
    outage: Callable[[], Any], mysql_conn: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from helpers import insert_segments

    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_CONNECT_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_READ_TIMEOUT_SECONDS", "1")
    insert_segments(
        mysql_conn,
        {"segment_id": "a", "name": "A", "kind": "dynamic", "query": "SELECT user_id FROM dw.a"},
        {"segment_id": "b", "name": "B", "kind": "static", "query": "SELECT 1", "run_at": "2030-01-01 09:00:00"},
    )

    def parse() -> dict[str, str]:
        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        assert bag.import_errors == {}
        return {i: repr(DagSerialization.to_dict(d)) for i, d in bag.dags.items() if "example" not in i}

    healthy = parse()
    with outage() as url:
        monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", url)
        started = time.monotonic()
        during = parse()
    assert time.monotonic() - started < 15
    assert during == healthy
    assert sorted(healthy) == [
        "funnel_dynamic_segments",
        "funnel_purge_retired",
        "funnel_restore_redis",
        "funnel_static_b",
        "funnel_user_tags",
        "funnel_webhooks",
    ]
