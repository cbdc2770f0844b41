"""The operator that loads every user's tags from the warehouse: the input of proxy segments."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from funnel import settings, wiring
from funnel.airflow import refresh_metrics
from funnel.airflow.operator_base import BaseHiveQueryOperator, forced, lock_holder, run_info
from funnel.core.errors import RefreshSkipped
from funnel.storage import layout


class UserTagsLoadOperator(BaseHiveQueryOperator):
    """Load every user's tags (``user_id, first_seen, order_count``) from the warehouse, as of
    the run's data interval end, and swap them in; events after that time are replayed on top.

    :param query: the tag query, HiveQL. (templated: only the run's dates, as segment queries)
    :param hive_conn_id: HiveServer2 connection.
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    :param batch_size: rows per fetch from Hive and per write to each store.

    Trigger conf ``{"force": true}`` accepts a result the guards refuse (empty, or shrunk
    beyond ``max_shrink_pct``). Whatever the outcome, the load's metrics go to Airflow's metrics
    (``funnel.airflow.refresh_metrics``).
    """

    ui_color = "#e8eef8"
    subject = layout.TAGS_ID

    def __init__(
        self,
        *,
        query: str,
        hive_conn_id: str = settings.HIVE_CONN_ID,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        batch_size: int = settings.BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            hive_conn_id=hive_conn_id,
            mysql_conn_id=mysql_conn_id,
            redis_conn_id=redis_conn_id,
            batch_size=batch_size,
            **kwargs,
        )
        self.query = query

    def execute(self, context: Context) -> dict[str, Any]:
        run = run_info(context)
        as_of = context.get("data_interval_end") or context["dag_run"].run_after
        redis_client = wiring.redis_client(self.redis_conn_id)
        lock = wiring.segment_lock(redis_client, layout.TAGS_ID, lock_holder(run))
        with (
            wiring.tag_loader(
                mysql_conn_id=self.mysql_conn_id, redis_client=redis_client, batch_size=self.batch_size
            ) as loader,
            self._streaming(loader, columns=3) as batches,
        ):
            try:
                result = loader.load(
                    run,
                    as_of,
                    batches,
                    lock,
                    force=forced(context),
                    max_shrink_pct=settings.MAX_SHRINK_PCT,
                    report=refresh_metrics.tag_load_reporter(dag_id=run.dag_id),
                )
            except RefreshSkipped as skipped:  # a newer load is live
                self.log.info("user tags: skipped: %s", skipped)
                raise AirflowSkipException(str(skipped)) from skipped
        return {"version": result.version, "size": result.size, "replayed": result.replayed, "as_of": as_of.isoformat()}
