"""Composite segment expressions: set algebra over other segments. Pure (no I/O).

A composite segment's ``funnel_segments.rule`` is one JSON object with one key:

- ``{"union": [a, b, ...]}``: in any operand (two or more);
- ``{"intersect": [a, b, ...]}``: in every operand (two or more);
- ``{"minus": [a, b]}``: in ``a`` and not in ``b``; ``b`` may be a list, ``{"minus": [a, [b, c]]}``
  meaning in ``a`` and in neither ``b`` nor ``c``.

An operand is a segment id (a static, dynamic or composite segment) or a nested expression,
at most ``MAX_NESTING`` levels deep (``{"union": ["a", "b"]}`` is one level). Proxy
segments are not operands: they are answered at request time from the users' tags, so a
stored set computed from one would be stale the moment it was written (``funnel.core.composite_graph``
refuses them, with the fix).

``parse_expression`` raises ``SegmentError`` (field ``rule``) naming where the problem is
(``union[1].minus[0]``) and what to write. What needs the whole catalog (unknown, disabled,
proxy or invalid operands, cycles, chains too deep) is ``funnel.core.composite_graph``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from funnel.core.errors import SegmentError
from funnel.core.ids import is_segment_id

UNION = "union"
INTERSECT = "intersect"
MINUS = "minus"
OPERATORS = (UNION, INTERSECT, MINUS)
#: Levels of nesting within one composite's rule.
MAX_NESTING = 4
#: Operand ids per composite rule (each is a join in MySQL).
MAX_OPERANDS = 32

_FIX_SHAPE = (
    'write one of {"union": ["a", "b"]}, {"intersect": ["a", "b"]} or {"minus": ["a", ["b", "c"]]}, '
    "where each operand is a segment id or another such object"
)


@dataclass(frozen=True)
class SetOp:
    """``op`` over ``operands`` (for ``minus``: the first minus all the others)."""

    op: str
    operands: tuple[Expr, ...]


#: A segment id, or a set operation over expressions.
Expr = str | SetOp


def parse_expression(segment_id: str, raw: object) -> SetOp:
    """The composite rule ``raw`` (JSON text or a decoded dict) as a ``SetOp``."""

    def fail(where: str, problem: str, fix: str = _FIX_SHAPE) -> SegmentError:
        place = f" at {where}" if where else ""
        return SegmentError(segment_id, "rule", f"{problem}{place}", fix)

    def operand(value: object, where: str, level: int) -> Expr:
        if isinstance(value, str):
            if not is_segment_id(value):
                raise fail(where, f"names {value!r}, which is not a segment id", "use the operand segment's id")
            if value == segment_id:
                raise fail(where, "names the segment itself", "a composite cannot contain itself; remove it")
            return value
        if isinstance(value, dict):
            return node(value, where, level + 1)
        raise fail(where, f"is {json.dumps(value)}, neither a segment id nor an expression")

    def node(value: dict[str, object], where: str, level: int) -> SetOp:
        if level > MAX_NESTING:
            raise fail(where, f"nests deeper than {MAX_NESTING} levels", "flatten it, or split it into composites")
        if len(value) != 1:
            keys = ", ".join(sorted(map(str, value))) or "none"
            raise fail(where, f"has keys {keys}; an expression has exactly one")
        ((op, args),) = value.items()
        inner = f"{where}.{op}" if where else op
        if op not in OPERATORS:
            raise fail(where, f"uses {op!r}, not one of union, intersect, minus")
        if not isinstance(args, list):
            raise fail(inner, "is not a list")
        if op == MINUS:
            if len(args) != 2:
                raise fail(inner, f"has {len(args)} items", 'write {"minus": [a, b]} or {"minus": [a, [b, c]]}')
            base = operand(args[0], f"{inner}[0]", level)
            taken = args[1] if isinstance(args[1], list) else [args[1]]
            if not taken:
                raise fail(f"{inner}[1]", "is an empty list", "list at least one segment to take away")
            subtracted = tuple(operand(item, f"{inner}[1][{i}]", level) for i, item in enumerate(taken))
            return SetOp(MINUS, (base, *subtracted))
        if len(args) < 2:
            raise fail(inner, f"has {len(args)} operand(s)", f"give {op} two or more operands")
        return SetOp(op, tuple(operand(item, f"{inner}[{i}]", level) for i, item in enumerate(args)))

    value = _decoded(segment_id, raw)
    if not isinstance(value, dict):
        raise fail("", "is not a JSON object")
    expr = node(value, "", 1)
    count = sum(1 for _ in leaves(expr))
    if count > MAX_OPERANDS:
        raise fail("", f"names {count} operands, over {MAX_OPERANDS}", "split it into composites of composites")
    return expr


def _decoded(segment_id: str, raw: object) -> object:
    if not isinstance(raw, str):
        return raw

    def no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise SegmentError(segment_id, "rule", f"gives key {key!r} twice", "keep one")
        return dict(pairs)

    try:
        return json.loads(raw, object_pairs_hook=no_repeats)
    except ValueError as exc:
        if isinstance(exc, SegmentError):
            raise
        raise SegmentError(segment_id, "rule", f"is not valid JSON ({exc})", _FIX_SHAPE) from None


def leaves(expr: Expr) -> Iterator[str]:
    """The segment ids an expression names, in order, with repeats."""
    if isinstance(expr, str):
        yield expr
        return
    for item in expr.operands:
        yield from leaves(item)


def operands(expr: Expr) -> tuple[str, ...]:
    """The distinct segment ids an expression names, sorted."""
    return tuple(sorted(set(leaves(expr))))


def to_json(expr: Expr) -> object:
    """The expression as the rule's JSON value (``minus`` with its subtracted operands as a list)."""
    if isinstance(expr, str):
        return expr
    if expr.op == MINUS:
        base, *taken = expr.operands
        return {MINUS: [to_json(base), [to_json(item) for item in taken]]}
    return {expr.op: [to_json(item) for item in expr.operands]}


def expression_in_words(expr: Expr) -> str:
    """A one-line reading of the expression, in Python's set notation: ``(a | b) - c``."""
    if isinstance(expr, str):
        return expr
    sign = {UNION: " | ", INTERSECT: " & ", MINUS: " - "}[expr.op]
    return sign.join(
        expression_in_words(item) if isinstance(item, str) else f"({expression_in_words(item)})"
        for item in expr.operands
    )
