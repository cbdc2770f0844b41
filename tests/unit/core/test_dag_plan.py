"""Planning is pure: which segment runs in which DAG, in a deterministic order."""

from __future__ import annotations

import datetime as dt

from funnel.core.dag_plan import DYNAMIC_DAG_ID, plan_dags
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
