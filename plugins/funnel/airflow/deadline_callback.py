"""The dynamic DAG's Airflow ``DeadlineAlert``: warn before a run overshoots into the next slot.

Each run of ``funnel_dynamic_segments`` (or of each of its shards) gets a deadline at its logical date (its slot) plus
the shortest gap between two slots of ``dynamic_schedule`` minus
``deadline_minutes_before_next_slot``: with ``0 9,18 * * *`` and 30 minutes, 17:30 for the
09:00 run (and 02:30 for the 18:00 one, whose next slot is further away). A run that finishes
before its deadline costs nothing; one still going calls ``slot_deadline_missed`` in Airflow's
triggerer, which logs the segments not done yet and, when ``deadline_notifier`` names an
Airflow notifier class, sends the same message through it.

Runs without a logical date (a REST trigger with ``"logical_date": null``) get no deadline
(Airflow logs that it skipped it). Backfill runs of past slots are past their deadline at once;
the callback logs them and sends nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import DAG

from funnel.core.freshness import next_slot, shortest_gap
from funnel.core.states import RunStatus
from funnel.core.utc_time import EPOCH, as_utc, parse_utc

log = logging.getLogger(__name__)

#: An attempt with one of these statuses leaves nothing for its run to do for the segment.
DONE = frozenset({RunStatus.SUCCESS, RunStatus.SKIPPED, RunStatus.SUPERSEDED})
#: Segment ids named in one message (the count is always whole).
NAMED_IN_MESSAGE = 50
#: Run states that mean the run had ended when Airflow handled the miss.
ENDED = frozenset({"success", "failed"})
ALERT_NAME = "funnel: run still going before the next slot"


class DeadlineDag(DAG):
    """A DAG whose ``test()`` (``airflow dags test``, ``dag.test()``) runs without its deadline.

    Airflow 3.3.2's ``DAG.test()`` crashes after a successful run of a DAG that has a deadline:
    its in-memory scheduler DAG holds the encoded alerts where ``DagRun.update_state`` expects
    the ids of ``deadline_alert`` rows ("'dict' object has no attribute 'hex'",
    apache/airflow#73428, fix proposed in #73430). A test run has no triggerer to call the
    alert anyway, so it is left out for the run; the scheduler path is unaffected.
    """

    def test(self, *args: Any, **kwargs: Any) -> Any:
        deadline, self.deadline = self.deadline, None
        try:
            return super().test(*args, **kwargs)
        finally:
            self.deadline = deadline


def deadline_interval(schedule: str, timezone: str, minutes_before_next_slot: int) -> dt.timedelta | None:
    """Logical date to deadline: the shortest gap between slots minus the minutes; None if nothing is left."""
    interval = shortest_gap(schedule, timezone) - dt.timedelta(minutes=minutes_before_next_slot)
    if minutes_before_next_slot < 0 or interval <= dt.timedelta(0):
        return None
    return interval


def slot_deadline(schedule: str, timezone: str, minutes_before_next_slot: int) -> Any:
    """The ``DeadlineAlert`` of the dynamic DAG, or None (logged) when the setting leaves no time."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    interval = deadline_interval(schedule, timezone, minutes_before_next_slot)
    if interval is None:
        log.error(
            "funnel: deadline_minutes_before_next_slot is %s, which leaves no time before the next slot of %r "
            "(shortest gap %s); the dynamic DAG gets no deadline alert. Fix: set it from 0 to less than the gap",
            minutes_before_next_slot,
            schedule,
            shortest_gap(schedule, timezone),
        )
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=interval,
        callback=AsyncCallback(slot_deadline_missed, kwargs={"minutes_before_next_slot": minutes_before_next_slot}),
        name=ALERT_NAME,
    )


def not_done(planned: Sequence[str], statuses: Mapping[str, RunStatus]) -> list[str]:
    """The planned segments whose latest attempt in the run has not left them done (sorted)."""
    return sorted(s for s in planned if statuses.get(s) not in DONE)


def deadline_message(
    dag_id: str,
    run_id: str,
    slot: dt.datetime | None,
    deadline_at: dt.datetime | None,
    next_at: dt.datetime | None,
    segment_ids: Sequence[str] | None,
    problem: str | None = None,
    ended_as: str | None = None,
) -> str:
    """What the log and the notifier say. ``ended_as``: the run's state when it had already
    ended by the time Airflow handled the miss (a deadline already past when the run began)."""
    when = f" (slot {slot:%Y-%m-%d %H:%M} UTC)" if slot else ""
    going = f"ended ({ended_as}) after its deadline" if ended_as else "is still going at its deadline"
    deadline = f" {deadline_at:%Y-%m-%d %H:%M} UTC" if deadline_at else ""
    before = (
        f", {_duration(next_at - deadline_at)} before the next slot {next_at:%Y-%m-%d %H:%M} UTC"
        if deadline_at and next_at
        else ""
    )
    head = f"funnel: run {run_id} of {dag_id}{when} {going}{deadline}{before}"
    if segment_ids is None:
        return f"{head}; the segments not done are unknown ({problem})"
    if not segment_ids:
        return f"{head}; every segment is done" + ("" if ended_as else ", the run is finishing")
    named = ", ".join(segment_ids[:NAMED_IN_MESSAGE])
    more = f" and {len(segment_ids) - NAMED_IN_MESSAGE} more" if len(segment_ids) > NAMED_IN_MESSAGE else ""
    return (
        f"{head}; {len(segment_ids)} segment(s) not done: {named}{more}. They will be stale at the next slot "
        "unless refreshed by then (check the task logs and funnel_segment_runs)"
    )


async def slot_deadline_missed(minutes_before_next_slot: int, context: Mapping[str, Any] | None = None) -> str:
    """Airflow's deadline callback (in the triggerer): log the segments not done and notify.

    ``context`` is what Airflow passes: ``dag_run`` (the run as the REST API shows it) and
    ``deadline``. Returns the message, which Airflow keeps as the callback's output (text: the
    triggerer stores it in a text column and stops on anything else).
    """
    from funnel import settings

    context = dict(context or {})
    dag_run = dict(context.get("dag_run") or {})
    dag_id, run_id = str(dag_run.get("dag_id", "?")), str(dag_run.get("dag_run_id", "?"))
    slot = _moment(dag_run.get("logical_date"))
    if dag_run.get("run_type") == "backfill":
        message = f"funnel: backfill run {run_id} of {dag_id} (a past slot) passed its deadline; no alert for backfills"
        log.info("%s", message)
        return message
    since = _moment(dag_run.get("start_date")) or _moment(dag_run.get("queued_at")) or slot
    segment_ids: list[str] | None
    problem = None
    try:
        segment_ids = await asyncio.to_thread(_segments_not_done, dag_id, run_id, since)
    except Exception as exc:
        segment_ids, problem = None, f"{type(exc).__name__}: {exc}"
    next_at = next_slot(settings.DYNAMIC_SCHEDULE, settings.TIMEZONE, slot) if slot else None
    state = str(dag_run.get("state") or "")
    ended_as = state if state in ENDED else None
    deadline_at = _moment(dict(context.get("deadline") or {}).get("deadline_time"))
    interval = deadline_interval(settings.DYNAMIC_SCHEDULE, settings.TIMEZONE, minutes_before_next_slot)
    if deadline_at is None and slot is not None and interval is not None:
        deadline_at = slot + interval  # how Airflow placed it
    message = deadline_message(dag_id, run_id, slot, deadline_at, next_at, segment_ids, problem, ended_as)
    log.warning("%s", message)
    await _notify(message, segment_ids or [], context)
    return message


def _segments_not_done(dag_id: str, run_id: str, since: dt.datetime | None) -> list[str]:
    """The enabled dynamic and composite segments of this DAG (the catalog now: all of them, or one
    shard's) whose attempts in the run are not done."""
    import contextlib

    from funnel import wiring
    from funnel.services.catalog import planned_dags, serving_catalog

    plans = planned_dags(serving_catalog(wiring.catalog_hook()).segments)
    planned = [s.segment_id for plan in plans if plan.dag_id == dag_id for s in plan.segments]
    with contextlib.closing(wiring.mysql_connection()) as conn:
        statuses = wiring.history_on(conn).statuses_in_run(dag_id, run_id, planned, since or EPOCH)
    return not_done(planned, statuses)


async def _notify(message: str, segment_ids: list[str], context: Mapping[str, Any]) -> str | None:
    """Send through the configured notifier (its templated fields see ``message`` and
    ``segment_ids``); return its class path, or None when none is configured."""
    from airflow.sdk import BaseNotifier

    from funnel import settings

    path = settings.deadline_notifier()
    if not path:
        return None
    fix = "set [funnel] deadline_notifier to the dotted path of an Airflow notifier class"
    module_name, _, name = path.rpartition(".")
    try:
        notifier_class = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"[funnel] deadline_notifier {path!r} cannot be imported ({exc}). Fix: {fix}") from None
    if not (isinstance(notifier_class, type) and issubclass(notifier_class, BaseNotifier)):
        raise ValueError(f"[funnel] deadline_notifier {path!r} is not an Airflow notifier (BaseNotifier). Fix: {fix}")
    notifier = notifier_class(**settings.deadline_notifier_kwargs())
    notify_context = {**context, "message": message, "segment_ids": segment_ids}
    try:
        if type(notifier).async_notify is not BaseNotifier.async_notify:
            notifier.context = notify_context
            await notifier
        else:  # a notifier with only the synchronous notify
            await asyncio.to_thread(notifier, notify_context)
    except Exception:
        log.exception("funnel: the deadline notifier %s failed to send: %s", path, message)
        raise
    log.info("funnel: deadline alert sent through %s", path)
    return path


def _duration(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours and minutes else f"{hours} h" if hours else f"{minutes} min"


def _moment(value: object) -> dt.datetime | None:
    """A datetime from the callback context (ISO text or datetime), aware UTC."""
    if isinstance(value, str) and value:
        return parse_utc(value)
    return as_utc(value) if isinstance(value, dt.datetime) else None
