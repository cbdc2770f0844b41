"""The scheduling and guard rules, pure: when to skip, when to refuse a result."""

from __future__ import annotations

import datetime as dt

from funnel.core.refresh_guards import guard_violation, skip_reason
from funnel.core.segment import Kind

SLOT = dt.datetime(2026, 11, 26, 18, tzinfo=dt.UTC)


def test_dynamic_segment_refreshed_after_the_slot_is_skipped() -> None:
    after = SLOT + dt.timedelta(minutes=5)
    reason = skip_reason("s", Kind.DYNAMIC, SLOT, after, live_version=3, force=False)
    assert reason is not None
    assert "after this run's slot 2026-11-26T18:00:00+00:00" in reason
    assert skip_reason("s", Kind.DYNAMIC, SLOT, SLOT - dt.timedelta(minutes=5), 3, force=False) is None
    assert skip_reason("s", Kind.DYNAMIC, SLOT, None, None, force=False) is None
    assert skip_reason("s", Kind.DYNAMIC, SLOT, after, 3, force=True) is None


def test_static_segment_with_a_version_is_frozen() -> None:
    assert "frozen at version 1" in (skip_reason("s", Kind.STATIC, SLOT, None, 1, force=False) or "")
    assert skip_reason("s", Kind.STATIC, SLOT, None, None, force=False) is None
    assert skip_reason("s", Kind.STATIC, SLOT, None, 1, force=True) is None


def test_guard_allows_a_shrink_up_to_the_limit_and_refuses_beyond() -> None:
    assert guard_violation("s", 50, 100, 50.0, force=False) is None
    refused = guard_violation("s", 49, 100, 50.0, force=False)
    assert refused is not None
    assert "49 users against 100 live, a 51.0% shrink over the 50% limit" in refused
    assert guard_violation("s", 49, 100, 50.0, force=True) is None
    assert guard_violation("s", 1, 100, 100.0, force=False) is None


def test_guard_refuses_empty_results_even_for_a_new_segment() -> None:
    assert "returned no users (live size none)" in (guard_violation("s", 0, None, 50.0, force=False) or "")
    assert guard_violation("s", 0, None, 50.0, force=True) is None
    assert guard_violation("s", 5, 0, 50.0, force=False) is None


def test_a_composite_refused_by_a_guard_is_told_to_check_its_operands() -> None:
    empty = guard_violation("c", 0, 10, 50.0, force=False, kind=Kind.COMPOSITE) or ""
    assert "the set expression gave no users (live size 10)" in empty
    assert "operands" in empty
    shrunk = guard_violation("c", 1, 10, 50.0, force=False, kind=Kind.COMPOSITE) or ""
    assert "Fix: check the operands, raise max_shrink_pct" in shrunk


def test_share_violation_names_both_numbers_and_the_limit() -> None:
    from funnel.core.refresh_guards import share_violation

    assert share_violation(95, 100, 0.9, force=False) == (
        "holds 95 users, 95.0% of the 100 users with tags, over the max_share_of_users limit of 90%"
    )
    assert share_violation(90, 100, 0.9, force=False) is None
    assert share_violation(95, 100, 0.9, force=True) is None
    assert share_violation(95, None, 0.9, force=False) is None  # no tags loaded
    assert share_violation(95, 100, 1.0, force=False) is None  # no limit
