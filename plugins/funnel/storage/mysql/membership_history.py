"""The membership history: was a user in a segment at a time, and when they entered and left.

Read-only, over a DB-API (mysqlclient) connection; the API (``?at=``, ``/v1/users/{id}/history``)
and the CLI (``history``) both call these functions.

Stored segments (static, dynamic, composite): MySQL keeps every version promoted within the
last ``change_history_days`` days, and the one live at that horizon, with their member spans
(``funnel_memberships``) and change log (``funnel_segment_changes``): beyond the
``keep_versions`` pageable ones they are ``archived`` (``MySqlSegmentStore.prune``). The
membership at a time is that of the version live then (the largest ``promoted_at`` at or
before it): the span covering it. A stay's times are its versions' ``promoted_at``.

Proxy segments have no versions: ``funnel_proxy_changes`` logs each event that moved a user
across a rule, at the event's time (``funnel.core.proxy_changes``), kept ``change_history_days``
days. Membership at a time is told from it only for rules on ``order_count`` alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.errors import HistoryGone, NotReconstructable
from funnel.core.proxy_changes import from_events_only
from funnel.core.proxy_matching import Tags, matches
from funnel.core.proxy_rule import Rule, to_dict
from funnel.core.states import LOGGED_STATES, ChangeType
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.sql_params import marks

#: ``IN`` these marks: the version states whose history is kept (``LOGGED_STATES``: live, retired,
#: archived), passed as parameters (``*LOGGED_STATES``) where the marks stand.
_LOGGED_MARKS = f"({marks(LOGGED_STATES)})"


@dataclass(frozen=True)
class AtAnswer:
    """Membership at a past time: of which version (None: before the first, or a proxy segment)."""

    member: bool
    version: int | None
    note: str | None = None


@dataclass(frozen=True)
class Stay:
    """A user's stay in a stored segment: from the version that took them in to the one that let
    them go (None: still a member). ``entered_at`` None: before the history's horizon."""

    segment_id: str
    entered_at: dt.datetime | None
    entered_version: int
    exited_at: dt.datetime | None
    exited_version: int | None


@dataclass(frozen=True)
class ProxyEntry:
    """A user crossing a proxy segment's rule: when, which way, by which event."""

    segment_id: str
    at: dt.datetime
    change: ChangeType
    event_id: str


@dataclass(frozen=True)
class UserHistory:
    """What the history holds for a user, at most ``limit`` stays and ``limit`` proxy changes."""

    user_id: str
    horizon: dt.datetime
    change_history_days: int
    limit: int
    truncated: bool
    stays: list[Stay]
    proxy_changes: list[ProxyEntry]


def horizon(now: dt.datetime, days: int) -> dt.datetime:
    """The earliest time the history answers for: ``days`` days before ``now``."""
    return now - dt.timedelta(days=days)


def _gone(segment_id: str, at: dt.datetime, since: dt.datetime, days: int, why: str) -> HistoryGone:
    return HistoryGone(
        f"segment {segment_id!r}: {at.isoformat()} is before the membership history's horizon, "
        f"{since.isoformat()} ({why}; the setting change_history_days is {days}). "
        "Fix: ask about a time at or after the horizon",
        since,
    )


def membership_at(
    conn: Any, segment_id: str, user_id: str, at: dt.datetime, now: dt.datetime, days: int
) -> AtAnswer | None:
    """Whether ``user_id`` was a member of a stored segment at ``at``; None: never computed.

    Raises ``HistoryGone`` when ``at`` is older than the horizon: ``days`` before ``now``, or the
    promotion of the oldest version kept when older ones are gone, whichever is later.
    """
    floor = horizon(now, days)
    if at < floor:
        raise _gone(segment_id, at, floor, days, f"history is kept {days} days")
    cur = conn.cursor()
    try:
        cur.execute(
            f"SELECT version FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND state IN {_LOGGED_MARKS}"
            " AND promoted_at <= %s ORDER BY version DESC LIMIT 1",
            (segment_id, *LOGGED_STATES, to_naive_utc(at)),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                f"SELECT version, promoted_at, logged FROM {layout.VERSIONS_TABLE}"
                f" WHERE segment_id = %s AND state IN {_LOGGED_MARKS} ORDER BY version LIMIT 1",
                (segment_id, *LOGGED_STATES),
            )
            oldest = cur.fetchone()
            if oldest is None:
                return None
            version, promoted_at, logged = int(oldest[0]), from_naive_utc(oldest[1]), bool(oldest[2])
            if logged:  # older versions were pruned: the history starts at this one
                raise _gone(segment_id, at, promoted_at, days, f"the oldest version kept, {version}, went live then")
            return AtAnswer(
                False, None, f"before the segment's first version ({version}, live since {promoted_at.isoformat()})"
            )
        version = int(row[0])
        cur.execute(
            f"SELECT 1 FROM {layout.MEMBERSHIPS_TABLE} WHERE segment_id = %s AND user_id = %s"
            " AND entered <= %s AND (exited IS NULL OR exited > %s) LIMIT 1",
            (segment_id, user_id, version, version),
        )
        return AtAnswer(cur.fetchone() is not None, version)
    finally:
        conn.commit()


def proxy_membership_at(
    conn: Any,
    segment_id: str,
    rule: Rule,
    user_id: str,
    at: dt.datetime,
    now: dt.datetime,
    days: int,
    current: Tags | None,
) -> AtAnswer:
    """Whether ``user_id`` was in a proxy segment at ``at``, told from its change log.

    The first change after ``at`` says the state before it (an ``entered`` means they were out);
    with none, the state is today's (``current``: the user's live tags). Only for rules on
    ``order_count`` alone (``NotReconstructable`` otherwise): time moves users across
    ``new_user`` / ``old_user`` without an event, and nothing logs that.
    """
    if not from_events_only(rule):
        raise NotReconstructable(
            f"segment {segment_id!r} is a proxy segment whose rule {to_dict(rule)} depends on time (new_user or "
            "old_user): users cross it as time passes, without an event, and that is not logged, so its past "
            "membership cannot be told. Fix: ask without ?at= for the membership now; only order_count rules "
            "answer ?at="
        )
    floor = horizon(now, days)
    if at < floor:
        raise _gone(segment_id, at, floor, days, f"proxy changes are kept {days} days")
    cur = conn.cursor()
    cur.execute(
        f"SELECT change_type FROM {layout.PROXY_CHANGES_TABLE} WHERE user_id = %s AND at > %s AND segment_id = %s"
        " ORDER BY at, id LIMIT 1",
        (user_id, to_naive_utc(at), segment_id),
    )
    row = cur.fetchone()
    conn.commit()
    if row is not None:
        return AtAnswer(ChangeType(row[0]) is ChangeType.EXITED, None)
    return AtAnswer(matches(rule, current, now), None)


def user_history(
    conn: Any,
    user_id: str,
    *,
    now: dt.datetime,
    days: int,
    limit: int,
    segment_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> UserHistory:
    """The user's stays in stored segments and crossings of proxy segments, by index on the user.

    Stays are built from the member spans (a first version's stay has no change-log row), in
    (segment, entered) order; ``since`` / ``until`` keep the stays overlapping that window and
    the proxy changes inside it. At most ``limit`` of each; ``truncated`` says more exist.
    """
    where, params = ["m.user_id = %s"], [user_id]
    if segment_id is not None:
        where.append("m.segment_id = %s")
        params.append(segment_id)
    if until is not None:
        where.append("(ve.promoted_at IS NULL OR ve.promoted_at <= %s)")
        params.append(to_naive_utc(until))
    if since is not None:
        where.append("(vx.promoted_at IS NULL OR vx.promoted_at >= %s)")
        params.append(to_naive_utc(since))
    cur = conn.cursor()
    try:
        # a span entering in a version being written (or never made live) is no stay yet; a span
        # whose entering version was pruned began before the horizon (its time unknown)
        cur.execute(
            "SELECT m.segment_id, m.entered, ve.promoted_at, vx.version, vx.promoted_at"
            f" FROM {layout.MEMBERSHIPS_TABLE} m"
            f" LEFT JOIN {layout.VERSIONS_TABLE} ve ON ve.segment_id = m.segment_id AND ve.version = m.entered"
            f" LEFT JOIN {layout.VERSIONS_TABLE} vx ON vx.segment_id = m.segment_id AND vx.version = m.exited"
            f" AND vx.state IN {_LOGGED_MARKS}"
            f" WHERE {' AND '.join(where)} AND (ve.state IS NULL OR ve.state IN {_LOGGED_MARKS})"
            " ORDER BY m.segment_id, m.entered LIMIT %s",
            (*LOGGED_STATES, *params, *LOGGED_STATES, limit + 1),
        )
        stays = [_stay(row) for row in cur.fetchall()]
        where, params = ["user_id = %s"], [user_id]
        if segment_id is not None:
            where.append("segment_id = %s")
            params.append(segment_id)
        if since is not None:
            where.append("at >= %s")
            params.append(to_naive_utc(since))
        if until is not None:
            where.append("at <= %s")
            params.append(to_naive_utc(until))
        cur.execute(
            f"SELECT segment_id, at, change_type, event_id FROM {layout.PROXY_CHANGES_TABLE}"
            f" WHERE {' AND '.join(where)} ORDER BY at, id LIMIT %s",
            (*params, limit + 1),
        )
        changes = [ProxyEntry(sid, from_naive_utc(at), ChangeType(kind), event) for sid, at, kind, event in cur]
    finally:
        conn.commit()
    return UserHistory(
        user_id=user_id,
        horizon=horizon(now, days),
        change_history_days=days,
        limit=limit,
        truncated=len(stays) > limit or len(changes) > limit,
        stays=stays[:limit],
        proxy_changes=changes[:limit],
    )


def _stay(row: Sequence[Any]) -> Stay:
    segment_id, entered, entered_at, exited, exited_at = row
    return Stay(
        segment_id,
        None if entered_at is None else from_naive_utc(entered_at),
        int(entered),
        None if exited_at is None else from_naive_utc(exited_at),
        None if exited is None else int(exited),
    )
