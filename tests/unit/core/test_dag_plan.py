"""Planning is pure: which segment runs in which DAG, in a deterministic order."""

from __future__ import annotations

import datetime as dt
import json

from funnel.core.dag_plan import DYNAMIC_DAG_ID, SHARD_BUCKETS, DagPlan, plan_dags, shard_dag_id
from funnel.core.segment import Kind, Segment

RUN_AT = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)


def seg(segment_id: str, kind: Kind, enabled: bool = True) -> Segment:
    return Segment(
        segment_id=segment_id,
        name=segment_id,
        kind=kind,
        query="SELECT 1" if kind is not Kind.PROXY else None,
        run_at=RUN_AT if kind is Kind.STATIC else None,
        rule="{}" if kind is Kind.PROXY else None,
        enabled=enabled,
    )


def test_dynamic_dag_holds_enabled_dynamic_segments_sorted() -> None:
    plans = plan_dags(
        [seg("zeta", Kind.DYNAMIC), seg("alpha", Kind.DYNAMIC), seg("off", Kind.DYNAMIC, enabled=False)],
        "0 9,18 * * *",
    )
    dynamic = plans[0]
    assert dynamic.dag_id == DYNAMIC_DAG_ID
    assert dynamic.schedule == "0 9,18 * * *"
    assert [s.segment_id for s in dynamic.segments] == ["alpha", "zeta"]
    assert dynamic.tags == ("funnel", "dynamic")


def test_each_enabled_static_segment_gets_its_own_dag() -> None:
    plans = plan_dags(
        [seg("b_static", Kind.STATIC), seg("a_static", Kind.STATIC), seg("off", Kind.STATIC, enabled=False)],
        "0 9,18 * * *",
    )
    assert [p.dag_id for p in plans] == ["funnel_dynamic_segments", "funnel_static_a_static", "funnel_static_b_static"]
    assert plans[1].run_at == RUN_AT


def test_proxy_segments_get_no_task() -> None:
    plans = plan_dags([seg("new_users", Kind.PROXY)], "0 9,18 * * *")
    assert [(p.dag_id, p.segments) for p in plans] == [("funnel_dynamic_segments", ())]


def composite(segment_id: str, *operands: str) -> Segment:
    rule = json.dumps({"union": list(operands)}, separators=(",", ":"))
    return Segment(segment_id=segment_id, name=segment_id, kind=Kind.COMPOSITE, rule=rule)


def shards_of(plans: list[DagPlan]) -> dict[str, str]:
    """segment id -> its dynamic DAG."""
    return {s.segment_id: p.dag_id for p in plans if p.kind is Kind.DYNAMIC for s in p.segments}


def test_at_most_the_cap_the_single_dynamic_dag_is_unchanged() -> None:
    segments = [seg(f"s{n}", Kind.DYNAMIC) for n in range(5)]
    assert plan_dags(segments, "0 9,18 * * *", max_tasks=5) == plan_dags(segments, "0 9,18 * * *")
    assert [p.dag_id for p in plan_dags(segments, "0 9,18 * * *", max_tasks=5)] == [DYNAMIC_DAG_ID]


def test_above_the_cap_shards_hold_at_most_the_cap_each_by_a_stable_hash() -> None:
    segments = [seg(f"s{n:03d}", Kind.DYNAMIC) for n in range(300)]
    plans = plan_dags([*segments, seg("a_static", Kind.STATIC)], "0 9,18 * * *", max_tasks=10)
    dynamic = [p for p in plans if p.kind is Kind.DYNAMIC]
    assert DYNAMIC_DAG_ID not in [p.dag_id for p in plans]
    assert all(0 < len(p.segments) <= 10 and p.warnings == () for p in dynamic)
    assert all(p.schedule == "0 9,18 * * *" and p.tags == ("funnel", "dynamic") for p in dynamic)
    assert sorted(shards_of(plans)) == [s.segment_id for s in segments]
    assert plans[-1].dag_id == "funnel_static_a_static"
    # sha256, not hash(): the same in every process, on every machine, in every Python version
    assert (shard_dag_id("apples"), shard_dag_id("bananas")) == (
        "funnel_dynamic_segments_03",
        "funnel_dynamic_segments_02",
    )
    assert {shard_dag_id(f"x{n}") for n in range(2000)} == {
        f"funnel_dynamic_segments_{n:02d}" for n in range(SHARD_BUCKETS)
    }


def test_adding_or_removing_segments_moves_no_other_segment() -> None:
    segments = [seg(f"s{n:03d}", Kind.DYNAMIC) for n in range(200)]
    before = shards_of(plan_dags(segments, "0 9,18 * * *", max_tasks=10))
    more = shards_of(plan_dags([*segments, *(seg(f"t{n}", Kind.DYNAMIC) for n in range(50))], "x", max_tasks=10))
    fewer = shards_of(plan_dags(segments[::2], "x", max_tasks=10))
    assert {k: more[k] for k in before} == before
    assert fewer == {k: before[k] for k in fewer}


def test_a_composite_stays_with_its_operands_in_the_shard_of_the_smallest_id() -> None:
    segments = [seg(f"s{n:03d}", Kind.DYNAMIC) for n in range(40)]
    plans = plan_dags([*segments, composite("zz_both", "s007", "s031")], "0 9,18 * * *", max_tasks=5)
    shards = shards_of(plans)
    assert shards["zz_both"] == shards["s007"] == shards["s031"] == shard_dag_id("s007")


def test_a_component_over_the_cap_is_one_dag_with_a_warning() -> None:
    operands = [seg(f"s{n}", Kind.DYNAMIC) for n in range(4)]
    others = [seg(f"o{n}", Kind.DYNAMIC) for n in range(6)]
    plans = plan_dags([*operands, *others, composite("all4", "s0", "s1", "s2", "s3")], "x", max_tasks=3)
    home = next(p for p in plans if any(s.segment_id == "all4" for s in p.segments))
    assert {"all4", "s0", "s1", "s2", "s3"} <= {s.segment_id for s in home.segments}
    assert home.dag_id == shard_dag_id("all4")
    assert len(home.warnings) == 1
    assert "over dynamic_dag_max_tasks (3)" in home.warnings[0]
    assert "largest group of a composite and its operands has 5 segments (from 'all4')" in home.warnings[0]
    assert [p.dag_id for p in plans if p.warnings] == [home.dag_id]
