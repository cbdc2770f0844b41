"""Proxy segment rules, the language: its values (``NewUser``, ``OldUser``, ``OrderCount``,
``AllOf``, ``AnyOf``, ``Not``), read from the catalog by ``parse_rule`` and written back by
``to_dict`` / ``canonical_json``. Pure. Who a rule matches: ``funnel.core.proxy_matching``.

A proxy segment has no batch query: its members are the users whose tags satisfy its
rule (``funnel_segments.rule``), asked at request time.

The rule is one JSON object (text, or an already decoded dict):

- ``{"tag": "new_user", "days": 30}``: first seen at or after ``now - 30 days``. A day is
  24 hours counted back from ``now``, compared as instants (any aware time zone gives
  the same answer): first seen exactly 30 days ago is still new.
- ``{"tag": "old_user", "days": 30}``: first seen before ``now - 30 days`` (strictly).
  ``days`` is optional for both; absent, it is the caller's ``default_days`` (the
  setting ``new_user_days``) and ``canonical_json`` writes the value filled in.
- ``{"tag": "order_count", "op": ">=", "value": 3}`` with op ``<`` ``<=`` ``=`` ``!=``
  ``>=`` ``>``; ``{"tag": "order_count", "op": "between", "value": [1, 5]}`` (inclusive).
- ``{"all": [rule, ...]}``, ``{"any": [rule, ...]}`` (non-empty lists), ``{"not": rule}``.

At most ``MAX_DEPTH`` levels: a tag at the top is level 1, ``{"all": [tag]}`` is 2, and
``not`` is a level too. Numbers are JSON integers: ``days`` from 1 to ``MAX_DAYS``,
``value`` from 0 to ``MAX_COUNT`` (a Redis score holds it exactly). ``3.0``, ``"3"``,
``true`` and ``null`` are refused, as are a key given twice, stray keys and
``order_count < 0`` (which no user can match). ``parse_rule`` raises ``SegmentError``
(field ``rule``) naming where in the rule the problem is (``all[1].op``) and what to write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from funnel.core.errors import SegmentError

MAX_DEPTH = 4
MAX_DAYS = 36_500
MAX_COUNT = 1_000_000_000  # far above any order count; a Redis score (a double) holds it exactly

NEW_USER = "new_user"
OLD_USER = "old_user"
ORDER_COUNT = "order_count"
TAGS = (NEW_USER, OLD_USER, ORDER_COUNT)
COMBINATORS = ("all", "any", "not")
OPS = ("<", "<=", "=", "!=", ">=", ">", "between")


@dataclass(frozen=True)
class NewUser:
    """First seen at or after ``now - days`` (24-hour days)."""

    days: int


@dataclass(frozen=True)
class OldUser:
    """First seen before ``now - days`` (24-hour days)."""

    days: int


@dataclass(frozen=True)
class OrderCount:
    """``order_count <op> low``; for ``between``, ``low <= order_count <= high``.

    For the plain ops ``high == low`` (the one value).
    """

    op: str
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"OrderCount op {self.op!r} is not one of {OPS}")
        if self.op != "between" and self.high != self.low:
            raise ValueError(f"OrderCount op {self.op!r} takes one value: low and high must be equal")
        if self.low > self.high:
            raise ValueError(f"OrderCount range [{self.low}, {self.high}] has low above high")


@dataclass(frozen=True)
class AllOf:
    """Every rule holds (``{"all": [...]}``)."""

    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not self.rules:
            raise ValueError("AllOf needs at least one rule")


@dataclass(frozen=True)
class AnyOf:
    """At least one rule holds (``{"any": [...]}``)."""

    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not self.rules:
            raise ValueError("AnyOf needs at least one rule")


@dataclass(frozen=True)
class Not:
    """The rule does not hold, for a user with tags (``{"not": {...}}``)."""

    rule: Rule


Leaf = NewUser | OldUser | OrderCount
Rule = NewUser | OldUser | OrderCount | AllOf | AnyOf | Not


# -- parsing ------------------------------------------------------------------------------

_TAG_EXAMPLE = '{"tag": "order_count", "op": ">=", "value": 3}'
_FIX_TAG = f"use one of 'new_user', 'old_user', 'order_count', e.g. {_TAG_EXAMPLE}"
_FIX_RULE = (
    'write a rule object: {"tag": "new_user" | "old_user" | "order_count", ...}, {"all": [...]}, '
    f'{{"any": [...]}} or {{"not": {{...}}}}, e.g. {_TAG_EXAMPLE}'
)
_FIX_OP = "use one of " + ", ".join(repr(op) for op in OPS) + f", e.g. {_TAG_EXAMPLE}"
_FIX_COUNT = f"write a whole number of orders from 0 to {MAX_COUNT} (no quotes, no decimal point), e.g. 3"
_FIX_PAIR = 'write "value": [low, high] with two whole numbers, low <= high, e.g. ' + (
    '{"tag": "order_count", "op": "between", "value": [1, 5]}'
)


class _Object(dict):  # type: ignore[type-arg]
    """A JSON object as decoded by ``parse_rule``, remembering a key it saw twice."""

    duplicate: str | None = None


def _object_pairs(pairs: list[tuple[str, object]]) -> _Object:
    out = _Object()
    for key, value in pairs:
        if key in out and out.duplicate is None:
            out.duplicate = key
        out[key] = value
    return out


def parse_rule(segment_id: str, raw: object, default_days: int) -> Rule:
    """The rule of a proxy segment: ``raw`` is a dict or its JSON text (bytes are read as UTF-8).

    ``default_days`` is the setting ``new_user_days``: the ``days`` of a ``new_user`` or
    ``old_user`` that gives none. Raises ``SegmentError`` (field ``rule``) naming where
    in the rule the problem is and what to write instead.
    """
    if isinstance(default_days, bool) or not isinstance(default_days, int) or not 1 <= default_days <= MAX_DAYS:
        raise ValueError(f"new_user_days must be a whole number from 1 to {MAX_DAYS}, not {default_days!r}")
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise SegmentError(segment_id, "rule", "is not UTF-8 text", "store the rule as a JSON object") from None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise SegmentError(segment_id, "rule", "is empty", f"a proxy segment needs a rule: {_FIX_RULE}")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw, object_pairs_hook=_object_pairs)
        except RecursionError:
            problem = f"nests far deeper than {MAX_DEPTH} levels"
            raise SegmentError(segment_id, "rule", problem, f"keep it at most {MAX_DEPTH} levels deep") from None
        except ValueError as exc:  # json.JSONDecodeError, and too many digits in a number
            raise SegmentError(segment_id, "rule", f"is not valid JSON ({exc})", _FIX_RULE) from None
    return _Parser(segment_id, default_days).rule(raw, "", 1)


class _Parser:
    def __init__(self, segment_id: str, default_days: int) -> None:
        self.segment_id = segment_id
        self.default_days = default_days

    def fail(self, problem: str, fix: str) -> SegmentError:
        return SegmentError(self.segment_id, "rule", problem, fix)

    def rule(self, node: object, path: str, depth: int) -> Rule:
        where = _where(path)
        if depth > MAX_DEPTH:
            raise self.fail(
                f"nests deeper than {MAX_DEPTH} levels at {where}",
                f"keep it at most {MAX_DEPTH} levels deep (a tag alone is 1 level, "
                '{"all": [{"tag": ...}]} is 2, each "not" counts): merge nested "all"s or "any"s into one list',
            )
        if not isinstance(node, dict):
            raise self.fail(f"has {_describe(node)} at {where}, where a rule object belongs", _FIX_RULE)
        if isinstance(node, _Object) and node.duplicate is not None:
            raise self.fail(f"has the key {node.duplicate!r} twice at {where}", "write each key once per object")
        if not node:
            raise self.fail(f"has an empty object at {where}", _FIX_RULE)
        combinators = [key for key in COMBINATORS if key in node]
        if "tag" in node and combinators:
            raise self.fail(
                f"has both 'tag' and {combinators[0]!r} at {where}",
                "an object is either one tag or one combinator: put the tag inside the list, e.g. "
                '{"all": [{"tag": "new_user"}, {"tag": "order_count", "op": ">=", "value": 3}]}',
            )
        if len(combinators) > 1:
            first, second = combinators[:2]
            raise self.fail(
                f"has both {first!r} and {second!r} at {where}",
                f"use one combinator per object and nest the other in it, e.g. "
                f'{{"{first}": [{{"{second}": [...]}}, ...]}}',
            )
        if combinators:
            return self.combinator(node, combinators[0], path, depth)
        if "tag" in node:
            return self.leaf(node, path)
        as_keys = [key for key in node if key in TAGS]
        if as_keys:
            raise self.fail(
                f"uses the tag {as_keys[0]!r} as a key at {where}",
                f'name the tag with "tag", e.g. {_example(as_keys[0])}',
            )
        keys = ", ".join(repr(key) for key in node)
        raise self.fail(f"has no 'tag' at {where} (its keys: {keys})", _FIX_RULE)

    def combinator(self, node: dict[object, object], name: str, path: str, depth: int) -> Rule:
        where = _where(path)
        stray = [key for key in node if key != name]
        if stray:
            raise self.fail(
                f"has {stray[0]!r} beside {name!r} at {where}",
                f"an object with {name!r} holds nothing else: move the other conditions into its rules",
            )
        value = node[name]
        here = _join(path, name)
        if name == "not":
            if not isinstance(value, dict):
                raise self.fail(
                    f"has {_describe(value)} at {here}, where one rule object belongs",
                    'write {"not": {...}} with one rule object, e.g. {"not": {"tag": "new_user"}}; '
                    'to negate several, {"not": {"any": [...]}}',
                )
            return Not(self.rule(value, here, depth + 1))
        if not isinstance(value, list):
            raise self.fail(
                f"has {_describe(value)} at {here}, not a list of rules",
                f'write {{"{name}": [{{"tag": "new_user"}}, {_TAG_EXAMPLE}]}}',
            )
        if not value:
            raise self.fail(
                f"has an empty {name!r} list at {here}",
                f"list at least one rule in {name!r}, e.g. {_example(name)}",
            )
        rules = tuple(self.rule(item, f"{here}[{index}]", depth + 1) for index, item in enumerate(value))
        return AllOf(rules) if name == "all" else AnyOf(rules)

    def leaf(self, node: dict[object, object], path: str) -> Leaf:
        where = _where(path)
        tag = node["tag"]
        if tag in COMBINATORS:
            raise self.fail(
                f"has {_describe(tag)} as a tag at {where}, but {tag!r} is a combinator",
                f'write it as a key: {{"{tag}": ...}}, e.g. {_example(str(tag))}',
            )
        if not isinstance(tag, str):
            raise self.fail(f"has {_describe(tag)} as its tag at {where}, not a tag name", _FIX_TAG)
        if tag not in TAGS:
            raise self.fail(f"has unknown tag {tag!r} at {where}", _FIX_TAG)
        allowed = ("tag", "op", "value") if tag == ORDER_COUNT else ("tag", "days")
        stray = [key for key in node if key not in allowed]
        if stray:
            takes = " and ".join(repr(key) for key in allowed[1:])
            raise self.fail(
                f"has {stray[0]!r} at {where}, which tag {tag!r} does not take",
                f"{tag!r} takes only {takes}, e.g. {_example(tag)}",
            )
        if tag == ORDER_COUNT:
            return self.order_count(node, path)
        if "days" in node:
            days = self.whole(
                node["days"],
                _join(path, "days"),
                1,
                MAX_DAYS,
                f"write days as a whole number from 1 to {MAX_DAYS}, or leave it out for the default "
                f'({self.default_days}), e.g. {{"tag": "{tag}", "days": 30}}',
            )
        else:
            days = self.default_days
        return NewUser(days) if tag == NEW_USER else OldUser(days)

    def order_count(self, node: dict[object, object], path: str) -> OrderCount:
        where = _where(path)
        if "op" not in node:
            raise self.fail(f"has no 'op' at {where}", f'add "op": {_FIX_OP}')
        op = node["op"]
        if not isinstance(op, str):
            raise self.fail(f"has {_describe(op)} at {_join(path, 'op')}, not an op", _FIX_OP)
        if op not in OPS:
            raise self.fail(f"has unknown op {op!r} at {_join(path, 'op')}", _FIX_OP)
        if "value" not in node:
            example = _example(ORDER_COUNT, op)
            raise self.fail(f"has no 'value' at {where}", f'add "value", e.g. {example}')
        value = node["value"]
        here = _join(path, "value")
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(f"has {_describe(value)} at {here}, not a [low, high] pair", _FIX_PAIR)
            low = self.whole(value[0], f"{here}[0]", 0, MAX_COUNT, _FIX_PAIR)
            high = self.whole(value[1], f"{here}[1]", 0, MAX_COUNT, _FIX_PAIR)
            if low > high:
                raise self.fail(
                    f"has [{low}, {high}] at {here}, whose low end is above its high end",
                    f"write [low, high] with low <= high, e.g. [{high}, {low}]",
                )
            return OrderCount(op, low, high)
        if isinstance(value, list):
            raise self.fail(
                f"has {_describe(value)} at {here}, but op {op!r} takes one number",
                'write one whole number, e.g. "value": 3, or use "op": "between" with "value": [low, high]',
            )
        number = self.whole(value, here, 0, MAX_COUNT, _FIX_COUNT)
        if op == "<" and number == 0:
            raise self.fail(
                f"has op '<' with value 0 at {where}, which no user matches (a count is never negative)",
                'for users without orders write {"tag": "order_count", "op": "=", "value": 0}',
            )
        return OrderCount(op, number, number)

    def whole(self, value: object, path: str, low: int, high: int, fix: str) -> int:
        """``value`` if it is a JSON integer in [low, high]; otherwise a ``SegmentError`` at ``path``."""
        if isinstance(value, float) and value.is_integer():
            raise self.fail(f"has {_describe(value)} at {path}, written with a decimal point", fix)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"has {_describe(value)} at {path}, not a whole number", fix)
        if value < low:
            raise self.fail(f"has {value} at {path}, below the least allowed, {low}", fix)
        if value > high:
            raise self.fail(f"has {value} at {path}, above the most allowed, {high}", fix)
        return value


def _where(path: str) -> str:
    return path or "the top level"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    """A value as the rule's author wrote it, in JSON, named by its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = {dict: "the object", list: "the array", str: "the text", int: "the number", float: "the number"}
    name = next((label for cls, label in kind.items() if isinstance(value, cls)), "the value")
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def _example(name: str, op: str = ">=") -> str:
    if name == ORDER_COUNT:
        value = "[1, 5]" if op == "between" else "3"
        return f'{{"tag": "order_count", "op": "{op}", "value": {value}}}'
    if name in (NEW_USER, OLD_USER):
        return f'{{"tag": "{name}", "days": 30}}'
    if name == "not":
        return '{"not": {"tag": "new_user"}}'
    return f'{{"{name}": [{{"tag": "new_user"}}, {_TAG_EXAMPLE}]}}'


# -- writing ------------------------------------------------------------------------------


def to_dict(rule: Rule) -> dict[str, object]:
    """The rule as a JSON-ready dict, defaults filled in (what ``parse_rule`` reads back to the same rule)."""
    if isinstance(rule, NewUser | OldUser):
        return {"tag": NEW_USER if isinstance(rule, NewUser) else OLD_USER, "days": rule.days}
    if isinstance(rule, OrderCount):
        value: object = [rule.low, rule.high] if rule.op == "between" else rule.low
        return {"tag": ORDER_COUNT, "op": rule.op, "value": value}
    if isinstance(rule, AllOf | AnyOf):
        return {"all" if isinstance(rule, AllOf) else "any": [to_dict(item) for item in rule.rules]}
    if isinstance(rule, Not):
        return {"not": to_dict(rule.rule)}
    raise TypeError(f"not a proxy rule: {rule!r}")


def canonical_json(rule: Rule) -> str:
    """A stable text of the rule: sorted keys, no spaces, defaults filled in."""
    return json.dumps(to_dict(rule), sort_keys=True, separators=(",", ":"))
