"""The change feed: each segment's entered/exited ids in a bounded Redis Stream.

After a refresh swaps a version live, its changes (from MySQL's change log; a first version's
members all entered) are appended to ``funnel:{<segment_id>}:feed`` as entries of at most
``feed_batch_ids`` ids, then one closing entry (``change=end``) that also records, in the same
script, the version as published in the segment's meta hash (``feed_version``). A version whose
closing entry is missing (a crash between the swap and the end of the publish) is published
again by the next refresh or restore, so a consumer sees every version at least once and
deduplicates by (version, change, batch). README, "Change feed".

The stream is capped with ``XADD ... MAXLEN ~ feed_max_len`` (entries, not ids): a consumer
that falls further behind than that loses the oldest entries and catches up from
``GET /v1/segments/{id}/changes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from funnel.core.states import FeedChange
from funnel.storage import layout
from funnel.storage.layout import MetaField

log = logging.getLogger(__name__)

#: Ids in one stream entry are joined by a newline: a user id may hold a comma or a space
#: (``ids.user_id_problem``) but never a control character.
IDS_SEPARATOR = "\n"

#: Entries sent to Redis per round trip while publishing.
ENTRIES_PER_ROUND_TRIP = 50

# KEYS: feed, meta. ARGV: max_len, version, entered, exited.
# Appends the closing entry of a version and, atomically with it, records the version as
# published in meta (only while meta still describes that version). Returns 1 when recorded.
_END_LUA = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'version', ARGV[2], 'change', 'end', 'entered', ARGV[3], 'exited', ARGV[4])
if redis.call('HGET', KEYS[2], 'version') == ARGV[2] then
  redis.call('HSET', KEYS[2], 'feed_version', ARGV[2])
  return 1
end
return 0
"""


class SegmentFeed:
    """Publishes segment changes to their streams, over a redis-py client (single or cluster)."""

    def __init__(self, client: Any, max_len: int, batch_ids: int) -> None:
        self.client = client
        self.max_len = max_len
        self.batch_ids = batch_ids
        self._end = client.register_script(_END_LUA)

    def published_version(self, segment_id: str) -> int | None:
        """The last version whose every entry (its closing one included) is in the stream."""
        value = self.client.hget(layout.meta_key(segment_id), MetaField.FEED_VERSION)
        return int(value) if value is not None else None

    def publish(
        self,
        segment_id: str,
        change: FeedChange,
        ids: Iterable[str],
        *,
        version: int | None = None,
        event: str | None = None,
        first_batch: int = 0,
    ) -> int:
        """Append ``ids`` that ``change`` (entered / exited) as entries of ``batch_ids`` ids each,
        marked with the ``version`` that made the change, or the ``event`` (a proxy segment's
        event id); batches are numbered from ``first_batch``. Returns how many entries were added.

        The publishing function for any segment change; a whole version is ``publish_version``.
        """
        if (version is None) == (event is None):
            raise ValueError("publish: give either the version or the event that made the change")
        marker = ("version", str(version)) if version is not None else ("event", event)
        key = layout.feed_key(segment_id)
        batch, pending = first_batch, []
        chunk: list[str] = []
        for user_id in ids:
            chunk.append(user_id)
            if len(chunk) == self.batch_ids:
                pending.append(self._entry(marker, change, batch, chunk))
                batch, chunk = batch + 1, []
                if len(pending) == ENTRIES_PER_ROUND_TRIP:
                    self._add(key, pending)
                    pending = []
        if chunk:
            pending.append(self._entry(marker, change, batch, chunk))
            batch += 1
        self._add(key, pending)
        return batch - first_batch

    def publish_version(
        self, segment_id: str, version: int, changes: Callable[[FeedChange], Iterable[Sequence[str]]]
    ) -> tuple[int, int]:
        """Publish one live version: its entered ids, its exited ids (``changes(change)`` streams
        them in batches), then the closing entry, recording the version as published. Returns
        (entered, exited)."""
        counts = {}
        for change in (FeedChange.ENTERED, FeedChange.EXITED):
            seen = 0

            def counted(batches: Iterable[Sequence[str]]) -> Iterable[str]:
                nonlocal seen
                for batch in batches:
                    seen += len(batch)
                    yield from batch

            self.publish(segment_id, change, counted(changes(change)), version=version)
            counts[change] = seen
        entered, exited = counts[FeedChange.ENTERED], counts[FeedChange.EXITED]
        keys = [layout.feed_key(segment_id), layout.meta_key(segment_id)]
        self._end(keys=keys, args=[self.max_len, version, entered, exited])
        return entered, exited

    def _entry(self, marker: tuple[str, str | None], change: str, batch: int, ids: list[str]) -> dict[str, str]:
        return {marker[0]: marker[1] or "", "change": str(change), "batch": str(batch), "ids": IDS_SEPARATOR.join(ids)}

    def _add(self, key: str, entries: Sequence[dict[str, str]]) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(key, fields, maxlen=self.max_len, approximate=True)
        pipe.execute()
