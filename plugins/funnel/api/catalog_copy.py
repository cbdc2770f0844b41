"""The catalog copy the API serves from: every served segment as an ``Entry``, read from MySQL
(``read_catalog``) and kept in memory by ``CatalogCopy``, which re-reads it in the background.

The first request reads the catalog; later, once ``api_catalog_ttl_seconds`` have passed, a
re-read runs in the background while requests go on with the copy they have, so a slow or
unreachable MySQL never holds up an answer Redis can give. A failed re-read keeps the last copy.
What the hot paths look up per request (whether a segment has a live version, is past its
freshness objective, which segments are enabled) is worked out once per copy, when it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass, field

from funnel import settings, wiring
from funnel.core.composite_graph import composite_operands
from funnel.core.errors import NotComputed, SegmentRetired, UnknownSegment
from funnel.core.freshness import past_objective
from funnel.core.proxy_rule import Rule, parse_rule
from funnel.core.segment import Kind, Segment
from funnel.core.utc_time import utc_now
from funnel.services.catalog import serving_catalog
from funnel.storage import layout

log = logging.getLogger(__name__)


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


def read_catalog() -> CatalogView:
    """The served segments (with whether each has a live version and is past its freshness
    objective, from the run history), and the invalid rows' errors. Read in the background
    every ``api_catalog_ttl_seconds``, so the hot paths only look the flags up."""
    hook = wiring.catalog_hook()  # the catalog's own short timeouts: a hung MySQL never holds a worker thread long
    catalog = serving_catalog(hook)
    with contextlib.closing(hook.get_conn()) as conn:
        computed = wiring.mysql_store(conn).segments_with_live_versions()
        summaries = wiring.history_on(conn).summaries()
        retired: dict[str, dt.datetime | None] = dict(wiring.segment_admin(conn).retired())
    now, objectives = utc_now(), wiring.freshness_objectives()
    entries = {}
    for segment in catalog.segments:
        rule = None
        if segment.kind is Kind.PROXY:
            rule = parse_rule(segment.segment_id, segment.rule, settings.NEW_USER_DAYS)
        operands = composite_operands(segment) if segment.kind is Kind.COMPOSITE else ()
        stale = past_objective(segment, summaries.get(segment.segment_id), now, objectives)
        entries[segment.segment_id] = Entry(
            segment, rule, computed=segment.segment_id in computed, operands=operands, stale=stale
        )
    invalid = {error.segment_id: f"field {error.field!r} {error.problem}" for error in catalog.errors}
    for segment_id in computed:  # data without a row: deleted by hand, a retire the next parse records
        if segment_id not in entries and segment_id not in invalid:
            retired.setdefault(segment_id, None)
    enabled = [entry for entry in entries.values() if entry.segment.enabled]
    return CatalogView(
        entries,
        invalid,
        enabled_stored=tuple(entry for entry in enabled if not entry.is_proxy),
        enabled_proxies=tuple(entry for entry in enabled if entry.is_proxy),
        stale_ids=sorted(entry.segment_id for entry in enabled if entry.stale),
        retired=retired,
    )


class CatalogCopy:
    """The catalog as this worker serves it: read at the first request, then re-read in the
    background once ``api_catalog_ttl_seconds`` have passed (see the module's docstring)."""

    def __init__(self) -> None:
        self._view = CatalogView()
        self._read_at = -1.0
        self._rereading: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def view(self) -> CatalogView:
        """The copy in hand; the first call waits for the first read."""
        if self._read_at < 0:
            async with self._lock:
                if self._read_at < 0:
                    self._view = await asyncio.to_thread(read_catalog)
                    self._read_at = time.monotonic()
        elif time.monotonic() - self._read_at >= settings.API_CATALOG_TTL_SECONDS and self._rereading is None:
            self._rereading = asyncio.create_task(self._reread())
        return self._view

    def expire(self) -> None:
        """Read the catalog again at the next request (after this worker changed a definition)."""
        if self._rereading is None:
            self._read_at = -1.0

    async def _reread(self) -> None:
        try:
            self._view = await asyncio.to_thread(read_catalog)
        except Exception as exc:
            log.warning("funnel API: cannot re-read the catalog (%s); serving the last copy", exc)
        finally:
            self._read_at = time.monotonic()  # the next try waits a TTL too
            self._rereading = None

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
