"""Composite segments against the whole catalog: their operands, cycles and depth. Pure.

``check_composites`` takes the segments that passed row validation and the ids of the
rows that did not, and moves every composite that cannot be computed to the errors, with
the segment, the field (``rule``) and the fix:

- an operand not in the catalog, or whose own row is invalid;
- an operand that is a proxy segment (answered at request time from the users' tags; a
  stored set computed from one would be stale the moment it was written);
- a disabled operand of an enabled composite (it is no longer refreshed);
- a cycle (``a`` uses ``b``, which uses ``a``), each composite on it named;
- a chain of composites over composites deeper than ``MAX_CHAIN``.

A composite over a composite refused here is refused too, so what stays is computable:
``order`` lists the composites so that each comes after the composites it uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from funnel.core.composite_expr import operands, parse_expression
from funnel.core.errors import SegmentError
from funnel.core.segment import Kind, Segment

#: Composites over composites, at most this many levels (a composite of query segments is 1).
MAX_CHAIN = 4


def composite_operands(segment: Segment) -> tuple[str, ...]:
    """The distinct operand ids of a composite segment."""
    return operands(parse_expression(segment.segment_id, segment.rule))


def check_composites(
    segments: Sequence[Segment], invalid_ids: Iterable[str]
) -> tuple[list[Segment], list[SegmentError]]:
    """The segments that can be computed (in the given order), and the errors of those that cannot."""
    by_id = {segment.segment_id: segment for segment in segments}
    invalid = set(invalid_ids)
    uses = {s.segment_id: composite_operands(s) for s in segments if s.kind is Kind.COMPOSITE}
    errors: dict[str, SegmentError] = {}

    for segment_id, names in uses.items():
        error = _operand_error(by_id[segment_id], names, by_id, invalid)
        if error:
            errors[segment_id] = error
    for cycle in _cycles(uses):
        path = " → ".join([*cycle, cycle[0]])
        for segment_id in cycle:
            errors.setdefault(
                segment_id,
                SegmentError(
                    segment_id,
                    "rule",
                    f"is part of a cycle of composite segments ({path})",
                    "remove one of these operands so no composite uses itself through others",
                ),
            )
    levels = _levels(uses, errors)
    for segment_id, level in sorted(levels.items()):
        if level > MAX_CHAIN and segment_id not in errors:
            errors[segment_id] = SegmentError(
                segment_id,
                "rule",
                f"is a composite {level} levels deep (composites over composites), over {MAX_CHAIN}",
                "use the query segments directly in fewer levels of composites",
            )
    _refuse_dependents(uses, errors)
    kept = [segment for segment in segments if segment.segment_id not in errors]
    return kept, [errors[segment_id] for segment_id in sorted(errors)]


def _operand_error(
    segment: Segment, names: Sequence[str], by_id: dict[str, Segment], invalid: set[str]
) -> SegmentError | None:
    segment_id = segment.segment_id
    for name in names:
        operand = by_id.get(name)
        if operand is None:
            if name in invalid:
                return SegmentError(
                    segment_id,
                    "rule",
                    f"uses segment {name!r}, whose own row is invalid",
                    f"fix segment {name!r} first (its error is on the DAG funnel_invalid_{name})",
                )
            return SegmentError(
                segment_id, "rule", f"uses segment {name!r}, which is not in the catalog", "add it, or fix the id"
            )
        if operand.kind is Kind.PROXY:
            return SegmentError(
                segment_id,
                "rule",
                f"uses proxy segment {name!r}; proxy segments are answered at request time from the users' tags, "
                "so a stored composite of one would be stale the moment it was written",
                "write the condition into a proxy rule, or use a query segment as the operand",
            )
        if segment.enabled and not operand.enabled:
            return SegmentError(
                segment_id,
                "rule",
                f"uses segment {name!r}, which is disabled and no longer refreshed",
                f"enable {name!r}, remove it from the rule, or disable this composite too",
            )
    return None


def _cycles(uses: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Each cycle among composites once, as the path that closes it (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []
    for start in sorted(uses):
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            nexts = [name for name in uses.get(node, ()) if name in uses]
            if index < len(nexts):
                stack.append((node, index + 1))
                name = nexts[index]
                if state.get(name) == 1:
                    found.append(path[path.index(name) :])
                elif not state.get(name):
                    stack.append((name, 0))
            else:
                state[node] = 2
                path.pop()
    return found


def _levels(uses: dict[str, tuple[str, ...]], errors: dict[str, SegmentError]) -> dict[str, int]:
    """How many composites deep each acyclic composite is (1: over query segments only)."""
    levels: dict[str, int] = {}
    for segment_id in order(uses, skip=errors):
        below = [levels[name] for name in uses[segment_id] if name in levels]
        levels[segment_id] = 1 + max(below, default=0)
    return levels


def _refuse_dependents(uses: dict[str, tuple[str, ...]], errors: dict[str, SegmentError]) -> None:
    changed = True
    while changed:
        changed = False
        for segment_id, names in sorted(uses.items()):
            if segment_id in errors:
                continue
            bad = next((name for name in names if name in errors), None)
            if bad is not None:
                errors[segment_id] = SegmentError(
                    segment_id,
                    "rule",
                    f"uses composite segment {bad!r}, which is invalid",
                    f"fix {bad!r} first (its error is on the DAG funnel_invalid_{bad})",
                )
                changed = True


def order(uses: dict[str, tuple[str, ...]], skip: Iterable[str] = ()) -> list[str]:
    """Composites so that each comes after the composites it uses (those in ``skip`` and on
    cycles left out)."""
    skipped = set(skip)
    done: list[str] = []
    placed: set[str] = set()
    pending = sorted(segment_id for segment_id in uses if segment_id not in skipped)
    while pending:
        ready = [s for s in pending if all(name in placed or name not in uses for name in uses[s])]
        if not ready:
            break  # what is left is on or behind a cycle
        done.extend(ready)
        placed.update(ready)
        pending = [s for s in pending if s not in placed]
    return done
