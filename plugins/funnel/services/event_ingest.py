"""Taking a batch of events: durably into MySQL first, then at once into Redis.

MySQL is the truth: the batch is recorded and applied there in one transaction. Redis
then gets the batch's users' tags as MySQL has them (absolute values with their ``seq``),
so a write that arrives late never undoes a newer one, and retrying a batch after a Redis
failure brings Redis level (the events are duplicates by then, but their users are
written again).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence

from funnel.core.errors import PartialWrite
from funnel.core.proxy_rule import Rule
from funnel.core.states import FeedChange
from funnel.core.user_events import Event
from funnel.storage.mysql.event_ledger import EventLedger, EventsOutcome
from funnel.storage.mysql.proxy_change_log import ProxyChangeLog
from funnel.storage.redis.change_feed import SegmentFeed
from funnel.storage.redis.tag_sets import RedisTagStore

log = logging.getLogger(__name__)


def ingest(
    events: Sequence[Event],
    ledger: EventLedger,
    redis: RedisTagStore,
    now: dt.datetime,
    rules: Mapping[str, Rule] | None = None,
    feed: SegmentFeed | None = None,
    sweeps: FeedSweeps | None = None,
) -> tuple[EventsOutcome, bool]:
    """Record and apply ``events``; the next membership request sees them.

    ``rules``: the enabled proxy segments' rules, whose crossings are recorded with the batch
    (``EventsOutcome.proxy_changes`` has them). ``feed``: then every proxy change not yet in
    its segment's change feed (this batch's, and any an earlier batch failed to publish) is
    published (``publish_proxy_changes``; with ``sweeps``, the process's one sweep at a time).

    Returns the outcome and whether Redis took the batch's users (False: Redis serves
    another tag version, because a load is swapping, which carries the events, or because
    Redis lost its data and needs a restore).
    """
    outcome = ledger.record_events(events, uuid.uuid4().hex, now, rules)
    try:
        written = redis.apply(outcome.version, outcome.rows)
    except Exception as exc:
        log.warning("user tags: events recorded, Redis not updated (%s: %s)", type(exc).__name__, exc)
        raise PartialWrite(
            f"{outcome.accepted} event(s) were recorded durably, but the serving store could not be updated now. "
            "Fix: send the same batch again; its events count once, and the store catches up"
        ) from exc
    if written < 0:
        log.info(
            "user tags: Redis does not serve tag version %s; a load or a restore carries the events", outcome.version
        )
    if feed is not None:
        try:
            if sweeps is None:
                publish_proxy_changes(ledger.proxy_changes, feed)
            else:
                sweeps.sweep(ledger.proxy_changes, feed)
        except Exception as exc:  # the changes are durable; the next batch's sweep publishes them
            log.warning(
                "proxy change feed: not published now, the next batch retries (%s: %s)", type(exc).__name__, exc
            )
    return outcome, written >= 0


#: Proxy changes read per sweep step.
SWEEP_ROWS = 1_000


def publish_proxy_changes(changes: ProxyChangeLog, feed: SegmentFeed) -> int:
    """Publish every proxy change MySQL has not marked published, oldest first, to its segment's
    change feed (entries marked with the ``event`` that made the change), then mark it.

    At least once: a crash between the publish and the mark publishes again; two sweeps at once
    may both publish a change (a consumer drops repeats by event, change and user). Returns how
    many changes were published.
    """
    published = 0
    while rows := changes.unpublished(SWEEP_ROWS):
        for (segment_id, change, event_id), group in itertools.groupby(
            (change for _, change in rows), key=lambda c: (c.segment_id, c.change, c.event_id)
        ):
            feed.publish(segment_id, FeedChange(change.value), [c.user_id for c in group], event=event_id)
        changes.mark_published([row_id for row_id, _ in rows])
        published += len(rows)
        if len(rows) < SWEEP_ROWS:  # the log is swept (what commits meanwhile, the next sweep takes)
            break
    return published


class FeedSweeps:
    """At most one sweep of the proxy change log at a time in this process (``publish_proxy_changes``).

    Every batch with proxy changes used to sweep the whole unpublished log itself: concurrent
    batches read and marked the same rows, waited on each other's marks, and published them
    twice, a third of the events' throughput at 16 clients (bench/events). Now a batch that finds
    a sweep running leaves its changes to it, and that sweep goes round once more after its
    pass, so a change committed before any batch asked is published before the sweep ends.
    """

    def __init__(self) -> None:
        self._state = threading.Lock()
        self._running = False
        self._again = False

    def sweep(self, changes: ProxyChangeLog, feed: SegmentFeed) -> None:
        """Sweep now, or leave it to the sweep running (which goes round once more)."""
        with self._state:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                with self._state:
                    self._again = False
                publish_proxy_changes(changes, feed)
                with self._state:
                    if not self._again:
                        self._running = False
                        return
        except BaseException:
            with self._state:
                self._running = False  # the next batch sweeps again: the changes are durable
            raise
