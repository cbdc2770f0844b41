"""One segment refresh as a transaction: lock, stage in both stores, check, swap, record.

Order (README, "How a refresh stays atomic"):

1. Take the segment's lock (wait up to ``lock_wait_seconds``, logging whom it waits for;
   then skip if the segment was refreshed for this slot meanwhile, else fail so Airflow
   retries).
2. Record the attempt in ``funnel_segment_runs``; attempts a dead process left 'running'
   are marked failed. Decide whether to skip (overshoot, frozen static segment).
3. Reconcile: if Redis does not serve MySQL's live version in full (a process died
   between the two swaps, or Redis lost keys), rebuild Redis from MySQL first.
4. Clean what a failed attempt staged, so a retry equals a clean run.
5. Stream the query's ids into a new MySQL version and the Redis staging set.
6. Check: both stores staged the same number of distinct ids; the guards (empty result,
   shrink limit) pass unless forced.
7. Diff against the live version (who entered, who exited) in MySQL; stage the ids in Redis.
8. Swap MySQL (the durable truth), then Redis. Either swap is skipped when a version for a
   later logical date is already live. Prune versions beyond ``keep_versions`` and
   ``change_history_days``.
9. Publish the new live version's changes to the segment's change feed (a Redis Stream).
   A publish cut short is published again by step 3 of the next refresh, or by a restore.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from funnel import layout
from funnel.errors import FunnelError, RefreshRejected, RunStatus, StoreError
from funnel.rules import guard_violation, skip_reason
from funnel.segments import Kind
from funnel.staging import Staged, stage_in_parallel
from funnel.stores.feed import SegmentFeed
from funnel.stores.history import Outcome, RunHistory
from funnel.stores.lock import SegmentBusy, SegmentLock
from funnel.stores.mysql_store import LiveVersion, MySqlSegmentStore
from funnel.stores.redis_store import RedisSegmentStore
from funnel.stores.run_info import RunInfo, utc_now

log = logging.getLogger(__name__)


class UserIdError(FunnelError, ValueError):
    """A query returned a user id the stores cannot hold."""


class RefreshSkipped(FunnelError):
    """The refresh did not change live data, on purpose (overshoot, frozen, superseded)."""

    status = RunStatus.SKIPPED


class RefreshSuperseded(RefreshSkipped):
    """The result was computed, but a version for a later logical date is live and stays."""

    status = RunStatus.SUPERSEDED


class RefreshCancelled(FunnelError):
    """The refresh was told to stop (the task was killed or timed out); live data is untouched."""


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
    """User ids as the strings both stores hold; NULL and empty ids dropped and counted.

    Integers (and integral floats) become their decimal text; strings are kept exactly as
    returned, never trimmed. Anything ``layout.user_id_problem`` refuses fails the refresh
    with the id and the fix, before it reaches a store.
    """
    if all(type(value) is int for value in values):  # the common case: BIGINT ids, nothing to check
        return list(map(str, values)), 0
    ids: list[str] = []
    nulls = 0
    for value in values:
        if value is None or value == "":
            nulls += 1
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            ids.append(str(value))  # the common case: BIGINT ids need no further check
            continue
        text = _text_id(segment_id, value)
        problem = layout.user_id_problem(text)
        if problem:
            raise UserIdError(
                f"segment {segment_id!r}: query returned user id {text[:80]!r}, which {problem}; nothing was "
                f"swapped. Fix: make the query's first column the user id as 1 to {layout.USER_ID_MAX_LENGTH} "
                "printable ASCII characters (CAST it to BIGINT, TRIM it, or filter such rows out)"
            )
        ids.append(text)
    return ids, nulls


def _text_id(segment_id: str, value: object) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        raise UserIdError(
            f"segment {segment_id!r}: query returned user id {value!r}, a fraction. "
            "Fix: make the query's first column an integer or string user id"
        )
    if isinstance(value, bytes):
        return value.decode("latin-1")  # any byte survives to be judged by the id rule
    return str(value)


def redis_serves(live: LiveVersion, serving: tuple[int | None, int]) -> bool:
    """Whether Redis serves MySQL's live version in full: the same version and every member."""
    version, size = serving
    return version == live.version and size == live.size


def sync_redis_from_mysql(
    segment_id: str,
    mysql: MySqlSegmentStore,
    redis: RedisSegmentStore,
    batch_size: int,
    lock: SegmentLock,
    feed: SegmentFeed | None = None,
) -> bool:
    """Rebuild Redis from MySQL's live version unless Redis already serves it in full; then,
    with ``feed``, publish the live version to the change feed unless it already is.

    The caller holds the segment's lock. Return whether it rebuilt.
    """
    live = mysql.live_version(segment_id)
    if live is None:
        return False
    rebuilt = _rebuild_redis(segment_id, live, mysql, redis, batch_size, lock)
    if feed is not None:
        publish_feed(segment_id, mysql, feed, batch_size)
    return rebuilt


def publish_feed(segment_id: str, mysql: MySqlSegmentStore, feed: SegmentFeed, batch_size: int) -> int | None:
    """Publish MySQL's live version to the segment's change feed unless the feed already holds
    it in full (meta's ``feed_version``); return the version published, or None."""
    live = mysql.live_version(segment_id)
    if live is None:
        return None
    published = feed.published_version(segment_id)
    if published is not None and published >= live.version:
        return None
    version = live.version
    entered, exited = feed.publish_version(
        segment_id, version, lambda change: mysql.iter_changes(segment_id, version, change, batch_size)
    )
    log.info(
        "segment %s: published version %s to the change feed (%s entered, %s exited)",
        segment_id,
        version,
        f"{entered:,}",
        f"{exited:,}",
    )
    return version


def _rebuild_redis(
    segment_id: str,
    live: LiveVersion,
    mysql: MySqlSegmentStore,
    redis: RedisSegmentStore,
    batch_size: int,
    lock: SegmentLock,
) -> bool:
    serving = redis.serving(segment_id)
    if redis_serves(live, serving):
        return False
    log.warning(
        "segment %s: Redis serves version %s with %s members but MySQL's live version is %s with %s; "
        "rebuilding Redis from MySQL",
        segment_id,
        serving[0],
        f"{serving[1]:,}",
        live.version,
        f"{live.size:,}",
    )
    redis.clear_staged(segment_id)
    for batch in mysql.iter_live_members(segment_id, batch_size):
        redis.add_members(segment_id, batch)
    _stage_changes_in_redis(segment_id, live.version, mysql, redis, batch_size)
    run = RunInfo(dag_id=live.dag_id, run_id=live.run_id, logical_date=live.logical_date)
    meta = _meta(live.size, live.refreshed_at, run, live.entered, live.exited)
    redis.promote(segment_id, run.logical_ts_us, live.version, meta, lock.value, (live.size, None, None))
    return True


def _stage_changes_in_redis(
    segment_id: str, version: int, mysql: MySqlSegmentStore, redis: RedisSegmentStore, batch_size: int
) -> None:
    if not mysql.is_logged(segment_id, version):
        return  # a first version: everyone entered (its members), nobody exited
    for change in ("entered", "exited"):
        for batch in mysql.iter_changes(segment_id, version, change, batch_size):
            redis.add_changes(segment_id, change, batch)


class Stoppable:
    """An attempt that another thread (the operator's ``on_kill``) may stop while it runs.

    Subclasses set ``_attempt`` and ``_lock`` while they work and check ``cancelled``
    between batches.
    """

    history: RunHistory

    def _init_stoppable(self) -> None:
        self.cancelled = threading.Event()
        self._attempt: int | None = None
        self._lock: SegmentLock | None = None

    def abort(self, reason: str) -> None:
        """Stop the running attempt (from another thread): at the next batch it fails without
        swapping; its attempt is recorded as failed with ``reason`` now, on a new connection
        when ``history`` can reconnect; its lock is released, so the next try need not wait."""
        attempt, lock = self._attempt, self._lock
        try:
            if attempt is not None and self.history.reconnect is not None:
                history = RunHistory(self.history.reconnect())  # first, so the row says why it stopped
                try:
                    history.finish(attempt, Outcome(RunStatus.FAILED, error=reason), utc_now())
                finally:
                    history.close()
        finally:
            self.cancelled.set()
            if lock is not None:
                lock.release()


@dataclass
class Refresher(Stoppable):
    """Runs refreshes against the two stores, recording each attempt.

    ``history`` should have a connection of its own (not ``mysql.conn``), so an attempt
    whose staging connection dies still records why. ``abort`` may be called from another
    thread (the operator's ``on_kill``) while ``refresh`` runs.
    """

    mysql: MySqlSegmentStore
    redis: RedisSegmentStore
    history: RunHistory
    batch_size: int
    keep_versions: int = 3
    feed: SegmentFeed | None = None  # the change feed each swap publishes to (None: not published)
    progress_every: int = 1_000_000
    mysql_load_rows: int = 50_000
    #: versions beyond ``keep_versions`` promoted within this many days keep their history (archived)
    change_history_days: float = 0

    def __post_init__(self) -> None:
        self._init_stoppable()

    def refresh(
        self,
        request: RefreshRequest,
        batches: Callable[[], Iterable[Sequence[object]]],
        lock: SegmentLock,
    ) -> RefreshResult:
        """Refresh one segment. ``batches`` is called only once the refresh is sure to run.

        Raises ``RefreshSkipped`` when it leaves live data alone on purpose,
        ``RefreshRejected`` when a guard refuses the result, ``SegmentBusy`` when another
        refresh held the lock too long and the segment is not yet refreshed for this slot;
        any other error fails the attempt. In every case but success, the live members
        are as they were.
        """
        segment_id, run = request.segment_id, request.run
        try:
            lock.acquire()
        except SegmentBusy as busy:
            self._busy(request, busy)
        self._lock = lock
        try:
            attempt = self._attempt = self.history.start(segment_id, run, utc_now())
            abandoned = self.history.mark_abandoned(segment_id, attempt, utc_now())
            if abandoned:
                log.warning("segment %s: marked %d unfinished earlier attempt(s) as failed", segment_id, abandoned)
            try:
                result = self._guarded(request, batches, lock)
            except RefreshSkipped as skipped:
                self.history.finish(attempt, Outcome(skipped.status, error=str(skipped)), utc_now())
                self._drop_staged(segment_id, lock)  # a skip may come after staging began
                raise
            except RefreshRejected as rejected:
                outcome = Outcome(RunStatus.REJECTED, rejected.version, rejected.size, error=str(rejected))
                self.history.finish(attempt, outcome, utc_now())
                self._drop_staged(segment_id, lock)
                raise
            except BaseException as exc:  # timeouts and kills included: the row says why
                self._record_failure(attempt, exc)
                self._drop_staged(segment_id, lock)
                raise
            self.history.finish(
                attempt,
                Outcome(RunStatus.SUCCESS, result.version, result.size, result.entered, result.exited),
                utc_now(),
            )
            return result
        finally:
            self._attempt = self._lock = None
            lock.release()

    def note_inputs(self, inputs: str) -> None:
        """Record, on the running attempt's history row, what it computes from."""
        if self._attempt is not None:
            self.history.set_inputs(self._attempt, inputs)

    def _busy(self, request: RefreshRequest, busy: SegmentBusy) -> None:
        """The lock stayed taken: skip if the segment got refreshed for this slot, else fail."""
        segment_id, run = request.segment_id, request.run
        attempt = self.history.start(segment_id, run, utc_now())
        reason = self._skip_reason(request)
        if reason:
            self.history.finish(attempt, Outcome(RunStatus.SKIPPED, error=f"{reason} ({busy})"), utc_now())
            raise RefreshSkipped(f"{reason}; {busy}") from busy
        message = f"{busy}, and the segment is not refreshed for this slot yet. Airflow retries the task"
        self.history.finish(attempt, Outcome(RunStatus.FAILED, error=message), utc_now())
        raise SegmentBusy(segment_id, busy.holder, 0) from busy

    def _skip_reason(self, request: RefreshRequest) -> str | None:
        """Why the scheduling rules (overshoot, static freeze) leave this segment alone, or None."""
        live = self.mysql.live_version(request.segment_id)
        return skip_reason(
            request.segment_id,
            request.kind,
            request.slot_time,
            self.history.last_success_started_at(request.segment_id, request.run),
            live.version if live else None,
            request.force,
        )

    def _guarded(
        self, request: RefreshRequest, batches: Callable[[], Iterable[Sequence[object]]], lock: SegmentLock
    ) -> RefreshResult:
        segment_id, run = request.segment_id, request.run
        reason = self._skip_reason(request)
        if reason:
            raise RefreshSkipped(reason)
        started = time.monotonic()
        sync_redis_from_mysql(segment_id, self.mysql, self.redis, self.batch_size, lock, self.feed)
        self.mysql.clear_staged(segment_id)
        self.redis.clear_staged(segment_id)
        live = self.mysql.live_version(segment_id)
        logged = live is not None  # a first version logs no changes: everyone entered
        version = self.mysql.begin_version(segment_id, run, utc_now(), logged=logged)
        staged = self._stage(segment_id, version, batches(), logged)
        exited_began = time.monotonic()
        size, entered, exited = self._diff(segment_id, version, live, staged)
        exited_seconds = time.monotonic() - exited_began
        if staged.skipped:
            log.warning("segment %s: skipped %s NULL or empty user ids", segment_id, f"{staged.skipped:,}")
        live = self.mysql.live_version(segment_id)
        if live is not None and live.is_after(run, version):
            raise RefreshSuperseded(_superseded_message(segment_id, size, live.version, live.logical_date, run))
        violation = guard_violation(
            segment_id, size, live.size if live else None, request.max_shrink_pct, request.force, request.kind
        )
        if violation:
            raise RefreshRejected(violation, version, size)
        self._check_cancelled(segment_id)
        lock.check()
        swap_began = time.monotonic()
        now = utc_now()
        promoted, current = self.mysql.promote(segment_id, version, run, size, now, entered, exited)
        if not promoted:
            raise RefreshSuperseded(_superseded_message(segment_id, size, current.version, current.logical_date, run))
        meta = _meta(size, now, run, entered, exited)
        counts = (size, entered if logged else None, exited)
        self.redis.promote(segment_id, run.logical_ts_us, version, meta, lock.value, counts)
        prune_began = time.monotonic()
        pruned = self.mysql.prune(segment_id, self.keep_versions, self.change_history_days, utc_now())
        done = time.monotonic()
        if pruned:
            log.info("segment %s: pruned old versions %s", segment_id, pruned)
        self._publish(segment_id)
        published = time.monotonic()
        t = staged.timings
        log.info(
            "segment %s: timings: stage %.2fs (fetch %.2fs, redis %.2fs, mysql %.2fs), exited %.2fs, "
            "swap %.2fs, prune %.2fs, feed %.2fs",
            segment_id,
            t.wall,
            t.fetch,
            t.redis,
            t.mysql,
            exited_seconds,
            prune_began - swap_began,
            done - prune_began,
            published - done,
        )
        return RefreshResult(
            segment_id, version, size, staged.rows_read, staged.skipped, entered, exited, done - started
        )

    def _stage(self, segment_id: str, version: int, batches: Iterable[Sequence[object]], logged: bool) -> Staged:
        """Stream the query's ids into the Redis staging set (noting who entered) and the
        entered into MySQL, all at once (``funnel.staging``)."""
        began = time.monotonic()

        def progress(before: int, rows: int) -> None:
            if rows // self.progress_every > before // self.progress_every:
                rate = rows / max(time.monotonic() - began, 1e-9)
                log.info("segment %s: %s rows staged (%s rows/s)", segment_id, f"{rows:,}", f"{rate:,.0f}")

        return stage_in_parallel(
            batches,
            lambda batch: normalize_user_ids(segment_id, batch),
            lambda ids: self.redis.stage_diff(segment_id, ids, against_live=logged),
            lambda ids: self.mysql.add_entered(segment_id, version, ids, logged),
            mysql_rows=self.mysql_load_rows,
            depth=4,
            cancelled=self.cancelled,
            check_cancelled=lambda: self._check_cancelled(segment_id),
            progress=progress,
        )

    def _diff(self, segment_id: str, version: int, live: LiveVersion | None, staged: Staged) -> tuple[int, int, int]:
        """Size, entered and exited of the staged version; records the exits in MySQL.

        Redis counts the staged and entered ids; whoever was live and is not staged exited,
        found by walking the live set in short steps (only when the counts say someone did),
        while MySQL logs them; their spans are then closed in one statement. MySQL's own
        counts must agree with Redis's, and with the live size, or nothing is swapped.
        """
        size, entered, _ = self.redis.staged_counts(segment_id)
        if live is None:
            entered = size
        stayed = size - entered
        exited = closed = 0
        if live is not None and live.size > stayed:  # someone exited: walk the live set to find whom
            stage_in_parallel(  # the walk over Redis feeds the MySQL log while it goes on
                self.redis.staged_exited(segment_id, EXITED_SCAN, expected=live.size - stayed),
                lambda gone: (list(gone), 0),  # type: ignore[arg-type]
                lambda gone: gone,
                lambda gone: self.mysql.add_exited(segment_id, version, gone),
                mysql_rows=self.mysql_load_rows,
                depth=4,
                cancelled=self.cancelled,
                check_cancelled=lambda: self._check_cancelled(segment_id),
                progress=lambda before, rows: None,
            )
            closed = self.mysql.close_exited(segment_id, version)
            exited = self.redis.staged_counts(segment_id)[2]
        if staged.mysql_rows != entered or closed != exited or (live is not None and live.size - stayed != exited):
            raise StoreError(
                f"segment {segment_id!r}: the stores disagree on the new version (Redis staged {size:,} ids, "
                f"{entered:,} entered and {exited:,} exited; MySQL recorded {staged.mysql_rows:,} entered and "
                f"{closed:,} exited against {live.size if live else 0:,} live); nothing was swapped. Fix: retry the "
                "task; the next attempt brings Redis level with MySQL first"
            )
        return size, entered, exited

    def _publish(self, segment_id: str) -> None:
        """Publish the version just swapped in to the change feed. It is live already, so a
        failure here does not fail the refresh: the next refresh (step 3) or a restore publishes it."""
        if self.feed is None:
            return
        try:
            publish_feed(segment_id, self.mysql, self.feed, self.batch_size)
        except Exception as exc:
            log.warning(
                "segment %s: the new version is live but its change feed was not published (%s); the next "
                "refresh or `python -m funnel.cli rebuild-redis %s` publishes it",
                segment_id,
                exc,
                segment_id,
            )

    def _check_cancelled(self, segment_id: str) -> None:
        if self.cancelled.is_set():
            raise RefreshCancelled(f"segment {segment_id!r}: the refresh was stopped (task killed or timed out)")

    def _record_failure(self, attempt: int, exc: BaseException) -> None:
        try:
            self.history.finish(attempt, Outcome(RunStatus.FAILED, error=describe_failure(exc)), utc_now())
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


def describe_failure(exc: BaseException) -> str:
    """An error for the run history and the task log: the type and the message, never empty."""
    text = str(exc).strip()
    name = type(exc).__name__
    if name == "AirflowTaskTimeout":
        return "AirflowTaskTimeout: the task ran past its execution_timeout and was stopped"
    return f"{name}: {text}" if text else name


#: Live members per step of the walk that finds who exited (SSCAN COUNT: each step a script
#: of about 3 ms inside Redis).
EXITED_SCAN = 3_000


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
