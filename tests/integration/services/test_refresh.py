"""Refreshes against real Redis and MySQL: versions, history, guards, diffs, locks, failures."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from helpers import feed_entries, feed_versions, mysql_live_members, redis_live_members

from funnel.core.errors import RefreshRejected, RefreshSkipped, RefreshSuperseded, SegmentBusy, UserIdError
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.core.states import RunStatus
from funnel.services.attempt import AttemptReport
from funnel.services.refresh import Refresher, RefreshRequest, RefreshResult
from funnel.services.restore import sync_redis_from_mysql
from funnel.storage import layout
from funnel.storage.mysql.run_history import RunHistory
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.redis.change_feed import SegmentFeed
from funnel.storage.redis.segment_lock import SegmentLock
from funnel.storage.redis.segment_sets import RedisSegmentStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


def run_at(day: int, hour: int = 9, try_number: int = 1, year: int = 2030) -> RunInfo:
    """A scheduled run; slots default to the future, so the overshoot rule stays out of the way."""
    logical_date = dt.datetime(year, 1, day, hour, tzinfo=dt.UTC)
    return RunInfo("funnel_dynamic_segments", f"scheduled__{year}-01-{day}T{hour}", logical_date, try_number)


def source(ids: Sequence[Any], size: int = 3) -> Callable[[], Iterator[list[Any]]]:
    def batches() -> Iterator[list[Any]]:
        for start in range(0, len(ids), size):
            yield list(ids[start : start + size])

    return batches


@pytest.fixture
def refresher(mysql_conn: Any, redis_client: Any) -> Refresher:
    return Refresher(
        mysql=MySqlSegmentStore(mysql_conn),
        redis=RedisSegmentStore(redis_client, staging_ttl_seconds=600, change_ttl_seconds=3600),
        history=RunHistory(mysql_conn),
        batch_size=3,
        keep_versions=3,
    )


def lock_for(refresher: Refresher, segment_id: str = "s", ttl: int = 60, wait: float = 0.0) -> SegmentLock:
    return SegmentLock(refresher.redis.client, segment_id, {"run_id": "test"}, ttl_seconds=ttl, wait_seconds=wait)


def do(
    refresher: Refresher,
    ids: Sequence[Any],
    run: RunInfo,
    *,
    kind: Kind = Kind.DYNAMIC,
    force: bool = False,
    max_shrink_pct: float = 50.0,
    segment_id: str = "s",
) -> Any:
    request = RefreshRequest(segment_id, kind, run, force=force, max_shrink_pct=max_shrink_pct)
    return refresher.refresh(request, source(ids), lock_for(refresher, segment_id))


def live(refresher: Refresher, segment_id: str = "s") -> tuple[set[str], set[str]]:
    return mysql_live_members(refresher.mysql.conn, segment_id), redis_live_members(refresher.redis.client, segment_id)


def query(refresher: Refresher, sql: str) -> tuple[tuple[Any, ...], ...]:
    cur = refresher.mysql.conn.cursor()
    cur.execute(sql)
    rows = cur.fetchall()
    refresher.mysql.conn.commit()
    return rows


def staged_leftovers(refresher: Refresher) -> tuple[Any, ...]:
    redis_keys = sorted(k.decode() for k in refresher.redis.client.keys("funnel:{s}:staging*"))
    versions = query(refresher, f"SELECT version FROM {layout.VERSIONS_TABLE} WHERE state IN ('staging','discarded')")
    return tuple(redis_keys), versions


def digits(*values: int) -> set[str]:
    return {str(v) for v in values}


# ---------------------------------------------------------------- versions and history


def test_each_refresh_is_a_new_version_with_a_history_row(refresher: Refresher) -> None:
    first = do(refresher, [1, 2, 3, 4, 4], run_at(20))
    assert (first.version, first.size) == (1, 4)
    assert live(refresher) == (digits(1, 2, 3, 4), digits(1, 2, 3, 4))
    second = do(refresher, [3, 4, 5], run_at(21))
    assert (second.version, second.size) == (2, 3)
    assert live(refresher) == (digits(3, 4, 5), digits(3, 4, 5))
    rows = query(
        refresher,
        f"SELECT segment_id, version, dag_id, run_id, try_number, logical_date, status, size, entered, exited, error,"
        f" finished_at >= started_at FROM {layout.RUNS_TABLE} ORDER BY id",
    )
    assert rows == (
        (
            "s",
            1,
            "funnel_dynamic_segments",
            "scheduled__2030-01-20T9",
            1,
            dt.datetime(2030, 1, 20, 9),
            "success",
            4,
            4,
            0,
            None,
            1,
        ),
        (
            "s",
            2,
            "funnel_dynamic_segments",
            "scheduled__2030-01-21T9",
            1,
            dt.datetime(2030, 1, 21, 9),
            "success",
            3,
            1,
            2,
            None,
            1,
        ),
    )
    meta = refresher.redis.live_meta("s")
    assert {k: meta[k] for k in ("size", "version", "entered", "exited", "run_id")} == {
        "size": "3",
        "version": "2",
        "entered": "1",
        "exited": "2",
        "run_id": "scheduled__2030-01-21T9",
    }
    assert dt.datetime.fromisoformat(meta["refreshed_at"]).tzinfo is not None


def test_only_the_last_k_versions_are_kept(refresher: Refresher) -> None:
    for day in range(10, 16):
        do(refresher, [day, 100], run_at(day))
    versions = query(refresher, f"SELECT version, state FROM {layout.VERSIONS_TABLE} ORDER BY version")
    assert versions == ((4, "retired"), (5, "retired"), (6, "live"))
    # Member spans: only those covering a kept version remain (10, 11 and 12 left before version 4).
    spans = query(
        refresher, f"SELECT user_id, entered, exited FROM {layout.MEMBERSHIPS_TABLE} ORDER BY user_id, entered"
    )
    assert spans == (("100", 1, None), ("13", 4, 5), ("14", 5, 6), ("15", 6, None))
    kept = ((4,), (5,), (6,))
    assert query(refresher, f"SELECT DISTINCT version FROM {layout.CHANGES_TABLE} ORDER BY version") == kept
    for version, members in ((4, {"13", "100"}), (5, {"14", "100"}), (6, {"15", "100"})):
        assert {m for page in refresher.mysql.iter_members("s", version, 10) for m in page} == members


def test_with_change_history_days_older_versions_are_archived_not_deleted(refresher: Refresher) -> None:
    refresher.change_history_days = 90
    for day in range(10, 16):
        do(refresher, [day, 100], run_at(day))
    versions = query(refresher, f"SELECT version, state FROM {layout.VERSIONS_TABLE} ORDER BY version")
    assert versions == ((1, "archived"), (2, "archived"), (3, "archived"), (4, "retired"), (5, "retired"), (6, "live"))
    assert not refresher.mysql.has_version("s", 3)  # no longer pageable
    assert refresher.mysql.members_among("s", 1, ["10", "11", "100"]) == {"10", "100"}  # its history is kept


# ---------------------------------------------------------------- entered and exited


def test_entered_and_exited_match_a_hand_computed_diff(refresher: Refresher) -> None:
    old = [1, 2, 3, 4, 5, 6]
    new = [4, 5, 6, 7, 8]
    do(refresher, old, run_at(20))
    result = do(refresher, new, run_at(21))
    entered, exited = set(map(str, new)) - set(map(str, old)), set(map(str, old)) - set(map(str, new))
    assert (result.entered, result.exited) == (len(entered), len(exited)) == (2, 3)
    client = refresher.redis.client
    assert {m.decode() for m in client.smembers(layout.entered_key("s"))} == entered
    assert {m.decode() for m in client.smembers(layout.exited_key("s"))} == exited
    assert 0 < client.ttl(layout.entered_key("s")) <= 3600
    in_mysql = query(
        refresher, f"SELECT change_type, user_id FROM {layout.CHANGES_TABLE} WHERE version = 2 ORDER BY 1, 2"
    )
    assert in_mysql == tuple(("entered", u) for u in sorted(entered)) + tuple(("exited", u) for u in sorted(exited))
    assert query(refresher, f"SELECT entered, exited FROM {layout.LIVE_TABLE}") == ((2, 3),)


def sync(refresher: Refresher) -> bool:
    with lock_for(refresher) as held:
        return sync_redis_from_mysql("s", refresher.mysql, refresher.redis, 4, held)


def test_redis_rebuilt_from_mysql_carries_members_and_changes(refresher: Refresher) -> None:
    do(refresher, list(range(10)), run_at(20))
    do(refresher, list(range(5, 12)), run_at(21))
    client = refresher.redis.client
    client.flushdb()  # as if Redis lost everything
    assert sync(refresher)
    assert redis_live_members(client, "s") == {str(i) for i in range(5, 12)}
    assert {m.decode() for m in client.smembers(layout.exited_key("s"))} == digits(0, 1, 2, 3, 4)
    assert refresher.redis.live_meta("s")["version"] == "2"
    assert not sync(refresher)


@pytest.mark.parametrize(
    "damage",
    [
        lambda client: client.delete(layout.members_key("s")),  # meta kept, members gone
        lambda client: client.srem(layout.members_key("s"), "5", "6"),  # part of the members gone
        lambda client: client.delete(layout.meta_key("s")),  # members kept, meta gone
        lambda client: client.flushdb(),  # everything gone
    ],
    ids=["members-deleted", "members-partly-deleted", "meta-deleted", "all-deleted"],
)
def test_half_a_segment_lost_in_redis_is_noticed_and_rebuilt(refresher: Refresher, damage: Any) -> None:
    do(refresher, list(range(5, 12)), run_at(20))
    damage(refresher.redis.client)
    assert sync(refresher)
    assert live(refresher) == ({str(i) for i in range(5, 12)},) * 2
    assert refresher.redis.serving("s") == (1, 7)


# ---------------------------------------------------------------- guards


def test_empty_result_is_rejected_without_swapping(refresher: Refresher) -> None:
    do(refresher, [1, 2], run_at(20))
    with pytest.raises(RefreshRejected, match=r"returned no users \(live size 2\)"):
        do(refresher, [], run_at(21))
    assert live(refresher) == (digits(1, 2), digits(1, 2))
    assert query(refresher, f"SELECT status FROM {layout.RUNS_TABLE} ORDER BY id") == (("success",), ("rejected",))
    assert staged_leftovers(refresher) == ((), ())


def test_shrink_over_the_limit_is_rejected_with_both_sizes_and_force_overrides(refresher: Refresher) -> None:
    do(refresher, list(range(10)), run_at(20))
    with pytest.raises(RefreshRejected, match=r"has 4 users against 10 live, a 60.0% shrink over the 50% limit"):
        do(refresher, list(range(4)), run_at(21))
    assert live(refresher)[1] == {str(i) for i in range(10)}
    do(refresher, list(range(4)), run_at(21), max_shrink_pct=70)  # a per-segment limit
    assert live(refresher)[1] == {str(i) for i in range(4)}
    forced = do(refresher, [], run_at(22), force=True)
    assert forced.size == 0
    assert live(refresher) == (set(), set())


def test_an_everyone_segment_is_rejected_over_max_share_of_users_and_force_overrides(refresher: Refresher) -> None:
    refresher.users_with_tags = lambda: 10  # the live tag version's size
    ten = RefreshRequest("s", Kind.DYNAMIC, run_at(20), max_share_of_users=0.9)
    with pytest.raises(
        RefreshRejected,
        match=r"segment 's': the new result holds 10 users, 100.0% of the 10 users with tags, over the "
        r"max_share_of_users limit of 90%; nothing was swapped",
    ):
        refresher.refresh(ten, source(range(10)), lock_for(refresher))
    assert live(refresher) == (set(), set())
    nine = RefreshRequest("s", Kind.DYNAMIC, run_at(20), max_share_of_users=0.9)
    assert refresher.refresh(nine, source(range(9)), lock_for(refresher)).size == 9  # at the limit: fine
    forced = RefreshRequest("s", Kind.DYNAMIC, run_at(21), force=True, max_share_of_users=0.9)
    assert refresher.refresh(forced, source(range(10)), lock_for(refresher)).size == 10
    refresher.users_with_tags = lambda: None  # no tags loaded: nothing to compare with
    unknown = RefreshRequest("s", Kind.DYNAMIC, run_at(22), max_share_of_users=0.9)
    assert refresher.refresh(unknown, source(range(50)), lock_for(refresher)).size == 50


# ---------------------------------------------------------------- schedule rules


def test_overshoot_skips_segments_refreshed_after_the_slot(refresher: Refresher) -> None:
    morning = run_at(20, 9, year=2026)
    do(refresher, [1], morning)  # the 09:00 run refreshes the segment now, long after 18:00 that day
    with pytest.raises(RefreshSkipped, match=r"after this run's slot 2026-01-20T18:00:00\+00:00"):
        do(refresher, [2], run_at(20, 18, year=2026))
    assert live(refresher) == (digits(1), digits(1))
    assert query(refresher, f"SELECT status FROM {layout.RUNS_TABLE} ORDER BY id") == (("success",), ("skipped",))
    do(refresher, [3], RunInfo(morning.dag_id, morning.run_id, morning.logical_date, try_number=2))
    assert live(refresher) == (digits(3), digits(3))  # rerunning the same Airflow run is not an overshoot
    do(refresher, [4], run_at(21, 9))  # a later slot refreshes as usual
    assert live(refresher) == (digits(4), digits(4))


def test_static_segment_is_frozen_unless_forced(refresher: Refresher) -> None:
    do(refresher, [1, 2], run_at(20), kind=Kind.STATIC)
    with pytest.raises(RefreshSkipped, match=r"static segment 's' is frozen at version 1"):
        do(refresher, [3], run_at(20), kind=Kind.STATIC)
    assert live(refresher) == (digits(1, 2), digits(1, 2))
    do(refresher, [3, 4], run_at(20), kind=Kind.STATIC, force=True)
    assert live(refresher) == (digits(3, 4), digits(3, 4))


def test_backfill_never_rolls_back_a_later_version(refresher: Refresher) -> None:
    do(refresher, [1], run_at(25))
    with pytest.raises(RefreshSuperseded, match="kept live version 1"):
        do(refresher, [2], run_at(18))
    assert live(refresher) == (digits(1), digits(1))
    assert query(refresher, f"SELECT status FROM {layout.RUNS_TABLE} ORDER BY id")[-1] == ("superseded",)
    assert staged_leftovers(refresher) == ((), ())


# ---------------------------------------------------------------- the lock


def test_a_refresh_that_cannot_get_the_lock_fails_so_airflow_retries(refresher: Refresher) -> None:
    holder = SegmentLock(
        refresher.redis.client, "s", {"dag_id": "d", "run_id": "other_run", "try_number": 2}, 60, wait_seconds=0
    )
    holder.acquire()
    try:
        started = time.monotonic()
        request = RefreshRequest("s", Kind.DYNAMIC, run_at(20))
        with pytest.raises(SegmentBusy, match=r"being refreshed by d/other_run \(try 2"):
            refresher.refresh(request, source([1]), lock_for(refresher, wait=1.0))
        assert time.monotonic() - started >= 1.0  # it waited before failing
    finally:
        holder.release()
    assert live(refresher) == (set(), set())
    rows = query(refresher, f"SELECT status, error FROM {layout.RUNS_TABLE}")
    assert rows[0][0] == "failed"
    assert "not refreshed for this slot yet. Airflow retries the task" in rows[0][1]
    do(refresher, [1], run_at(20))  # once released, the segment refreshes
    assert live(refresher)[1] == digits(1)


def test_a_refresh_that_waited_while_another_run_refreshed_the_slot_skips(refresher: Refresher) -> None:
    # The other run (an overshooting 09:00 run) refreshed the segment after this run's 18:00
    # slot and still holds the lock: the segment is fresh for this slot, so skipping is right.
    do(refresher, [1], run_at(20, 9, year=2026))
    holder = SegmentLock(refresher.redis.client, "s", {"dag_id": "d", "run_id": "r"}, 60, wait_seconds=0)
    with holder:
        request = RefreshRequest("s", Kind.DYNAMIC, run_at(20, 18, year=2026))
        with pytest.raises(RefreshSkipped, match="already refreshed by a run"):
            refresher.refresh(request, source([2]), lock_for(refresher, wait=0.2))
    assert query(refresher, f"SELECT status FROM {layout.RUNS_TABLE} ORDER BY id") == (("success",), ("skipped",))


def test_every_attempt_reports_its_outcome_duration_and_lock_wait(refresher: Refresher) -> None:
    reports: list[AttemptReport[RefreshResult]] = []
    request = RefreshRequest("s", Kind.DYNAMIC, run_at(20), max_shrink_pct=10)
    made = refresher.refresh(request, source([1, 2, 3, 4]), lock_for(refresher), report=reports.append)
    [done] = reports
    assert (done.outcome, done.result) == (RunStatus.SUCCESS, made)
    assert done.seconds >= made.seconds > 0
    assert done.lock_wait_seconds < 1
    assert set(made.steps) == {"stage", "fetch", "redis", "mysql", "exited", "swap", "prune", "feed"}
    assert (made.rows_read, made.entered, made.exited, made.inputs_kept) == (4, 4, 0, None)

    request = RefreshRequest("s", Kind.DYNAMIC, run_at(21), max_shrink_pct=10)
    with pytest.raises(RefreshRejected):
        refresher.refresh(request, source([1]), lock_for(refresher), report=reports.append)
    assert (reports[-1].outcome, reports[-1].result) == (RunStatus.REJECTED, None)

    holder = SegmentLock(refresher.redis.client, "s", {"dag_id": "d", "run_id": "other"}, 60, wait_seconds=0)
    with holder, pytest.raises(SegmentBusy):
        refresher.refresh(request, source([1]), lock_for(refresher, wait=0.5), report=reports.append)
    busy = reports[-1]
    assert (busy.outcome, busy.result) == (RunStatus.FAILED, None)
    assert busy.seconds >= busy.lock_wait_seconds >= 0.5


# ---------------------------------------------------------------- nothing half-done


class Boom(RuntimeError):
    pass


def broken_source(ids: list[int]) -> Callable[[], Iterator[list[int]]]:
    def batches() -> Iterator[list[int]]:
        yield ids
        raise Boom("Hive went away mid-stream")

    return batches


class FailingStore:
    """Wraps a real store; raises Boom from one method (the failure being injected)."""

    def __init__(self, store: Any, method: str) -> None:
        self._store, self._method = store, method

    def __getattr__(self, name: str) -> Any:
        if name == self._method:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise Boom(f"injected failure in {name}")

            return fail
        return getattr(self._store, name)


@pytest.mark.parametrize(
    ("store", "method"),
    [
        ("source", "stream"),
        ("redis", "stage_diff"),
        ("mysql", "add_entered"),
        ("redis", "staged_counts"),
        ("redis", "staged_exited"),
        ("mysql", "add_exited"),
        ("mysql", "promote"),
    ],
)
def test_failure_at_any_stage_leaves_live_data_and_a_retry_equals_a_clean_run(
    refresher: Refresher, store: str, method: str
) -> None:
    do(refresher, [1, 2, 3], run_at(20))
    request = RefreshRequest("s", Kind.DYNAMIC, run_at(21))
    broken = Refresher(
        mysql=FailingStore(refresher.mysql, method) if store == "mysql" else refresher.mysql,
        redis=FailingStore(refresher.redis, method) if store == "redis" else refresher.redis,
        history=refresher.history,
        batch_size=3,
    )
    batches = broken_source([2, 3, 4]) if store == "source" else source([2, 3, 4, 5])
    with pytest.raises(Boom):
        broken.refresh(request, batches, lock_for(refresher))
    assert live(refresher) == (digits(1, 2, 3), digits(1, 2, 3))
    retry = refresher.refresh(
        RefreshRequest("s", Kind.DYNAMIC, run_at(21, try_number=2)), source([2, 3, 4, 5]), lock_for(refresher)
    )
    assert live(refresher) == (digits(2, 3, 4, 5), digits(2, 3, 4, 5))
    assert (retry.size, retry.entered, retry.exited) == (4, 2, 1)
    assert staged_leftovers(refresher) == ((), ())
    statuses = query(
        refresher,
        f"SELECT status, error LIKE '%%injected%%' OR error LIKE '%%Hive went away%%'"
        f" FROM {layout.RUNS_TABLE} ORDER BY id",
    )
    assert statuses == (("success", None), ("failed", 1), ("success", None))


def test_death_between_the_two_swaps_is_reconciled_by_the_next_attempt(refresher: Refresher) -> None:
    do(refresher, [1, 2, 3], run_at(20))
    broken = Refresher(refresher.mysql, FailingStore(refresher.redis, "promote"), refresher.history, batch_size=3)
    with pytest.raises(Boom):
        broken.refresh(RefreshRequest("s", Kind.DYNAMIC, run_at(21)), source([7, 8]), lock_for(refresher))
    # MySQL moved on; Redis still serves the complete old version, never a partial one.
    assert live(refresher) == (digits(7, 8), digits(1, 2, 3))
    do(refresher, [7, 8, 9], run_at(22))
    assert live(refresher) == (digits(7, 8, 9), digits(7, 8, 9))


def _refresh_then_hang(segment_id: str) -> None:
    """Child process: stage part of a refresh, then hang until killed."""
    from airflow.providers.redis.hooks.redis import RedisHook

    from funnel.storage.hooks import FunnelMySqlHook

    conn = FunnelMySqlHook().get_conn()
    client = RedisHook(redis_conn_id="funnel_redis").get_conn()
    child = Refresher(MySqlSegmentStore(conn), RedisSegmentStore(client, 600), RunHistory(conn), batch_size=3)

    def batches() -> Iterator[list[int]]:
        yield [7, 8, 9]
        time.sleep(600)

    lock = SegmentLock(client, segment_id, {"run_id": "doomed"}, ttl_seconds=2, wait_seconds=0)
    child.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, run_at(21)), batches, lock)


def test_a_killed_refresh_leaves_live_data_and_its_lock_expires(refresher: Refresher) -> None:
    do(refresher, [1, 2, 3], run_at(20))
    child = multiprocessing.get_context("fork").Process(target=_refresh_then_hang, args=("s",))
    child.start()
    deadline = time.monotonic() + 20
    while not refresher.redis.client.exists(layout.staging_key("s")):
        assert time.monotonic() < deadline, "the child never started staging"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert live(refresher) == (digits(1, 2, 3), digits(1, 2, 3))
    request = RefreshRequest("s", Kind.DYNAMIC, run_at(21, try_number=2))
    retry = refresher.refresh(request, source([2, 3, 4]), lock_for(refresher, wait=10))
    assert live(refresher) == (digits(2, 3, 4), digits(2, 3, 4))
    assert retry.version == 3  # the killed attempt's version 2 was cleaned; its number is never reused
    assert staged_leftovers(refresher) == ((), ())
    statuses = query(refresher, f"SELECT status, error FROM {layout.RUNS_TABLE} ORDER BY id")
    assert statuses[1] == ("failed", "the attempt ended without finishing (process killed or lost)")
    assert statuses[2] == ("success", None)


# ---------------------------------------------------------------- user ids


def test_null_ids_are_skipped_and_counted(refresher: Refresher) -> None:
    result = do(refresher, [1, None, "", 2.0], run_at(20))
    assert (result.size, result.null_ids, result.rows_read) == (2, 2, 4)
    assert live(refresher) == (digits(1, 2), digits(1, 2))


def test_a_fractional_id_fails_the_refresh_and_swaps_nothing_in_either_store(refresher: Refresher) -> None:
    do(refresher, [1, 2, 3], run_at(20))
    with pytest.raises(UserIdError, match="a fraction") as caught:
        do(refresher, [2.0, 3.0, 4.0, 1.5], run_at(21))  # 1.5 names no user: neither '1.5' nor '1'
    assert "1.5" in str(caught.value)
    assert live(refresher) == (digits(1, 2, 3), digits(1, 2, 3))
    assert staged_leftovers(refresher) == ((), ())
    assert query(refresher, f"SELECT status FROM {layout.RUNS_TABLE} ORDER BY id") == (("success",), ("failed",))


def test_an_integral_float_id_is_stored_as_its_integer_in_both_stores(refresher: Refresher) -> None:
    result = do(refresher, [7.0, 8, "9"], run_at(20))  # Hive's DOUBLE of an integer id
    assert result.size == 3
    assert live(refresher) == ({"7", "8", "9"}, {"7", "8", "9"})


def test_progress_is_logged_with_rows_and_rate(refresher: Refresher, caplog: pytest.LogCaptureFixture) -> None:
    refresher.progress_every = 4
    with caplog.at_level("INFO", logger="funnel.services.refresh"):
        do(refresher, list(range(10)), run_at(20))
    progress = [r.getMessage() for r in caplog.records if "rows staged" in r.getMessage()]
    assert len(progress) == 2
    assert progress[0].startswith("segment s: 6 rows staged (")
    assert progress[0].endswith(" rows/s)")


# ---------------------------------------------------------------- the change feed


@pytest.fixture
def fed(refresher: Refresher) -> Refresher:
    """The refresher, publishing to the change feed in entries of 2 ids."""
    refresher.feed = SegmentFeed(refresher.redis.client, max_len=1000, batch_ids=2)
    return refresher


def test_each_refresh_publishes_exactly_its_entered_and_exited_ids(fed: Refresher) -> None:
    do(fed, [1, 2, 3, 4, 5], run_at(20))
    do(fed, [3, 4, 5, 6], run_at(21))
    do(fed, [3, 4, 5, 6], run_at(22))  # nobody moved: the version is still announced, and closed
    do(fed, [6, 7], run_at(23), max_shrink_pct=100)
    assert feed_versions(fed.redis.client, "s") == {
        1: {"entered": digits(1, 2, 3, 4, 5), "exited": set(), "ends": [(5, 0)]},
        2: {"entered": digits(6), "exited": digits(1, 2), "ends": [(1, 2)]},
        3: {"entered": set(), "exited": set(), "ends": [(0, 0)]},
        4: {"entered": digits(7), "exited": digits(3, 4, 5), "ends": [(1, 3)]},
    }
    entries = feed_entries(fed.redis.client, "s")
    assert [(e["version"], e["change"], e.get("batch")) for e in entries[:4]] == [
        ("1", "entered", "0"),
        ("1", "entered", "1"),
        ("1", "entered", "2"),
        ("1", "end", None),
    ]
    assert fed.feed.published_version("s") == 4  # type: ignore[union-attr]


def test_a_publish_that_fails_after_the_swap_is_published_by_the_next_refresh(fed: Refresher) -> None:
    do(fed, [1, 2, 3], run_at(20))
    healthy = fed.feed
    fed.feed = FailingStore(healthy, "publish_version")  # type: ignore[assignment]
    result = do(fed, [2, 3, 4], run_at(21))  # the swap stands: the version is live, the run a success
    assert (result.version, live(fed)) == (2, (digits(2, 3, 4), digits(2, 3, 4)))
    assert set(feed_versions(fed.redis.client, "s")) == {1}
    fed.feed = healthy
    do(fed, [3, 4, 5], run_at(22))  # its reconcile step publishes version 2 first, then its own
    assert feed_versions(fed.redis.client, "s") == {
        1: {"entered": digits(1, 2, 3), "exited": set(), "ends": [(3, 0)]},
        2: {"entered": digits(4), "exited": digits(1), "ends": [(1, 1)]},
        3: {"entered": digits(5), "exited": digits(2), "ends": [(1, 1)]},
    }
    assert [e["version"] for e in feed_entries(fed.redis.client, "s")] == ["1"] * 3 + ["2"] * 3 + ["3"] * 3


def test_a_crash_before_the_closing_entry_is_published_again_in_full(fed: Refresher) -> None:
    do(fed, [1, 2, 3], run_at(20))
    fed.redis.client.hdel(layout.meta_key("s"), "feed_version")  # as if the process died before the end entry
    lock = lock_for(fed)
    with lock:
        assert sync_redis_from_mysql("s", fed.mysql, fed.redis, 3, lock, fed.feed) is False  # Redis was whole
    versions = feed_versions(fed.redis.client, "s")
    assert versions[1]["ends"] == [(3, 0), (3, 0)]  # seen twice: consumers drop repeats by (version, change, batch)
    assert versions[1]["entered"] == digits(1, 2, 3)
    with lock:
        sync_redis_from_mysql("s", fed.mysql, fed.redis, 3, lock, fed.feed)
    assert len(feed_versions(fed.redis.client, "s")[1]["ends"]) == 2  # published: not again


def test_a_swap_keeps_the_feed_marker_and_a_rebuild_does_not_republish(fed: Refresher) -> None:
    do(fed, [1, 2, 3], run_at(20))
    fed.redis.client.srem(layout.members_key("s"), "1")  # Redis lost a member: the next refresh rebuilds
    do(fed, [1, 2, 3, 4], run_at(21))
    assert {v: d["ends"] for v, d in feed_versions(fed.redis.client, "s").items()} == {1: [(3, 0)], 2: [(1, 0)]}
