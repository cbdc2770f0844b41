"""The serving API's Prometheus metrics: what they are, how a request is counted, and the scrape.

Every metric funnel's API exports is defined here, once (``docs/operations.md`` lists them with
their meaning and labels). Labels never hold a user id or a raw path: a request is labelled by
its route *template* (``/v1/segments/{segment_id}/members/{user_id}``), ``<unmatched>`` when no
route took it.

Two kinds of numbers:
- counted where they happen (requests, answers by source, restores, events): prometheus_client
  counters and histograms. With several uvicorn workers (``python -m funnel.cli serve --workers
  N``) they are kept in prometheus_client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``,
  made fresh by ``serve`` at start, a dead worker's files marked: ``funnel.wiring``) and a scrape
  adds them up;
- read at scrape time from the scraping worker's catalog copy (``funnel.api.catalog_copy``, at most
  ``api_catalog_ttl_seconds`` old): one series per segment and metric (size, live version, seconds
  since refreshed, stale, last run status), the tags' version and age, parked webhook batches, and
  whether Redis and MySQL answer. Nothing per segment is kept in the multiprocess files, so a
  retired segment's series go with it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from funnel.wiring import METRICS_DIR_ENV

#: The exposition's content type (text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
disable_created_metrics()  # no ``*_created`` series: one series per counter and label set
#: The scope key the hot paths (``funnel.api.fast_paths``) set to their route template.
ROUTE_KEY = "funnel.route"
#: The scope key ``HeadAsGet`` sets on the GET it makes of a HEAD: the method a client sent.
SENT_METHOD_KEY = "funnel.sent_method"
#: Fine below 10 ms, where the membership reads answer (a 1 ms p99 is told from a 2 ms one).
LATENCY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "funnel_api_requests", "Requests answered, by route template, method and status", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "funnel_api_request_duration_seconds",
    "Time from a request's arrival to its answer's last byte, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
ANSWERS = Counter(
    "funnel_api_answers",
    "Membership answers by where they came from: redis, mysql (Redis did not hold the segment whole) or history",
    ["route", "source"],
)
RESTORES = Counter("funnel_api_restores", "Restores of a segment or the tags into Redis, by outcome", ["outcome"])
CATALOG_READ = Gauge(
    "funnel_api_catalog_read_timestamp_seconds",
    "When this worker last read the catalog (Unix time); age: time() - this",
    multiprocess_mode="liveall",
)
EVENTS = Counter(
    "funnel_events",
    "Events posted, by outcome: accepted, duplicate, before_baseline, conflicting (409), refused (4xx)",
    ["outcome"],
)
EVENT_BATCH_SECONDS = Histogram(
    "funnel_event_batch_duration_seconds", "Time to record and apply one batch of events", buckets=BATCH_BUCKETS
)
DEADLOCK_RETRIES = Counter(
    "funnel_event_deadlock_retries", "Event batches MySQL rolled back for a deadlock and the API ran again"
)


class RequestMetrics:
    """ASGI middleware: each HTTP request counted by route template, method and status, its latency
    observed, and a membership answer counted by its source (the ``X-Funnel-Source`` header)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int, str | None], tuple[Any, Any, Any]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        source: str | None = None

        async def observed(message: dict[str, Any]) -> None:
            nonlocal status, source
            if message["type"] == "http.response.start":
                status = message["status"]
                source = next((v.decode() for k, v in message.get("headers", ()) if k == b"x-funnel-source"), None)
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self._count(scope, status, source, time.perf_counter() - began)

    def _count(self, scope: Any, status: int, source: str | None, seconds: float) -> None:
        route = scope.get(ROUTE_KEY) or getattr(scope.get("route"), "path_format", None) or UNMATCHED
        method = scope.get(SENT_METHOD_KEY) or scope["method"]
        key = (route, method, status, source)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per label set
            answers = ANSWERS.labels(route, source) if source else None
            children = (REQUESTS.labels(route, method, str(status)), REQUEST_SECONDS.labels(route, method), answers)
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()


# ---------------------------------------------------------------------- the scrape


@dataclass(frozen=True)
class SegmentFigures:
    """One segment's figures at scrape time (from the catalog copy)."""

    segment_id: str
    kind: str
    enabled: bool
    stale: bool
    size: int | None = None  # the live version's members (None: not computed, or a proxy segment)
    live_version: int | None = None
    seconds_since_refresh: float | None = None
    last_run_status: str | None = None  # the latest attempt's status (None: never run)


@dataclass(frozen=True)
class ScrapeFigures:
    """What the scrape reads besides the counters: per segment, the tags, webhooks and stores."""

    segments: tuple[SegmentFigures, ...]
    tags_version: int | None  # None: the tags were not read
    tags_users: int | None
    tags_seconds_since_refresh: float | None
    parked_batches: Mapping[int, int]  # webhook id -> parked batches
    stores_up: Mapping[str, bool]  # "redis", "mysql" -> answered
    catalog_invalid_rows: int


class _Figures:
    """A collector of one scrape's figures (registered in that scrape's registry only)."""

    def __init__(self, figures: ScrapeFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = self.figures
        yield from _segment_families(f.segments)
        for name, text, value in (
            ("funnel_tags_version", "The user tags' live version (0: no load yet)", f.tags_version),
            ("funnel_tags_users", "Users in the tags' live version", f.tags_users),
            (
                "funnel_tags_seconds_since_refresh",
                "Seconds since the tags' live version was loaded",
                f.tags_seconds_since_refresh,
            ),
            ("funnel_catalog_invalid_rows", "Catalog rows that are not served: invalid", f.catalog_invalid_rows),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, text, value=value)
        parked = GaugeMetricFamily(
            "funnel_webhook_parked_batches", "Webhook batches given up until a manual run", labels=["webhook"]
        )
        for webhook_id, count in sorted(f.parked_batches.items()):
            parked.add_metric([str(webhook_id)], count)
        yield parked
        up = GaugeMetricFamily(
            "funnel_store_up", "Whether the store answered this scrape (1) or not (0)", labels=["store"]
        )
        for store, answered in sorted(f.stores_up.items()):
            up.add_metric([store], 1 if answered else 0)
        yield up


def _segment_families(segments: Iterable[SegmentFigures]) -> Iterator[GaugeMetricFamily]:
    labels = ["segment", "kind"]
    size = GaugeMetricFamily("funnel_segment_members", "Members of the segment's live version", labels=labels)
    version = GaugeMetricFamily("funnel_segment_live_version", "The segment's live version number", labels=labels)
    since = GaugeMetricFamily(
        "funnel_segment_seconds_since_refresh", "Seconds since the live version was made live", labels=labels
    )
    stale = GaugeMetricFamily(
        "funnel_segment_stale", "1 when the segment is past its freshness objective (answers say stale)", labels=labels
    )
    enabled = GaugeMetricFamily("funnel_segment_enabled", "1 when the segment is enabled", labels=labels)
    last = GaugeMetricFamily(
        "funnel_segment_last_run",
        "1, labelled with the status of the segment's latest attempt",
        labels=[*labels, "status"],
    )
    for s in segments:
        key = [s.segment_id, s.kind]
        enabled.add_metric(key, 1 if s.enabled else 0)
        stale.add_metric(key, 1 if s.stale else 0)
        if s.size is not None:
            size.add_metric(key, s.size)
        if s.live_version is not None:
            version.add_metric(key, s.live_version)
        if s.seconds_since_refresh is not None:
            since.add_metric(key, s.seconds_since_refresh)
        if s.last_run_status is not None:
            last.add_metric([*key, s.last_run_status], 1)
    yield from (size, version, since, stale, enabled, last)


def exposition(figures: ScrapeFigures) -> bytes:
    """The text a scrape answers: the counters (every worker's, added up, in multiprocess mode)
    and this scrape's figures."""
    if os.environ.get(METRICS_DIR_ENV):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_Figures(figures))
    return generate_latest(counted) + generate_latest(scraped)
