"""The membership history against a real MySQL: membership at a time, its horizons, and a
user's stays built from the member spans."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from funnel.core.errors import HistoryGone
from funnel.core.run_info import RunInfo
from funnel.storage.mysql.membership_history import Stay, membership_at, user_history
from funnel.storage.mysql.segment_versions import MySqlSegmentStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
DAYS = 90


def hours(n: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=n)


def run_for(n: int) -> RunInfo:
    return RunInfo(
        "funnel_dynamic_segments", f"scheduled__{n}", dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n)
    )


def build(store: MySqlSegmentStore, segment_id: str, versions: list[tuple[list[str], dt.datetime]]) -> None:
    """Promote each member list at its time, as refreshes would (the first one unlogged)."""
    before: set[str] = set()
    for n, (members, promoted_at) in enumerate(versions):
        logged = n > 0
        version = store.begin_version(segment_id, run_for(n), promoted_at, logged=logged)
        store.add_entered(segment_id, version, sorted(set(members) - before), logged=logged)
        if logged:
            store.add_exited(segment_id, version, sorted(before - set(members)))
            store.close_exited(segment_id, version)
        assert store.promote(segment_id, version, run_for(n), len(members), promoted_at)[0]
        before = set(members)


def at(conn: Any, user: str, when: dt.datetime, segment_id: str = "s") -> tuple[bool, int | None]:
    answer = membership_at(conn, segment_id, user, when, NOW, DAYS)
    assert answer is not None
    return answer.member, answer.version


def test_membership_at_a_time_is_the_version_live_then(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    build(store, "s", [(["1", "2"], hours(30)), (["2", "3"], hours(20)), (["1"], hours(10))])
    assert at(mysql_conn, "1", hours(25)) == (True, 1)
    assert at(mysql_conn, "1", hours(15)) == (False, 2)
    assert at(mysql_conn, "3", hours(15)) == (True, 2)
    assert at(mysql_conn, "1", hours(10)) == (True, 3)  # at the promotion itself: the new version
    assert at(mysql_conn, "3", hours(1)) == (False, 3)
    before = membership_at(mysql_conn, "s", "1", hours(40), NOW, DAYS)
    assert before is not None
    assert (before.member, before.version) == (False, None)
    assert before.note is not None
    assert "before the segment's first version (1, live since" in before.note


def test_a_segment_never_computed_has_no_answer(mysql_conn: Any) -> None:
    assert membership_at(mysql_conn, "never", "1", hours(1), NOW, DAYS) is None


def test_a_time_before_the_horizon_is_gone_and_the_error_names_it(mysql_conn: Any) -> None:
    build(MySqlSegmentStore(mysql_conn), "s", [(["1"], hours(24 * 100))])
    with pytest.raises(HistoryGone) as gone:
        membership_at(mysql_conn, "s", "1", hours(24 * 95), NOW, DAYS)
    assert str(gone.value) == (
        "segment 's': 2026-08-26T12:00:00+00:00 is before the membership history's horizon, "
        "2026-08-31T12:00:00+00:00 (history is kept 90 days; the setting change_history_days is 90). "
        "Fix: ask about a time at or after the horizon"
    )
    assert at(mysql_conn, "1", hours(24 * 89)) == (True, 1)  # live since 100 days ago: within the horizon


def test_after_pruning_the_oldest_version_kept_is_the_horizon(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    build(store, "s", [([str(n)], hours(50 - 10 * n)) for n in range(5)])  # versions 1..5, 10 hours apart
    store.prune("s", keep=3, history_days=1, now=NOW)  # history since 24 hours ago: version 3 was live then
    assert at(mysql_conn, "2", hours(24)) == (True, 3)
    with pytest.raises(HistoryGone, match=r"the oldest version kept, 3, went live then; the setting"):
        membership_at(mysql_conn, "s", "1", hours(31), NOW, DAYS)  # within 90 days, but version 2 is gone


def test_a_users_stays_come_from_the_spans_first_version_included(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    build(store, "a", [(["1"], hours(30)), (["2"], hours(20)), (["1"], hours(10))])
    build(store, "b", [(["1", "2"], hours(25))])
    store.begin_version("b", run_for(9), NOW, logged=True)  # a refresh being written: not history yet
    store.add_entered("b", 2, ["9"], logged=True)
    history = user_history(mysql_conn, "1", now=NOW, days=DAYS, limit=10)
    assert history.stays == [
        Stay("a", hours(30), 1, hours(20), 2),
        Stay("a", hours(10), 3, None, None),
        Stay("b", hours(25), 1, None, None),
    ]
    assert not history.truncated
    assert history.horizon == NOW - dt.timedelta(days=DAYS)
    assert user_history(mysql_conn, "9", now=NOW, days=DAYS, limit=10).stays == []
    # since / until keep the stays overlapping the window; segment narrows to one
    window = user_history(mysql_conn, "1", now=NOW, days=DAYS, limit=10, since=hours(15), until=hours(12))
    assert [(s.segment_id, s.entered_version) for s in window.stays] == [("b", 1)]
    assert [
        s.entered_version for s in user_history(mysql_conn, "1", now=NOW, days=DAYS, limit=10, segment_id="a").stays
    ] == [1, 3]
    capped = user_history(mysql_conn, "1", now=NOW, days=DAYS, limit=2)
    assert capped.truncated
    assert len(capped.stays) == 2
