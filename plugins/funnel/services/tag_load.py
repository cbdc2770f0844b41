"""Loading the users' tags from the warehouse: a transaction, like a segment refresh.

1. Take the tags' lock (``funnel:{_tags}:lock``); record the attempt in
   ``funnel_segment_runs`` under the pseudo segment id ``_tags``.
2. Clean what a failed load staged.
3. Stream the tag query (``user_id, first_seen, order_count``, as of the run's data
   interval end) into a new MySQL version and the Redis staging keys.
4. Check: both stores staged the same users; the guards (an empty result, a shrink beyond
   ``max_shrink_pct``) pass unless forced.
5. Swap, holding the MySQL pointer row: replay every event after ``as_of`` onto the new
   version (no event is lost to a reload), write the replayed users to Redis staging, swap
   Redis (the old keys kept aside), commit MySQL, then drop the old Redis keys. If MySQL
   fails to commit, Redis is swapped back.
6. Prune old tag versions and the events no load will replay again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from funnel.core.errors import RefreshCancelled, RefreshRejected, RefreshSuperseded, StoreError
from funnel.core.refresh_guards import guard_violation
from funnel.core.run_info import RunInfo
from funnel.core.states import RunStatus
from funnel.core.user_tags import TagRow, normalize_tag_rows
from funnel.core.utc_time import utc_now
from funnel.services.attempt import Reporter, Stoppable, describe_failure, reported
from funnel.storage import layout
from funnel.storage.mysql.proxy_change_log import ProxyChangeLog
from funnel.storage.mysql.run_history import Outcome, RunHistory
from funnel.storage.mysql.tag_versions import MySqlTagStore, TagVersion
from funnel.storage.redis.segment_lock import SegmentLock
from funnel.storage.redis.tag_sets import RedisTagStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagLoadResult:
    version: int
    size: int
    replayed: int  # users whose tags events after as_of moved on top of the baseline
    rows_read: int
    seconds: float


@dataclass
class TagLoader(Stoppable):
    """Loads the tag baseline into both stores and swaps it in, recording each attempt."""

    mysql: MySqlTagStore
    redis: RedisTagStore
    #: the proxy segments' changes, pruned after each load (``change_history_days``)
    proxy_changes: ProxyChangeLog
    history: RunHistory
    batch_size: int
    keep_versions: int = 2
    progress_every: int = 1_000_000
    #: proxy segments' changes older than this many days are deleted after each load
    change_history_days: float = 0

    def __post_init__(self) -> None:
        self._init_stoppable()

    def load(
        self,
        run: RunInfo,
        as_of: dt.datetime,
        batches: Callable[[], Iterable[Sequence[Sequence[object]]]],
        lock: SegmentLock,
        *,
        force: bool = False,
        max_shrink_pct: float = 50.0,
        report: Reporter[TagLoadResult] | None = None,
    ) -> TagLoadResult:
        """Load the tags as of ``as_of`` and swap them in; ``report`` gets how the attempt ended."""
        with reported(lock, report) as reporting:
            reporting.result = self._locked(run, as_of, batches, lock, force, max_shrink_pct)
            return reporting.result

    def _locked(
        self,
        run: RunInfo,
        as_of: dt.datetime,
        batches: Callable[[], Iterable[Sequence[Sequence[object]]]],
        lock: SegmentLock,
        force: bool,
        max_shrink_pct: float,
    ) -> TagLoadResult:
        lock.acquire()
        self._lock = lock
        try:
            attempt = self._attempt = self.history.start(layout.TAGS_ID, run, utc_now())
            try:
                result = self._load(run, as_of, batches, lock, force, max_shrink_pct)
            except RefreshSuperseded as superseded:
                self.history.finish(attempt, Outcome(RunStatus.SUPERSEDED, error=str(superseded)), utc_now())
                self._drop_staged()
                raise
            except RefreshRejected as rejected:
                outcome = Outcome(RunStatus.REJECTED, rejected.version, rejected.size, error=str(rejected))
                self.history.finish(attempt, outcome, utc_now())
                self._drop_staged()
                raise
            except BaseException as exc:
                try:
                    self.history.finish(attempt, Outcome(RunStatus.FAILED, error=describe_failure(exc)), utc_now())
                except Exception as history_exc:
                    log.warning("funnel: could not record the failed tag load (%s)", history_exc)
                self._drop_staged()
                raise
            self.history.finish(
                attempt, Outcome(RunStatus.SUCCESS, result.version, result.size, entered=result.replayed), utc_now()
            )
            return result
        finally:
            self._attempt = self._lock = None
            lock.release()

    def _load(
        self,
        run: RunInfo,
        as_of: dt.datetime,
        batches: Callable[[], Iterable[Sequence[Sequence[object]]]],
        lock: SegmentLock,
        force: bool,
        max_shrink_pct: float,
    ) -> TagLoadResult:
        started = time.monotonic()
        self.mysql.clear_staged()
        self.redis.clear_staged()
        version = self.mysql.begin_version(run, as_of, utc_now())
        rows_read = 0
        for rows in self._normalized(batches()):
            if self.cancelled.is_set():
                raise RefreshCancelled("the tag load was stopped (task killed or timed out)")
            self.redis.add_staged(rows)
            self.mysql.add_rows(version, rows)
            before, rows_read = rows_read, rows_read + len(rows)
            if rows_read // self.progress_every > before // self.progress_every:
                log.info("user tags: %s rows staged", f"{rows_read:,}")
        size = self.mysql.count(version)
        staged = self.redis.staged_size()
        if size != staged:
            raise StoreError(
                f"user tags: staged {size:,} users in MySQL but {staged:,} in Redis; live tags are unchanged. "
                "Fix: retry the task"
            )
        live = self.mysql.live()
        violation = guard_violation(layout.TAGS_ID, size, live.size if live.version else None, max_shrink_pct, force)
        if violation:
            raise RefreshRejected(violation.replace("segment '_tags'", "user tags"), version, size)
        lock.check()
        swapped, replayed, current = self.mysql.swap(version, as_of, size, utc_now(), self._swap_redis, self.batch_size)
        if not swapped:
            raise RefreshSuperseded(
                f"user tags: loaded {size:,} users as of {as_of.isoformat()} but kept live version "
                f"{current.version}, as of the later {current.as_of.isoformat()} (live data only moves forward)"
            )
        self.redis.drop_previous()
        pruned = self.mysql.prune(self.keep_versions)
        if pruned:
            log.info("user tags: pruned old versions %s", pruned)
        expired = self.proxy_changes.prune(utc_now() - dt.timedelta(days=self.change_history_days))
        if expired:
            log.info("user tags: deleted %s proxy changes older than %s days", expired, self.change_history_days)
        log.info(
            "user tags: version %s is live with %s users as of %s (%s replayed from events after it)",
            version,
            f"{size:,}",
            as_of.isoformat(),
            f"{replayed:,}",
        )
        return TagLoadResult(version, size, replayed, rows_read, time.monotonic() - started)

    def _swap_redis(self, replayed: Iterator[list[TagRow]], live: TagVersion) -> Callable[[], None]:
        """Inside the MySQL swap: stage the replayed users, swap Redis; return how to undo it."""
        for rows in replayed:
            self.redis.add_staged(rows)
        previous = self.redis.swap(live)
        return lambda: self.redis.revert(previous)

    def _normalized(self, batches: Iterable[Sequence[Sequence[object]]]) -> Iterator[list[TagRow]]:
        for batch in batches:
            rows, skipped = normalize_tag_rows(batch)
            if skipped:
                log.warning("user tags: skipped %s rows with a NULL or empty user id", f"{skipped:,}")
            yield rows

    def _drop_staged(self) -> None:
        try:
            self.mysql.conn.rollback()
            self.mysql.clear_staged()
            self.redis.clear_staged()
        except Exception as exc:
            log.info("user tags: staged data left for the next load to clean (%s)", exc)
