"""funnel's metrics as mapped from a result: names, types, values and tags (pure; the StatsD test in
tests/dags/test_refresh_metrics.py sends them through Airflow for real)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from airflow.sdk._shared.observability.metrics.validators import stat_name_default_handler

from funnel.airflow.refresh_metrics import (
    Metric,
    MetricType,
    refresh_metrics,
    tag_load_metrics,
    webhook_metrics,
)
from funnel.core.errors import OperandNotComputed, RefreshRejected, RefreshSkipped, RefreshSuperseded, SegmentBusy
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.core.states import RunStatus
from funnel.services.attempt import AttemptReport, outcome_of
from funnel.services.composite_input import CompositeInputs
from funnel.services.refresh import RefreshResult
from funnel.services.tag_load import TagLoadResult
from funnel.services.webhook_delivery import Report
from funnel.storage.mysql.segment_version_reader import LiveVersion

STEPS = {
    "stage": 1.5,
    "fetch": 1.0,
    "redis": 0.5,
    "mysql": 0.25,
    "exited": 0.125,
    "swap": 0.1,
    "prune": 0.05,
    "feed": 0,
}
RESULT = RefreshResult("big_spenders", 7, 1000, 1002, 2, 30, 12, 2.5, STEPS)
TAGS = {"dag_id": "funnel_dynamic_segments", "segment_id": "big_spenders", "kind": "dynamic", "outcome": "success"}


def test_a_successful_refresh_reports_duration_lock_wait_steps_rows_entered_and_exited() -> None:
    report = AttemptReport(RunStatus.SUCCESS, 3.25, 0.75, RESULT)
    metrics = refresh_metrics(report, dag_id="funnel_dynamic_segments", segment_id="big_spenders", kind=Kind.DYNAMIC)
    assert metrics == [
        Metric(MetricType.TIMING, "funnel.refresh.duration", 3.25, TAGS),
        Metric(MetricType.TIMING, "funnel.refresh.lock_wait", 0.75, TAGS),
        *(Metric(MetricType.TIMING, "funnel.refresh.step_duration", s, {**TAGS, "step": k}) for k, s in STEPS.items()),
        Metric(MetricType.COUNT, "funnel.refresh.rows_read", 1002, TAGS),
        Metric(MetricType.COUNT, "funnel.refresh.entered", 30, TAGS),
        Metric(MetricType.COUNT, "funnel.refresh.exited", 12, TAGS),
    ]


@pytest.mark.parametrize("outcome", [RunStatus.SKIPPED, RunStatus.SUPERSEDED, RunStatus.REJECTED, RunStatus.FAILED])
def test_any_other_outcome_reports_its_duration_and_lock_wait_only(outcome: RunStatus) -> None:
    report: AttemptReport[RefreshResult] = AttemptReport(outcome, 31.0, 30.0)
    metrics = refresh_metrics(report, dag_id="funnel_static_launch", segment_id="launch", kind=Kind.STATIC)
    tags = {"dag_id": "funnel_static_launch", "segment_id": "launch", "kind": "static", "outcome": outcome.value}
    assert metrics == [
        Metric(MetricType.TIMING, "funnel.refresh.duration", 31.0, tags),
        Metric(MetricType.TIMING, "funnel.refresh.lock_wait", 30.0, tags),
    ]


def test_a_composite_reports_how_many_of_its_inputs_an_earlier_run_made() -> None:
    result = RefreshResult("two_or_three", 2, 10, 10, 0, 1, 0, 0.5, {}, inputs_kept=1)
    metrics = refresh_metrics(
        AttemptReport(RunStatus.SUCCESS, 0.5, 0.0, result), dag_id="d", segment_id="two_or_three", kind=Kind.COMPOSITE
    )
    tags = {"dag_id": "d", "segment_id": "two_or_three", "kind": "composite", "outcome": "success"}
    assert metrics[-1] == Metric(MetricType.COUNT, "funnel.refresh.inputs_kept", 1, tags)


def test_a_tag_load_reports_duration_by_outcome_and_the_live_size_as_a_gauge() -> None:
    done = AttemptReport(RunStatus.SUCCESS, 4.0, 0.0, TagLoadResult(3, 3000, 5, 3001, 4.0))
    tags = {"dag_id": "funnel_user_tags", "outcome": "success"}
    assert tag_load_metrics(done, dag_id="funnel_user_tags") == [
        Metric(MetricType.TIMING, "funnel.tag_load.duration", 4.0, tags),
        Metric(MetricType.TIMING, "funnel.tag_load.lock_wait", 0.0, tags),
        Metric(MetricType.GAUGE, "funnel.tag_load.size", 3000, tags),
        Metric(MetricType.COUNT, "funnel.tag_load.rows_read", 3001, tags),
        Metric(MetricType.COUNT, "funnel.tag_load.replayed", 5, tags),
    ]
    refused: AttemptReport[TagLoadResult] = AttemptReport(RunStatus.REJECTED, 2.0, 0.0)
    assert [(m.name, m.tags["outcome"]) for m in tag_load_metrics(refused, dag_id="funnel_user_tags")] == [
        ("funnel.tag_load.duration", "rejected"),
        ("funnel.tag_load.lock_wait", "rejected"),
    ]


def test_a_delivery_run_reports_batches_delivered_retried_parked_and_failed_sends_per_segment() -> None:
    reports = [
        Report(1, "vip", delivered=["vip:4:1", "vip:4:2"], versions=[4], retried=1),
        Report(2, "churn", parked="churn:9:1: 3 attempts failed", parked_batches=1, failed_attempts=3),
    ]
    metrics = webhook_metrics(reports, dag_id="funnel_webhooks")
    assert [(m.type, m.name, m.value, m.tags["segment_id"]) for m in metrics] == [
        (MetricType.COUNT, "funnel.webhook.batches_delivered", 2, "vip"),
        (MetricType.COUNT, "funnel.webhook.batches_retried", 1, "vip"),
        (MetricType.COUNT, "funnel.webhook.batches_parked", 0, "vip"),
        (MetricType.COUNT, "funnel.webhook.attempts_failed", 0, "vip"),
        (MetricType.COUNT, "funnel.webhook.batches_delivered", 0, "churn"),
        (MetricType.COUNT, "funnel.webhook.batches_retried", 0, "churn"),
        (MetricType.COUNT, "funnel.webhook.batches_parked", 1, "churn"),
        (MetricType.COUNT, "funnel.webhook.attempts_failed", 3, "churn"),
    ]
    assert {m.tags["dag_id"] for m in metrics} == {"funnel_webhooks"}


def test_names_hold_no_id_and_pass_airflows_name_check_with_their_tags_inline() -> None:
    # The longest segment id (64 characters) in an InfluxDB-style line, as StatsD gets it.
    segment_id = "s" * 64
    metrics = [
        *refresh_metrics(
            AttemptReport(RunStatus.SUCCESS, 1.0, 0.0, RESULT),
            dag_id="funnel_static_" + segment_id,
            segment_id=segment_id,
            kind=Kind.STATIC,
        ),
        *tag_load_metrics(AttemptReport(RunStatus.SUCCESS, 1.0, 0.0, TagLoadResult(1, 1, 0, 1, 1.0)), dag_id="t"),
        *webhook_metrics([Report(1, segment_id)], dag_id="funnel_webhooks"),
    ]
    for metric in metrics:
        assert re.fullmatch(r"funnel\.(refresh|tag_load|webhook)\.[a-z_]+", metric.name), metric.name
        line = metric.name + "".join(f",{k}={v}" for k, v in metric.tags.items())
        stat_name_default_handler(line, allowed_chars={*"abcdefghijklmnopqrstuvwxyz0123456789_.-/", ",", "="})


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RefreshSkipped("overshoot"), RunStatus.SKIPPED),
        (OperandNotComputed("operand never computed"), RunStatus.SKIPPED),
        (RefreshSuperseded("a later version is live"), RunStatus.SUPERSEDED),
        (RefreshRejected("shrank", 2, 10), RunStatus.REJECTED),
        (SegmentBusy("s", {}, 30, "another run"), RunStatus.FAILED),
        (KeyboardInterrupt(), RunStatus.FAILED),
    ],
)
def test_an_attempt_that_raised_has_the_outcome_the_run_history_records(
    error: BaseException, outcome: RunStatus
) -> None:
    assert outcome_of(error) is outcome


def test_composite_inputs_count_the_operands_an_earlier_run_made() -> None:
    def live(run_id: str) -> LiveVersion:
        moment = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        return LiveVersion(1, moment, 10, "funnel_dynamic_segments", run_id, moment)

    run = RunInfo("funnel_dynamic_segments", "now", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    inputs = CompositeInputs({"a": live("now"), "b": live("earlier"), "c": live("earlier")}, run)
    assert inputs.kept == 2
    assert CompositeInputs({"a": live("now")}, run).kept == 0
