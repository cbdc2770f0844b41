"""``rebuild-redis SEGMENT_ID|--all``: reload Redis from MySQL's live versions."""

from __future__ import annotations

from funnel import settings, wiring
from funnel.storage import layout


def rebuild_redis(segment_id: str) -> bool:
    """Bring Redis level with MySQL's live version of one segment, under the segment's lock
    (``SegmentBusy`` when a refresh holds it past ``lock_wait_seconds``)."""
    from funnel.services.restore import restore_into_redis

    wait = settings.LOCK_WAIT_SECONDS
    rebuilt = restore_into_redis(segment_id, wiring, wait_seconds=wait, by="funnel.cli", step_back=False)
    print(f"segment {segment_id}: {'rebuilt Redis from MySQL' if rebuilt else 'Redis already matches MySQL'}")
    return rebuilt


def rebuild_all() -> list[str]:
    """Restore every segment with a live version, and the users' tags, into Redis from MySQL."""
    from funnel.services.restore import restore_all

    checked, rebuilt = restore_all(wiring, by="funnel.cli")
    shown = ", ".join("user tags" if s == layout.TAGS_ID else s for s in rebuilt) or "none"
    print(f"checked {len(checked) - 1} segments and the user tags; rebuilt: {shown}")
    return rebuilt
