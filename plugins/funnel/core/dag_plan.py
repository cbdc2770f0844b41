"""Segments to a plan of DAGs and tasks: pure data, deterministic, no Airflow objects.

The factory turns each ``DagPlan`` into a DAG; keeping the planning pure means the rules
(which segment runs where, ids, dates) test without Airflow and never depend on the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from funnel.core.segment import Kind, Segment

DYNAMIC_DAG_ID = "funnel_dynamic_segments"
TAGS_DAG_ID = "funnel_user_tags"
RESTORE_DAG_ID = "funnel_restore_redis"
WEBHOOKS_DAG_ID = "funnel_webhooks"
PURGE_DAG_ID = "funnel_purge_retired"
STATIC_DAG_PREFIX = "funnel_static_"
#: A fixed start date for the dynamic DAG: constructor arguments never depend on the clock.
DYNAMIC_START_DATE = dt.datetime(2024, 1, 1)


@dataclass(frozen=True)
class DagPlan:
    """One DAG to build. ``schedule`` is a cron string (dynamic) or None with ``run_at`` (static)."""

    dag_id: str
    kind: Kind
    segments: tuple[Segment, ...]
    schedule: str | None = None
    run_at: dt.datetime | None = None

    @property
    def tags(self) -> tuple[str, ...]:
        """``funnel``, the kind, and a static segment's labels (the UI filters DAGs by tag)."""
        labels = self.segments[0].labels if self.kind is Kind.STATIC and self.segments else ()
        return ("funnel", self.kind.value, *labels)


def static_dag_id(segment_id: str) -> str:
    return f"{STATIC_DAG_PREFIX}{segment_id}"


def plan_dags(segments: Iterable[Segment], dynamic_schedule: str) -> list[DagPlan]:
    """The DAGs for a catalog: one dynamic DAG (always; dynamic and composite segments), one
    DAG per enabled static segment.

    Disabled segments get no task; proxy segments are answered at request time, not by a DAG.
    """
    enabled = sorted(s for s in segments if s.enabled)
    dynamic = tuple(s for s in enabled if s.kind.on_slots)  # composites ride with their operands
    plans = [DagPlan(DYNAMIC_DAG_ID, Kind.DYNAMIC, dynamic, schedule=dynamic_schedule)]
    plans.extend(
        DagPlan(static_dag_id(s.segment_id), Kind.STATIC, (s,), run_at=s.run_at)
        for s in enabled
        if s.kind is Kind.STATIC
    )
    return plans
