"""Events as values: a batch is checked whole (the first bad event names itself and the fix), then
folded into one change per user."""

from __future__ import annotations

import datetime as dt

import pytest

from funnel.core.errors import EventError
from funnel.core.user_events import Event, EventType, TagChange, net_changes, parse_events
from funnel.core.user_tags import TagRow

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def event(
    event_id: str = "o1", type_: str = "order", user_id: object = "u1", at: object = "2026-11-29T09:30:00Z"
) -> dict[str, object]:
    return {"event_id": event_id, "type": type_, "user_id": user_id, "at": at}


def test_a_good_batch_becomes_events_in_utc() -> None:
    events = parse_events([event(), event("s1", "signup", 7, "2026-11-29T10:30:00+01:00")], NOW)
    assert events == [
        Event("o1", EventType.ORDER, "u1", dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)),
        Event("s1", EventType.SIGNUP, "7", dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)),
    ]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([], "events[1] is not an object"),
        ({**event(), "amount": 3}, "events[1] has unknown field(s) amount"),
        (event(event_id=""), "events[1].event_id '' is not 1 to 128 printable ASCII characters"),
        (event(type_="refund"), "events[1].type is 'refund'. Fix: use one of 'signup', 'order', 'order_cancelled'"),
        (event(user_id=" u1"), "events[1].user_id ' u1' has leading or trailing whitespace"),
        (event(user_id=1.5), "events[1].user_id is 1.5, not a string"),
        (event(at="2026-11-29 09:30:00"), "events[1].at '2026-11-29 09:30:00' has no time zone"),
        (event(at="soon"), "events[1].at 'soon' is not an ISO-8601 time"),
        (event(at="2026-11-29T14:00:00Z"), "is in the future"),
    ],
)
def test_the_first_bad_event_names_its_place_and_the_fix(item: object, message: str) -> None:
    with pytest.raises(EventError) as refused:
        parse_events([event("ok"), item], NOW)  # type: ignore[list-item]
    assert message in str(refused.value)
    assert "Fix:" in str(refused.value)


def test_a_batch_folds_into_one_change_per_user() -> None:
    at = dt.datetime(2026, 11, 29, 9, tzinfo=dt.UTC)
    events = [
        Event("s2", EventType.SIGNUP, "u1", at + dt.timedelta(hours=1)),
        Event("s1", EventType.SIGNUP, "u1", at),
        Event("o1", EventType.ORDER, "u1", at),
        Event("o2", EventType.ORDER, "u1", at),
        Event("c1", EventType.ORDER_CANCELLED, "u1", at),
        Event("c2", EventType.ORDER_CANCELLED, "u2", at),
    ]
    changes = net_changes(events)
    assert sorted(changes) == ["u1", "u2"]
    assert (changes["u1"].first_seen, changes["u1"].order_delta, changes["u1"].events) == (at, 1, 5)
    assert (changes["u2"].first_seen, changes["u2"].order_delta, changes["u2"].events) == (None, -1, 1)


def test_a_change_applied_to_tags_gives_what_mysql_stores() -> None:
    at = dt.datetime(2026, 11, 29, 9, tzinfo=dt.UTC)
    earlier, later = at - dt.timedelta(days=1), at + dt.timedelta(days=1)
    change = TagChange(first_seen=at, order_delta=-2, events=3)
    assert change.applied_to("u1", None) == TagRow("u1", at, 0, 3)  # new: the count floored at 0
    assert change.applied_to("u1", TagRow("u1", later, 5, 4)) == TagRow("u1", at, 3, 7)
    assert change.applied_to("u1", TagRow("u1", earlier, 1, 4)) == TagRow("u1", earlier, 0, 7)
    assert TagChange(order_delta=1, events=1).applied_to("u1", TagRow("u1", earlier, 1, 0)) == TagRow(
        "u1", earlier, 2, 1
    )
