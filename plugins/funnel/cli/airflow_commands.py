"""``static-runs`` (each static segment's DAG and run_at), ``dynamic-dags`` (the dynamic DAGs, one
or its shards) and ``ensure-pool`` (the Airflow pool Hive queries run in): the commands that
speak to Airflow."""

from __future__ import annotations

from pathlib import Path

from funnel import settings, wiring


def static_runs(output: Path) -> None:
    """Write ``dag_id run_at`` lines for each enabled static segment (what the demo runs).

    A file, not stdout: Airflow's logging writes to stdout too.
    """
    from funnel.core.segment import Kind
    from funnel.services.catalog import load_catalog, planned_dags

    lines = [
        f"{plan.dag_id} {plan.run_at.isoformat()}\n"
        for plan in planned_dags(load_catalog(wiring.catalog_hook()).segments)
        if plan.kind is Kind.STATIC and plan.run_at is not None
    ]
    output.write_text("".join(lines))


def dynamic_dags() -> None:
    """Print the dynamic DAG ids of the catalog now, one a line: ``funnel_dynamic_segments``, or
    its shards above ``dynamic_dag_max_tasks`` (README: trigger or backfill every one of them)."""
    from funnel.core.segment import Kind
    from funnel.services.catalog import load_catalog, planned_dags

    plans = planned_dags(load_catalog(wiring.catalog_hook()).segments)
    print("".join(f"{plan.dag_id}\n" for plan in plans if plan.kind is Kind.DYNAMIC), end="")


def ensure_pool() -> None:
    """Create or resize the Airflow pool every Hive query runs in (needs Airflow's metadata DB)."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        settings.HIVE_POOL,
        settings.HIVE_POOL_SLOTS,
        "funnel: concurrent segment queries on HiveServer2",
        include_deferred=False,
    )
    print(f"pool {settings.HIVE_POOL}: {settings.HIVE_POOL_SLOTS} slots")
