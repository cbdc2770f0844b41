"""The operator that refreshes one segment from Hive into Redis and MySQL.

Hooks own the connections; this operator owns the orchestration. Its constructor only
assigns: every connection is opened in ``execute``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context

from funnel import settings
from funnel.errors import FunnelError
from funnel.hive_source import stream_first_column
from funnel.hooks import FunnelMySqlHook
from funnel.refresh import RefreshResult, refresh_segment
from funnel.stores.mysql_store import MySqlSegmentStore
from funnel.stores.redis_store import RedisSegmentStore
from funnel.stores.run_info import RunInfo


class SegmentRefreshOperator(BaseOperator):
    """Run a segment's HiveQL query and make its first column the segment's live members.

    :param segment_id: the segment to refresh (names the Redis keys and MySQL rows).
    :param query: HiveQL SELECT whose first column is the user id. (templated)
    :param hive_conn_id: HiveServer2 connection.
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    :param batch_size: rows per fetch from Hive and per write to each store.

    Runs in the ``funnel_hive`` pool unless another ``pool`` is given.
    """

    template_fields: Sequence[str] = ("query",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"query": "sql"}
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        segment_id: str,
        query: str,
        hive_conn_id: str = settings.HIVE_CONN_ID,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        batch_size: int = settings.BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", settings.HIVE_POOL)
        super().__init__(**kwargs)
        self.segment_id = segment_id
        self.query = query
        self.hive_conn_id = hive_conn_id
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id
        self.batch_size = batch_size

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook, get_context_from_env_var
        from airflow.providers.redis.hooks.redis import RedisHook

        dag_run = context["dag_run"]
        run = RunInfo(
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            logical_date=dag_run.logical_date or dag_run.run_after,
            try_number=context["ti"].try_number,
        )
        redis = RedisSegmentStore(RedisHook(redis_conn_id=self.redis_conn_id).get_conn(), settings.STAGING_TTL_SECONDS)
        with (
            contextlib.closing(FunnelMySqlHook(mysql_conn_id=self.mysql_conn_id).get_conn()) as mysql_conn,
            contextlib.closing(HiveServer2Hook(hiveserver2_conn_id=self.hive_conn_id).get_conn()) as hive_conn,
        ):
            batches = stream_first_column(hive_conn, self.query, self.batch_size, get_context_from_env_var())
            try:
                result = refresh_segment(
                    self.segment_id,
                    batches,
                    MySqlSegmentStore(mysql_conn),
                    redis,
                    run,
                    self.batch_size,
                )
            except FunnelError:
                raise
            except Exception as exc:
                raise FunnelError(
                    f"segment {self.segment_id!r}: refresh failed ({type(exc).__name__}: {exc}); "
                    "live members in Redis and MySQL are unchanged"
                ) from exc
        self._log_summary(result)
        return {
            "segment_id": result.segment_id,
            "version": result.version,
            "size": result.size,
            "promoted": result.promoted,
        }

    def _log_summary(self, result: RefreshResult) -> None:
        if result.promoted:
            self.log.info(
                "segment %s: version %s is live with %s members (%s rows read, %s NULL ids skipped)",
                result.segment_id,
                result.version,
                f"{result.size:,}",
                f"{result.rows_read:,}",
                result.null_ids,
            )
        else:
            self.log.info(
                "segment %s: computed %s members but kept live version %s (it is for a later logical date)",
                result.segment_id,
                f"{result.size:,}",
                result.live_version,
            )


class InvalidSegmentOperator(BaseOperator):
    """Stands for a segment row that failed validation: running it fails with the reason.

    Its DAG (``funnel_invalid_<segment_id>``) is the visible marker in the Airflow UI.

    :param message: the validation error, naming the segment, the field and the fix.
    """

    ui_color = "#f8d7da"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        raise FunnelError(self.message)
