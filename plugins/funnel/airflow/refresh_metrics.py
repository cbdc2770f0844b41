"""funnel's metrics, sent through Airflow's own metrics pipeline, so they go wherever the
deployment's Airflow metrics go (StatsD, StatsD with Datadog or InfluxDB tags, OpenTelemetry:
``[metrics]`` in Airflow's configuration; nothing is sent when it turns them all off).

The names and tags are the spec (docs/operations.md, "Refresh metrics", lists them): each name is
``funnel.<work>.<measure>`` and holds no id; what varies goes in tags. Mapping a result to its
metrics is pure (``*_metrics`` return ``Metric`` values); only ``send`` talks to Airflow.

Tags: ``dag_id``, ``outcome`` (as the run history records it), ``kind`` and ``segment_id``. A
segment id is a tag on purpose: it is what an operator asks about ("which segment is slow, which
one fails"), the catalog bounds it (one series per segment and outcome, as Airflow's own task metrics
carry one ``task_id`` tag per task, which for a dynamic segment is its id), and it is never a user
id. A deployment that pays per series drops it with ``[metrics] statsd_disabled_tags = segment_id``.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from airflow.sdk.observability import stats

from funnel.core.segment import Kind
from funnel.services.attempt import AttemptReport, Reporter
from funnel.services.refresh import RefreshResult
from funnel.services.tag_load import TagLoadResult
from funnel.services.webhook_delivery import Report

log = logging.getLogger(__name__)

REFRESH_DURATION = "funnel.refresh.duration"
REFRESH_LOCK_WAIT = "funnel.refresh.lock_wait"
REFRESH_STEP_DURATION = "funnel.refresh.step_duration"
REFRESH_ROWS_READ = "funnel.refresh.rows_read"
REFRESH_ENTERED = "funnel.refresh.entered"
REFRESH_EXITED = "funnel.refresh.exited"
REFRESH_INPUTS_KEPT = "funnel.refresh.inputs_kept"
TAG_LOAD_DURATION = "funnel.tag_load.duration"
TAG_LOAD_LOCK_WAIT = "funnel.tag_load.lock_wait"
TAG_LOAD_SIZE = "funnel.tag_load.size"
TAG_LOAD_ROWS_READ = "funnel.tag_load.rows_read"
TAG_LOAD_REPLAYED = "funnel.tag_load.replayed"
WEBHOOK_BATCHES_DELIVERED = "funnel.webhook.batches_delivered"
WEBHOOK_BATCHES_RETRIED = "funnel.webhook.batches_retried"
WEBHOOK_BATCHES_PARKED = "funnel.webhook.batches_parked"
WEBHOOK_ATTEMPTS_FAILED = "funnel.webhook.attempts_failed"


class MetricType(enum.StrEnum):
    """How a metric is sent: a duration (StatsD ``ms``, an OpenTelemetry histogram), a count added
    up over time (``c``, a counter) or a level (``g``, a gauge)."""

    TIMING = "timing"
    COUNT = "count"
    GAUGE = "gauge"


@dataclass(frozen=True)
class Metric:
    """One value to send: a timing in seconds, a count or a gauge."""

    type: MetricType
    name: str
    value: float
    tags: Mapping[str, str]


def refresh_metrics(report: AttemptReport[RefreshResult], *, dag_id: str, segment_id: str, kind: Kind) -> list[Metric]:
    """A segment refresh's metrics: its duration and lock wait whatever the outcome; for a success,
    each step's seconds, the rows read, who entered and exited, and a composite's inputs kept."""
    tags = {"dag_id": dag_id, "segment_id": segment_id, "kind": kind.value, "outcome": str(report.outcome)}
    metrics = [
        Metric(MetricType.TIMING, REFRESH_DURATION, report.seconds, tags),
        Metric(MetricType.TIMING, REFRESH_LOCK_WAIT, report.lock_wait_seconds, tags),
    ]
    result = report.result
    if result is None:
        return metrics
    metrics += [
        Metric(MetricType.TIMING, REFRESH_STEP_DURATION, s, {**tags, "step": k}) for k, s in result.steps.items()
    ]
    metrics += [
        Metric(MetricType.COUNT, REFRESH_ROWS_READ, result.rows_read, tags),
        Metric(MetricType.COUNT, REFRESH_ENTERED, result.entered, tags),
        Metric(MetricType.COUNT, REFRESH_EXITED, result.exited, tags),
    ]
    if result.inputs_kept is not None:
        metrics.append(Metric(MetricType.COUNT, REFRESH_INPUTS_KEPT, result.inputs_kept, tags))
    return metrics


def tag_load_metrics(report: AttemptReport[TagLoadResult], *, dag_id: str) -> list[Metric]:
    """A tag load's metrics: its duration and lock wait whatever the outcome; for a success, the
    users now live (a gauge), the rows read and the users replayed from later events."""
    tags = {"dag_id": dag_id, "outcome": str(report.outcome)}
    metrics = [
        Metric(MetricType.TIMING, TAG_LOAD_DURATION, report.seconds, tags),
        Metric(MetricType.TIMING, TAG_LOAD_LOCK_WAIT, report.lock_wait_seconds, tags),
    ]
    result = report.result
    if result is not None:
        metrics += [
            Metric(MetricType.GAUGE, TAG_LOAD_SIZE, result.size, tags),
            Metric(MetricType.COUNT, TAG_LOAD_ROWS_READ, result.rows_read, tags),
            Metric(MetricType.COUNT, TAG_LOAD_REPLAYED, result.replayed, tags),
        ]
    return metrics


def webhook_metrics(reports: Iterable[Report], *, dag_id: str) -> list[Metric]:
    """A delivery run's metrics, per subscription (tagged with its segment): batches delivered,
    parked batches sent again, batches parked and failed sends."""
    metrics = []
    for report in reports:
        tags = {"dag_id": dag_id, "segment_id": report.segment_id}
        metrics += [
            Metric(MetricType.COUNT, WEBHOOK_BATCHES_DELIVERED, len(report.delivered), tags),
            Metric(MetricType.COUNT, WEBHOOK_BATCHES_RETRIED, report.retried, tags),
            Metric(MetricType.COUNT, WEBHOOK_BATCHES_PARKED, report.parked_batches, tags),
            Metric(MetricType.COUNT, WEBHOOK_ATTEMPTS_FAILED, report.failed_attempts, tags),
        ]
    return metrics


def refresh_reporter(*, dag_id: str, segment_id: str, kind: Kind) -> Reporter[RefreshResult]:
    """Where a refresh sends its report (``Refresher.refresh``'s ``report``): its metrics, to Airflow's."""
    return lambda report: send(refresh_metrics(report, dag_id=dag_id, segment_id=segment_id, kind=kind))


def tag_load_reporter(*, dag_id: str) -> Reporter[TagLoadResult]:
    """Where a tag load sends its report (``TagLoader.load``'s ``report``): its metrics, to Airflow's."""
    return lambda report: send(tag_load_metrics(report, dag_id=dag_id))


def send(metrics: Iterable[Metric]) -> None:
    """Send ``metrics`` through Airflow's stats API (``airflow.sdk.observability.stats``), as the
    task runner set it up from ``[metrics]``. A metric that cannot be sent is logged; it never
    fails the task."""
    for metric in metrics:
        tags = dict(metric.tags)
        try:
            if metric.type is MetricType.TIMING:
                stats.timing(metric.name, dt.timedelta(seconds=metric.value), tags=tags)
            elif metric.type is MetricType.COUNT:
                stats.incr(metric.name, int(metric.value), tags=tags)
            else:
                stats.gauge(metric.name, metric.value, tags=tags)
        except Exception as exc:
            log.warning("funnel: metric %s was not sent (%s)", metric.name, exc)
