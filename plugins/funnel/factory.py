"""Turn the segment catalog into Airflow DAGs.

``register_dags(globals())`` is all a file in ``dags/`` does: read the catalog, plan, and
build one DAG per plan. Building is deterministic (sorted segments, fixed start dates,
nothing read from the clock) so the same catalog always serializes to the same DAGs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping

import pendulum
from airflow.sdk import DAG
from airflow.timetables.events import EventsTimetable

from funnel import settings
from funnel.catalog import Catalog, parse_rows, read_mysql_rows
from funnel.hooks import FunnelMySqlHook
from funnel.operators import SegmentRefreshOperator
from funnel.plan import DYNAMIC_START_DATE, DagPlan, plan_dags
from funnel.segments import Kind, Segment

log = logging.getLogger(__name__)


def build_dag(plan: DagPlan, timezone: str = settings.TIMEZONE) -> DAG:
    """One Airflow DAG for one plan."""
    if plan.kind is Kind.DYNAMIC:
        dag = DAG(
            dag_id=plan.dag_id,
            schedule=plan.schedule,
            start_date=pendulum.instance(DYNAMIC_START_DATE, tz=timezone),
            catchup=False,
            max_active_runs=1,
            tags=list(plan.tags),
            doc_md=f"Refreshes every enabled dynamic segment on `{plan.schedule}` ({timezone}).",
        )
    else:
        run_at = pendulum.instance(_required(plan.run_at))
        dag = DAG(
            dag_id=plan.dag_id,
            schedule=EventsTimetable([run_at], description=f"once at {run_at.isoformat()}"),
            start_date=run_at,
            catchup=True,
            max_active_runs=1,
            tags=list(plan.tags),
            doc_md=f"Computes static segment `{plan.segments[0].segment_id}` once, at {run_at.isoformat()}.",
        )
    for segment in plan.segments:
        SegmentRefreshOperator(
            task_id=segment.segment_id,
            segment_id=segment.segment_id,
            query=_required(segment.query),
            doc_md=_task_doc(segment),
            dag=dag,
        )
    return dag


def build_dags(segments: Iterable[Segment]) -> dict[str, DAG]:
    """All DAGs for a catalog, keyed by dag_id."""
    return {plan.dag_id: build_dag(plan) for plan in plan_dags(segments, settings.DYNAMIC_SCHEDULE)}


def load_catalog() -> Catalog:
    """Read and validate the catalog from MySQL."""
    hook = FunnelMySqlHook(connect_timeout=3, read_timeout=5)
    return parse_rows(read_mysql_rows(hook), source="mysql")


def register_dags(namespace: MutableMapping[str, object]) -> None:
    """Build funnel's DAGs into a DAG file's globals; invalid segments are logged and skipped."""
    catalog = load_catalog()
    for error in catalog.errors:
        log.error("funnel: skipped invalid segment: %s", error)
    namespace.update(build_dags(catalog.segments))


def _task_doc(segment: Segment) -> str:
    return (
        f"**{segment.name}** (`{segment.segment_id}`), {segment.kind.value} segment from {segment.source}.\n\n"
        f"```sql\n{segment.query}\n```"
    )


def _required(value: object) -> object:
    if value is None:
        raise ValueError("planned segment lacks a field its kind requires")
    return value


__all__ = ["build_dag", "build_dags", "register_dags"]
