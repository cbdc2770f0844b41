"""Who a proxy segment's rule (``funnel.core.proxy_rule``) takes in, at a moment: over one
user's two tags (``matches``), or as score ranges of the tags' Redis sorted sets
(``leaf_ranges``). Pure: no I/O here.

The tags (``Tags``) are ``first_seen``, the user's sign-up time (an aware datetime, None when
unknown), and ``order_count`` (a whole number >= 0).

**A user funnel holds no tags for is in no proxy segment, whatever the rule**, ``not``
included: ``matches(rule, None, now)`` is False, so ``{"not": {"tag": "new_user"}}``
never takes in a user nobody knows. A user with tags but no ``first_seen`` is neither a
new nor an old user: both are false for them, so ``not new_user`` is true.

``leaf_ranges`` turns one tag condition into the score ranges of the tag's Redis sorted
set (``funnel:{_tags}:first_seen`` holds ``epoch_seconds(first_seen)``, epoch seconds;
``funnel:{_tags}:order_count`` the count; see ``funnel.storage.layout``), in the form ZCOUNT and
ZRANGEBYSCORE take: a number is an inclusive bound, ``"(x"`` an exclusive one,
``"-inf"`` / ``"+inf"`` open ends. A user absent from ``first_seen`` is in no
``first_seen`` range, as ``matches`` says.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from funnel.core.proxy_rule import AllOf, AnyOf, Leaf, NewUser, Not, OldUser, OrderCount, Rule
from funnel.core.utc_time import epoch_seconds

#: The names of the two per-user tags, as the Redis sorted sets are named (``funnel.storage.layout.tag_keys``).
FIRST_SEEN_TAG = "first_seen"
ORDER_COUNT_TAG = "order_count"

_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    ">": operator.gt,
}

Bound = float | str
Range = tuple[str, Bound, Bound]


@dataclass(frozen=True)
class Tags:
    """What funnel knows of one user: sign-up time (aware, None when unknown) and order count."""

    first_seen: dt.datetime | None
    order_count: int

    def __post_init__(self) -> None:
        if self.first_seen is not None and (
            not isinstance(self.first_seen, dt.datetime) or self.first_seen.utcoffset() is None
        ):
            raise ValueError(f"Tags.first_seen must be an aware datetime or None, not {self.first_seen!r}")
        if isinstance(self.order_count, bool) or not isinstance(self.order_count, int) or self.order_count < 0:
            raise ValueError(f"Tags.order_count must be a whole number >= 0, not {self.order_count!r}")


# -- one user -----------------------------------------------------------------------------


def matches(rule: Rule, tags: Tags | None, now: dt.datetime) -> bool:
    """Whether a user with ``tags`` is in the segment at ``now`` (aware). No tags: never."""
    _check_aware(now)
    if tags is None:
        return False
    return _holds(rule, tags, now)


def _holds(rule: Rule, tags: Tags, now: dt.datetime) -> bool:
    if isinstance(rule, NewUser):
        return tags.first_seen is not None and tags.first_seen >= cutoff(rule.days, now)
    if isinstance(rule, OldUser):
        return tags.first_seen is not None and tags.first_seen < cutoff(rule.days, now)
    if isinstance(rule, OrderCount):
        if rule.op == "between":
            return rule.low <= tags.order_count <= rule.high
        return _COMPARE[rule.op](tags.order_count, rule.low)
    if isinstance(rule, AllOf):
        return all(_holds(item, tags, now) for item in rule.rules)
    if isinstance(rule, AnyOf):
        return any(_holds(item, tags, now) for item in rule.rules)
    if isinstance(rule, Not):
        return not _holds(rule.rule, tags, now)
    raise TypeError(f"not a proxy rule: {rule!r}")


def cutoff(days: int, now: dt.datetime) -> dt.datetime:
    """The moment ``days`` 24-hour days before ``now``: new users were first seen at or after it."""
    _check_aware(now)
    return now - dt.timedelta(days=days)


def _check_aware(now: dt.datetime) -> None:
    if now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime (UTC), not {now!r}")


# -- store queries ------------------------------------------------------------------------


def is_leaf(rule: Rule) -> bool:
    """Whether the rule is one tag condition (answered by one sorted set)."""
    return isinstance(rule, NewUser | OldUser | OrderCount)


def leaves(rule: Rule) -> Iterator[Leaf]:
    """The tag conditions of a rule, depth first, left to right."""
    if isinstance(rule, NewUser | OldUser | OrderCount):
        yield rule
    elif isinstance(rule, AllOf | AnyOf):
        for item in rule.rules:
            yield from leaves(item)
    elif isinstance(rule, Not):
        yield from leaves(rule.rule)
    else:
        raise TypeError(f"not a proxy rule: {rule!r}")


def leaf_ranges(leaf: Leaf, now: dt.datetime) -> list[Range]:
    """The score ranges ``(tag, min, max)`` of the tag's sorted set that hold the users the leaf matches.

    ``min`` and ``max`` are as ZCOUNT / ZRANGEBYSCORE take them: a number is inclusive,
    ``"(x"`` exclusive, ``"-inf"`` / ``"+inf"`` open. A user is matched when their score
    falls in any of the ranges (``!=`` gives two). ``first_seen`` scores are
    ``funnel.core.utc_time.epoch_seconds`` (epoch seconds); ``order_count`` scores are the count.
    """
    if isinstance(leaf, NewUser | OldUser):
        score = epoch_seconds(cutoff(leaf.days, now))
        if isinstance(leaf, NewUser):
            return [(FIRST_SEEN_TAG, score, "+inf")]
        return [(FIRST_SEEN_TAG, "-inf", f"({score!r}")]
    if isinstance(leaf, OrderCount):
        value = leaf.low
        ranges: dict[str, list[tuple[Bound, Bound]]] = {
            "<": [("-inf", f"({value}")],
            "<=": [("-inf", value)],
            "=": [(value, value)],
            "!=": [("-inf", f"({value}"), (f"({value}", "+inf")],
            ">=": [(value, "+inf")],
            ">": [(f"({value}", "+inf")],
            "between": [(leaf.low, leaf.high)],
        }
        return [(ORDER_COUNT_TAG, low, high) for low, high in ranges[leaf.op]]
    raise TypeError(f"not a tag condition (use is_leaf first): {leaf!r}")
