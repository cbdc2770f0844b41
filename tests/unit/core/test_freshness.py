"""Freshness rules, pure: slots of the schedule, and the verdict on a segment at a given time."""

from __future__ import annotations

import datetime as dt

import pytest

from funnel.core.freshness import (
    Attempt,
    Objectives,
    RunSummary,
    assess,
    next_slot,
    past_objective,
    recent_slots,
    shortest_gap,
    summarize,
)
from funnel.core.segment import Kind, Segment
from funnel.core.states import Freshness, RunStatus

UTC = dt.UTC
SCHEDULE = "0 9,18 * * *"
OBJECTIVES = Objectives(SCHEDULE, "UTC", dt.timedelta(minutes=60))
DYNAMIC = Segment("buyers", "Buyers", Kind.DYNAMIC, query="SELECT 1")
RUN_AT = dt.datetime(2026, 11, 20, 9, tzinfo=UTC)
STATIC = Segment("launch", "Launch", Kind.STATIC, query="SELECT 1", run_at=RUN_AT)
PROXY = Segment("vips", "Vips", Kind.PROXY, rule='{"tag":"new_user"}')


def at(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


def attempt(
    attempt_id: int,
    status: RunStatus,
    started: dt.datetime,
    error: str | None = None,
    run_id: str = "scheduled__x",
) -> Attempt:
    finished = None if status is RunStatus.RUNNING else started + dt.timedelta(minutes=20)
    return Attempt(attempt_id, status, started, finished, error, "funnel_dynamic_segments", run_id, 1)


def history(*attempts: Attempt) -> RunSummary:
    return summarize(attempts)


# ---------------------------------------------------------------------- slots


@pytest.mark.parametrize(
    ("now", "newer", "older"),
    [
        pytest.param(at(26, 9), at(26, 9), at(25, 18), id="a slot at exactly now has come"),
        pytest.param(at(26, 8, 59, 59, 999_999), at(25, 18), at(25, 9), id="a microsecond before it has not"),
        pytest.param(at(26, 12), at(26, 9), at(25, 18), id="between slots"),
        pytest.param(at(26, 18, 0, 1), at(26, 18), at(26, 9), id="just after the evening slot"),
        pytest.param(
            at(1, 3),
            dt.datetime(2026, 10, 31, 18, tzinfo=UTC),
            dt.datetime(2026, 10, 31, 9, tzinfo=UTC),
            id="across a month's end",
        ),
    ],
)
def test_the_last_two_slots_at_or_before_now(now: dt.datetime, newer: dt.datetime, older: dt.datetime) -> None:
    assert recent_slots(SCHEDULE, "UTC", now) == (newer, older)


@pytest.mark.parametrize(
    ("timezone", "now", "expected"),
    [
        # 09:00 and 18:00 in Berlin are 08:00 / 17:00 UTC in winter, 07:00 / 16:00 UTC in summer.
        ("Europe/Berlin", at(26, 12), (at(26, 8), at(25, 17))),
        (
            "Europe/Berlin",
            dt.datetime(2026, 7, 1, 12, tzinfo=UTC),
            (
                dt.datetime(2026, 7, 1, 7, tzinfo=UTC),
                dt.datetime(2026, 6, 30, 16, tzinfo=UTC),
            ),
        ),
        # Across the spring change (2026-03-29): the evening slot before is on winter time.
        (
            "Europe/Berlin",
            dt.datetime(2026, 3, 29, 8, tzinfo=UTC),
            (
                dt.datetime(2026, 3, 29, 7, tzinfo=UTC),
                dt.datetime(2026, 3, 28, 17, tzinfo=UTC),
            ),
        ),
        ("Asia/Kolkata", at(26, 4), (at(26, 3, 30), at(25, 12, 30))),
    ],
)
def test_slots_are_read_in_the_schedules_timezone(
    timezone: str, now: dt.datetime, expected: tuple[dt.datetime, dt.datetime]
) -> None:
    assert recent_slots(SCHEDULE, timezone, now) == expected


@pytest.mark.parametrize(
    ("schedule", "timezone"),
    [
        ("0 9,18 * * *", "Europe/Berlin"),
        ("30 2 * * *", "Europe/Berlin"),  # a time the clock skips in spring and shows twice in autumn
        ("30 1 * * *", "America/New_York"),
        ("15 2,3 * * 1-5", "America/New_York"),
        ("0 9,18 * * *", "Asia/Kolkata"),
    ],
)
def test_slots_are_the_runs_airflow_schedules_across_daylight_saving_changes(schedule: str, timezone: str) -> None:
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = CronTriggerTimetable(schedule, timezone=timezone)
    restriction = TimeRestriction(earliest=None, latest=None, catchup=True)
    for start in (dt.datetime(2026, 3, 20, tzinfo=UTC), dt.datetime(2026, 10, 20, tzinfo=UTC)):
        runs, last = [], DataInterval(start, start)
        for _ in range(40):
            info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
            assert info is not None
            runs.append(info.logical_date)
            last = info.data_interval
        ours = [next_slot(schedule, timezone, start)]
        while len(ours) < len(runs):
            ours.append(next_slot(schedule, timezone, ours[-1]))
        assert ours == runs
        assert [recent_slots(schedule, timezone, run, 1)[0] for run in runs] == runs


@pytest.mark.parametrize(
    ("schedule", "timezone", "gap"),
    [
        ("0 9,18 * * *", "UTC", dt.timedelta(hours=9)),
        ("0 9,18 * * *", "Europe/Berlin", dt.timedelta(hours=9)),
        ("30 8,17 * * *", "Asia/Kolkata", dt.timedelta(hours=9)),
        ("0 9 * * 1-5", "UTC", dt.timedelta(days=1)),
        ("*/20 * * * *", "UTC", dt.timedelta(minutes=20)),
        ("@daily", "UTC", dt.timedelta(days=1)),
        ("0 9 1 * *", "UTC", dt.timedelta(days=29)),  # February 2024 is in the window
    ],
)
def test_the_shortest_gap_between_slots(schedule: str, timezone: str, gap: dt.timedelta) -> None:
    assert shortest_gap(schedule, timezone) == gap


# ---------------------------------------------------------------------- the verdict

MORNING_SUCCESS = attempt(1, RunStatus.SUCCESS, at(26, 9, 0, 4))
CASES = [
    # (id, segment, history, now, state, words in the reason)
    ("proxy", PROXY, history(), at(26, 12), Freshness.FRESH, "answered at request time"),
    (
        "disabled, even after a failure",
        Segment("old", "Old", Kind.DYNAMIC, query="SELECT 1", enabled=False),
        history(attempt(1, RunStatus.FAILED, at(20, 9), "boom")),
        at(26, 12),
        Freshness.FRESH,
        "disabled: not refreshed",
    ),
    ("never computed", DYNAMIC, history(), at(26, 12), Freshness.STALE, "never computed"),
    (
        "never computed, first attempt running",
        DYNAMIC,
        history(attempt(1, RunStatus.RUNNING, at(26, 9, 0, 3))),
        at(26, 12),
        Freshness.STALE,
        "an attempt is running since 2026-11-26 09:00:03 UTC",
    ),
    ("success in the latest slot", DYNAMIC, history(MORNING_SUCCESS), at(26, 12), Freshness.FRESH, "not before"),
    (
        "success started exactly at the older slot",
        DYNAMIC,
        history(attempt(1, RunStatus.SUCCESS, at(25, 18))),
        at(26, 12),
        Freshness.FRESH,
        "not before the slot 2026-11-25 18:00 UTC",
    ),
    (
        "success a microsecond before the older slot",
        DYNAMIC,
        history(attempt(1, RunStatus.SUCCESS, at(25, 17, 59, 59, 999_999))),
        at(26, 12),
        Freshness.STALE,
        "a whole slot passed without one",
    ),
    (
        "the morning run is late: fresh until the evening slot comes",
        DYNAMIC,
        history(attempt(1, RunStatus.SUCCESS, at(25, 18, 1)), attempt(2, RunStatus.RUNNING, at(26, 9, 1))),
        at(26, 17, 59),
        Freshness.FRESH,
        "started 2026-11-25 18:01:00 UTC",
    ),
    (
        "the morning run never refreshed it: stale once the evening slot comes",
        DYNAMIC,
        history(attempt(1, RunStatus.SUCCESS, at(25, 18, 1)), attempt(2, RunStatus.RUNNING, at(26, 9, 1))),
        at(26, 18),
        Freshness.STALE,
        "before the slots 2026-11-26 09:00 UTC and 2026-11-26 18:00 UTC",
    ),
    (
        # The 09:00 run overshot and refreshed it at 18:05; the 18:00 run skipped it (overshoot rule).
        "overshoot: a refresh started after a slot is fresh for that slot",
        DYNAMIC,
        history(
            attempt(1, RunStatus.SUCCESS, at(26, 18, 5), run_id="scheduled__09"),
            attempt(2, RunStatus.SKIPPED, at(26, 18, 30), run_id="scheduled__18"),
        ),
        at(27, 9, 30),
        Freshness.FRESH,
        "started 2026-11-26 18:05:00 UTC",
    ),
    (
        "overshoot: stale when the next evening comes without a refresh",
        DYNAMIC,
        history(
            attempt(1, RunStatus.SUCCESS, at(26, 18, 5), run_id="scheduled__09"),
            attempt(2, RunStatus.SKIPPED, at(26, 18, 30), run_id="scheduled__18"),
        ),
        at(27, 18),
        Freshness.STALE,
        "a whole slot passed",
    ),
    (
        "the last attempt failed after a success",
        DYNAMIC,
        history(MORNING_SUCCESS, attempt(2, RunStatus.FAILED, at(26, 18), "HiveQueryError: Table not found\nat ...")),
        at(26, 18, 30),
        Freshness.FAILING,
        "(scheduled__x, try 1) failed at 2026-11-26 18:20:00 UTC: HiveQueryError: Table not found; meanwhile: "
        "the last successful refresh started 2026-11-26 09:00:04 UTC",
    ),
    (
        "a guard rejected the last result",
        DYNAMIC,
        history(MORNING_SUCCESS, attempt(2, RunStatus.REJECTED, at(26, 18), "a 60.0% shrink")),
        at(26, 18, 30),
        Freshness.FAILING,
        "was rejected at 2026-11-26 18:20:00 UTC: a 60.0% shrink",
    ),
    (
        "a failure, then a success: fresh again",
        DYNAMIC,
        history(attempt(1, RunStatus.FAILED, at(26, 9), "boom"), attempt(2, RunStatus.SUCCESS, at(26, 9, 5))),
        at(26, 12),
        Freshness.FRESH,
        "started 2026-11-26 09:05:00 UTC",
    ),
    (
        "skipped and superseded attempts do not clear a failure",
        DYNAMIC,
        history(
            attempt(1, RunStatus.FAILED, at(26, 9), "boom"),
            attempt(2, RunStatus.SKIPPED, at(26, 18)),
            attempt(3, RunStatus.SUPERSEDED, at(26, 18, 1)),
        ),
        at(26, 19),
        Freshness.FAILING,
        "failed at 2026-11-26 09:20:00 UTC: boom; meanwhile: never computed",
    ),
    (
        "a retry running does not clear a failure yet",
        DYNAMIC,
        history(attempt(1, RunStatus.FAILED, at(26, 9), "boom"), attempt(2, RunStatus.RUNNING, at(26, 9, 22))),
        at(26, 9, 23),
        Freshness.FAILING,
        "boom; an attempt is running since 2026-11-26 09:22:00 UTC",
    ),
    (
        "a failure with no error text",
        DYNAMIC,
        history(attempt(1, RunStatus.FAILED, at(26, 9))),
        at(26, 12),
        Freshness.FAILING,
        "no error recorded",
    ),
    ("static: not due yet", STATIC, history(), RUN_AT - dt.timedelta(seconds=1), Freshness.FRESH, "not due yet"),
    (
        "static: within the grace",
        STATIC,
        history(attempt(1, RunStatus.RUNNING, RUN_AT)),
        RUN_AT + dt.timedelta(minutes=60),
        Freshness.FRESH,
        "within the 60 min grace; an attempt is running since 2026-11-20 09:00:00 UTC",
    ),
    (
        "static: over the grace",
        STATIC,
        history(),
        RUN_AT + dt.timedelta(minutes=61),
        Freshness.STALE,
        "missed its run_at 2026-11-20 09:00 UTC by 61 min (over the 60 min grace)",
    ),
    (
        "static: computed is frozen, fresh for good",
        STATIC,
        history(attempt(1, RunStatus.SUCCESS, RUN_AT), attempt(2, RunStatus.SKIPPED, at(26, 9))),
        at(26, 12) + dt.timedelta(days=400),
        Freshness.FRESH,
        "frozen",
    ),
    (
        "static: a forced recompute that failed",
        STATIC,
        history(attempt(1, RunStatus.SUCCESS, RUN_AT), attempt(2, RunStatus.FAILED, at(26, 9), "boom")),
        at(26, 12),
        Freshness.FAILING,
        "boom; meanwhile: static segment computed at 2026-11-20 09:00:00 UTC; frozen",
    ),
]


@pytest.mark.parametrize(
    ("segment", "summary", "now", "state", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_the_verdict_and_its_reason(
    segment: Segment, summary: RunSummary, now: dt.datetime, state: Freshness, words: str
) -> None:
    verdict = assess(segment, summary, now, OBJECTIVES)
    assert (verdict.state, verdict.flagged) == (state, state is not Freshness.FRESH)
    assert words in verdict.reason


@pytest.mark.parametrize(
    ("segment", "summary", "now", "state", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_past_objective_is_stale_data_whatever_the_last_attempt(
    segment: Segment, summary: RunSummary, now: dt.datetime, state: Freshness, words: str
) -> None:
    stale = past_objective(segment, summary, now, OBJECTIVES)
    if state is Freshness.FAILING:  # the failure aside, the data's own verdict decides (the words after "meanwhile")
        underneath = assess(segment, summary, now, OBJECTIVES).reason.partition("; meanwhile: ")[2]
        past = underneath.startswith(("never computed", "the last successful refresh started"))
        assert stale == (past and "not before" not in underneath)
    else:
        assert stale == (state is Freshness.STALE)


def test_a_failing_segment_is_past_its_objective_once_its_data_is() -> None:
    failed = history(MORNING_SUCCESS, attempt(2, RunStatus.FAILED, at(26, 18), "boom"))
    assert assess(DYNAMIC, failed, at(27, 9), OBJECTIVES).state is Freshness.FAILING
    assert not past_objective(DYNAMIC, failed, at(26, 18, 30), OBJECTIVES)  # the morning's data is in its objective
    assert past_objective(DYNAMIC, failed, at(27, 9), OBJECTIVES)  # two slots without a success


def test_the_objective_follows_the_schedules_timezone() -> None:
    berlin = Objectives(SCHEDULE, "Europe/Berlin", dt.timedelta(minutes=60))
    success = history(attempt(1, RunStatus.SUCCESS, at(25, 17, 30)))  # after Berlin's 18:00 (17:00 UTC)
    assert assess(DYNAMIC, success, at(26, 12), berlin).state is Freshness.FRESH
    assert assess(DYNAMIC, success, at(26, 12), OBJECTIVES).state is Freshness.STALE  # UTC's 18:00 came after


def test_the_static_grace_is_the_setting() -> None:
    late = RUN_AT + dt.timedelta(minutes=20)
    assert assess(STATIC, history(), late, OBJECTIVES).state is Freshness.FRESH
    strict = Objectives(SCHEDULE, "UTC", dt.timedelta(minutes=15))
    assert "by 20 min (over the 15 min grace)" in assess(STATIC, history(), late, strict).reason


def test_a_long_error_is_cut_to_its_first_line_and_300_characters() -> None:
    verdict = assess(
        DYNAMIC, history(attempt(1, RunStatus.FAILED, at(26, 9), "x" * 1000 + "\nsecond")), at(26, 12), OBJECTIVES
    )
    assert "x" * 299 + "…; meanwhile" in verdict.reason
    assert "second" not in verdict.reason


def test_the_summary_picks_the_attempts_that_decide() -> None:
    summary = summarize(
        [
            attempt(4, RunStatus.SKIPPED, at(26, 18)),
            attempt(1, RunStatus.SUCCESS, at(25, 9)),
            attempt(3, RunStatus.RUNNING, at(26, 9)),
            attempt(2, RunStatus.REJECTED, at(25, 18)),
        ]
    )
    assert (summary.last.id, summary.last_finished.id, summary.last_success.id, summary.running.id) == (4, 2, 1, 3)  # type: ignore[union-attr]
    assert summarize([]) == RunSummary()
