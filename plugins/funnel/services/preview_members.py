"""A preview's members: what a segment's next refresh would hold, read by kind, under the preview's
time limit (``preview_timeout_seconds``: the query is then cancelled on HiveServer2) and row cap
(``preview_max_rows`` distinct ids: reading stops and the answer says ``capped``).

A query runs on HiveServer2 through ``HiveQuery``, as a refresh runs it, its ids normalized by the
refresh's own rule; a proxy rule is evaluated over the live tags in MySQL, counted exactly; a
composite is computed from its operands' live versions in MySQL, as its refresh computes it.
Nothing is written.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.composite_expr import operands, parse_expression
from funnel.core.errors import HiveQueryCancelled, PreviewError, PreviewNotAvailable, PreviewTimeout
from funnel.core.proxy_rule import parse_rule
from funnel.core.query_check import check_query
from funnel.core.segment import Kind, Segment
from funnel.core.templating import date_values, render_query
from funnel.services.preview_values import PreviewLimits
from funnel.services.refresh import normalize_user_ids
from funnel.storage.hive.hive_query import HiveQuery
from funnel.storage.mysql.composite_source import CompositeSource
from funnel.storage.mysql.tag_versions import MySqlTagStore


@dataclass
class Members:
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


class MemberReader:
    """Reads one preview's members (read-only). ``stop()`` (any thread) cancels the query it runs."""

    def __init__(
        self,
        *,
        mysql_tags: MySqlTagStore,
        hive_connect: Callable[[], Any],
        composite_source: Callable[[], contextlib.AbstractContextManager[CompositeSource]],
        limits: PreviewLimits,
    ) -> None:
        self.mysql_tags = mysql_tags
        self.hive_connect = hive_connect
        self.composite_source = composite_source
        self.limits = limits
        self._cancel = threading.Event()
        self._timed_out = threading.Event()
        self._running: HiveQuery | None = None

    def read(self, segment: Segment, now: Any) -> Members:
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

    def stop(self) -> None:
        """Cancel the running query, on HiveServer2 too (from any thread; never raises)."""
        self._cancel.set()
        running = self._running
        if running is not None:
            running.cancel()

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

    def _query_members(self, segment: Segment, now: Any) -> Members:
        query = render_query(segment.segment_id, segment.query or "", date_values(now))
        # the rendered text, as the operator checks it
        check_query(segment.segment_id, query, extra_allowed=self.limits.allowed_functions)
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
        return Members(
            collector.ids,
            size,
            not collector.capped,
            collector.capped,
            collector.rows,
            collector.nulls,
            time.monotonic() - started,
        )

    def _proxy_members(self, segment: Segment, now: Any) -> Members:
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
        return Members(
            collector.ids,
            size if collector.capped else len(collector.ids),
            True,
            collector.capped,
            collector.rows,
            0,
            time.monotonic() - started,
        )

    def _composite_members(self, segment: Segment) -> Members:
        """A set expression over the operands' live versions (MySQL, as its refresh computes it),
        streamed up to the cap on a connection of its own (closed early at the cap)."""
        expr = parse_expression(segment.segment_id, segment.rule)
        started = time.monotonic()
        collector = _Collector(self.limits.max_rows)
        with self.composite_source() as source:
            lives = source.live_versions(operands(expr))
            missing = sorted(name for name, live in lives.items() if live is None)
            if missing:
                raise PreviewNotAvailable(
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
        return Members(
            collector.ids,
            len(collector.ids),
            not collector.capped,
            collector.capped,
            collector.rows,
            0,
            time.monotonic() - started,
        )
