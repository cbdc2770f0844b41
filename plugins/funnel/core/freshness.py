"""Freshness objectives and the verdict on one segment, pure: no I/O, no clock (``now`` is given).

The rules, in the order they apply:

1. **proxy**: always ``fresh``: answered at request time from the users' tags, nothing to be late.
2. **disabled**: ``fresh``: it gets no task, so it has no objective; its last members are kept.
3. **failing**: the segment's last *finished* attempt in ``funnel_segment_runs`` (the latest
   ``success``, ``failed`` or ``rejected`` row; ``running``, ``skipped`` and ``superseded``
   rows decide nothing) is ``failed`` or ``rejected``, so no success since. This goes first: the
   error says what to fix. A retry that is running does not clear it; its success does.
4. **dynamic**: ``stale`` when its last successful refresh *started* before the older of the
   last two slots of ``dynamic_schedule`` (read in ``timezone``), i.e. a whole slot passed with
   no success and the next one has come; a segment never computed is ``stale`` too (it has no
   data to serve). Start times count, as in the overshoot rule: a refresh that started after a
   slot is fresh for that slot. A slot at exactly ``now`` has come.
5. **static**: ``fresh`` once computed (frozen), and before ``run_at + static_grace_minutes``;
   ``stale`` when it still has no version after that.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from funnel.core.segment import Kind, Segment
from funnel.core.states import Freshness, RunStatus

#: Statuses that end an attempt with a verdict (the others neither clear nor raise an alarm).
FINISHED = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.REJECTED})
FAILED = frozenset({RunStatus.FAILED, RunStatus.REJECTED})
#: The fixed window the shortest gap between slots is measured on (deterministic DAGs).
GAP_WINDOW_START = dt.datetime(2024, 1, 1)
GAP_WINDOW = dt.timedelta(days=15)
GAP_MAX_SLOTS = 500
GAP_MIN_GAPS = 12  # a monthly schedule still meets February
ERROR_SHOWN_CHARS = 300


@dataclass(frozen=True)
class Objectives:
    """What fresh means: the dynamic schedule (in its timezone) and a static segment's grace."""

    dynamic_schedule: str
    timezone: str
    static_grace: dt.timedelta


@dataclass(frozen=True)
class Attempt:
    """One row of ``funnel_segment_runs`` (times aware, UTC)."""

    id: int
    status: RunStatus
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    error: str | None = None
    dag_id: str = ""
    run_id: str = ""
    try_number: int = 0

    def as_dict(self) -> dict[str, object]:
        """The attempt as the API shows it (``last_run``)."""
        return {
            "status": self.status.value,
            "error": self.error,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "try_number": self.try_number,
        }


@dataclass(frozen=True)
class RunSummary:
    """The attempts of one segment that decide its freshness."""

    last: Attempt | None = None  # the latest attempt, whatever its status
    last_finished: Attempt | None = None  # the latest success, failed or rejected
    last_success: Attempt | None = None
    running: Attempt | None = None  # the latest attempt still 'running'


def summarize(attempts: Iterable[Attempt]) -> RunSummary:
    """A summary from any attempts of one segment (e.g. the latest of each status); later ids win."""
    ordered = sorted(attempts, key=lambda a: a.id)
    if not ordered:
        return RunSummary()
    return RunSummary(
        last=ordered[-1],
        last_finished=next((a for a in reversed(ordered) if a.status in FINISHED), None),
        last_success=next((a for a in reversed(ordered) if a.status is RunStatus.SUCCESS), None),
        running=next((a for a in reversed(ordered) if a.status is RunStatus.RUNNING), None),
    )


@dataclass(frozen=True)
class Assessment:
    state: Freshness
    reason: str

    @property
    def flagged(self) -> bool:
        """Stale or failing: what ``?stale=true`` lists and ``report`` flags."""
        return self.state is not Freshness.FRESH


def assess(segment: Segment, summary: RunSummary | None, now: dt.datetime, objectives: Objectives) -> Assessment:
    """The segment's freshness at ``now`` and why, in words."""
    summary = summary or RunSummary()
    if segment.kind is Kind.PROXY:
        return Assessment(Freshness.FRESH, "proxy segment: answered at request time from the users' tags")
    if not segment.enabled:
        return Assessment(
            Freshness.FRESH, "disabled: not refreshed, so it has no freshness objective; its last members are kept"
        )
    verdict = (
        _dynamic(summary, now, objectives) if segment.kind.on_slots else _static(segment, summary, now, objectives)
    )
    finished = summary.last_finished
    if finished is not None and finished.status in FAILED:
        running = summary.running
        retry = (
            f"; an attempt is running since {_at(running.started_at)}"
            if running is not None and running.id > finished.id
            else ""
        )
        return Assessment(
            Freshness.FAILING,
            f"the last attempt ({finished.run_id}, try {finished.try_number}) {_ended(finished)}: "
            f"{_error(finished.error)}{retry}; meanwhile: {verdict.reason}",
        )
    return verdict


def past_objective(segment: Segment, summary: RunSummary | None, now: dt.datetime, objectives: Objectives) -> bool:
    """Whether the segment's live data is past its freshness objective: the ``stale`` flag of
    its membership answers. Rules 4 and 5 alone: a *failing* segment is past its objective only
    when its data is also that old (a failed retry an hour after a good refresh leaves the data
    fresh); proxy and disabled segments never are."""
    if segment.kind is Kind.PROXY or not segment.enabled:
        return False
    summary = summary or RunSummary()
    verdict = (
        _dynamic(summary, now, objectives) if segment.kind.on_slots else _static(segment, summary, now, objectives)
    )
    return verdict.state is Freshness.STALE


def _dynamic(summary: RunSummary, now: dt.datetime, objectives: Objectives) -> Assessment:
    newer, older = recent_slots(objectives.dynamic_schedule, objectives.timezone, now, 2)
    success = summary.last_success
    running = f"; an attempt is running since {_at(summary.running.started_at)}" if summary.running is not None else ""
    if success is None:
        return Assessment(
            Freshness.STALE,
            f"never computed: no successful refresh yet (slots {_slot(older)}, {_slot(newer)}){running}",
        )
    if success.started_at < older:
        return Assessment(
            Freshness.STALE,
            f"the last successful refresh started {_at(success.started_at)}, before the slots {_slot(older)} "
            f"and {_slot(newer)}: a whole slot passed without one{running}",
        )
    return Assessment(
        Freshness.FRESH,
        f"the last successful refresh started {_at(success.started_at)}, not before the slot {_slot(older)}",
    )


def _static(segment: Segment, summary: RunSummary, now: dt.datetime, objectives: Objectives) -> Assessment:
    success = summary.last_success
    if success is not None:
        return Assessment(Freshness.FRESH, f"static segment computed at {_at(success.started_at)}; frozen")
    if segment.run_at is None:
        return Assessment(Freshness.STALE, "never computed: a static segment without run_at")
    grace_minutes = int(objectives.static_grace.total_seconds() // 60)
    running = f"; an attempt is running since {_at(summary.running.started_at)}" if summary.running is not None else ""
    if now < segment.run_at:
        return Assessment(Freshness.FRESH, f"not due yet: it runs at {_slot(segment.run_at)}")
    late = now - segment.run_at
    if late <= objectives.static_grace:
        return Assessment(
            Freshness.FRESH,
            f"due at {_slot(segment.run_at)}, not computed yet; within the {grace_minutes} min grace{running}",
        )
    return Assessment(
        Freshness.STALE,
        f"missed its run_at {_slot(segment.run_at)} by {int(late.total_seconds() // 60)} min "
        f"(over the {grace_minutes} min grace): never computed{running}",
    )


# ---------------------------------------------------------------------- the schedule


@functools.lru_cache(maxsize=32)  # every segment assessed at one ``now`` shares the answer (croniter is slow)
def recent_slots(schedule: str, timezone: str, now: dt.datetime, count: int = 2) -> tuple[dt.datetime, ...]:
    """The last ``count`` slots of a cron schedule at or before ``now``, newest first, in UTC.

    The cron is read in ``timezone`` as Airflow reads a DAG's cron schedule, daylight saving
    changes included (``tests/unit/core/test_freshness.py`` compares the two; Airflow's special case
    for schedules that run every hour, in the hour the clock goes back, is not followed).
    """
    from croniter import croniter

    tz = ZoneInfo(timezone)
    # Cron has minute resolution: start a minute ahead and drop slots after now, so a slot at
    # exactly ``now`` counts.
    start = now.astimezone(tz).replace(tzinfo=None) + dt.timedelta(minutes=1)
    slots = croniter(schedule, start)
    found: list[dt.datetime] = []
    while len(found) < count:
        slot = _utc(slots.get_prev(dt.datetime), tz)
        if slot <= now:
            found.append(slot)
    return tuple(found)


def next_slot(schedule: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``after``, in UTC."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    slots = croniter(schedule, after.astimezone(tz).replace(tzinfo=None))
    while True:
        slot = _utc(slots.get_next(dt.datetime), tz)
        if slot > after:
            return slot


def shortest_gap(schedule: str, timezone: str) -> dt.timedelta:
    """The shortest time between two consecutive slots, measured over a fixed window (two weeks
    from 2024-01-01, and at least 12 gaps), so the DAG built from it never depends on the clock."""
    from croniter import croniter

    tz = ZoneInfo(timezone)
    slots = croniter(schedule, GAP_WINDOW_START)
    previous = _utc(slots.get_next(dt.datetime), tz)
    end = previous + GAP_WINDOW
    gap = dt.timedelta.max
    for measured in range(1, GAP_MAX_SLOTS + 1):
        slot = _utc(slots.get_next(dt.datetime), tz)
        gap = min(gap, slot - previous)
        if slot > end and measured >= GAP_MIN_GAPS:
            break
        previous = slot
    return gap


def _utc(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """A wall-clock time in ``tz`` as UTC, as Airflow places a cron slot: a time the clock
    shows twice (it went back) is the second one; a time it skipped (it went forward) moves
    on by the jump."""
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    offset_first, offset_second = first.utcoffset(), second.utcoffset()
    repeated = offset_first is not None and offset_second is not None and offset_first > offset_second
    return (second if repeated else first).astimezone(dt.UTC)


# ---------------------------------------------------------------------- words


def _at(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _slot(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def _ended(attempt: Attempt) -> str:
    when = f" at {_at(attempt.finished_at)}" if attempt.finished_at else ""
    return f"{'was rejected' if attempt.status is RunStatus.REJECTED else 'failed'}{when}"


def _error(error: str | None) -> str:
    if not error:
        return "no error recorded"
    first = error.strip().splitlines()[0] if error.strip() else error
    return first if len(first) <= ERROR_SHOWN_CHARS else first[: ERROR_SHOWN_CHARS - 1] + "…"
