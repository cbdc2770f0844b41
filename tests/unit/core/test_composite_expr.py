"""Composite rules as written by a segment author: what parses, and what each refusal says."""

from __future__ import annotations

import json

import pytest

from funnel.core.composite_expr import (
    MAX_NESTING,
    MAX_OPERANDS,
    SetOp,
    expression_in_words,
    operands,
    parse_expression,
    to_json,
)
from funnel.core.errors import SegmentError


def parse(rule: object) -> SetOp:
    return parse_expression("combo", rule if isinstance(rule, str) else json.dumps(rule))


@pytest.mark.parametrize(
    ("rule", "expected", "reading"),
    [
        ({"union": ["a", "b"]}, SetOp("union", ("a", "b")), "a | b"),
        ({"intersect": ["a", "b", "c"]}, SetOp("intersect", ("a", "b", "c")), "a & b & c"),
        ({"minus": ["a", "b"]}, SetOp("minus", ("a", "b")), "a - b"),
        ({"minus": ["a", ["b", "c"]]}, SetOp("minus", ("a", "b", "c")), "a - b - c"),
        (
            {"minus": [{"union": ["a", "b"]}, [{"intersect": ["c", "d"]}]]},
            SetOp("minus", (SetOp("union", ("a", "b")), SetOp("intersect", ("c", "d")))),
            "(a | b) - (c & d)",
        ),
    ],
)
def test_valid_rules_parse_and_read_back(rule: object, expected: SetOp, reading: str) -> None:
    expr = parse(rule)
    assert expr == expected
    assert expression_in_words(expr) == reading
    assert parse(to_json(expr)) == expr  # the canonical form parses to the same expression


def test_a_decoded_dict_parses_like_its_text() -> None:
    assert parse_expression("combo", {"union": ["a", "b"]}) == parse({"union": ["a", "b"]})


def test_operands_are_the_distinct_ids_sorted() -> None:
    assert operands(parse({"minus": [{"union": ["b", "a"]}, ["a", "c"]]})) == ("a", "b", "c")


def nested(levels: int) -> object:
    rule: object = "a"
    for level in range(levels):
        rule = {"union": [rule, f"x{level}"]}
    return rule


@pytest.mark.parametrize(
    ("rule", "where", "fix"),
    [
        ("[", "is not valid JSON", "union"),
        (["a", "b"], "is not a JSON object", "union"),
        ({}, "has keys none; an expression has exactly one", "union"),
        ({"union": ["a", "b"], "minus": ["a", "b"]}, "has keys minus, union", "union"),
        ({"or": ["a", "b"]}, "uses 'or', not one of union, intersect, minus", "union"),
        ({"union": "a"}, "is not a list at union", "union"),
        ({"union": ["a"]}, "has 1 operand(s) at union", "two or more"),
        ({"intersect": []}, "has 0 operand(s) at intersect", "two or more"),
        ({"minus": ["a"]}, "has 1 items at minus", '{"minus": [a, b]}'),
        ({"minus": ["a", []]}, "is an empty list at minus[1]", "take away"),
        ({"union": ["a", 3]}, "is 3, neither a segment id nor an expression at union[1]", "union"),
        ({"union": ["a", "Big Spenders"]}, "names 'Big Spenders', which is not a segment id at union[1]", "id"),
        ({"union": ["a", {"minus": ["combo", "b"]}]}, "names the segment itself at union[1].minus[0]", "itself"),
        (nested(MAX_NESTING + 1), f"nests deeper than {MAX_NESTING} levels", "split it"),
        ({"union": [f"s{i}" for i in range(MAX_OPERANDS + 1)]}, f"names {MAX_OPERANDS + 1} operands", "split"),
        ('{"union": ["a", "b"], "union": ["c", "d"]}', "gives key 'union' twice", "keep one"),
    ],
)
def test_bad_rules_name_the_segment_the_field_the_place_and_the_fix(rule: object, where: str, fix: str) -> None:
    with pytest.raises(SegmentError) as caught:
        parse(rule)
    error = caught.value
    assert (error.segment_id, error.field) == ("combo", "rule")
    assert where in error.problem
    assert fix in error.fix


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert len(operands(parse(nested(MAX_NESTING)))) == MAX_NESTING + 1
