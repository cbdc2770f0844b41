"""Segments to a plan of DAGs and tasks: pure data, deterministic, no Airflow objects.

The factory turns each ``DagPlan`` into a DAG; keeping the planning pure means the rules
(which segment runs where, ids, dates) test without Airflow and never depend on the clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from funnel.core.composite_graph import composite_operands
from funnel.core.segment import Kind, Segment

DYNAMIC_DAG_ID = "funnel_dynamic_segments"
TAGS_DAG_ID = "funnel_user_tags"
RESTORE_DAG_ID = "funnel_restore_redis"
WEBHOOKS_DAG_ID = "funnel_webhooks"
PURGE_DAG_ID = "funnel_purge_retired"
STATIC_DAG_PREFIX = "funnel_static_"
#: Above ``dynamic_dag_max_tasks`` dynamic tasks, the dynamic segments are spread over this many
#: hash buckets, ``funnel_dynamic_segments_00`` to ``_99``. Fixed (not derived from the number of
#: segments), so adding or removing a segment never moves another one.
SHARD_BUCKETS = 100
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
    #: What the Airflow layer logs when it builds this DAG (a shard over the cap, and why).
    warnings: tuple[str, ...] = ()

    @property
    def tags(self) -> tuple[str, ...]:
        """``funnel``, the kind, and a static segment's labels (the UI filters DAGs by tag)."""
        labels = self.segments[0].labels if self.kind is Kind.STATIC and self.segments else ()
        return ("funnel", self.kind.value, *labels)


def static_dag_id(segment_id: str) -> str:
    return f"{STATIC_DAG_PREFIX}{segment_id}"


def shard_dag_id(segment_id: str) -> str:
    """The hash bucket DAG of a segment: ``funnel_dynamic_segments_NN`` from the first 8 bytes of
    the SHA-256 of its id (never Python's ``hash()``, which changes from process to process)."""
    bucket = int.from_bytes(hashlib.sha256(segment_id.encode()).digest()[:8], "big") % SHARD_BUCKETS
    return f"{DYNAMIC_DAG_ID}_{bucket:02d}"


def plan_dags(segments: Iterable[Segment], dynamic_schedule: str, max_tasks: int | None = None) -> list[DagPlan]:
    """The DAGs for a catalog: the dynamic DAG(s) (dynamic and composite segments), one DAG per
    enabled static segment.

    Disabled segments get no task; proxy segments are answered at request time, not by a DAG.
    With at most ``max_tasks`` dynamic tasks (None: no cap), one dynamic DAG
    ``funnel_dynamic_segments``, always (even empty); above it, shards (see ``plan_shards``).
    """
    enabled = sorted(s for s in segments if s.enabled)
    dynamic = tuple(s for s in enabled if s.kind.on_slots)  # composites ride with their operands
    if max_tasks is None or len(dynamic) <= max_tasks:
        plans = [DagPlan(DYNAMIC_DAG_ID, Kind.DYNAMIC, dynamic, schedule=dynamic_schedule)]
    else:
        plans = plan_shards(dynamic, dynamic_schedule, max_tasks)
    plans.extend(
        DagPlan(static_dag_id(s.segment_id), Kind.STATIC, (s,), run_at=s.run_at)
        for s in enabled
        if s.kind is Kind.STATIC
    )
    return plans


def plan_shards(dynamic: Sequence[Segment], dynamic_schedule: str, max_tasks: int) -> list[DagPlan]:
    """The dynamic segments in shards of at most ``max_tasks`` tasks each, sorted by dag_id.

    - A segment's shard is ``shard_dag_id`` of its id: a fixed hash bucket, so it depends on
      the segment's id only. A segment moves only when its composite component changes (below)
      or when the count of dynamic tasks crosses ``max_tasks`` (one DAG <-> shards).
    - A composite and its operands (their connected component through composite operands) are
      one unit, in the shard of the component's lexicographically smallest segment id: a
      composite runs after its operands in the same DAG run. A new composite joining two
      components moves the members of the one whose smallest id sorts later.
    - A shard is never split: one over ``max_tasks`` (a component that large, or a bucket that
      full: about ``SHARD_BUCKETS * max_tasks`` segments in all) stays one DAG and carries a
      warning naming the fix.
    """
    members: dict[str, list[Segment]] = {}
    for component in _components(dynamic):
        home = shard_dag_id(min(s.segment_id for s in component))
        members.setdefault(home, []).extend(component)
    plans = []
    for dag_id in sorted(members):
        shard = tuple(sorted(members[dag_id]))
        warnings: tuple[str, ...] = ()
        if len(shard) > max_tasks:
            biggest = max(_components(shard), key=len)
            why = (
                f"its largest group of a composite and its operands has {len(biggest)} segments (from "
                f"{biggest[0].segment_id!r}), which stay together. Fix: raise dynamic_dag_max_tasks, or split the "
                "composites that join them"
                if len(biggest) > max_tasks
                else f"its hash bucket is full (about {SHARD_BUCKETS} x the cap segments in all). Fix: raise "
                "dynamic_dag_max_tasks"
            )
            warnings = (f"funnel: {dag_id} has {len(shard)} tasks, over dynamic_dag_max_tasks ({max_tasks}): {why}",)
        plans.append(DagPlan(dag_id, Kind.DYNAMIC, shard, schedule=dynamic_schedule, warnings=warnings))
    return plans


def _components(segments: Sequence[Segment]) -> list[list[Segment]]:
    """The segments grouped by connected component through composite operands (operands outside
    ``segments``, e.g. static ones, are ignored), each group sorted, groups in order of their first id."""
    by_id = {s.segment_id: s for s in segments}
    parent = {segment_id: segment_id for segment_id in by_id}

    def root(segment_id: str) -> str:
        while parent[segment_id] != segment_id:
            parent[segment_id] = parent[parent[segment_id]]
            segment_id = parent[segment_id]
        return segment_id

    for segment in segments:
        if segment.kind is Kind.COMPOSITE:
            for name in composite_operands(segment):
                if name in by_id:
                    a, b = root(segment.segment_id), root(name)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    groups: dict[str, list[Segment]] = {}
    for segment_id in sorted(by_id):
        groups.setdefault(root(segment_id), []).append(by_id[segment_id])
    return [groups[key] for key in sorted(groups)]
