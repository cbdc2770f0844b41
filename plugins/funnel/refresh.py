"""One segment refresh as a transaction: lock, stage in both stores, check, swap, record.

Order (README, "How a refresh stays atomic"):

1. Take the segment's lock (wait up to ``lock_wait_seconds``, else skip and say who holds it).
2. Record the attempt in ``funnel_segment_runs``; attempts a dead process left 'running'
   are marked failed. Decide whether to skip (overshoot, frozen static segment).
3. Reconcile: if Redis serves another version than MySQL's live one (a process died
   between the two swaps), rebuild Redis from MySQL first.
4. Clean what a failed attempt staged, so a retry equals a clean run.
5. Stream the query's ids into a new MySQL version and the Redis staging set.
6. Check: both stores staged the same number of distinct ids; the guards (empty result,
   shrink limit) pass unless forced.
7. Diff against the live version (who entered, who exited) in MySQL; stage the ids in Redis.
8. Swap MySQL (the durable truth), then Redis. Either swap is skipped when a version for a
   later logical date is already live. Prune versions beyond ``keep_versions``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from funnel import layout
from funnel.errors import FunnelError, RefreshRejected, StoreError
from funnel.rules import guard_violation, skip_reason
from funnel.segments import Kind
from funnel.stores.history import Outcome, RunHistory
from funnel.stores.lock import SegmentBusy, SegmentLock
from funnel.stores.mysql_store import MySqlSegmentStore
from funnel.stores.redis_store import RedisSegmentStore
from funnel.stores.run_info import RunInfo, utc_now

log = logging.getLogger(__name__)


class UserIdError(FunnelError, ValueError):
    """A query returned a user id the stores cannot hold."""


class RefreshSkipped(FunnelError):
    """The refresh did not change live data, on purpose (overshoot, frozen, busy, superseded)."""

    status = "skipped"


class RefreshSuperseded(RefreshSkipped):
    """The result was computed, but a version for a later logical date is live and stays."""

    status = "superseded"


@dataclass(frozen=True)
class RefreshRequest:
    """What to refresh, for which run, under which rules."""

    segment_id: str
    kind: Kind
    run: RunInfo
    force: bool = False
    max_shrink_pct: float = 50.0

    @property
    def slot_time(self) -> dt.datetime:
        """The schedule slot this run stands for (its logical date)."""
        return self.run.logical_date


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh made live."""

    segment_id: str
    version: int
    size: int
    rows_read: int
    null_ids: int
    entered: int
    exited: int
    seconds: float


def normalize_user_ids(segment_id: str, values: Sequence[object]) -> tuple[list[str], int]:
    """User ids as the strings both stores hold; NULLs dropped and counted."""
    ids: list[str] = []
    nulls = 0
    for value in values:
        if value is None:
            nulls += 1
            continue
        if isinstance(value, bytes):
            value = value.decode()
        text = _float_id(segment_id, value) if isinstance(value, float) else str(value).strip()
        if not text:
            nulls += 1
            continue
        if len(text) > layout.USER_ID_MAX_LENGTH or not text.isascii():
            raise UserIdError(
                f"segment {segment_id!r}: query returned user id {text[:80]!r}, which is not an ASCII "
                f"string of at most {layout.USER_ID_MAX_LENGTH} characters. Fix: make the query's "
                "first column the user id (CAST it to STRING or BIGINT)"
            )
        ids.append(text)
    return ids, nulls


def _float_id(segment_id: str, value: float) -> str:
    if value.is_integer():
        return str(int(value))
    raise UserIdError(
        f"segment {segment_id!r}: query returned user id {value!r}, a fraction. "
        "Fix: make the query's first column an integer or string user id"
    )


def sync_redis_from_mysql(segment_id: str, mysql: MySqlSegmentStore, redis: RedisSegmentStore, batch_size: int) -> bool:
    """Rebuild Redis from MySQL's live version when they differ; return whether it rebuilt."""
    live = mysql.live_version(segment_id)
    serving = redis.live_version(segment_id)
    if live is None or serving == live.version:
        return False
    log.warning(
        "segment %s: Redis serves version %s but MySQL's live version is %s; rebuilding Redis from MySQL",
        segment_id,
        serving,
        live.version,
    )
    redis.clear_staged(segment_id)
    for batch in mysql.iter_live_members(segment_id, batch_size):
        redis.add_members(segment_id, batch)
    _stage_changes_in_redis(segment_id, live.version, mysql, redis, batch_size)
    run = RunInfo(dag_id=live.dag_id, run_id=live.run_id, logical_date=live.logical_date)
    meta = _meta(live.size, live.refreshed_at, run, live.entered, live.exited)
    redis.promote(segment_id, run.logical_ts_us, live.version, meta)
    return True


def _stage_changes_in_redis(
    segment_id: str, version: int, mysql: MySqlSegmentStore, redis: RedisSegmentStore, batch_size: int
) -> None:
    for change in ("entered", "exited"):
        for batch in mysql.iter_changes(segment_id, version, change, batch_size):
            redis.add_changes(segment_id, change, batch)


@dataclass
class Refresher:
    """Runs refreshes against the two stores, recording each attempt."""

    mysql: MySqlSegmentStore
    redis: RedisSegmentStore
    history: RunHistory
    batch_size: int
    keep_versions: int = 3
    progress_every: int = 1_000_000

    def refresh(
        self,
        request: RefreshRequest,
        batches: Callable[[], Iterable[Sequence[object]]],
        lock: SegmentLock,
    ) -> RefreshResult:
        """Refresh one segment. ``batches`` is called only once the refresh is sure to run.

        Raises ``RefreshSkipped`` when it leaves live data alone on purpose,
        ``RefreshRejected`` when a guard refuses the result; any other error fails the
        attempt. In every case but success, the live members are as they were.
        """
        segment_id, run = request.segment_id, request.run
        try:
            lock.acquire()
        except SegmentBusy as busy:
            attempt = self.history.start(segment_id, run, utc_now())
            self.history.finish(attempt, Outcome("skipped", error=str(busy)), utc_now())
            raise RefreshSkipped(str(busy)) from busy
        try:
            attempt = self.history.start(segment_id, run, utc_now())
            abandoned = self.history.mark_abandoned(segment_id, attempt, utc_now())
            if abandoned:
                log.warning("segment %s: marked %d unfinished earlier attempt(s) as failed", segment_id, abandoned)
            try:
                result = self._guarded(request, batches, lock)
            except RefreshSkipped as skipped:
                self.history.finish(attempt, Outcome(skipped.status, error=str(skipped)), utc_now())
                if isinstance(skipped, RefreshSuperseded):
                    self._drop_staged(segment_id, lock)
                raise
            except RefreshRejected as rejected:
                self.history.finish(attempt, Outcome("rejected", error=str(rejected)), utc_now())
                self._drop_staged(segment_id, lock)
                raise
            except Exception as exc:
                self._record_failure(attempt, exc)
                self._drop_staged(segment_id, lock)
                raise
            self.history.finish(
                attempt,
                Outcome("success", result.version, result.size, result.entered, result.exited),
                utc_now(),
            )
            return result
        finally:
            lock.release()

    def _guarded(
        self, request: RefreshRequest, batches: Callable[[], Iterable[Sequence[object]]], lock: SegmentLock
    ) -> RefreshResult:
        segment_id, run = request.segment_id, request.run
        live = self.mysql.live_version(segment_id)
        reason = skip_reason(
            segment_id,
            request.kind,
            request.slot_time,
            self.history.last_success_started_at(segment_id, run),
            live.version if live else None,
            request.force,
        )
        if reason:
            raise RefreshSkipped(reason)
        started = time.monotonic()
        sync_redis_from_mysql(segment_id, self.mysql, self.redis, self.batch_size)
        self.mysql.clear_staged(segment_id)
        self.redis.clear_staged(segment_id)
        version = self.mysql.begin_version(segment_id, run, utc_now())
        rows_read, nulls = self._stage(segment_id, version, batches(), started)
        size = self.mysql.count_members(segment_id, version)
        redis_size = self.redis.staged_size(segment_id)
        if size != redis_size:
            raise StoreError(
                f"segment {segment_id!r}: staged {size} ids in MySQL but {redis_size} in Redis; "
                "live data is unchanged. Fix: retry the task; if it repeats, check the Redis memory policy"
            )
        if nulls:
            log.warning("segment %s: skipped %s NULL or empty user ids", segment_id, f"{nulls:,}")
        live = self.mysql.live_version(segment_id)
        if live is not None and live.is_after(run, version):
            raise RefreshSuperseded(_superseded_message(segment_id, size, live.version, live.logical_date, run))
        violation = guard_violation(
            segment_id, size, live.size if live else None, request.max_shrink_pct, request.force
        )
        if violation:
            raise RefreshRejected(violation)
        entered, exited = self.mysql.stage_changes(segment_id, version, live.version if live else None)
        _stage_changes_in_redis(segment_id, version, self.mysql, self.redis, self.batch_size)
        lock.check()
        now = utc_now()
        promoted, current = self.mysql.promote(segment_id, version, run, size, now, entered, exited)
        if not promoted:
            raise RefreshSuperseded(_superseded_message(segment_id, size, current.version, current.logical_date, run))
        self.redis.promote(segment_id, run.logical_ts_us, version, _meta(size, now, run, entered, exited))
        pruned = self.mysql.prune(segment_id, self.keep_versions)
        if pruned:
            log.info("segment %s: pruned old versions %s", segment_id, pruned)
        return RefreshResult(segment_id, version, size, rows_read, nulls, entered, exited, time.monotonic() - started)

    def _stage(
        self, segment_id: str, version: int, batches: Iterable[Sequence[object]], started: float
    ) -> tuple[int, int]:
        rows_read = nulls = 0
        for ids, batch_nulls, batch_rows in _normalized(segment_id, batches):
            self.redis.add_members(segment_id, ids)
            self.mysql.add_members(segment_id, version, ids)
            before = rows_read
            rows_read += batch_rows
            nulls += batch_nulls
            if rows_read // self.progress_every > before // self.progress_every:
                elapsed = max(time.monotonic() - started, 1e-9)
                log.info(
                    "segment %s: %s rows staged (%s rows/s)",
                    segment_id,
                    f"{rows_read:,}",
                    f"{rows_read / elapsed:,.0f}",
                )
        return rows_read, nulls

    def _record_failure(self, attempt: int, exc: BaseException) -> None:
        try:
            self.history.finish(attempt, Outcome("failed", error=f"{type(exc).__name__}: {exc}"), utc_now())
        except Exception as history_exc:  # MySQL itself may be what failed
            log.warning("funnel: could not record the failed attempt %s (%s)", attempt, history_exc)

    def _drop_staged(self, segment_id: str, lock: SegmentLock) -> None:
        """Best effort, while still holding the lock: drop what this attempt staged.

        If it cannot (MySQL or Redis is what failed), the next attempt cleans it first.
        """
        try:
            lock.check()
            self.mysql.conn.rollback()
            self.mysql.clear_staged(segment_id)
            self.redis.clear_staged(segment_id)
        except Exception as exc:
            log.info("segment %s: staged data left for the next attempt to clean (%s)", segment_id, exc)


def _superseded_message(segment_id: str, size: int, live_version: int, live_date: dt.datetime, run: RunInfo) -> str:
    return (
        f"segment {segment_id!r}: computed {size:,} users for logical date {run.logical_date.isoformat()} but kept "
        f"live version {live_version}, computed for the later {live_date.isoformat()} (live data only moves forward)"
    )


def _normalized(segment_id: str, batches: Iterable[Sequence[object]]) -> Iterator[tuple[list[str], int, int]]:
    for batch in batches:
        ids, nulls = normalize_user_ids(segment_id, batch)
        yield ids, nulls, len(batch)


def _meta(
    size: int, refreshed_at: dt.datetime, run: RunInfo, entered: int | None, exited: int | None
) -> dict[str, object]:
    return {
        "size": size,
        "refreshed_at": refreshed_at.isoformat(),
        "logical_date": run.logical_date.isoformat(),
        "run_id": run.run_id,
        "dag_id": run.dag_id,
        "entered": "" if entered is None else entered,
        "exited": "" if exited is None else exited,
    }
