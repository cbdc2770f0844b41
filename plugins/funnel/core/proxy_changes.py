"""Proxy segments' changes: which events moved a user across a rule. Pure.

A proxy segment has no versions; its members are whoever its rule holds for now. What it can
log is the moment an event moves a user across the rule: an order that makes
``order_count >= 3`` true is an ``entered`` at the order's time, the cancellation that makes
it false again an ``exited``. ``crossings`` finds them: the batch's events are applied to each
user's tags one at a time, in ``at`` order, and every rule is evaluated just before and just
after each event, both at the event's time. So only the event's own effect counts: time alone
moving a user across ``new_user`` / ``old_user`` (a sign-up growing old) is never a change.

Order counts follow the stores' rule for a batch (orders minus cancellations, floored at 0
once, at the end): a cancellation the batch's own later order makes up for changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from funnel.core.proxy_matching import Tags, leaves, matches
from funnel.core.proxy_rule import OrderCount, Rule
from funnel.core.states import ChangeType
from funnel.core.user_events import Event, EventType


@dataclass(frozen=True)
class ProxyChange:
    """A user crossing a proxy segment's rule, by an event (a ``funnel_proxy_changes`` row)."""

    segment_id: str
    user_id: str
    at: dt.datetime  # the event's time (aware, UTC)
    change: ChangeType
    event_id: str


def crossings(rules: Mapping[str, Rule], before: Mapping[str, Tags], events: Sequence[Event]) -> list[ProxyChange]:
    """The rule crossings ``events`` cause, in event time order.

    ``rules``: the enabled proxy segments' rules by segment id; ``before``: the tags of the
    events' users before the batch (a user absent has none: in no proxy segment);
    ``events``: the batch's events that are applied (new, after the baseline).
    """
    if not rules or not events:
        return []
    first_seen: dict[str, dt.datetime | None] = {}
    orders: dict[str, int] = {}  # unfloored running count, as the batch's net change is
    known: set[str] = set()
    for user_id, tags in before.items():
        first_seen[user_id], orders[user_id] = tags.first_seen, tags.order_count
        known.add(user_id)
    found: list[ProxyChange] = []
    ordered = sorted(events, key=lambda e: e.at)  # stable: the batch's order among equal times
    for event in ordered:
        user = event.user_id
        prior = _tags(user, known, first_seen, orders)
        if event.type is EventType.SIGNUP:
            current = first_seen.get(user)
            first_seen[user] = event.at if current is None else min(current, event.at)
        else:
            orders[user] = orders.get(user, 0) + (1 if event.type is EventType.ORDER else -1)
        known.add(user)
        after = _tags(user, known, first_seen, orders)
        for segment_id in sorted(rules):
            was, now = matches(rules[segment_id], prior, event.at), matches(rules[segment_id], after, event.at)
            if was != now:
                change = ChangeType.ENTERED if now else ChangeType.EXITED
                found.append(ProxyChange(segment_id, user, event.at, change, event.event_id))
    return found


def _tags(user: str, known: set[str], first_seen: dict[str, dt.datetime | None], orders: dict[str, int]) -> Tags | None:
    if user not in known:
        return None
    return Tags(first_seen.get(user), max(orders.get(user, 0), 0))


def from_events_only(rule: Rule) -> bool:
    """Whether only events move users across the rule (every condition is on ``order_count``),
    so its change log tells its past membership; ``new_user`` / ``old_user`` drift with time."""
    return all(isinstance(leaf, OrderCount) for leaf in leaves(rule))
