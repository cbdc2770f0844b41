"""Composites against the whole catalog: operands, cycles, depth, and what a refusal leads to."""

from __future__ import annotations

import json

from funnel.core.composite_graph import MAX_CHAIN, check_composites, order
from funnel.core.segment import Segment, segment_from_row


def seg(segment_id: str, kind: str = "dynamic", enabled: bool = True, **fields: object) -> Segment:
    row: dict[str, object] = {"segment_id": segment_id, "name": segment_id, "kind": kind, "enabled": enabled}
    if kind in ("dynamic", "static"):
        row["query"] = "SELECT user_id FROM t"
    if kind == "static":
        row["run_at"] = "2026-12-01 09:00:00"
    if kind == "proxy":
        row["rule"] = json.dumps({"tag": "new_user"})
    row.update(fields)
    return segment_from_row(row)


def comp(segment_id: str, rule: object, enabled: bool = True) -> Segment:
    return seg(segment_id, "composite", enabled, rule=json.dumps(rule))


def errors_of(segments: list[Segment], invalid: tuple[str, ...] = ()) -> dict[str, str]:
    kept, errors = check_composites(segments, invalid)
    assert {s.segment_id for s in kept}.isdisjoint(e.segment_id for e in errors)
    assert all(e.field == "rule" for e in errors)
    return {e.segment_id: str(e) for e in errors}


def test_composites_over_static_dynamic_and_composite_segments_are_kept() -> None:
    segments = [
        seg("a"),
        seg("b", "static"),
        comp("ab", {"union": ["a", "b"]}),
        comp("abc", {"minus": ["ab", "a"]}),
    ]
    kept, errors = check_composites(segments, ())
    assert errors == []
    assert kept == segments


def test_unknown_invalid_proxy_and_disabled_operands_are_refused_with_the_fix() -> None:
    found = errors_of(
        [
            seg("a"),
            seg("off", enabled=False),
            seg("newbies", "proxy"),
            comp("ghost", {"union": ["a", "nobody"]}),
            comp("broken_op", {"union": ["a", "bad_row"]}),
            comp("over_proxy", {"intersect": ["a", "newbies"]}),
            comp("over_off", {"minus": ["a", "off"]}),
            comp("off_too", {"minus": ["a", "off"]}, enabled=False),  # disabled with its operand: fine
        ],
        invalid=("bad_row",),
    )
    assert sorted(found) == ["broken_op", "ghost", "over_off", "over_proxy"]
    assert "uses segment 'nobody', which is not in the catalog. Fix: add it, or fix the id" in found["ghost"]
    assert "whose own row is invalid" in found["broken_op"]
    assert "funnel_invalid_bad_row" in found["broken_op"]
    assert "uses proxy segment 'newbies'" in found["over_proxy"]
    assert "write the condition into a proxy rule" in found["over_proxy"]
    assert "which is disabled and no longer refreshed. Fix: enable 'off'" in found["over_off"]


def test_every_composite_on_a_cycle_is_refused_and_names_the_cycle() -> None:
    found = errors_of(
        [
            seg("a"),
            comp("x", {"union": ["a", "y"]}),
            comp("y", {"union": ["a", "z"]}),
            comp("z", {"minus": ["x", "a"]}),
            comp("uses_x", {"intersect": ["x", "a"]}),
            comp("fine", {"union": ["a", "a"]}),
        ]
    )
    assert sorted(found) == ["uses_x", "x", "y", "z"]
    assert "is part of a cycle of composite segments (x → y → z → x)" in found["y"]
    assert "uses composite segment 'x', which is invalid" in found["uses_x"]


def test_a_chain_of_composites_deeper_than_the_limit_is_refused() -> None:
    segments = [seg("a"), seg("b"), comp("c1", {"union": ["a", "b"]})]
    segments += [comp(f"c{level}", {"union": [f"c{level - 1}", "a"]}) for level in range(2, MAX_CHAIN + 2)]
    found = errors_of(segments)
    assert sorted(found) == [f"c{MAX_CHAIN + 1}"]
    assert f"{MAX_CHAIN + 1} levels deep" in found[f"c{MAX_CHAIN + 1}"]


def test_order_puts_each_composite_after_those_it_uses() -> None:
    assert order({"top": ("mid", "a"), "mid": ("low",), "low": ("a", "b")}) == ["low", "mid", "top"]
