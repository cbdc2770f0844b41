"""Which events move a user across a proxy rule (pure)."""

from __future__ import annotations

import datetime as dt

from funnel.core.proxy_changes import ProxyChange, crossings, from_events_only
from funnel.core.proxy_matching import Tags
from funnel.core.proxy_rule import parse_rule
from funnel.core.states import ChangeType
from funnel.core.user_events import Event, EventType

T0 = dt.datetime(2026, 11, 29, 9, tzinfo=dt.UTC)
LOYAL = parse_rule("loyal", '{"tag": "order_count", "op": ">=", "value": 3}', 30)
NEW = parse_rule("new", '{"tag": "new_user", "days": 30}', 30)


def ev(event_id: str, kind: EventType, user: str, minutes: int) -> Event:
    return Event(event_id, kind, user, T0 + dt.timedelta(minutes=minutes))


def test_the_order_that_makes_the_rule_true_is_an_entered_at_its_time() -> None:
    events = [
        ev("o2", EventType.ORDER, "u1", 2),
        ev("o1", EventType.ORDER, "u1", 1),
        ev("o3", EventType.ORDER, "u1", 3),
    ]
    found = crossings({"loyal": LOYAL}, {"u1": Tags(None, 0)}, events)
    assert found == [ProxyChange("loyal", "u1", T0 + dt.timedelta(minutes=3), ChangeType.ENTERED, "o3")]


def test_a_cancellation_back_below_the_rule_is_an_exited() -> None:
    found = crossings({"loyal": LOYAL}, {"u1": Tags(None, 3)}, [ev("c1", EventType.ORDER_CANCELLED, "u1", 5)])
    assert [(c.change, c.event_id) for c in found] == [(ChangeType.EXITED, "c1")]


def test_a_user_without_tags_enters_when_events_carry_them_across() -> None:
    events = [ev(f"o{i}", EventType.ORDER, "new-user", i) for i in range(4)]
    assert [c.event_id for c in crossings({"loyal": LOYAL}, {}, events)] == ["o2"]


def test_a_sign_up_enters_new_user_but_time_alone_records_nothing() -> None:
    signup = ev("s1", EventType.SIGNUP, "u1", 0)
    assert [(c.segment_id, c.change) for c in crossings({"new": NEW}, {}, [signup])] == [("new", ChangeType.ENTERED)]
    # signed up 40 days before the order: not new at the order's time, before or after it
    old = Tags(T0 - dt.timedelta(days=40), 0)
    assert crossings({"new": NEW}, {"u1": old}, [ev("o1", EventType.ORDER, "u1", 0)]) == []


def test_counts_follow_the_stores_net_change_floored_once() -> None:
    # a cancel of an order the stores never saw, then 3 orders: the stores count 0 - 1 + 3 = 2, not 3
    events = [
        ev("c1", EventType.ORDER_CANCELLED, "u1", 1),
        *(ev(f"o{i}", EventType.ORDER, "u1", 2 + i) for i in range(3)),
    ]
    assert crossings({"loyal": LOYAL}, {"u1": Tags(None, 0)}, events) == []


def test_only_order_count_rules_are_told_from_events() -> None:
    assert from_events_only(LOYAL)
    assert from_events_only(parse_rule("x", '{"not": {"tag": "order_count", "op": "<", "value": 2}}', 30))
    assert not from_events_only(NEW)
    assert not from_events_only(
        parse_rule("x", '{"all": [{"tag": "old_user"}, {"tag": "order_count", "op": ">=", "value": 1}]}', 30)
    )
