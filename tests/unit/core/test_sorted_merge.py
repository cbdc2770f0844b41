"""Set algebra over sorted id streams, checked against Python's sets on random data."""

from __future__ import annotations

import random

import pytest

from funnel.core.composite_expr import parse_expression
from funnel.core.sorted_merge import batched, evaluate, intersect, minus, union


def ids(values: set[int]) -> list[str]:
    return sorted(f"{v:06d}" for v in values)  # fixed width: text order is numeric order


@pytest.mark.parametrize("seed", range(20))
def test_union_intersect_and_minus_agree_with_sets(seed: int) -> None:
    rng = random.Random(seed)
    sets = [set(rng.sample(range(300), rng.randint(0, 120))) for _ in range(3)]
    a, b, c = (ids(s) for s in sets)
    assert list(union(a, b, c)) == ids(sets[0] | sets[1] | sets[2])
    assert list(intersect(a, b, c)) == ids(sets[0] & sets[1] & sets[2])
    assert list(minus(a, b, c)) == ids(sets[0] - sets[1] - sets[2])
    assert list(minus(a, b)) == ids(sets[0] - sets[1])


def test_an_expression_is_evaluated_from_each_operands_sorted_ids() -> None:
    members = {"a": {1, 2, 3, 4, 5}, "b": {4, 5, 6}, "c": {2, 5}, "d": {5, 9}}
    expr = parse_expression("x", '{"minus": [{"union": ["a", "b"]}, [{"intersect": ["c", "d"]}, "c"]]}')
    found = list(evaluate(expr, lambda segment_id: iter(ids(members[segment_id]))))
    assert found == ids(({1, 2, 3, 4, 5} | {4, 5, 6}) - {5} - {2, 5})


def test_ids_compare_as_bytes_like_mysql_ascii_bin() -> None:
    assert list(union(["A", "b"], ["B", "a"])) == ["A", "B", "a", "b"]
    assert list(intersect(["10", "9"], ["9"])) == ["9"]


def test_batches_hold_at_most_the_size() -> None:
    assert list(batched(map(str, range(7)), 3)) == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert list(batched([], 3)) == []
