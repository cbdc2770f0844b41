"""The catalog copy the API serves from: every served segment as an ``Entry``, read from MySQL
(``read_catalog``) and kept in memory by ``CatalogCopy``, which re-reads it in the background.

The first request reads the catalog and starts this worker's keeper: a task that re-reads it
every ``api_catalog_ttl_seconds`` whatever the traffic (in a worker thread: the event loop never
waits for MySQL), so the copy is never older than that plus one read, even after a quiet
spell. Requests go on with the copy they have, so a slow or unreachable MySQL never holds up an
answer Redis can give. A failed re-read keeps the last copy.
What the hot paths look up per request (whether a segment has a live version, is past its
freshness objective, which segments are enabled) is worked out once per copy, when it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import KeysView
from dataclasses import dataclass, field

from funnel import settings, wiring
from funnel.api.serving_metrics import CATALOG_READ
from funnel.core.composite_graph import composite_operands
from funnel.core.errors import NotComputed, SegmentRetired, UnknownSegment
from funnel.core.freshness import RunSummary, past_objective
from funnel.core.proxy_rule import Rule, parse_rule
from funnel.core.segment import Kind, Segment
from funnel.core.utc_time import utc_now
from funnel.services.catalog import serving_catalog
from funnel.storage import layout
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.mysql.tag_versions import TagVersion
from funnel.storage.redis.user_index import IndexSnapshot, RedisUserIndex

log = logging.getLogger(__name__)
#: The keeper never re-reads more often than this, whatever the TTL (0 would spin).
_KEEPER_MIN_PAUSE = 0.1


@dataclass(frozen=True)
class Entry:
    """A segment as the API serves it."""

    segment: Segment
    rule: Rule | None = None  # proxy segments: the parsed rule
    computed: bool = True  # static and dynamic: MySQL had a live version when the catalog was read
    operands: tuple[str, ...] = ()  # composite segments: the segments its expression names
    stale: bool = False  # past its freshness objective when the catalog was read (``past_objective``)

    @property
    def segment_id(self) -> str:
        return self.segment.segment_id

    @property
    def is_proxy(self) -> bool:
        """Answered at request time from the users' tags (no versions)."""
        return self.segment.kind is Kind.PROXY

    def refreshed(self, what: str) -> Entry:
        """This entry, when its segment is refreshed (static, dynamic, composite); a proxy segment
        is answered live and has no ``what`` (409)."""
        if self.is_proxy:
            raise NotComputed(f"segment {self.segment_id!r} is a proxy segment: it is answered live and has no {what}")
        return self

    @property
    def proxy_rule(self) -> Rule:
        """The parsed rule of a proxy segment."""
        if self.rule is None:
            raise NotComputed(f"segment {self.segment_id!r} is a {self.segment.kind} segment: it has no proxy rule")
        return self.rule

    @functools.cached_property
    def keys(self) -> tuple[str, str]:
        """The segment's members and meta keys (built once per catalog copy)."""
        return layout.members_key(self.segment_id), layout.meta_key(self.segment_id)


@dataclass(frozen=True)
class CatalogView:
    """One read of the catalog, and what the hot paths look up in it."""

    entries: dict[str, Entry] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # segment id -> what is wrong with its row
    enabled_stored: tuple[Entry, ...] = ()  # the enabled segments with members in the stores
    enabled_proxies: tuple[Entry, ...] = ()  # the enabled proxy segments
    stale_ids: list[str] = field(default_factory=list)  # the enabled segments past their objective, sorted
    #: retired segments (no catalog row) and when (None: the row was deleted by hand, not recorded yet)
    retired: dict[str, dt.datetime | None] = field(default_factory=dict)
    # What the metrics show at a scrape (``funnel.api.serving_metrics``), read in the same pass:
    live: dict[str, LiveVersion] = field(default_factory=dict)  # segment id -> its live version
    summaries: dict[str, RunSummary] = field(default_factory=dict)  # segment id -> its latest attempts
    tags: TagVersion | None = None  # the tags' live version
    read_at: dt.datetime | None = None  # when this view was read (None: never)
    # The user index (``funnel.storage.redis.user_index``) as this pass found it:
    index: IndexSnapshot = field(default_factory=IndexSnapshot)  # the next pass starts from it
    indexed: dict[bytes, tuple[str, dict[str, object]]] = field(default_factory=dict)  # number -> id, its answer
    unindexed: tuple[Entry, ...] = ()  # the enabled stored segments the index does not hold in full

    @property
    def index_epoch(self) -> bytes | None:
        """None: no index; every enabled stored segment is read from its own keys."""
        return self.index.epoch

    @property
    def index_gen(self) -> int:
        return self.index.gen

    @property
    def indexed_ids(self) -> KeysView[str]:
        """The segment ids of ``indexed``."""
        return self.index.segments.keys()


@dataclass
class CatalogMemo:
    """What one worker's last read built, kept so the next builds only what changed."""

    rows: dict[tuple[str, str], Segment] = field(default_factory=dict)  # ``serving_catalog``'s
    summaries: dict[str, tuple[tuple[object, ...], RunSummary]] = field(default_factory=dict)  # ``summaries``'


def read_catalog(
    index: RedisUserIndex | None = None,
    previous: CatalogView | None = None,
    memo: CatalogMemo | None = None,
) -> CatalogView:
    """The served segments (with whether each has a live version and is past its freshness
    objective, from the run history), the invalid rows' errors and, with ``index``, which
    segments the user index holds in full. Read in the background every
    ``api_catalog_ttl_seconds``, so the hot paths only look the flags up. ``previous`` and
    ``memo`` (this worker's last view and rows) spare re-building what did not change."""
    hook = wiring.catalog_hook()  # the catalog's own short timeouts: a hung MySQL never holds a worker thread long
    catalog = serving_catalog(hook, memo.rows if memo is not None else None)
    with contextlib.closing(hook.get_conn()) as conn:
        live = wiring.mysql_store(conn).live_versions()
        summaries = wiring.history_on(conn).summaries(memo=memo.summaries if memo is not None else None)
        retired: dict[str, dt.datetime | None] = dict(wiring.segment_admin(conn).retired())
        tags = wiring.mysql_tag_store(conn).live()
    now, objectives = utc_now(), wiring.freshness_objectives()
    entries = {}
    for segment in catalog.segments:
        rule = None
        if segment.kind is Kind.PROXY:
            rule = parse_rule(segment.segment_id, segment.rule, settings.NEW_USER_DAYS)
        operands = composite_operands(segment) if segment.kind is Kind.COMPOSITE else ()
        stale = past_objective(segment, summaries.get(segment.segment_id), now, objectives)
        entries[segment.segment_id] = Entry(
            segment, rule, computed=segment.segment_id in live, operands=operands, stale=stale
        )
    invalid = {error.segment_id: f"field {error.field!r} {error.problem}" for error in catalog.errors}
    for segment_id in live:  # data without a row: deleted by hand, a retire the next parse records
        if segment_id not in entries and segment_id not in invalid:
            retired.setdefault(segment_id, None)
    enabled = [entry for entry in entries.values() if entry.segment.enabled]
    stored = tuple(entry for entry in enabled if not entry.is_proxy)
    snapshot = _index_snapshot(index, stored, previous.index if previous is not None else None)
    indexed = {
        held.number: (
            segment_id,
            {"version": held.version, "refreshed_at": held.refreshed_at, "stale": entries[segment_id].stale},
        )
        for segment_id, held in snapshot.segments.items()
    }
    return CatalogView(
        entries,
        invalid,
        enabled_stored=stored,
        enabled_proxies=tuple(entry for entry in enabled if entry.is_proxy),
        stale_ids=sorted(entry.segment_id for entry in enabled if entry.stale),
        retired=retired,
        live=live,
        summaries=summaries,
        tags=tags,
        read_at=now,
        index=snapshot,
        indexed=indexed,
        unindexed=tuple(entry for entry in stored if entry.segment_id not in snapshot.segments),
    )


def _index_snapshot(
    index: RedisUserIndex | None, stored: tuple[Entry, ...], previous: IndexSnapshot | None
) -> IndexSnapshot:
    """What the user index holds of the enabled stored segments; nothing when Redis cannot say
    (every segment is then read from its own keys)."""
    if index is None or not stored:
        return IndexSnapshot()
    try:
        return index.snapshot((entry.segment_id for entry in stored), previous)
    except Exception as exc:
        log.warning("funnel API: cannot read the user index (%s); reading each segment's own keys", exc)
        return IndexSnapshot()


class CatalogCopy:
    """The catalog as this worker serves it: read at the first request, then re-read in the
    background once ``api_catalog_ttl_seconds`` have passed (see the module's docstring)."""

    def __init__(self) -> None:
        self._view = CatalogView()
        self._read_at = -1.0
        self._keeper: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._index: RedisUserIndex | None = None  # made in the first read's thread
        self._memo = CatalogMemo()  # what the last read built
        self._expired = 0  # how many times ``expire`` was called: a re-read begun before one is dropped

    async def view(self) -> CatalogView:
        """The copy in hand; the first call (and the first after ``expire``) waits for a read."""
        if self._read_at < 0:
            async with self._lock:
                if self._read_at < 0:
                    self._view = await asyncio.to_thread(self._read)
                    # a random phase: the workers, started together, re-read at different times
                    self._read_at = max(0.0, time.monotonic() - random.uniform(0, settings.API_CATALOG_TTL_SECONDS / 2))
                    CATALOG_READ.set_to_current_time()
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_fresh(), name="funnel-catalog-keeper")
        return self._view

    def expire(self) -> None:
        """Read the catalog again at the next request (after this worker changed a definition)."""
        self._read_at = -1.0
        self._expired += 1

    def close(self) -> None:
        """Stop the keeper (the app is shutting down)."""
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None

    async def _keep_fresh(self) -> None:
        """Re-read every ``api_catalog_ttl_seconds``, requests or not."""
        while True:
            ttl = max(settings.API_CATALOG_TTL_SECONDS, _KEEPER_MIN_PAUSE)
            due = self._read_at + ttl - time.monotonic()
            await asyncio.sleep(ttl if self._read_at < 0 else max(due, _KEEPER_MIN_PAUSE))
            if self._read_at >= 0 and time.monotonic() - self._read_at >= settings.API_CATALOG_TTL_SECONDS:
                await self._reread()

    async def _reread(self) -> None:
        began = self._expired
        try:
            view = await asyncio.to_thread(self._read)
        except Exception as exc:
            log.warning("funnel API: cannot re-read the catalog (%s); serving the last copy", exc)
            view = self._view
        if began == self._expired:  # else it may predate a change this worker made: the next request reads
            self._view, self._read_at = view, time.monotonic()  # the next try waits a TTL too
            if view.read_at is not None:
                CATALOG_READ.set(view.read_at.timestamp())

    def _read(self) -> CatalogView:
        if self._index is None:
            try:
                self._index = wiring.user_index(wiring.redis_client())
            except Exception as exc:
                log.warning("funnel API: no Redis client for the user index (%s); reading each segment's keys", exc)
        return read_catalog(self._index, self._view, self._memo)

    async def entry(self, segment_id: str) -> Entry:
        """The served segment, or ``SegmentRetired`` (410), or ``UnknownSegment`` (saying so when
        its catalog row is invalid)."""
        view = await self.view()
        entry = view.entries.get(segment_id)
        if entry is None:
            shown = repr(segment_id[:80])
            if segment_id in view.retired:
                raise SegmentRetired(segment_id, view.retired[segment_id])
            if segment_id in view.invalid:
                raise UnknownSegment(
                    f"segment {shown} is not served: its catalog row is invalid ({view.invalid[segment_id]})"
                )
            raise UnknownSegment(f"segment {shown} does not exist")
        return entry
