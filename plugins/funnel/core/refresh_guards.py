"""When a refresh must not run, or must not swap: the scheduling and guard rules, pure.

- Overshoot (from the original worker): in the dynamic DAG, a segment whose last
  successful refresh by another run started after this run's slot time was already
  refreshed for this slot by an earlier run that overshot into it, so this run skips it.
  (A rerun of the same Airflow run, e.g. a cleared task, is not skipped.)
- Static segments are frozen once they have a version.
- A result that is empty, or shrinks by more than ``max_shrink_pct`` against the live
  version, is refused.
- A result holding more than ``max_share_of_users`` of all users with tags (an everyone-segment:
  a lost WHERE, a join gone wrong) is refused, at a refresh and when a definition is saved.
``force`` (trigger conf ``{"force": true}``) overrides all of them.
"""

from __future__ import annotations

import datetime as dt

from funnel.core.segment import Kind


def skip_reason(
    segment_id: str,
    kind: Kind,
    slot_time: dt.datetime,
    last_success_started_at: dt.datetime | None,
    live_version: int | None,
    force: bool,
) -> str | None:
    """Why this run should leave the segment alone, or None to refresh it."""
    if force:
        return None
    if kind is Kind.STATIC and live_version is not None:
        return (
            f"static segment {segment_id!r} is frozen at version {live_version}; "
            'trigger with conf {"force": true} to compute it again'
        )
    if kind.on_slots and last_success_started_at is not None and last_success_started_at > slot_time:
        return (
            f"segment {segment_id!r} was already refreshed by a run that started at "
            f"{last_success_started_at.isoformat()}, after this run's slot {slot_time.isoformat()} "
            "(an earlier run overshot into this slot)"
        )
    return None


def guard_violation(
    segment_id: str,
    new_size: int,
    live_size: int | None,
    max_shrink_pct: float,
    force: bool,
    kind: Kind = Kind.DYNAMIC,
) -> str | None:
    """Why a computed result must not go live, or None when it may."""
    if force:
        return None
    shown_live = "none" if live_size is None else f"{live_size:,}"
    if new_size == 0:
        if kind is Kind.COMPOSITE:
            return (
                f"segment {segment_id!r}: the set expression gave no users (live size {shown_live}); nothing was "
                "swapped. Fix: check the operands' sizes (the run history's inputs name the versions used) and the "
                'rule, or trigger with conf {"force": true} to accept it'
            )
        return (
            f"segment {segment_id!r}: the query returned no users (live size {shown_live}); nothing was swapped. "
            'Fix: check the query and its source tables, or trigger with conf {"force": true} to accept it'
        )
    if live_size and new_size < live_size * (1 - max_shrink_pct / 100):
        shrink = 100 * (live_size - new_size) / live_size
        return (
            f"segment {segment_id!r}: the new result has {new_size:,} users against {live_size:,} live, "
            f"a {shrink:.1f}% shrink over the {max_shrink_pct:g}% limit; nothing was swapped. Fix: check the "
            f"{'operands' if kind is Kind.COMPOSITE else 'query'}, raise max_shrink_pct for this segment, or "
            'trigger with conf {"force": true} to accept it'
        )
    return None


def share_violation(size: int, users_with_tags: int | None, max_share: float, force: bool) -> str | None:
    """Why a result of ``size`` users is too big, in words that follow "it" (``holds ...``):
    more than ``max_share`` (0..1) of the ``users_with_tags`` (None or 0: no tags loaded,
    nothing to compare with); None when it is not."""
    if force or not users_with_tags or max_share >= 1 or size <= users_with_tags * max_share:
        return None
    return (
        f"holds {size:,} users, {100 * size / users_with_tags:.1f}% of the {users_with_tags:,} users with tags, "
        f"over the max_share_of_users limit of {100 * max_share:g}%"
    )
