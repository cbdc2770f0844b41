"""Bringing Redis level with MySQL: one segment, the users' tags, or everything.

Also publishes the live version to the change feed when the feed lacks it.

Used by a refresh (for its own segment), the API (a segment it found not whole in Redis),
``python -m funnel.cli rebuild-redis`` and the ``funnel_restore_redis`` DAG. Each restore
holds the segment's lock, so it never races a refresh or another restore.
"""

from __future__ import annotations

import contextlib
import logging

from funnel import layout, settings, wiring
from funnel.proxy.ingest import publish_proxy_changes
from funnel.stores.run_info import utc_now

log = logging.getLogger(__name__)


def restore_into_redis(segment_id: str, *, wait_seconds: float, by: str) -> bool:
    """Bring Redis level with MySQL for one segment, or the tags (``layout.TAGS_ID``), under its
    lock. If the lock stays taken for ``wait_seconds``, whoever holds it (a refresh, another
    restore) brings Redis level itself, so this one steps back. Returns whether it rebuilt.
    ``by`` names the restorer in the lock (``funnel.api``, ``funnel.cli``...)."""
    from funnel.proxy.tag_load import restore_tags
    from funnel.refresh import sync_redis_from_mysql
    from funnel.stores.lock import SegmentBusy

    client = wiring.redis_client()
    holder = {"dag_id": by, "run_id": "restore", "try_number": 0, "since": utc_now()}
    lock = wiring.segment_lock(client, segment_id, holder, wait_seconds=wait_seconds)
    try:
        lock.acquire()
    except SegmentBusy as busy:
        log.info("funnel: not restoring %s now: %s", segment_id, busy)
        return False
    try:
        with contextlib.closing(wiring.mysql_connection()) as conn:
            if segment_id == layout.TAGS_ID:
                tags = (wiring.mysql_tag_store(conn), wiring.redis_tag_store(client))
                return restore_tags(*tags, settings.BATCH_SIZE, lock)
            store = wiring.mysql_store(conn)
            redis, feed = wiring.redis_store(client), wiring.segment_feed(client)
            return sync_redis_from_mysql(segment_id, store, redis, settings.BATCH_SIZE, lock, feed)
    finally:
        lock.release()


def restore_all(by: str) -> tuple[list[str], list[str]]:
    """Check every segment with a live version, and the tags; return (checked, rebuilt)."""
    with contextlib.closing(wiring.mysql_connection()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT segment_id FROM {layout.LIVE_TABLE} ORDER BY segment_id")
        checked = [row[0] for row in cursor.fetchall()] + [layout.TAGS_ID]
        conn.commit()
    rebuilt = [s for s in checked if restore_into_redis(s, wait_seconds=settings.LOCK_WAIT_SECONDS, by=by)]
    with contextlib.closing(wiring.mysql_connection()) as conn:  # proxy changes an event batch left unpublished
        publish_proxy_changes(wiring.mysql_tag_store(conn), wiring.segment_feed(wiring.redis_client()))
    log.info("funnel: checked %d segments and the user tags; rebuilt %s", len(checked) - 1, rebuilt or "none")
    return checked, rebuilt
