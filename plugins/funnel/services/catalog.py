"""The segment catalog: rows from MySQL's ``funnel_segments`` and the Airflow Variable
``funnel_segments``, merged, then validated one by one.

A bad row never hides the good ones: each is validated alone and its error is returned
beside the valid segments, for the factory to report. When MySQL cannot be read, the
last-good snapshot stands in for it, so DAGs never vanish during an outage.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from funnel import settings
from funnel.core.composite_graph import check_composites
from funnel.core.dag_plan import DagPlan, plan_dags
from funnel.core.errors import CatalogError, SegmentError
from funnel.core.query_check import check_query, load_parser, rules_fingerprint
from funnel.core.segment import Segment, segment_from_row
from funnel.core.segment_revisions import segment_definition
from funnel.core.utc_time import utc_now
from funnel.storage import catalog_snapshot, layout
from funnel.storage.hooks import FunnelMySqlHook
from funnel.storage.mysql.segment_definitions import catalog_rows, record_catalog_changes

log = logging.getLogger(__name__)

MYSQL_SOURCE = f"MySQL table {layout.SEGMENTS_TABLE}"


@dataclass
class Catalog:
    """Valid segments (sorted by id), the errors of the rows that were not, and provenance."""

    segments: list[Segment] = field(default_factory=list)
    errors: list[SegmentError] = field(default_factory=list)
    from_snapshot: bool = False
    checked_queries: set[str] = field(default_factory=set)
    #: Segments built with a query not parsed yet (the parse-time budget ran out).
    unchecked: int = 0


def variable_source(name: str) -> str:
    return f"Airflow Variable {name}"


def read_mysql_rows(hook: FunnelMySqlHook) -> list[dict[str, Any]]:
    """All catalog rows, in segment_id order (the catalog is metadata, not members)."""
    started = time.monotonic()
    conn = hook.get_conn()
    try:
        rows = catalog_rows(conn)
    finally:
        conn.close()
    log.info("funnel: read %d catalog rows from MySQL in %.3fs", len(rows), time.monotonic() - started)
    return rows


def read_variable_rows(name: str) -> tuple[list[dict[str, Any]], list[SegmentError]]:
    """Rows from the Airflow Variable ``name`` (a JSON list of objects); absent means none."""
    from airflow.sdk import Variable

    raw = Variable.get(name, default=None)
    if raw is None or not str(raw).strip():
        return [], []
    fix = f"set the Variable {name} to a JSON list of objects with the columns of {layout.SEGMENTS_TABLE}"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return [], [SegmentError(f"variable:{name}", "value", f"is not valid JSON ({exc})", fix)]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return [], [SegmentError(f"variable:{name}", "value", "is not a JSON list of objects", fix)]
    return value, []


def merge_rows(
    mysql_rows: Iterable[Mapping[str, Any]], variable_rows: Iterable[Mapping[str, Any]], variable_name: str
) -> list[tuple[Mapping[str, Any], str]]:
    """(row, source) pairs; when both sources define a segment_id, MySQL's row wins."""
    merged: list[tuple[Mapping[str, Any], str]] = [(row, MYSQL_SOURCE) for row in mysql_rows]
    in_mysql = {row.get("segment_id") for row, _ in merged}
    source = variable_source(variable_name)
    for row in variable_rows:
        if row.get("segment_id") in in_mysql:
            log.warning(
                "funnel: segment %r is defined in both %s and %s; using the row from %s",
                row.get("segment_id"),
                MYSQL_SOURCE,
                source,
                MYSQL_SOURCE,
            )
            continue
        merged.append((row, source))
    return merged


def validate_rows(
    rows: Iterable[tuple[Mapping[str, Any], str]],
    checked_queries: Iterable[str] = (),
    check_budget_seconds: float | None = None,
    *,
    check_queries: bool = True,
    memo: dict[tuple[str, str], Segment] | None = None,
) -> Catalog:
    """Validate each row alone.

    ``memo`` (without query checks only): the segments of the last call, by source and row; a
    row unchanged since is not built again, and the memo then holds this call's rows.

    Queries whose digest is in ``checked_queries`` skip the SQL parse. New queries are
    parsed until ``check_budget_seconds`` is spent (None: no limit); the rest build as usual,
    are counted in ``unchecked``, and are parsed at the next parses (the operator also checks
    every query before it reaches Hive).
    """
    known = set(checked_queries)
    catalog = Catalog()
    deadline: float | None = None
    rules = rules_fingerprint(settings.ALLOWED_FUNCTIONS)
    remembered: dict[tuple[str, str], Segment] = {}
    for row, source in rows:
        try:
            key = (source, repr(tuple(row.items()))) if memo is not None and not check_queries else None
            segment = memo.get(key) if key is not None and memo is not None else None
            if segment is None:
                segment = segment_from_row(row, source)
            if key is not None:
                remembered[key] = segment
            if segment.query is not None and check_queries:
                digest = catalog_snapshot.query_digest(segment.query, rules)
                if digest not in known:
                    if deadline is None and check_budget_seconds is not None:
                        load_parser()  # a one-time import, not part of the budget
                        deadline = time.monotonic() + check_budget_seconds
                    if deadline is not None and time.monotonic() > deadline:
                        catalog.unchecked += 1
                        catalog.segments.append(segment)
                        continue
                    check_query(segment.segment_id, segment.query, extra_allowed=settings.ALLOWED_FUNCTIONS)
                    known.add(digest)
                catalog.checked_queries.add(digest)
        except SegmentError as exc:
            catalog.errors.append(exc)
            continue
        catalog.segments.append(segment)
    if memo is not None:
        memo.clear()
        memo.update(remembered)
    # Composites need the whole catalog: operands known, valid, not proxy, enabled; no cycles.
    invalid_ids = [error.segment_id for error in catalog.errors]
    catalog.segments, refused = check_composites(catalog.segments, invalid_ids)
    catalog.errors.extend(refused)
    catalog.segments.sort()
    return catalog


def planned_dags(segments: Iterable[Segment]) -> list[DagPlan]:
    """The DAGs of these segments under the settings (``dynamic_schedule``, ``dynamic_dag_max_tasks``):
    what the factory builds, the deadline alert counts and ``dynamic-dags`` prints."""
    return plan_dags(segments, settings.DYNAMIC_SCHEDULE, settings.DYNAMIC_DAG_MAX_TASKS)


def serving_catalog(hook: FunnelMySqlHook, memo: dict[tuple[str, str], Segment] | None = None) -> Catalog:
    """The catalog as the API needs it: both sources merged and validated, queries not parsed
    (the API runs none; each task checks its own before Hive sees it). The Airflow Variable
    is read when Airflow's metadata is reachable; a standalone API without it serves the
    MySQL rows and says so once. ``memo``: the rows of the last read (``validate_rows``)."""
    try:
        variable_rows, variable_errors = read_variable_rows(settings.CATALOG_VARIABLE)
    except Exception as exc:
        _warn_once(
            f"funnel API: the Airflow Variable {settings.CATALOG_VARIABLE} cannot be read ({exc}); serving MySQL rows"
        )
        variable_rows, variable_errors = [], []
    mysql_rows = read_mysql_rows(hook)
    rows = merge_rows(mysql_rows, variable_rows, settings.CATALOG_VARIABLE)
    catalog = validate_rows(rows, check_queries=False, memo=memo)
    catalog.errors[:0] = variable_errors
    return catalog


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def load_catalog(hook: FunnelMySqlHook, snapshot_path: str | None = None) -> Catalog:
    """Read both sources and validate; fall back to the last-good snapshot if MySQL fails.

    ``hook``: the catalog's own, with its short timeouts (``funnel.wiring.catalog_hook``).
    """
    path = snapshot_path or settings.catalog_snapshot_path()
    last_good = catalog_snapshot.load(path)
    variable_rows, variable_errors = read_variable_rows(settings.CATALOG_VARIABLE)
    started = time.monotonic()
    try:
        mysql_rows = catalog_snapshot.json_safe_rows(read_mysql_rows(hook))
        from_snapshot = False
    except Exception as exc:
        if last_good is None:
            raise CatalogError(
                f"funnel: cannot read the segment catalog from MySQL ({type(exc).__name__}: {exc}) "
                f"and there is no last-good snapshot at {path}. Fix: make MySQL connection "
                f"{hook.get_conn_id()!r} reachable; the snapshot is written after the first successful read"
            ) from exc
        log.warning(
            "funnel: MySQL catalog read failed after %.1fs (%s: %s); building %d segments from the "
            "last-good snapshot %s",
            time.monotonic() - started,
            type(exc).__name__,
            exc,
            len(last_good.rows),
            path,
        )
        mysql_rows, from_snapshot = last_good.rows, True
    catalog = validate_rows(
        merge_rows(mysql_rows, variable_rows, settings.CATALOG_VARIABLE),
        last_good.checked_queries if last_good else (),
        None if settings.strict_catalog() else settings.query_check_budget_seconds(),
    )
    if catalog.unchecked:
        log.warning(
            "funnel: %d new queries not checked yet (parse-time budget %.2fs spent); the next parses "
            "check them, and each task checks its query before it reaches Hive",
            catalog.unchecked,
            settings.query_check_budget_seconds(),
        )
    catalog.errors[:0] = variable_errors
    catalog.from_snapshot = from_snapshot
    recorded = last_good.recorded if last_good else ""
    if not from_snapshot and not variable_errors:  # an unreadable Variable would look like deletions
        sources = catalog_snapshot.sources_digest(mysql_rows, variable_rows)
        present = {row.get("segment_id") for row in [*mysql_rows, *variable_rows]}
        from_mysql = {row["segment_id"] for row in mysql_rows if isinstance(row.get("segment_id"), str)}
        if sources != recorded and _record_changes(hook, catalog, present, from_mysql):
            recorded = sources
    fresh = catalog_snapshot.Snapshot(mysql_rows, frozenset(catalog.checked_queries), recorded)
    if not from_snapshot and fresh != last_good:  # an unchanged catalog costs no write
        catalog_snapshot.save(path, fresh)
    return catalog


def _record_changes(hook: FunnelMySqlHook, catalog: Catalog, present: set[Any], from_mysql: set[str]) -> bool:
    """Record the catalog's changes made outside the write path as revisions by ``catalog``
    (``segment_definitions.record_catalog_changes``): run by a parse only when the sources moved.
    Never fails the parse: False (tried again at the next parse) when MySQL refuses."""
    valid = {segment.segment_id: segment_definition(segment) for segment in catalog.segments}
    unreadable = {sid for sid in present if isinstance(sid, str) and sid not in valid}
    try:
        conn = hook.get_conn()
        try:
            added = record_catalog_changes(conn, valid, unreadable, from_mysql, utc_now())
        finally:
            conn.close()
    except Exception as exc:
        log.warning("funnel: could not record the catalog's changes as revisions (%s); the next parse tries again", exc)
        return False
    for revision in added:
        log.info(
            "funnel: segment %s: revision %d (%s by %s: %s)",
            revision.segment_id,
            revision.revision,
            revision.change.value,
            revision.actor,
            ", ".join(revision.changed) or "-",
        )
    return True
