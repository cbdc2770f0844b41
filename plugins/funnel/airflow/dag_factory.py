"""Turn the segment catalog into Airflow DAGs.

``register_dags(globals())`` is all a file in ``dags/`` does: read the catalog, plan, and
build one DAG per plan, plus one marker DAG per invalid segment. Building is
deterministic (sorted segments, fixed start dates, nothing read from the clock), so the
same catalog always serializes to the same DAGs and Airflow records no new versions.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import MutableMapping

import pendulum
from airflow.sdk import DAG, Asset, AssetAny, BaseOperator, get_parsing_context
from airflow.timetables.events import EventsTimetable

from funnel import settings, wiring
from funnel.airflow.deadline_callback import DeadlineDag, slot_deadline
from funnel.airflow.invalid_segment_operator import InvalidSegmentOperator
from funnel.airflow.purge_operator import PurgeRetiredOperator
from funnel.airflow.refresh_operators import CompositeRefreshOperator, SegmentRefreshOperator
from funnel.airflow.restore_operator import RestoreRedisOperator
from funnel.airflow.tag_load_operator import UserTagsLoadOperator
from funnel.airflow.webhook_delivery_operator import WebhookDeliveryOperator
from funnel.core.composite_expr import expression_in_words, parse_expression
from funnel.core.composite_graph import composite_operands
from funnel.core.dag_plan import (
    DYNAMIC_DAG_ID,
    DYNAMIC_START_DATE,
    PURGE_DAG_ID,
    RESTORE_DAG_ID,
    TAGS_DAG_ID,
    WEBHOOKS_DAG_ID,
    DagPlan,
)
from funnel.core.errors import CatalogError, SegmentError
from funnel.core.query_check import check_query
from funnel.core.segment import Kind, Segment
from funnel.core.segment_revisions import digest, segment_definition
from funnel.core.templating import check_template
from funnel.services.catalog import Catalog, load_catalog, planned_dags
from funnel.storage import catalog_snapshot, layout

log = logging.getLogger(__name__)

INVALID_DAG_PREFIX = "funnel_invalid_"
_NOT_SLUG = re.compile(r"[^a-z0-9_]+")


def build_dag(plan: DagPlan, timezone: str = settings.TIMEZONE) -> DAG:
    """One Airflow DAG for one plan."""
    if plan.kind is Kind.DYNAMIC:
        dag = DeadlineDag(
            dag_id=plan.dag_id,
            schedule=plan.schedule,
            start_date=pendulum.instance(DYNAMIC_START_DATE, tz=timezone),
            catchup=False,
            max_active_runs=1,
            max_active_tasks=settings.DYNAMIC_MAX_ACTIVE_TASKS,  # the pool caps Hive, not Airflow's 16 per DAG
            tags=list(plan.tags),
            description=f"Refreshes {_which(plan)} at {plan.schedule} ({timezone})",
            doc_md=f"Refreshes {_which(plan)} on `{plan.schedule}` ({timezone}).",
            # A run still going shortly before the next slot calls funnel.airflow.deadline_callback.
            deadline=slot_deadline(_required(plan.schedule), timezone, settings.DEADLINE_MINUTES_BEFORE_NEXT_SLOT),
        )
    else:
        segment = plan.segments[0]
        run_at = pendulum.instance(_required(plan.run_at))
        dag = DAG(
            dag_id=plan.dag_id,
            schedule=EventsTimetable([run_at], description=f"once at {run_at.isoformat()}"),
            start_date=run_at,
            catchup=True,
            # A static segment's DAG exists to run once, at run_at, with nobody to unpause it.
            is_paused_upon_creation=False,
            max_active_runs=1,
            tags=list(plan.tags),
            description=f"Computes static segment {segment.segment_id} once, at {run_at.isoformat()}",
            doc_md=f"Computes static segment `{segment.segment_id}` once, at {run_at.isoformat()}; "
            "then its members are frozen.",
        )
    tasks: dict[str, BaseOperator] = {}
    for segment in plan.segments:
        if segment.kind is Kind.COMPOSITE:
            tasks[segment.segment_id] = CompositeRefreshOperator(
                task_id=segment.segment_id,
                segment_id=segment.segment_id,
                rule=_required(segment.rule),
                max_shrink_pct=segment.max_shrink_pct,
                doc_md=task_doc(segment),
                dag=dag,
                **_owned(segment),
            )
            continue
        tasks[segment.segment_id] = SegmentRefreshOperator(
            task_id=segment.segment_id,
            segment_id=segment.segment_id,
            query=_required(segment.query),
            kind=segment.kind.value,
            max_shrink_pct=segment.max_shrink_pct,
            doc_md=task_doc(segment),
            dag=dag,
            **_owned(segment),
        )
    # A composite runs after its operands' tasks in the same run (static operands have none:
    # their frozen version is used), so the grid shows the graph.
    for segment in plan.segments:
        if segment.kind is Kind.COMPOSITE:
            upstream = [tasks[name] for name in composite_operands(segment) if name in tasks]
            tasks[segment.segment_id].set_upstream(upstream)
    return dag


def _which(plan: DagPlan) -> str:
    """The dynamic segments a dynamic DAG refreshes, in words: all of them, or one shard's."""
    if plan.dag_id == DYNAMIC_DAG_ID:
        return "every enabled dynamic segment"
    return f"the enabled dynamic segments of shard {plan.dag_id} ({len(plan.segments)}; README, Dynamic DAGs in shards)"


def _owned(segment: Segment) -> dict[str, str]:
    """The task's ``owner`` (the grid shows it), the segment's or Airflow's default, and the
    digest of its definition, which each version it computes records as its revision."""
    owner = {"owner": segment.owner} if segment.owner else {}
    return {**owner, "definition_digest": digest(segment_definition(segment))}


def invalid_dag_id(error: SegmentError) -> str:
    """A valid, stable DAG id for an invalid segment, whatever its segment_id looks like."""
    slug = _NOT_SLUG.sub("_", error.segment_id.lower()).strip("_") or "unnamed"
    return f"{INVALID_DAG_PREFIX}{slug}"[:200]


def build_invalid_dag(dag_id: str, error: SegmentError) -> DAG:
    """The UI marker of an invalid segment: its description is the error; running it fails with it."""
    dag = DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.instance(DYNAMIC_START_DATE, tz="UTC"),
        catchup=False,
        tags=["funnel", "invalid"],
        description=str(error)[:1000],
        doc_md=f"**This segment is invalid and is not refreshed.**\n\n{error}",
    )
    InvalidSegmentOperator(task_id="explain", message=str(error), dag=dag)
    return dag


def tag_query_error(query: str) -> SegmentError | None:
    """Why the tag query cannot run (the same checks as a segment query), or None."""
    try:
        check_template(layout.TAGS_ID, query)
        check_query(layout.TAGS_ID, query, extra_allowed=settings.ALLOWED_FUNCTIONS)
    except SegmentError as exc:
        return SegmentError(layout.TAGS_ID, "tag_query", exc.problem, exc.fix)
    return None


def build_tags_dag(query: str, schedule: str, timezone: str = settings.TIMEZONE) -> DAG:
    """The DAG loading the users' tags; without a valid ``tag_query`` it explains what to set."""
    error = tag_query_error(query) if query else None
    configured = bool(query) and error is None
    dag = DAG(
        dag_id=TAGS_DAG_ID,
        schedule=schedule if configured else None,
        start_date=pendulum.instance(DYNAMIC_START_DATE, tz=timezone),
        catchup=False,
        max_active_runs=1,
        tags=["funnel", "proxy"],
        description=(
            f"Loads every user's tags (the proxy segments' input) at {schedule} ({timezone})"
            if configured
            else str(error or "not configured: set [funnel] tag_query to load the users' tags")[:1000]
        ),
        doc_md="Loads `user_id, first_seen, order_count` from the warehouse as of the run's data interval end; "
        "events after that time are replayed on top.",
    )
    if configured:
        UserTagsLoadOperator(task_id="load_user_tags", query=query, doc_md=f"```sql\n{query}\n```", dag=dag)
    else:
        message = (
            str(error)
            if error
            else (
                "the user tags are not configured. Fix: set [funnel] tag_query (AIRFLOW__FUNNEL__TAG_QUERY) to a "
                "HiveQL SELECT of user_id, first_seen, order_count, as of the run's data interval end"
            )
        )
        InvalidSegmentOperator(task_id="explain", message=message, dag=dag)
    return dag


def build_restore_dag() -> DAG:
    """A DAG to trigger when Redis lost its data: every segment and the tags, from MySQL."""
    dag = DAG(
        dag_id=RESTORE_DAG_ID,
        schedule=None,
        start_date=pendulum.instance(DYNAMIC_START_DATE, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["funnel"],
        description="Restores every segment and the users' tags into Redis from MySQL (trigger after a Redis loss)",
        doc_md="Redis keeps nothing on disk here; MySQL holds every live version. Trigger this DAG (or run "
        "`python -m funnel.cli rebuild-redis --all`) after Redis lost its data. The API also restores a "
        "segment by itself the first time it finds it missing.",
    )
    RestoreRedisOperator(task_id="restore_redis", dag=dag)
    return dag


def build_purge_dag(schedule: str = settings.PURGE_SCHEDULE) -> DAG:
    """A DAG that deletes the data of segments retired over ``change_history_days`` ago, daily."""
    dag = DAG(
        dag_id=PURGE_DAG_ID,
        schedule=schedule,
        start_date=pendulum.instance(DYNAMIC_START_DATE, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,  # housekeeping nobody has to remember to switch on
        tags=["funnel"],
        description=f"Deletes the data of segments retired over change_history_days "
        f"({settings.CHANGE_HISTORY_DAYS}) ago, at {schedule}",
        doc_md="A retired segment (`segments retire`, `POST /v1/segments/{id}:retire`; `:restore` brings it back) "
        "keeps its data for `change_history_days`; then this DAG deletes its MySQL rows and Redis keys. Its "
        "revisions stay. By hand: `python -m funnel.cli segments purge`.",
    )
    PurgeRetiredOperator(task_id="purge_retired", dag=dag)
    return dag


WEBHOOKS_HOWTO = (
    "No enabled webhook subscription yet, so this DAG has no schedule. Add one with "
    "`python -m funnel.cli webhooks add SEGMENT URL` or `POST /v1/webhooks` (write scope); the next parse "
    "schedules this DAG on that segment's Asset."
)


def build_webhooks_dag(segment_ids: list[str]) -> DAG:
    """The webhook DAG: runs after any refresh of a subscribed segment (an Asset event), and by hand
    (a manual run retries parked deliveries first). No subscriptions: no schedule."""
    assets = [Asset(layout.asset_uri(segment_id)) for segment_id in sorted(set(segment_ids))]
    schedule: object = None
    if len(assets) == 1:
        schedule = assets
    elif assets:
        schedule = AssetAny(*assets)  # any one refresh, not all of them
    subscribed = ", ".join(sorted(set(segment_ids)))
    dag = DAG(
        dag_id=WEBHOOKS_DAG_ID,
        schedule=schedule,
        start_date=pendulum.instance(DYNAMIC_START_DATE, tz="UTC"),
        catchup=False,
        max_active_runs=1,  # one run at a time: a subscription's versions go out in order
        tags=["funnel", "webhooks"],
        description=(
            f"Delivers entered/exited of each new version to webhook subscriptions of: {subscribed}"
            if assets
            else WEBHOOKS_HOWTO
        ),
        doc_md="Each enabled subscription gets every version made live after its cursor, in order, in signed "
        "batches; a batch that fails `webhook_max_attempts` times is parked and that subscription waits. "
        "Trigger this DAG by hand to retry parked deliveries (see README, Webhooks).",
    )
    config = wiring.webhook_settings()
    WebhookDeliveryOperator(
        task_id="deliver",
        batch_size=config.batch_size,
        max_attempts=config.max_attempts,
        backoff_seconds=config.backoff_seconds,
        backoff_max_seconds=config.backoff_max_seconds,
        timeout_seconds=config.timeout_seconds,
        refuse_private=config.refuse_private,
        retries=0,
        dag=dag,
    )
    return dag


def read_subscribed_segments(catalog: Catalog) -> list[str]:
    """The stored segments of the catalog with enabled webhook subscriptions, read at parse time with
    the catalog's short timeouts; when MySQL fails, the last-good list (none: no schedule)."""

    path = catalog_snapshot.subscribed_path(settings.catalog_snapshot_path())
    started = time.monotonic()
    try:
        conn = wiring.catalog_hook().get_conn()
        try:
            found = wiring.webhook_store(conn).subscribed_segments()
        finally:
            conn.close()
        catalog_snapshot.save_subscribed(path, found)
    except Exception as exc:
        found = catalog_snapshot.load_subscribed(path) or []
        log.warning(
            "funnel: cannot read webhook subscriptions after %.1fs (%s: %s); scheduling funnel_webhooks on the "
            "last-good list (%d segments)",
            time.monotonic() - started,
            type(exc).__name__,
            exc,
            len(found),
        )
    stored = {s.segment_id for s in catalog.segments if s.kind is not Kind.PROXY}
    return [segment_id for segment_id in found if segment_id in stored]


def build_dags(catalog: Catalog, only_dag_id: str | None = None) -> dict[str, DAG]:
    """All DAGs for a catalog, keyed by dag_id; only ``only_dag_id`` when a worker needs one."""
    dags: dict[str, DAG] = {}
    if only_dag_id in (None, WEBHOOKS_DAG_ID):
        dags[WEBHOOKS_DAG_ID] = build_webhooks_dag(read_subscribed_segments(catalog))
    if only_dag_id in (None, TAGS_DAG_ID):
        dags[TAGS_DAG_ID] = build_tags_dag(settings.tag_query(), settings.TAG_SCHEDULE)
    if only_dag_id in (None, RESTORE_DAG_ID):
        dags[RESTORE_DAG_ID] = build_restore_dag()
    if only_dag_id in (None, PURGE_DAG_ID):
        dags[PURGE_DAG_ID] = build_purge_dag()
    for plan in planned_dags(catalog.segments):
        if only_dag_id in (None, plan.dag_id):
            for warning in plan.warnings:
                log.warning("%s", warning)
            dags[plan.dag_id] = build_dag(plan)
    for error in catalog.errors:
        dag_id = invalid_dag_id(error)
        if only_dag_id in (None, dag_id) and dag_id not in dags:
            dags[dag_id] = build_invalid_dag(dag_id, error)
    return dags


def register_dags(namespace: MutableMapping[str, object]) -> None:
    """Build funnel's DAGs into a DAG file's globals.

    Invalid segments are logged and get a marker DAG; with ``strict_catalog`` they make
    the whole file an import error instead (for CI).
    """
    started = time.monotonic()
    # Thousands of segments allocate millions of objects; collection passes every few
    # thousand allocations find no garbage here and cost a fifth of the parse.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _register(namespace, started)
    finally:
        if gc_was_enabled:
            gc.enable()


def _register(namespace: MutableMapping[str, object], started: float) -> None:
    catalog = load_catalog(wiring.catalog_hook())
    for error in catalog.errors:
        log.error("funnel: invalid segment, not refreshed: %s", error)
    tag_error = tag_query_error(settings.tag_query()) if settings.tag_query() else None
    if tag_error:
        log.error("funnel: invalid tag query, user tags not loaded: %s", tag_error)
    problems = [*catalog.errors, *([tag_error] if tag_error else [])]
    if problems and settings.strict_catalog():
        details = "\n".join(f"- {error}" for error in problems)
        raise CatalogError(f"funnel: {len(problems)} invalid segment(s) (strict_catalog is on):\n{details}")
    dags = build_dags(catalog, get_parsing_context().dag_id)
    namespace.update(dags)
    log.info(
        "funnel: built %d DAGs from %d segments%s in %.3fs",
        len(dags),
        len(catalog.segments),
        " (from the last-good snapshot)" if catalog.from_snapshot else "",
        time.monotonic() - started,
    )


def task_doc(segment: Segment) -> str:
    """A task's documentation in the UI: the segment, where it comes from, and its query."""
    lines = [
        f"### {segment.name}",
        "",
        f"- segment: `{segment.segment_id}`",
        f"- kind: {segment.kind.value}",
        f"- source: {segment.source}",
    ]
    if segment.run_at is not None:
        lines.append(f"- run_at: {segment.run_at.isoformat()}")
    if segment.owner:
        lines.append(f"- owner: {segment.owner}")
    if segment.labels:
        lines.append(f"- labels: {', '.join(segment.labels)}")
    if segment.kind is Kind.COMPOSITE:
        expr = parse_expression(segment.segment_id, segment.rule)
        lines += ["", f"Computed from the operands' live versions, without Hive: `{expression_in_words(expr)}`", ""]
        lines += ["```json", segment.rule or "", "```"]
        return "\n".join(lines)
    lines += ["", "```sql", segment.query or "", "```"]
    return "\n".join(lines)


def _required(value: object) -> object:
    if value is None:
        raise ValueError("planned segment lacks a field its kind requires")
    return value


__all__ = ["build_dag", "build_dags", "register_dags"]
