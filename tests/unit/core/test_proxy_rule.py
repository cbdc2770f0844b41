"""Proxy segment rules, pure: what parses (and how it is refused), who matches, which score ranges."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json

import pytest

from funnel.core.errors import SegmentError
from funnel.core.proxy_matching import Tags, cutoff, is_leaf, leaf_ranges, leaves, matches
from funnel.core.proxy_rule import (
    MAX_COUNT,
    MAX_DAYS,
    MAX_DEPTH,
    OPS,
    AllOf,
    AnyOf,
    NewUser,
    Not,
    OldUser,
    OrderCount,
    Rule,
    canonical_json,
    parse_rule,
    to_dict,
)
from funnel.core.utc_time import epoch_seconds

NOW = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
US = dt.timedelta(microseconds=1)


def parse(raw: object, default_days: int = 30) -> Rule:
    return parse_rule("vips", raw, default_days)


def tags(first_seen: dt.datetime | None = None, order_count: int = 0) -> Tags:
    return Tags(first_seen, order_count)


# -- refused rules ------------------------------------------------------------------------

OC = '"tag": "order_count"'

MALFORMED = [
    # (raw rule, words of the problem, naming where; words of the fix)
    ('{"tag": "new_user",', "is not valid JSON (Expecting property name", "write a rule object"),
    (None, "is empty", "a proxy segment needs a rule"),
    ("  ", "is empty", "a proxy segment needs a rule"),
    (b'{"tag": "new_\xff"}', "is not UTF-8 text", "store the rule as a JSON object"),
    ("[1, 2]", "has the array [1, 2] at the top level, where a rule object belongs", "write a rule object"),
    ('"new_user"', 'has the text "new_user" at the top level', '{"tag": "order_count", "op": ">=", "value": 3}'),
    ("{}", "has an empty object at the top level", "write a rule object"),
    ({"any": [3]}, "has the number 3 at any[0], where a rule object belongs", "write a rule object"),
    (
        '{"all": [{"tag": "spend"}]}',
        "has unknown tag 'spend' at all[0]",
        "use one of 'new_user', 'old_user', 'order_count', e.g.",
    ),
    ({"tag": 3}, "has the number 3 as its tag at the top level, not a tag name", "use one of 'new_user', 'old_user'"),
    ({"tag": "New_User"}, "has unknown tag 'New_User' at the top level", "use one of 'new_user'"),
    ({"days": 3}, "has no 'tag' at the top level (its keys: 'days')", "write a rule object"),
    ({"any": [{"op": ">=", "value": 3}]}, "has no 'tag' at any[0] (its keys: 'op', 'value')", "write a rule object"),
    ({"new_user": {"days": 3}}, "uses the tag 'new_user' as a key at the top level", '{"tag": "new_user", "days": 30}'),
    ({"tag": "all", "days": 3}, "has the text \"all\" as a tag at the top level, but 'all' is a combinator", '{"all":'),
    (
        {"tag": "new_user", "all": [{"tag": "old_user"}]},
        "has both 'tag' and 'all' at the top level",
        "put the tag inside the list",
    ),
    ('{"tag": "new_user", "tag": "old_user"}', "has the key 'tag' twice at the top level", "write each key once"),
    (
        '{"any": [{"tag": "order_count", "op": ">=", "op": "<", "value": 3}]}',
        "has the key 'op' twice at any[0]",
        "write each key once",
    ),
    # order_count: op
    ({"tag": "order_count", "value": 3}, "has no 'op' at the top level", "add \"op\": use one of '<', '<=', '='"),
    ({"tag": "order_count", "op": "==", "value": 3}, "has unknown op '==' at op", "use one of '<', '<=', '=', '!='"),
    (
        {"all": [{"tag": "new_user"}, {"tag": "order_count", "op": "gte", "value": 3}]},
        "has unknown op 'gte' at all[1].op",
        "'>=', '>', 'between'",
    ),
    ({"tag": "order_count", "op": None, "value": 3}, "has null at op, not an op", "use one of '<'"),
    # order_count: value
    ({"tag": "order_count", "op": ">="}, "has no 'value' at the top level", 'add "value", e.g. {"tag": "order_count"'),
    ({"tag": "order_count", "op": ">=", "value": "3"}, 'has the text "3" at value, not a whole number', "e.g. 3"),
    (
        {"tag": "order_count", "op": ">=", "value": 3.0},
        "has the number 3.0 at value, written with a decimal point",
        "no decimal point",
    ),
    (
        {"tag": "order_count", "op": "=", "value": 2.5},
        "has the number 2.5 at value, not a whole number",
        "whole number",
    ),
    (f'{{{OC}, "op": ">=", "value": NaN}}', "has the number NaN at value, not a whole number", "whole number"),
    ({"tag": "order_count", "op": ">=", "value": True}, "has true at value, not a whole number", "no quotes"),
    ({"tag": "order_count", "op": ">=", "value": None}, "has null at value, not a whole number", "from 0 to"),
    ({"tag": "order_count", "op": ">", "value": -1}, "has -1 at value, below the least allowed, 0", "from 0 to"),
    (
        {"tag": "order_count", "op": "=", "value": MAX_COUNT + 1},
        f"has {MAX_COUNT + 1} at value, above",
        f"to {MAX_COUNT}",
    ),
    (
        {"tag": "order_count", "op": ">=", "value": [3]},
        "has the array [3] at value, but op '>=' takes one number",
        '"op": "between"',
    ),
    (
        {"tag": "order_count", "op": "<", "value": 0},
        "has op '<' with value 0 at the top level, which no user",
        '"op": "=", "value": 0',
    ),
    # order_count: between
    (
        {"tag": "order_count", "op": "between", "value": 3},
        "has the number 3 at value, not a [low, high] pair",
        '"value": [low, high]',
    ),
    (
        {"tag": "order_count", "op": "between", "value": [1]},
        "has the array [1] at value, not a [low, high] pair",
        "[1, 5]",
    ),
    (
        {"tag": "order_count", "op": "between", "value": [1, 2, 3]},
        "has the array [1, 2, 3] at value, not a",
        "low <= high",
    ),
    (
        {"tag": "order_count", "op": "between", "value": ["1", 5]},
        'has the text "1" at value[0], not a whole number',
        "[low, high]",
    ),
    ({"tag": "order_count", "op": "between", "value": [1, 5.5]}, "has the number 5.5 at value[1]", "[low, high]"),
    (
        {"tag": "order_count", "op": "between", "value": [5, 1]},
        "has [5, 1] at value, whose low end is above its high end",
        "e.g. [1, 5]",
    ),
    # first-seen tags
    (
        {"tag": "new_user", "op": ">=", "value": 3},
        "has 'op' at the top level, which tag 'new_user' does not take",
        "takes only 'days'",
    ),
    (
        {"not": {"tag": "old_user", "value": 3}},
        "has 'value' at not, which tag 'old_user' does not take",
        '{"tag": "old_user", "days": 30}',
    ),
    (
        {"tag": "new_user", "days": 3, "extra": 1},
        "has 'extra' at the top level, which tag 'new_user' does not take",
        "takes only 'days'",
    ),
    (
        {"tag": "order_count", "op": "=", "value": 1, "days": 3},
        "has 'days' at the top level, which tag 'order_count' does not take",
        "takes only 'op' and 'value'",
    ),
    ({"tag": "new_user", "days": 0}, "has 0 at days, below the least allowed, 1", "leave it out for the default (30)"),
    ({"tag": "old_user", "days": -5}, "has -5 at days, below the least allowed, 1", f"from 1 to {MAX_DAYS}"),
    ({"tag": "new_user", "days": "30"}, 'has the text "30" at days, not a whole number', "whole number from 1 to"),
    ({"tag": "new_user", "days": 30.0}, "has the number 30.0 at days, written with a decimal point", '"days": 30}'),
    ({"tag": "new_user", "days": True}, "has true at days, not a whole number", "whole number"),
    ({"tag": "new_user", "days": None}, "has null at days, not a whole number", "or leave it out"),
    (
        {"all": [{"tag": "new_user", "days": MAX_DAYS + 1}]},
        f"has {MAX_DAYS + 1} at all[0].days, above the most allowed, {MAX_DAYS}",
        "leave it out",
    ),
    # combinators
    (
        {"all": [{"tag": "new_user"}], "any": [{"tag": "old_user"}]},
        "has both 'all' and 'any' at the top level",
        "use one combinator per object",
    ),
    (
        {"all": [{"tag": "new_user"}], "days": 3},
        "has 'days' beside 'all' at the top level",
        "an object with 'all' holds nothing else",
    ),
    ({"all": []}, "has an empty 'all' list at all", "list at least one rule in 'all'"),
    ({"not": {"any": []}}, "has an empty 'any' list at not.any", "list at least one rule in 'any'"),
    (
        {"all": {"tag": "new_user"}},
        'has the object {"tag": "new_user"} at all, not a list of rules',
        '{"all": [{"tag": "new_user"}',
    ),
    (
        {"not": [{"tag": "new_user"}]},
        'has the array [{"tag": "new_user"}] at not, where one rule object belongs',
        '{"not": {"any": [...]}}',
    ),
    ({"any": [{"not": None}]}, "has null at any[0].not, where one rule object belongs", '{"not": {"tag": "new_user"}}'),
    (
        {"not": {"not": {"not": {"not": {"tag": "new_user"}}}}},
        f"nests deeper than {MAX_DEPTH} levels at not.not.not.not",
        f"at most {MAX_DEPTH} levels deep",
    ),
    (
        {"all": [{"tag": "new_user"}, {"any": [{"not": {"all": [{"tag": "old_user"}]}}]}]},
        "nests deeper than 4 levels at all[1].any[0].not.all[0]",
        "merge nested",
    ),
    (f'{{{OC}, "op": "=", "value": {"9" * 5000}}}', "is not valid JSON (Exceeds the limit", "write a rule object"),
    ("[" * 100_000, f"nests far deeper than {MAX_DEPTH} levels", f"at most {MAX_DEPTH} levels deep"),
]


@pytest.mark.parametrize(("raw", "problem", "fix"), MALFORMED)
def test_a_malformed_rule_is_refused_naming_field_place_and_fix(raw: object, problem: str, fix: str) -> None:
    with pytest.raises(SegmentError) as caught:
        parse(raw)
    error = caught.value
    assert error.segment_id == "vips"
    assert error.field == "rule"
    assert problem in error.problem
    assert fix in error.fix
    assert str(error).startswith("segment 'vips': field 'rule' ")
    assert str(error).endswith(f". Fix: {error.fix}")


def test_the_unknown_tag_message_reads_in_full() -> None:
    with pytest.raises(SegmentError) as caught:
        parse('{"all": [{"tag": "spend", "op": ">=", "value": 3}]}')
    assert str(caught.value) == (
        "segment 'vips': field 'rule' has unknown tag 'spend' at all[0]. "
        "Fix: use one of 'new_user', 'old_user', 'order_count', e.g. "
        '{"tag": "order_count", "op": ">=", "value": 3}'
    )


def test_the_setting_for_default_days_must_be_sane() -> None:
    for bad in (0, -1, MAX_DAYS + 1, True, 30.0):
        with pytest.raises(ValueError, match="new_user_days must be a whole number"):
            parse_rule("vips", {"tag": "new_user"}, bad)  # type: ignore[arg-type]


# -- valid rules --------------------------------------------------------------------------

VALID = [
    ({"tag": "new_user"}, NewUser(30), '{"days":30,"tag":"new_user"}'),
    ({"tag": "new_user", "days": 7}, NewUser(7), '{"days":7,"tag":"new_user"}'),
    ({"tag": "old_user"}, OldUser(30), '{"days":30,"tag":"old_user"}'),
    ({"days": MAX_DAYS, "tag": "old_user"}, OldUser(MAX_DAYS), '{"days":36500,"tag":"old_user"}'),
    ({"tag": "new_user", "days": 1}, NewUser(1), '{"days":1,"tag":"new_user"}'),
    *(
        (
            {"tag": "order_count", "op": op, "value": 3},
            OrderCount(op, 3, 3),
            f'{{"op":"{op}","tag":"order_count","value":3}}',
        )
        for op in OPS
        if op != "between"
    ),
    ({"tag": "order_count", "op": ">=", "value": 0}, OrderCount(">=", 0, 0), None),
    ({"tag": "order_count", "op": "<", "value": 1}, OrderCount("<", 1, 1), None),
    ({"tag": "order_count", "op": "=", "value": MAX_COUNT}, OrderCount("=", MAX_COUNT, MAX_COUNT), None),
    (
        {"tag": "order_count", "op": "between", "value": [1, 5]},
        OrderCount("between", 1, 5),
        '{"op":"between","tag":"order_count","value":[1,5]}',
    ),
    ({"tag": "order_count", "op": "between", "value": [0, 0]}, OrderCount("between", 0, 0), None),
    (
        {"all": [{"tag": "new_user", "days": 7}, {"tag": "order_count", "op": ">=", "value": 1}]},
        AllOf((NewUser(7), OrderCount(">=", 1, 1))),
        '{"all":[{"days":7,"tag":"new_user"},{"op":">=","tag":"order_count","value":1}]}',
    ),
    ({"any": [{"tag": "old_user"}]}, AnyOf((OldUser(30),)), '{"any":[{"days":30,"tag":"old_user"}]}'),
    ({"not": {"tag": "new_user"}}, Not(NewUser(30)), '{"not":{"days":30,"tag":"new_user"}}'),
    (  # exactly MAX_DEPTH levels
        {"all": [{"any": [{"not": {"tag": "new_user"}}, {"tag": "order_count", "op": ">", "value": 9}]}]},
        AllOf((AnyOf((Not(NewUser(30)), OrderCount(">", 9, 9))),)),
        None,
    ),
    ({"not": {"not": {"not": {"tag": "old_user", "days": 2}}}}, Not(Not(Not(OldUser(2)))), None),
]


@pytest.mark.parametrize(("raw", "rule", "text"), VALID)
def test_valid_rules_parse_and_round_trip(raw: dict[str, object], rule: Rule, text: str | None) -> None:
    assert parse(raw) == rule
    assert parse(json.dumps(raw)) == rule
    assert parse(json.dumps(raw, indent=4).encode()) == rule
    canonical = canonical_json(rule)
    if text is not None:
        assert canonical == text
    assert parse(canonical) == rule
    assert canonical_json(parse(canonical)) == canonical
    assert parse(to_dict(rule)) == rule


def test_absent_days_take_the_callers_default_and_canonical_text_shows_it() -> None:
    rule = parse_rule("vips", '{"not": {"tag": "old_user"}}', 14)
    assert rule == Not(OldUser(14))
    assert canonical_json(rule) == '{"not":{"days":14,"tag":"old_user"}}'
    # The stored text, once canonical, no longer depends on the setting.
    assert parse_rule("vips", canonical_json(rule), 90) == rule


def test_parsed_rules_are_hashable_values() -> None:
    a = parse('{"any": [{"tag": "new_user"}, {"tag": "order_count", "op": "between", "value": [1, 2]}]}')
    b = parse({"any": [{"tag": "new_user", "days": 30}, {"value": [1, 2], "op": "between", "tag": "order_count"}]})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, Not(a)}) == 2
    assert AllOf([NewUser(1)]) == AllOf((NewUser(1),))  # a list is kept as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.rules = ()  # type: ignore[misc]


def test_rule_values_refuse_impossible_shapes() -> None:
    with pytest.raises(ValueError, match="not one of"):
        OrderCount("~", 1, 1)
    with pytest.raises(ValueError, match="low above high"):
        OrderCount("between", 5, 1)
    with pytest.raises(ValueError, match="takes one value"):
        OrderCount(">=", 1, 2)
    with pytest.raises(ValueError, match="at least one rule"):
        AnyOf(())


# -- matches ------------------------------------------------------------------------------


def test_new_user_is_first_seen_at_or_after_n_days_ago() -> None:
    rule = NewUser(30)
    edge = NOW - 30 * DAY
    assert matches(rule, tags(edge), NOW)  # exactly 30 days ago is still new
    assert matches(rule, tags(edge + US), NOW)
    assert not matches(rule, tags(edge - US), NOW)
    assert matches(rule, tags(NOW), NOW)
    assert matches(rule, tags(NOW + DAY), NOW)  # a clock ahead of ours: still new
    assert not matches(rule, tags(None, 5), NOW)


def test_old_user_is_first_seen_strictly_before_n_days_ago() -> None:
    rule = OldUser(30)
    edge = NOW - 30 * DAY
    assert not matches(rule, tags(edge), NOW)
    assert matches(rule, tags(edge - US), NOW)
    assert not matches(rule, tags(edge + US), NOW)
    assert not matches(rule, tags(None, 5), NOW)


def test_days_are_24_hour_periods_whatever_the_time_zone() -> None:
    paris_now = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    tokyo_edge = (NOW - 7 * DAY).astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert cutoff(7, paris_now) == NOW - 7 * DAY
    for first_seen in (tokyo_edge - US, tokyo_edge, tokyo_edge + US):
        for rule in (NewUser(7), OldUser(7)):
            assert matches(rule, tags(first_seen), paris_now) == matches(rule, tags(first_seen), NOW)
    assert matches(NewUser(7), tags(tokyo_edge), paris_now)


EXPECTED_COUNTS = {
    ("<", 3, 3): {0, 1, 2},
    ("<=", 3, 3): {0, 1, 2, 3},
    ("=", 3, 3): {3},
    ("!=", 3, 3): {0, 1, 2, 4, 5, 6},
    (">=", 3, 3): {3, 4, 5, 6},
    (">", 3, 3): {4, 5, 6},
    ("between", 2, 4): {2, 3, 4},
    ("between", 3, 3): {3},
    ("=", 0, 0): {0},
    (">=", 0, 0): {0, 1, 2, 3, 4, 5, 6},
}


@pytest.mark.parametrize(("op", "low", "high"), list(EXPECTED_COUNTS))
def test_order_count_truth_table(op: str, low: int, high: int) -> None:
    rule = OrderCount(op, low, high)
    matched = {count for count in range(7) if matches(rule, tags(NOW, count), NOW)}
    assert matched == EXPECTED_COUNTS[(op, low, high)]
    assert {count for count in range(7) if matches(rule, tags(None, count), NOW)} == matched


def test_combinators() -> None:
    new_buyer = parse({"all": [{"tag": "new_user", "days": 7}, {"tag": "order_count", "op": ">=", "value": 1}]})
    fresh = NOW - DAY
    stale = NOW - 60 * DAY
    assert matches(new_buyer, tags(fresh, 1), NOW)
    assert not matches(new_buyer, tags(fresh, 0), NOW)
    assert not matches(new_buyer, tags(stale, 4), NOW)
    either = parse({"any": [{"tag": "new_user", "days": 7}, {"tag": "order_count", "op": ">=", "value": 1}]})
    assert matches(either, tags(fresh, 0), NOW)
    assert matches(either, tags(stale, 4), NOW)
    assert not matches(either, tags(stale, 0), NOW)
    assert not matches(either, tags(None, 0), NOW)
    lapsed = parse({"all": [{"tag": "old_user", "days": 30}, {"not": {"tag": "order_count", "op": ">", "value": 0}}]})
    assert matches(lapsed, tags(stale, 0), NOW)
    assert not matches(lapsed, tags(stale, 1), NOW)
    assert not matches(lapsed, tags(fresh, 0), NOW)
    assert matches(Not(Not(NewUser(7))), tags(fresh), NOW)


def test_not_is_true_for_a_tagged_user_without_first_seen() -> None:
    unknown_signup = tags(None, 2)
    assert not matches(NewUser(30), unknown_signup, NOW)
    assert not matches(OldUser(30), unknown_signup, NOW)
    assert matches(Not(NewUser(30)), unknown_signup, NOW)
    assert matches(Not(OldUser(30)), unknown_signup, NOW)
    assert not matches(AnyOf((NewUser(30), OldUser(30))), unknown_signup, NOW)


def test_a_user_without_tags_is_in_no_proxy_segment_whatever_the_rule() -> None:
    rules = [
        NewUser(30),
        OldUser(30),
        OrderCount(">=", 0, 0),
        OrderCount("=", 0, 0),
        Not(NewUser(30)),
        Not(OrderCount(">=", 0, 0)),
        Not(Not(OldUser(1))),
        AnyOf((Not(NewUser(30)), Not(OldUser(30)))),
        AllOf((Not(OrderCount(">", 5, 5)),)),
        *(rule for _, rule, _ in VALID),
    ]
    for rule in rules:
        assert not matches(rule, None, NOW), rule
    # ...while a tagged user with nothing known but a zero count is outside new_user, so in its "not".
    assert matches(Not(NewUser(30)), tags(None), NOW)
    assert matches(AnyOf((Not(NewUser(30)), Not(OldUser(30)))), tags(None), NOW)


def test_matches_needs_an_aware_now_and_sane_tags() -> None:
    with pytest.raises(ValueError, match="aware"):
        matches(NewUser(1), tags(NOW), dt.datetime(2026, 11, 29, 9))
    with pytest.raises(ValueError, match="aware"):
        matches(NewUser(1), None, dt.datetime(2026, 11, 29, 9))
    with pytest.raises(ValueError, match="first_seen must be an aware datetime"):
        Tags(dt.datetime(2026, 1, 1), 0)
    with pytest.raises(ValueError, match="order_count must be a whole number"):
        Tags(None, -1)
    with pytest.raises(ValueError, match="order_count must be a whole number"):
        Tags(None, True)


# -- leaf ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "ranges"),
    [
        (OrderCount("<", 3, 3), [("order_count", "-inf", "(3")]),
        (OrderCount("<=", 3, 3), [("order_count", "-inf", 3)]),
        (OrderCount("=", 3, 3), [("order_count", 3, 3)]),
        (OrderCount("!=", 3, 3), [("order_count", "-inf", "(3"), ("order_count", "(3", "+inf")]),
        (OrderCount(">=", 3, 3), [("order_count", 3, "+inf")]),
        (OrderCount(">", 3, 3), [("order_count", "(3", "+inf")]),
        (OrderCount("between", 1, 5), [("order_count", 1, 5)]),
        (OrderCount(">=", 0, 0), [("order_count", 0, "+inf")]),
        (NewUser(30), [("first_seen", epoch_seconds(NOW - 30 * DAY), "+inf")]),
        (OldUser(30), [("first_seen", "-inf", f"({epoch_seconds(NOW - 30 * DAY)!r}")]),
    ],
)
def test_leaf_ranges_in_redis_form(leaf: OrderCount | NewUser | OldUser, ranges: list[tuple[object, ...]]) -> None:
    assert leaf_ranges(leaf, NOW) == ranges
    assert is_leaf(leaf)


def test_new_user_cutoff_is_the_epoch_seconds_of_n_days_ago() -> None:
    assert leaf_ranges(NewUser(30), NOW) == [("first_seen", 1_793_350_800.0, "+inf")]  # 2026-10-30 09:00 UTC
    assert leaf_ranges(OldUser(1), NOW) == [("first_seen", "-inf", "(1795856400.0")]  # 2026-11-28 09:00 UTC


def test_only_leaves_have_ranges() -> None:
    rule = parse({"all": [{"tag": "new_user"}, {"not": {"any": [{"tag": "order_count", "op": "=", "value": 0}]}}]})
    assert not is_leaf(rule)
    assert list(leaves(rule)) == [NewUser(30), OrderCount("=", 0, 0)]
    for combinator in (rule, Not(NewUser(1)), AnyOf((NewUser(1),))):
        with pytest.raises(TypeError, match="use is_leaf first"):
            leaf_ranges(combinator, NOW)  # type: ignore[arg-type]


def _within(score: float, low: float | str, high: float | str) -> bool:
    """Redis's reading of a ZCOUNT min / max pair."""

    def bound(value: float | str) -> tuple[float, bool]:
        if isinstance(value, str) and value.startswith("("):
            return float(value[1:]), True
        return float(value), False  # "-inf", "+inf" and numbers

    low_value, low_open = bound(low)
    high_value, high_open = bound(high)
    above = score > low_value if low_open else score >= low_value
    below = score < high_value if high_open else score <= high_value
    return above and below


def _scores(user: Tags) -> dict[str, float]:
    """The user's entries in the tag sorted sets (no first_seen entry when unknown)."""
    out = {"order_count": float(user.order_count)}
    if user.first_seen is not None:
        out["first_seen"] = epoch_seconds(user.first_seen)
    return out


def _in_ranges(leaf: OrderCount | NewUser | OldUser, user: Tags, now: dt.datetime) -> bool:
    scores = _scores(user)
    return any(tag in scores and _within(scores[tag], low, high) for tag, low, high in leaf_ranges(leaf, now))


def _by_ranges(rule: Rule, user: Tags | None, now: dt.datetime) -> bool:
    """The membership an API would get from the sorted sets and set algebra over the leaves."""
    if user is None:
        return False

    def holds(node: Rule) -> bool:
        if is_leaf(node):
            return _in_ranges(node, user, now)  # type: ignore[arg-type]
        if isinstance(node, AllOf):
            return all(holds(item) for item in node.rules)
        if isinstance(node, AnyOf):
            return any(holds(item) for item in node.rules)
        assert isinstance(node, Not)
        return not holds(node.rule)

    return holds(rule)


GRID_LEAVES = [
    *(OrderCount(op, value, value) for op in OPS if op != "between" for value in (0, 1, 3) if (op, value) != ("<", 0)),
    *(OrderCount("between", low, high) for low, high in ((0, 0), (0, 2), (2, 4), (3, 3))),
    *(cls(days) for cls in (NewUser, OldUser) for days in (1, 30, MAX_DAYS)),
]
OFFSETS = (-DAY, -dt.timedelta(seconds=1), -US, dt.timedelta(0), US, dt.timedelta(seconds=1), DAY)
FIRST_SEENS = [
    None,
    NOW + 3 * DAY,
    dt.datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=dt.UTC),
    *(NOW - days * DAY + offset for days in (0, 1, 30, MAX_DAYS) for offset in OFFSETS),
]
GRID_USERS = [Tags(first_seen, count) for first_seen in FIRST_SEENS for count in range(6)]


def test_leaf_ranges_agree_with_matches_over_a_grid() -> None:
    assert len(GRID_LEAVES) * len(GRID_USERS) > 5_000
    for now in (NOW, NOW + 7 * US, NOW.astimezone(dt.timezone(dt.timedelta(hours=-5)))):
        for leaf, user in itertools.product(GRID_LEAVES, GRID_USERS):
            assert _in_ranges(leaf, user, now) == matches(leaf, user, now), (leaf, user, now)


def test_a_rule_answered_from_ranges_agrees_with_matches() -> None:
    a, b, c = NewUser(30), OrderCount("between", 1, 3), OldUser(1)
    rules = [
        AllOf((a, b)),
        AnyOf((a, Not(b))),
        Not(AnyOf((a, c))),
        AllOf((Not(a), Not(c), OrderCount("!=", 0, 0))),
        Not(Not(AllOf((c, OrderCount(">", 2, 2))))),
    ]
    for rule, user in itertools.product(rules, [None, *GRID_USERS]):
        assert _by_ranges(rule, user, NOW) == matches(rule, user, NOW), (rule, user)
