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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from funnel.core.errors import (
    RefreshCancelled,
    RefreshRejected,
    RefreshSkipped,
    RefreshSuperseded,
    SegmentBusy,
    StoreError,
    UserIdError,
    UserIdRefused,
)
from funnel.core.ids import USER_ID_MAX_LENGTH, user_id_from_hive
from funnel.core.refresh_guards import guard_violation, share_violation, skip_reason
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.core.states import RunStatus
from funnel.core.utc_time import utc_now
from funnel.services.attempt import Reporter, Stoppable, describe_failure, reported
from funnel.services.overlapped_pipeline import Staged, stage_in_parallel
from funnel.services.restore import publish_feed, sync_redis_from_mysql
from funnel.storage.mysql.run_history import Outcome, RunHistory
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.redis.change_feed import SegmentFeed
from funnel.storage.redis.segment_lock import SegmentLock, holder_in_words
from funnel.storage.redis.segment_sets import RedisSegmentStore, segment_meta

log = logging.getLogger(__name__)
_SHARE_FIX = (
    "nothing was swapped. Fix: check the query (a lost WHERE?), raise max_share_of_users, or trigger with "
    'conf {"force": true} to accept it'
)


@dataclass(frozen=True)
class RefreshRequest:
    """What to refresh, for which run, under which rules."""

    segment_id: str
    kind: Kind
    run: RunInfo
    force: bool = False
    max_shrink_pct: float = 50.0
    #: the digest of the definition the task was built from (``segment_revisions.digest``)
    definition_digest: str | None = None
    #: refuse a result holding more than this share of all users with tags (1: no limit)
    max_share_of_users: float = 1.0

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
    #: seconds of each step: ``stage`` (streaming into both stores; ``fetch``, ``redis`` and
    #: ``mysql`` are its three overlapping parts), ``exited``, ``swap``, ``prune``, ``feed``
    steps: Mapping[str, float] = field(default_factory=dict)
    #: a composite's operands whose live version an earlier run made (None: not a composite)
    inputs_kept: int | None = None


def normalize_user_ids(segment_id: str, values: Sequence[object]) -> tuple[list[str], int]:
    """User ids as the strings both stores hold (``funnel.core.ids.user_id_from_hive``); NULL and
    empty ids dropped and counted. Anything that rule refuses fails the refresh with the id and
    the fix, before it reaches a store."""
    if all(type(value) is int for value in values):  # the common case: BIGINT ids, nothing to check
        return list(map(str, values)), 0
    ids: list[str] = []
    nulls = 0
    for value in values:
        try:
            text = user_id_from_hive(value)
        except UserIdRefused as refused:
            raise UserIdError(
                f"segment {segment_id!r}: query returned {refused}; nothing was swapped. Fix: make the query's "
                f"first column the user id as an integer or 1 to {USER_ID_MAX_LENGTH} printable ASCII characters "
                "(CAST it to BIGINT, TRIM it, or filter such rows out)"
            ) from None
        if text is None:
            nulls += 1
        else:
            ids.append(text)
    return ids, nulls


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
    #: how many users have tags (None: none loaded): the ``max_share_of_users`` guard's whole
    users_with_tags: Callable[[], int | None] = lambda: None

    def __post_init__(self) -> None:
        self._init_stoppable()
        self._inputs_kept: int | None = None

    def refresh(
        self,
        request: RefreshRequest,
        batches: Callable[[], Iterable[Sequence[object]]],
        lock: SegmentLock,
        report: Reporter[RefreshResult] | None = None,
    ) -> RefreshResult:
        """Refresh one segment. ``batches`` is called only once the refresh is sure to run.

        Raises ``RefreshSkipped`` when it leaves live data alone on purpose,
        ``RefreshRejected`` when a guard refuses the result, ``SegmentBusy`` when another
        refresh held the lock too long and the segment is not yet refreshed for this slot;
        any other error fails the attempt. In every case but success, the live members
        are as they were. Whatever the outcome, ``report`` gets how the attempt ended.
        """
        with reported(lock, report) as reporting:
            reporting.result = self._locked(request, batches, lock)
            return reporting.result

    def _locked(
        self, request: RefreshRequest, batches: Callable[[], Iterable[Sequence[object]]], lock: SegmentLock
    ) -> RefreshResult:
        """The refresh under the segment's lock, recorded in the run history."""
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

    def note_inputs(self, inputs: str, kept: int) -> None:
        """Record, on the running attempt's history row, what it computes from (JSON), of which
        ``kept`` inputs were made by an earlier run (the result says so too)."""
        self._inputs_kept = kept
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
        raise SegmentBusy(segment_id, busy.holder, 0, holder_in_words(busy.holder)) from busy

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
        self._inputs_kept = None
        sync_redis_from_mysql(segment_id, self.mysql, self.redis, self.batch_size, lock, self.feed)
        self.mysql.clear_staged(segment_id)
        self.redis.clear_staged(segment_id)
        live = self.mysql.live_version(segment_id)
        logged = live is not None  # a first version logs no changes: everyone entered
        version = self.mysql.begin_version(
            segment_id, run, utc_now(), logged=logged, definition_digest=request.definition_digest
        )
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
        if violation is None and request.max_share_of_users < 1:
            too_big = share_violation(size, self.users_with_tags(), request.max_share_of_users, request.force)
            violation = f"segment {segment_id!r}: the new result {too_big}; {_SHARE_FIX}" if too_big else None
        if violation:
            raise RefreshRejected(violation, version, size)
        self._check_cancelled(segment_id)
        lock.check()
        swap_began = time.monotonic()
        now = utc_now()
        promoted, current = self.mysql.promote(segment_id, version, run, size, now, entered, exited)
        if not promoted:
            raise RefreshSuperseded(_superseded_message(segment_id, size, current.version, current.logical_date, run))
        meta = segment_meta(size, now, run, entered, exited)
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
        steps = {
            "stage": t.wall,
            "fetch": t.fetch,
            "redis": t.redis,
            "mysql": t.mysql,
            "exited": exited_seconds,
            "swap": prune_began - swap_began,
            "prune": done - prune_began,
            "feed": published - done,
        }
        log.info(
            "segment %s: timings: stage %.2fs (fetch %.2fs, redis %.2fs, mysql %.2fs), exited %.2fs, "
            "swap %.2fs, prune %.2fs, feed %.2fs",
            segment_id,
            *steps.values(),
        )
        return RefreshResult(
            segment_id,
            version,
            size,
            staged.rows_read,
            staged.skipped,
            entered,
            exited,
            done - started,
            steps,
            self._inputs_kept,
        )

    def _stage(self, segment_id: str, version: int, batches: Iterable[Sequence[object]], logged: bool) -> Staged:
        """Stream the query's ids into the Redis staging set (noting who entered) and the
        entered into MySQL, all at once (``funnel.services.overlapped_pipeline``)."""
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
