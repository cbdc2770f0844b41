"""Set algebra over sorted streams of ids. Pure (no I/O).

Each operand of a composite is read in user id order (the primary key's order in MySQL, and
Python's string order, both plain byte order for funnel's ASCII ids), so the expression is
evaluated by merging: one pass over each operand, flat memory, no temporary table. Every
function takes and returns iterators of strictly increasing ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from funnel.core.composite_expr import INTERSECT, MINUS, UNION, Expr

_DONE = object()


def union(*streams: Iterable[str]) -> Iterator[str]:
    """Ids in any stream, each once."""
    last: str | None = None
    for user_id in heapq.merge(*streams):
        if user_id != last:
            yield user_id
            last = user_id


def intersect(*streams: Iterable[str]) -> Iterator[str]:
    """Ids in every stream (leapfrog: each stream skips ahead to the largest head)."""
    iterators = [iter(stream) for stream in streams]
    heads = [next(it, _DONE) for it in iterators]
    if any(head is _DONE for head in heads):
        return
    while True:
        top = max(heads)  # type: ignore[type-var]
        for index, it in enumerate(iterators):
            while heads[index] < top:  # type: ignore[operator]
                heads[index] = next(it, _DONE)
                if heads[index] is _DONE:
                    return
        if all(head == top for head in heads):
            yield top  # type: ignore[misc]
            for index, it in enumerate(iterators):
                heads[index] = next(it, _DONE)
                if heads[index] is _DONE:
                    return


def minus(base: Iterable[str], *taken: Iterable[str]) -> Iterator[str]:
    """Ids in ``base`` and in none of ``taken``."""
    away = union(*taken) if len(taken) > 1 else iter(taken[0])
    other = next(away, None)
    for user_id in base:
        while other is not None and other < user_id:
            other = next(away, None)
        if user_id != other:
            yield user_id


def evaluate(expr: Expr, operand: Callable[[str], Iterator[str]]) -> Iterator[str]:
    """The members of ``expr``, in id order, from ``operand(segment_id)``: each operand's sorted ids."""
    if isinstance(expr, str):
        return operand(expr)
    parts = [evaluate(item, operand) for item in expr.operands]
    combine = {UNION: union, INTERSECT: intersect, MINUS: minus}[expr.op]
    return combine(*parts)


def batched(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    """``ids`` in lists of ``size``."""
    batch: list[str] = []
    for user_id in ids:
        batch.append(user_id)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
