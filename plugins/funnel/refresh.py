"""One segment refresh as a transaction: stage in both stores, check, then swap.

Order (see README, "How a refresh stays atomic"):

1. Reconcile: if Redis serves another version than MySQL's live one (a process died
   between the two swaps), rebuild Redis from MySQL first.
2. Clean what a failed attempt staged, so a retry equals a clean run.
3. Stream the query's ids into a new MySQL version and the Redis staging set.
4. Check both stores staged the same number of distinct ids.
5. Swap MySQL (the durable truth), then Redis. Either swap is skipped when a version for
   a later logical date is already live.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from funnel import layout
from funnel.errors import FunnelError, StoreError
from funnel.stores.mysql_store import MySqlSegmentStore
from funnel.stores.redis_store import RedisSegmentStore
from funnel.stores.run_info import RunInfo, utc_now

log = logging.getLogger(__name__)


class UserIdError(FunnelError, ValueError):
    """A query returned a user id the stores cannot hold."""


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did; ``promoted`` is False when a later version was already live."""

    segment_id: str
    version: int
    size: int
    promoted: bool
    rows_read: int
    null_ids: int
    live_version: int


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
        text = str(value).strip() if not isinstance(value, float) else _float_id(segment_id, value)
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
    if live is None or redis.live_version(segment_id) == live.version:
        return False
    log.warning(
        "segment %s: Redis serves version %s but MySQL's live version is %s; rebuilding Redis from MySQL",
        segment_id,
        redis.live_version(segment_id),
        live.version,
    )
    redis.clear_staged(segment_id)
    for batch in mysql.iter_live_members(segment_id, batch_size):
        redis.add_members(segment_id, batch)
    run = RunInfo(dag_id="", run_id=live.run_id, logical_date=live.logical_date)
    redis.promote(segment_id, run.logical_ts_us, live.version, _meta(live.size, live.refreshed_at, run))
    return True


def refresh_segment(
    segment_id: str,
    batches: Iterable[Sequence[object]],
    mysql: MySqlSegmentStore,
    redis: RedisSegmentStore,
    run: RunInfo,
    batch_size: int,
    progress_every: int = 1_000_000,
) -> RefreshResult:
    """Replace a segment's members with ``batches`` in both stores, atomically for readers."""
    sync_redis_from_mysql(segment_id, mysql, redis, batch_size)
    mysql.clear_staged(segment_id)
    redis.clear_staged(segment_id)
    version = mysql.begin_version(segment_id, run, utc_now())
    rows_read = nulls = 0
    for ids, batch_nulls, batch_rows in _normalized(segment_id, batches):
        redis.add_members(segment_id, ids)
        mysql.add_members(segment_id, version, ids)
        before = rows_read
        rows_read += batch_rows
        nulls += batch_nulls
        if rows_read // progress_every > before // progress_every:
            log.info("segment %s: %s rows staged", segment_id, f"{rows_read:,}")
    mysql_size = mysql.count_members(segment_id, version)
    redis_size = redis.staged_size(segment_id)
    if mysql_size != redis_size:
        raise StoreError(
            f"segment {segment_id!r}: staged {mysql_size} ids in MySQL but {redis_size} in Redis; "
            "live data is unchanged. Fix: retry the task; if it repeats, check the Redis memory policy"
        )
    if nulls:
        log.warning("segment %s: skipped %s NULL or empty user ids", segment_id, nulls)
    now = utc_now()
    promoted, live = mysql.promote(segment_id, version, run, mysql_size, now)
    if not promoted:
        redis.clear_staged(segment_id)
        mysql.delete_version(segment_id, version)
        log.warning(
            "segment %s: kept live version %s (logical date %s); this run's logical date %s is earlier",
            segment_id,
            live.version,
            live.logical_date.isoformat(),
            run.logical_date.isoformat(),
        )
    else:
        redis.promote(segment_id, run.logical_ts_us, version, _meta(mysql_size, now, run))
    return RefreshResult(segment_id, version, mysql_size, promoted, rows_read, nulls, live.version)


def _normalized(segment_id: str, batches: Iterable[Sequence[object]]) -> Iterator[tuple[list[str], int, int]]:
    started = time.monotonic()
    for batch in batches:
        ids, nulls = normalize_user_ids(segment_id, batch)
        yield ids, nulls, len(batch)
    log.debug("segment %s: source exhausted after %.1fs", segment_id, time.monotonic() - started)


def _meta(size: int, refreshed_at: object, run: RunInfo) -> dict[str, object]:
    refreshed = refreshed_at.isoformat() if hasattr(refreshed_at, "isoformat") else str(refreshed_at)
    return {
        "size": size,
        "refreshed_at": refreshed,
        "logical_date": run.logical_date.isoformat(),
        "run_id": run.run_id,
        "dag_id": run.dag_id,
    }
