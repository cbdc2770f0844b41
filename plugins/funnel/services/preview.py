"""Preview a segment before it goes live: what its next refresh would hold, and change.

``python -m funnel.cli preview`` and ``POST /v1/preview`` both call ``Previewer.preview``
(built by ``funnel.wiring.previewer``). What is previewed is an existing segment (by id), a
query (static or dynamic), or a proxy rule; a query or rule may carry the id of an existing
segment, to see what that segment's next refresh would do with it. The preview:

1. validates exactly as the catalog does (``segment_from_row`` on a row made of what was
   sent, then ``check_query``), so a bad query or rule gets the catalog's message word for
   word; a query is then rendered with the dates of a run now, and its rendered text checked
   again, as the refresh operator does;
2. computes the members: a query runs on HiveServer2 through ``HiveQuery`` (as a refresh
   does) with a time limit (``preview_timeout_seconds``: then it is cancelled on the server)
   and a row cap (``preview_max_rows`` distinct ids: then it is cancelled too and the answer
   says ``capped``); ids are normalized by the refresh's own rule. A proxy rule is evaluated
   over the live tags in MySQL, streamed up to the cap, its size counted exactly;
3. counts the overlap with every stored segment's live Redis set (``SSCAN`` of the smaller
   live sets, ``SMISMEMBER`` of the preview's ids against the larger ones) and with every
   proxy segment (the preview's ids' tags, ``ZMSCORE``, evaluated by each rule);
4. for an existing static or dynamic segment: who would enter and exit, and whether the
   guards (``funnel.core.refresh_guards.guard_violation``) would refuse the result.

Nothing is written anywhere: no Redis key, no MySQL row (not even the run history). Memory
is bounded by the cap: the preview's ids are one set of at most ``preview_max_rows``.

A composite rule (top-level ``union``, ``intersect`` or ``minus``), or an existing composite
segment, is checked against the whole catalog as the catalog checks it (operands known, valid,
stored and enabled; no cycle), then computed as its refresh computes it: from the operands'
live versions in MySQL (``funnel.storage.mysql.composite_source``), streamed up to the cap, with no Hive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.composite_expr import operands, parse_expression
from funnel.core.composite_graph import check_composites
from funnel.core.errors import HiveQueryCancelled, PreviewError, PreviewNotAvailable, PreviewTimeout, UnknownSegment
from funnel.core.proxy_matching import Tags, is_leaf, leaf_ranges, matches
from funnel.core.proxy_rule import Rule, parse_rule
from funnel.core.query_check import check_query
from funnel.core.refresh_guards import guard_violation
from funnel.core.segment import Kind, Segment, segment_from_row
from funnel.core.templating import date_values, render_query
from funnel.core.utc_time import utc_now
from funnel.services.catalog import Catalog
from funnel.services.refresh import normalize_user_ids
from funnel.services.restore import redis_serves
from funnel.storage.hive.hive_query import HiveQuery
from funnel.storage.mysql.composite_source import CompositeSource
from funnel.storage.mysql.segment_versions import LiveVersion, MySqlSegmentStore
from funnel.storage.redis.segment_sets import RedisSegmentStore
from funnel.storage.tag_store import MySqlTagStore, RedisTagStore

log = logging.getLogger(__name__)

#: The segment id a query or rule previewed without one is validated and logged under.
PLACEHOLDER_ID = "preview"
#: A rule whose top-level key is one of these is a composite segment's.
COMPOSITE_OPERATORS = ("union", "intersect", "minus")
#: Ids per SSCAN step when a live set smaller than the preview is walked.
SCAN_COUNT = 1_000


@dataclass(frozen=True)
class PreviewRequest:
    """What to preview: a segment id alone (its catalog definition), or a query or a rule (with
    the id of the existing segment it would replace, if any). ``kind``: ``dynamic`` (default)
    or ``static`` for a query; a rule is a proxy segment's."""

    segment_id: str | None = None
    query: str | None = None
    rule: object = None  # a JSON object, or its text
    kind: str | None = None

    @classmethod
    def from_text(cls, text: str, segment_id: str | None = None, kind: str | None = None) -> PreviewRequest:
        """A file's or stdin's text: a JSON object is a rule, anything else a query."""
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return cls(segment_id=segment_id, rule=text, kind=kind)
        return cls(segment_id=segment_id, query=text, kind=kind)


@dataclass(frozen=True)
class PreviewLimits:
    """The settings a preview runs under (``funnel.wiring.previewer`` reads them)."""

    timeout_seconds: float
    max_rows: int
    sample_size: int
    batch_size: int
    max_shrink_pct: float
    new_user_days: int
    allowed_functions: frozenset[str] = frozenset()
    hive_poll_seconds: float = 1.0
    hive_log_every_seconds: float = 60.0


@dataclass(frozen=True)
class Overlap:
    """How many of the preview's ids one existing segment holds now (``overlap`` None: not
    compared, ``reason`` says why). Not ``exact`` when the preview was capped: then it counts
    only the ids read before the cap, a lower bound."""

    segment_id: str
    kind: str
    overlap: int | None
    size: int | None
    exact: bool
    reason: str | None = None


@dataclass(frozen=True)
class AgainstLive:
    """What the segment's next refresh would do if its query returned the preview's result.

    ``entered`` / ``exited`` are None (with the ``reason``) when they cannot be counted
    exactly. ``guard`` is the guards' refusal in words, or None; ``would_refuse`` is
    True / False, or None when a capped preview cannot tell.
    """

    version: int | None
    size: int | None
    entered: int | None
    exited: int | None
    guard: str | None
    would_refuse: bool | None
    reason: str | None = None


@dataclass(frozen=True)
class Preview:
    """The answer of a preview (``to_dict`` is what the CLI's ``--json`` and the API return)."""

    segment_id: str | None
    kind: str
    size: int
    capped: bool
    rows_read: int
    null_ids: int
    sample: list[str]
    query_seconds: float
    overlap: list[Overlap]
    against_live: AgainstLive | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Members:
    """A preview's members (at most the cap) and how they were read."""

    ids: set[str]
    size: int
    size_exact: bool
    capped: bool
    rows_read: int
    null_ids: int
    seconds: float


class _Collector:
    """Distinct ids up to ``cap``; ``capped`` once an id beyond the cap was seen."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.ids: set[str] = set()
        self.rows = 0
        self.nulls = 0
        self.capped = False

    def add(self, rows: int, ids: Sequence[str], nulls: int = 0) -> bool:
        """Take a batch; False when the cap stopped it (read no more)."""
        self.rows += rows
        self.nulls += nulls
        if len(self.ids) + len(ids) <= self.cap:
            self.ids.update(ids)
            return True
        for user in ids:
            if user in self.ids:
                continue
            if len(self.ids) >= self.cap:
                self.capped = True
                return False
            self.ids.add(user)
        return True


class Previewer:
    """Previews over the stores (read-only) and HiveServer2. One per preview: ``stop()`` (any
    thread) cancels the query it runs."""

    def __init__(
        self,
        *,
        redis: RedisSegmentStore,
        redis_tags: RedisTagStore,
        mysql: MySqlSegmentStore,
        mysql_tags: MySqlTagStore,
        read_catalog: Callable[[], Catalog],
        hive_connect: Callable[[], Any],
        limits: PreviewLimits,
        composite_source: Callable[[], contextlib.AbstractContextManager[CompositeSource]],
    ) -> None:
        self.redis = redis
        self.redis_tags = redis_tags
        self.mysql = mysql
        self.mysql_tags = mysql_tags
        self.read_catalog = read_catalog
        self.hive_connect = hive_connect
        self.limits = limits
        self.composite_source = composite_source
        self._cancel = threading.Event()
        self._timed_out = threading.Event()
        self._running: HiveQuery | None = None

    # ------------------------------------------------------------------ the whole preview

    def preview(self, request: PreviewRequest, now: Any = None) -> Preview:
        """Validate, compute the members, compare them with the live segments. Writes nothing.

        Raises ``SegmentError`` / ``UserIdError`` (the catalog's and the refresh's messages),
        ``PreviewError``, ``UnknownSegment``, ``PreviewTimeout``, ``HiveQueryError`` (Hive's
        message) or ``HiveUnavailable``.
        """
        now = now or utc_now()
        catalog = self.read_catalog()
        segment, existing = self._segment(request, catalog, now)
        members = self._members(segment, now)
        lives = self.mysql.live_versions()
        overlap = self._overlaps(members, catalog.segments, lives, now)
        against = self._against_live(segment, existing, members, overlap, lives)
        sample = heapq.nsmallest(self.limits.sample_size, members.ids, key=_id_order)
        return Preview(
            segment_id=request.segment_id,
            kind=segment.kind.value,
            size=members.size,
            capped=members.capped,
            rows_read=members.rows_read,
            null_ids=members.null_ids,
            sample=sample,
            query_seconds=round(members.seconds, 3),
            overlap=overlap,
            against_live=against,
        )

    def stop(self) -> None:
        """Cancel the running query, on HiveServer2 too (from any thread; never raises)."""
        self._cancel.set()
        running = self._running
        if running is not None:
            running.cancel()

    # ------------------------------------------------------------------ 1. validation

    def _segment(self, request: PreviewRequest, catalog: Catalog, now: Any) -> tuple[Segment, Segment | None]:
        """The segment to preview, validated as the catalog validates rows, and the existing
        segment of that id (None: a new one)."""
        known = {segment.segment_id: segment for segment in catalog.segments}
        existing = known.get(request.segment_id) if request.segment_id is not None else None
        if request.query is None and request.rule is None:
            if request.segment_id is None:
                raise PreviewError(
                    "nothing to preview. Fix: give the id of a segment, a query (HiveQL SELECT) or a proxy rule"
                )
            if existing is None:
                for error in catalog.errors:  # its row is invalid: the catalog's own message
                    if error.segment_id == request.segment_id:
                        raise error
                raise UnknownSegment(
                    f"segment {request.segment_id[:80]!r} is not in the catalog. Fix: check the id (the catalog "
                    "is the MySQL table funnel_segments and the Airflow Variable funnel_segments), or preview a "
                    "query or a rule instead"
                )
            if existing.query is not None:
                self._check(existing.segment_id, existing.query)
            return existing, existing
        if request.query is not None and request.rule is not None:
            raise PreviewError("both a query and a rule were given. Fix: preview one of them at a time")
        row: dict[str, Any] = {
            "segment_id": request.segment_id if request.segment_id is not None else PLACEHOLDER_ID,
            "name": existing.name if existing is not None else "preview",
        }
        if request.query is not None:
            replaced = existing if existing is not None and existing.kind in (Kind.STATIC, Kind.DYNAMIC) else None
            row["kind"] = request.kind or (replaced.kind.value if replaced is not None else Kind.DYNAMIC.value)
            row["query"] = request.query
            if row["kind"] == Kind.STATIC.value:
                row["run_at"] = now
            if replaced is not None and replaced.max_shrink_pct is not None:
                row["max_shrink_pct"] = replaced.max_shrink_pct
        else:
            composite = request.kind == Kind.COMPOSITE.value or _composite_rule(request.rule)
            row["kind"] = request.kind or (Kind.COMPOSITE.value if composite else Kind.PROXY.value)
            row["rule"] = request.rule
            if row["kind"] == Kind.COMPOSITE.value and existing is not None and existing.kind is Kind.COMPOSITE:
                row["max_shrink_pct"] = existing.max_shrink_pct
        segment = segment_from_row(row, source="preview")
        if segment.query is not None:
            self._check(segment.segment_id, segment.query)
        if segment.kind is Kind.COMPOSITE:  # against the whole catalog, as the catalog checks it
            others = [s for s in catalog.segments if s.segment_id != segment.segment_id]
            _, refused = check_composites([*others, segment], [e.segment_id for e in catalog.errors])
            for error in refused:
                if error.segment_id == segment.segment_id:
                    raise error
        return segment, existing

    def _check(self, segment_id: str, query: str) -> None:
        check_query(segment_id, query, extra_allowed=self.limits.allowed_functions)

    # ------------------------------------------------------------------ 2. members

    def _members(self, segment: Segment, now: Any) -> _Members:
        """The segment's would-be members, by kind (a composite kind's branch goes here)."""
        with self._time_limit():
            if segment.kind in (Kind.STATIC, Kind.DYNAMIC):
                return self._query_members(segment, now)
            if segment.kind is Kind.PROXY:
                return self._proxy_members(segment, now)
            if segment.kind is Kind.COMPOSITE:
                return self._composite_members(segment)
        raise PreviewNotAvailable(
            f"segment {segment.segment_id!r}: previews of {segment.kind.value} segments are not available yet"
        )

    @contextlib.contextmanager
    def _time_limit(self) -> Iterator[None]:
        """``preview_timeout_seconds`` for computing the members: then the query is cancelled on
        HiveServer2 (the Spark Thrift Server computes on for a client that only stops reading)."""

        def time_up() -> None:
            self._timed_out.set()
            self.stop()

        timer = threading.Timer(self.limits.timeout_seconds, time_up)
        timer.daemon = True
        timer.start()
        try:
            yield
        except HiveQueryCancelled as exc:
            if self._timed_out.is_set():
                raise self._timeout() from exc
            raise
        finally:
            timer.cancel()
            timer.join()  # a cancel under way finishes first: the answer comes once the server stopped

    def _timeout(self) -> PreviewTimeout:
        return PreviewTimeout(
            f"the preview was still running after preview_timeout_seconds ({self.limits.timeout_seconds:g} s), "
            "so its query was cancelled on HiveServer2; nothing was written. Fix: narrow the query (a filter, "
            "a shorter date range), or raise [funnel] preview_timeout_seconds"
        )

    def _query_members(self, segment: Segment, now: Any) -> _Members:
        query = render_query(segment.segment_id, segment.query or "", date_values(now))
        self._check(segment.segment_id, query)  # the rendered text, as the operator checks it
        collector = _Collector(self.limits.max_rows)
        started = time.monotonic()
        with contextlib.closing(self.hive_connect()) as conn:
            hive = HiveQuery(
                conn,
                query,
                segment_id=segment.segment_id,
                batch_size=self.limits.batch_size,
                poll_seconds=self.limits.hive_poll_seconds,
                log_every_seconds=self.limits.hive_log_every_seconds,
                cancel_requested=self._cancel,
                connect=self.hive_connect,  # to cancel it on the server at the cap or the time limit
            )
            self._running = hive
            batches = hive.batches()
            try:
                for batch in batches:
                    ids, nulls = normalize_user_ids(segment.segment_id, batch)
                    if not collector.add(len(batch), ids, nulls):
                        hive.cancel()  # the cap: the server stops computing too
                        break
            finally:
                batches.close()
                self._running = None
        size = len(collector.ids)
        return _Members(
            collector.ids,
            size,
            not collector.capped,
            collector.capped,
            collector.rows,
            collector.nulls,
            time.monotonic() - started,
        )

    def _proxy_members(self, segment: Segment, now: Any) -> _Members:
        """A proxy rule over the live tags (MySQL): counted exactly, members streamed up to the cap."""
        rule = parse_rule(segment.segment_id, segment.rule, self.limits.new_user_days)
        started = time.monotonic()
        size = self.mysql_tags.count_matching(rule, now)
        collector = _Collector(self.limits.max_rows)
        after = ""
        while True:
            if self._cancel.is_set():
                raise self._timeout() if self._timed_out.is_set() else PreviewError("the preview was stopped")
            page = self.mysql_tags.page_matching(rule, now, after, self.limits.batch_size)
            if not page or not collector.add(len(page), page):
                break
            after = page[-1]
        return _Members(
            collector.ids,
            size if collector.capped else len(collector.ids),
            True,
            collector.capped,
            collector.rows,
            0,
            time.monotonic() - started,
        )

    def _composite_members(self, segment: Segment) -> _Members:
        """A set expression over the operands' live versions (MySQL, as its refresh computes it),
        streamed up to the cap on a connection of its own (closed early at the cap)."""
        expr = parse_expression(segment.segment_id, segment.rule)
        started = time.monotonic()
        collector = _Collector(self.limits.max_rows)
        with self.composite_source() as source:
            lives = source.live_versions(operands(expr))
            missing = sorted(name for name, live in lives.items() if live is None)
            if missing:
                raise PreviewError(
                    f"segment {segment.segment_id!r}: operand(s) {', '.join(map(repr, missing))} have no live version "
                    "yet, so there is nothing to combine. Fix: preview again once they are computed"
                )
            versions = {name: live.version for name, live in lives.items() if live is not None}
            stream = source.stream(expr, versions, self.limits.batch_size)
            try:
                for batch in stream:
                    if self._cancel.is_set():
                        raise self._timeout() if self._timed_out.is_set() else PreviewError("the preview was stopped")
                    if not collector.add(len(batch), batch):
                        break
            finally:
                stream.close()
        return _Members(
            collector.ids,
            len(collector.ids),
            not collector.capped,
            collector.capped,
            collector.rows,
            0,
            time.monotonic() - started,
        )

    # ------------------------------------------------------------------ 3. overlap

    def _overlaps(
        self, members: _Members, segments: Sequence[Segment], lives: dict[str, LiveVersion], now: Any
    ) -> list[Overlap]:
        exact = not members.capped
        lower_bound = None if exact else f"a lower bound: counted over the {len(members.ids):,} ids read before the cap"
        found: list[Overlap] = []
        proxies: list[Segment] = []
        listed: list[str] | None = None
        for segment in sorted(segments):
            if segment.kind is Kind.PROXY:
                proxies.append(segment)
                continue
            segment_id, kind = segment.segment_id, segment.kind.value
            live = lives.get(segment_id)
            if live is None:
                found.append(Overlap(segment_id, kind, None, None, exact, "not computed yet: no live version"))
                continue
            serving = self.redis.serving(segment_id)
            if not redis_serves(live, serving):
                reason = (
                    f"Redis does not serve its live version {live.version} in full; not compared. Fix: "
                    f"python -m funnel.cli rebuild-redis {segment_id}"
                )
                found.append(Overlap(segment_id, kind, None, live.size, exact, reason))
                continue
            if live.size < len(members.ids):  # walk the smaller live set
                common: set[str] = set()
                for chunk in self.redis.scan_members(segment_id, SCAN_COUNT):
                    common.update(members.ids.intersection(chunk))
                count = len(common)
            else:  # ask the larger live set about the preview's ids
                listed = listed if listed is not None else list(members.ids)
                step = self.limits.batch_size
                count = sum(
                    self.redis.count_live_among(segment_id, listed[start : start + step])
                    for start in range(0, len(listed), step)
                )
            if self.redis.serving(segment_id) != serving:
                reason = "a refresh swapped in a new version while the preview compared; preview again"
                found.append(Overlap(segment_id, kind, None, live.size, exact, reason))
                continue
            found.append(Overlap(segment_id, kind, count, live.size, exact, lower_bound))
        found.extend(self._proxy_overlaps(members, proxies, now, lower_bound))
        return found

    def _proxy_overlaps(
        self, members: _Members, proxies: Sequence[Segment], now: Any, lower_bound: str | None
    ) -> list[Overlap]:
        """Each proxy segment's overlap: the preview's ids' live tags (``ZMSCORE``), evaluated by its rule."""
        if not proxies:
            return []
        exact = lower_bound is None
        if not self.redis_tags.whole():
            reason = (
                "Redis does not hold the users' tags in full; not compared. Fix: python -m funnel.cli "
                "rebuild-redis --all"
            )
            return [Overlap(p.segment_id, p.kind.value, None, None, exact, reason) for p in proxies]
        rules = {p.segment_id: parse_rule(p.segment_id, p.rule, self.limits.new_user_days) for p in proxies}
        counts = dict.fromkeys(rules, 0)
        listed = list(members.ids)
        step = self.limits.batch_size
        for start in range(0, len(listed), step):
            for row in self.redis_tags.tags_of(listed[start : start + step]):
                if row is None:
                    continue  # no tags: in no proxy segment
                tags = Tags(row.first_seen, row.order_count)
                for segment_id, rule in rules.items():
                    counts[segment_id] += matches(rule, tags, now)
        found = []
        for proxy in proxies:
            size = self._proxy_size(rules[proxy.segment_id], now)
            found.append(Overlap(proxy.segment_id, "proxy", counts[proxy.segment_id], size, exact, lower_bound))
        return found

    def _proxy_size(self, rule: Rule, now: Any) -> int:
        """As the API counts it: one tag in Redis (``ZCOUNT``), several in MySQL."""
        if is_leaf(rule):
            ranges = leaf_ranges(rule, now)  # type: ignore[arg-type]
            return sum(self.redis_tags.count_range(tag, low, high) for tag, low, high in ranges)
        return self.mysql_tags.count_matching(rule, now)

    # ------------------------------------------------------------------ 4. against the live version

    def _against_live(
        self,
        segment: Segment,
        existing: Segment | None,
        members: _Members,
        overlap: Sequence[Overlap],
        lives: dict[str, LiveVersion],
    ) -> AgainstLive | None:
        """For an existing stored segment: entered, exited and the guards' verdict."""
        stored = (Kind.STATIC, Kind.DYNAMIC, Kind.COMPOSITE)
        if existing is None or existing.kind not in stored or segment.kind not in stored:
            return None
        segment_id = existing.segment_id
        live = lives.get(segment_id)
        live_size = live.size if live is not None else None
        pct = self.limits.max_shrink_pct if segment.max_shrink_pct is None else segment.max_shrink_pct
        guard = guard_violation(segment_id, members.size, live_size, pct, force=False, kind=segment.kind)
        reason = None
        if members.size_exact:
            would_refuse: bool | None = guard is not None
        elif guard is None:  # the true size is at least the cap: if the cap passes, so does it
            would_refuse = False
        else:
            would_refuse = None
            guard = None
        if live is None:
            if members.capped:
                reason = self._capped_reason(members)
                return AgainstLive(None, None, None, None, guard, would_refuse, reason)
            return AgainstLive(None, None, members.size, 0, guard, would_refuse)
        own = next(item for item in overlap if item.segment_id == segment_id)
        entered = exited = None
        if members.capped:
            reason = self._capped_reason(members)
        elif own.overlap is None:
            reason = own.reason
        else:
            entered, exited = members.size - own.overlap, live.size - own.overlap
        return AgainstLive(live.version, live.size, entered, exited, guard, would_refuse, reason)

    def _capped_reason(self, members: _Members) -> str:
        cap = f"preview_max_rows ({self.limits.max_rows:,})"
        verdict = "" if members.size_exact else "; the guards' verdict is known only when the cap passes them"
        return (
            f"the preview stopped at {cap} ids, so who would enter and exit is not known{verdict}. Fix: raise "
            "[funnel] preview_max_rows to count them"
        )


def _composite_rule(raw: object) -> bool:
    """Whether a rule (a dict or JSON text) is a composite segment's: a top-level set operator."""
    if isinstance(raw, str | bytes | bytearray):
        try:
            raw = json.loads(raw)
        except ValueError:
            return False
    return isinstance(raw, dict) and any(key in raw for key in COMPOSITE_OPERATORS)


def _id_order(user_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then the others in text order."""
    if user_id.isdigit():
        return (0, int(user_id), user_id)
    return (1, 0, user_id)
