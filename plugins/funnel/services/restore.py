"""Bringing Redis level with MySQL: one segment, the users' tags, or everything.

MySQL is the second level and durable; Redis can always be rebuilt from it. A restore also
publishes the live version to the change feed when the feed lacks it.

Used by a refresh (for its own segment, before it stages), the API (a segment it found not
whole in Redis), ``python -m funnel.cli rebuild-redis`` and the ``funnel_restore_redis`` DAG.
Each restore holds the segment's lock, so it never races a refresh or another restore. The
connections and stores come from ``funnel.wiring`` (the ``Stores`` protocol), passed in by the
entry point.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

from funnel import settings
from funnel.core.errors import SegmentBusy
from funnel.core.run_info import RunInfo
from funnel.core.utc_time import utc_now
from funnel.services.event_ingest import publish_proxy_changes
from funnel.storage import layout
from funnel.storage.mysql.event_ledger import EventLedger
from funnel.storage.mysql.proxy_change_log import ProxyChangeLog
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.tag_versions import MySqlTagStore
from funnel.storage.redis.change_feed import SegmentFeed
from funnel.storage.redis.segment_lock import SegmentLock
from funnel.storage.redis.segment_sets import RedisSegmentStore, segment_meta
from funnel.storage.redis.tag_sets import RedisTagStore

log = logging.getLogger(__name__)


class Stores(Protocol):
    """How a restore gets its connections and stores (the ``funnel.wiring`` module is one)."""

    def redis_client(self) -> Any: ...
    def mysql_connection(self) -> Any: ...
    def segment_lock(
        self, client: Any, segment_id: str, holder: dict[str, Any], *, wait_seconds: float
    ) -> SegmentLock: ...
    def mysql_store(self, conn: Any) -> MySqlSegmentStore: ...
    def redis_store(self, client: Any) -> RedisSegmentStore: ...
    def segment_feed(self, client: Any) -> SegmentFeed: ...
    def mysql_tag_store(self, conn: Any) -> MySqlTagStore: ...
    def redis_tag_store(self, client: Any) -> RedisTagStore: ...
    def event_ledger(self, conn: Any) -> EventLedger: ...
    def proxy_change_log(self, conn: Any) -> ProxyChangeLog: ...


def restore_into_redis(
    segment_id: str, stores: Stores, *, wait_seconds: float, by: str, step_back: bool = True
) -> bool:
    """Bring Redis level with MySQL for one segment, or the tags (``layout.TAGS_ID``), under its
    lock. If the lock stays taken for ``wait_seconds``, whoever holds it (a refresh, another
    restore) brings Redis level itself, so this one steps back (``step_back=False``: raises
    ``SegmentBusy``). Returns whether it rebuilt. ``by`` names the restorer in the lock
    (``funnel.api``, ``funnel.cli``...)."""
    client = stores.redis_client()
    holder = {"dag_id": by, "run_id": "restore", "try_number": 0, "since": utc_now()}
    lock = stores.segment_lock(client, segment_id, holder, wait_seconds=wait_seconds)
    try:
        lock.acquire()
    except SegmentBusy as busy:
        if not step_back:
            raise
        log.info("funnel: not restoring %s now: %s", segment_id, busy)
        return False
    try:
        with contextlib.closing(stores.mysql_connection()) as conn:
            if segment_id == layout.TAGS_ID:
                tags = (stores.mysql_tag_store(conn), stores.event_ledger(conn), stores.redis_tag_store(client))
                return restore_tags(*tags, settings.BATCH_SIZE, lock)
            store = stores.mysql_store(conn)
            redis, feed = stores.redis_store(client), stores.segment_feed(client)
            return sync_redis_from_mysql(segment_id, store, redis, settings.BATCH_SIZE, lock, feed)
    finally:
        lock.release()


def restore_all(stores: Stores, by: str) -> tuple[list[str], list[str]]:
    """Check every segment with a live version, and the tags; return (checked, rebuilt)."""
    with contextlib.closing(stores.mysql_connection()) as conn:
        checked = [*sorted(stores.mysql_store(conn).live_versions()), layout.TAGS_ID]
    rebuilt = [s for s in checked if restore_into_redis(s, stores, wait_seconds=settings.LOCK_WAIT_SECONDS, by=by)]
    with contextlib.closing(stores.mysql_connection()) as conn:  # proxy changes an event batch left unpublished
        publish_proxy_changes(stores.proxy_change_log(conn), stores.segment_feed(stores.redis_client()))
    log.info("funnel: checked %d segments and the user tags; rebuilt %s", len(checked) - 1, rebuilt or "none")
    return checked, rebuilt


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
    meta = segment_meta(live.size, live.refreshed_at, run, live.entered, live.exited)
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


def restore_tags(
    mysql: MySqlTagStore, ledger: EventLedger, redis: RedisTagStore, batch_size: int, lock: SegmentLock
) -> bool:
    """Rebuild Redis's tags from MySQL's live version unless Redis serves it in full.

    The caller holds the tags' lock. Events that arrive during the rebuild are applied to
    MySQL and skipped by Redis (it serves no version yet); once the rebuilt tags are
    swapped in, the users of every event recorded since the rebuild began are written
    again from MySQL. Returns whether it rebuilt.
    """
    live = mysql.live()
    expected = mysql.count(live.version)
    version, size = redis.serving()
    if version == live.version and size == expected and redis.whole():
        return False
    log.warning(
        "user tags: Redis serves version %s with %s users but MySQL's live version is %s with %s; rebuilding Redis",
        version,
        f"{size:,}",
        live.version,
        f"{expected:,}",
    )
    watermark = ledger.last_event_id()
    redis.clear_staged()
    for rows in mysql.iter_rows(live.version, batch_size):
        redis.add_staged(rows)
    lock.check()
    redis.swap(live)
    redis.drop_previous()
    for rows in ledger.users_with_events_after(watermark, live.version, batch_size):
        redis.apply(live.version, rows)
    return True
