"""Real-time events that move users' tags: validated values, and their effect. Pure.

``POST /v1/events`` takes a batch of ``{event_id, type, user_id, at}``. Each event is
applied once: ``event_id`` is unique, so a retried event never counts an order twice.

Events and the warehouse baseline meet at the load's ``as_of`` (its run's data interval
end): an event with ``at`` after it is applied on top of the baseline (also when a new
load swaps in: it is replayed on the new baseline); an event at or before it is assumed
to be in the warehouse already, and is recorded but not applied.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from funnel.core import ids
from funnel.core.errors import EventError, TimeRefused
from funnel.core.user_tags import TagRow
from funnel.core.utc_time import ISO_EXAMPLE, Naive, parse_utc


class EventType(enum.StrEnum):
    """What happened to a user (``funnel_user_events.type``, a MySQL ENUM of the same values)."""

    SIGNUP = "signup"  # first_seen becomes ``at`` (or stays, if earlier)
    ORDER = "order"  # order_count + 1
    ORDER_CANCELLED = "order_cancelled"  # order_count - 1, never below 0


@dataclass(frozen=True)
class Event:
    event_id: str
    type: EventType
    user_id: str
    at: dt.datetime  # aware, UTC


#: How far in the future an event's ``at`` may be (clock skew between services).
FUTURE_SLACK = dt.timedelta(hours=1)


def parse_events(items: Iterable[Mapping[str, Any]], now: dt.datetime) -> list[Event]:
    """Validate a batch; the first bad event raises ``EventError`` and nothing is recorded."""
    events = []
    for index, item in enumerate(items):
        where = f"events[{index}]"
        if not isinstance(item, Mapping):
            raise EventError(f"{where} is not an object. Fix: send {{event_id, type, user_id, at}}")
        stray = sorted(set(item) - {"event_id", "type", "user_id", "at"})
        if stray:
            raise EventError(
                f"{where} has unknown field(s) {', '.join(stray)}. Fix: send only event_id, type, user_id, at"
            )
        events.append(
            Event(
                event_id=_event_id(where, item.get("event_id")),
                type=_type(where, item.get("type")),
                user_id=_user_id(where, item.get("user_id")),
                at=_at(where, item.get("at"), now),
            )
        )
    return events


def _event_id(where: str, raw: object) -> str:
    fix = f"send a unique id of 1 to {ids.EVENT_ID_MAX_LENGTH} printable ASCII characters (e.g. the order id)"
    if not isinstance(raw, str):
        raise EventError(f"{where}.event_id is {_shown(raw)}, not a string. Fix: {fix}")
    if not raw or len(raw) > ids.EVENT_ID_MAX_LENGTH or not (raw.isascii() and raw.isprintable()):
        raise EventError(
            f"{where}.event_id {raw[:80]!r} is not 1 to {ids.EVENT_ID_MAX_LENGTH} printable ASCII characters. "
            f"Fix: {fix}"
        )
    return raw


def _type(where: str, raw: object) -> EventType:
    try:
        return EventType(raw)
    except ValueError:
        allowed = ", ".join(repr(t.value) for t in EventType)
        raise EventError(f"{where}.type is {_shown(raw)}. Fix: use one of {allowed}") from None


def _user_id(where: str, raw: object) -> str:
    raw = ids.json_number_as_text(raw)
    if not isinstance(raw, str):
        raise EventError(f"{where}.user_id is {_shown(raw)}, not a string. Fix: send the user id as a string")
    problem = ids.user_id_problem(raw)
    if problem:
        raise EventError(
            f"{where}.user_id {raw[:80]!r} {problem}. Fix: send 1 to {ids.USER_ID_MAX_LENGTH} printable ASCII "
            "characters, without surrounding spaces"
        )
    return raw


def _at(where: str, raw: object, now: dt.datetime) -> dt.datetime:
    fix = f"send an ISO-8601 time with its offset, e.g. '{ISO_EXAMPLE}'"
    if not isinstance(raw, str):
        raise EventError(f"{where}.at is {_shown(raw)}, not a time. Fix: {fix}")
    try:
        value = parse_utc(raw, Naive.REFUSE)
    except TimeRefused as refused:
        raise EventError(f"{where}.at {raw[:80]!r} {refused.problem}. Fix: {fix}") from None
    if value > now + FUTURE_SLACK:
        raise EventError(f"{where}.at {raw!r} is in the future. Fix: send the time the event happened")
    return value


def _shown(raw: object) -> str:
    return "missing" if raw is None else repr(raw)[:80]


@dataclass
class TagChange:
    """The net effect of a batch's events on one user: earliest sign-up, orders minus cancellations."""

    first_seen: dt.datetime | None = None
    order_delta: int = 0
    events: int = 0

    def applied_to(self, user_id: str, before: TagRow | None) -> TagRow:
        """The user's tags after this change (``before``: none yet), as MySQL's upsert makes them
        (``funnel.storage.mysql.event_ledger``): the earlier first_seen, the count + delta floored
        at 0, ``seq`` + events."""
        if before is None:
            return TagRow(user_id, self.first_seen, max(self.order_delta, 0), self.events)
        first_seen = before.first_seen if self.first_seen is None else self.first_seen
        if before.first_seen is not None and self.first_seen is not None:
            first_seen = min(before.first_seen, self.first_seen)
        return TagRow(user_id, first_seen, max(before.order_count + self.order_delta, 0), before.seq + self.events)


def net_changes(events: Iterable[Event]) -> dict[str, TagChange]:
    """Fold events into one change per user (applied in one statement per batch)."""
    changes: dict[str, TagChange] = {}
    for event in events:
        change = changes.setdefault(event.user_id, TagChange())
        change.events += 1
        if event.type is EventType.SIGNUP:
            change.first_seen = event.at if change.first_seen is None else min(change.first_seen, event.at)
        elif event.type is EventType.ORDER:
            change.order_delta += 1
        else:
            change.order_delta -= 1
    return changes
