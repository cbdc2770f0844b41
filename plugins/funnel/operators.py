"""The operator that refreshes one segment from Hive into Redis and MySQL.

Hooks own the connections; this operator owns the orchestration. Its constructor only
assigns: every connection is opened in ``execute``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from funnel import layout, settings
from funnel.errors import FunnelError
from funnel.hive_source import stream_first_column
from funnel.hooks import FunnelMySqlHook
from funnel.query_check import check_query
from funnel.refresh import Refresher, RefreshRequest, RefreshSkipped
from funnel.segments import Kind
from funnel.stores.history import RunHistory
from funnel.stores.lock import SegmentLock
from funnel.stores.mysql_store import MySqlSegmentStore
from funnel.stores.redis_store import RedisSegmentStore
from funnel.stores.run_info import RunInfo, utc_now


class SegmentRefreshOperator(BaseOperator):
    """Run a segment's HiveQL query and make its first column the segment's live members.

    :param segment_id: the segment to refresh (names the Redis keys and MySQL rows).
    :param query: HiveQL SELECT whose first column is the user id. (templated)
    :param kind: ``dynamic`` or ``static``: which scheduling rules apply (overshoot, freeze).
    :param max_shrink_pct: refuse a result that shrinks more than this against the live
        version (None: the global ``max_shrink_pct`` setting).
    :param hive_conn_id: HiveServer2 connection.
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    :param batch_size: rows per fetch from Hive and per write to each store.

    Runs in the ``funnel_hive`` pool unless another ``pool`` is given. Each successful
    refresh updates the Asset ``funnel://segment/<segment_id>`` with version, size,
    entered and exited in the event's extra. Trigger conf ``{"force": true}`` overrides
    the guards, the overshoot skip and a static segment's freeze.
    """

    template_fields: Sequence[str] = ("query",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"query": "sql"}
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        segment_id: str,
        query: str,
        kind: str = Kind.DYNAMIC.value,
        max_shrink_pct: float | None = None,
        hive_conn_id: str = settings.HIVE_CONN_ID,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        batch_size: int = settings.BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", settings.HIVE_POOL)
        kwargs.setdefault("outlets", [Asset(layout.asset_uri(segment_id))])
        super().__init__(**kwargs)
        self.segment_id = segment_id
        self.query = query
        self.kind = kind
        self.max_shrink_pct = max_shrink_pct
        self.hive_conn_id = hive_conn_id
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id
        self.batch_size = batch_size

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the query. A run without a logical date (REST ``"logical_date": null``) gets
        the date macros of its ``run_after``, so ``{{ ds }}`` in a segment query works for
        every kind of trigger."""
        if context.get("logical_date") is None and context.get("dag_run") is not None:
            context = {**context, **_date_macros(context["dag_run"].run_after)}  # type: ignore[assignment]
        super().render_template_fields(context, jinja_env)

    def _request(self, context: Context) -> RefreshRequest:
        """This run's refresh: its identity, the rules that apply and whether it is forced."""
        dag_run = context["dag_run"]
        run = RunInfo(
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            logical_date=dag_run.logical_date or dag_run.run_after,
            try_number=context["ti"].try_number,
        )
        return RefreshRequest(
            segment_id=self.segment_id,
            kind=Kind(self.kind),
            run=run,
            force=(dag_run.conf or {}).get("force") is True,
            max_shrink_pct=settings.MAX_SHRINK_PCT if self.max_shrink_pct is None else self.max_shrink_pct,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook, get_context_from_env_var
        from airflow.providers.redis.hooks.redis import RedisHook

        check_query(self.segment_id, self.query)  # the rendered query, before it reaches Hive
        request = self._request(context)
        run = request.run
        if request.force:
            self.log.warning("segment %s: forced run: guards, overshoot skip and freeze are off", self.segment_id)
        redis_client = RedisHook(redis_conn_id=self.redis_conn_id).get_conn()
        lock = SegmentLock(
            redis_client,
            self.segment_id,
            {"dag_id": run.dag_id, "run_id": run.run_id, "try_number": run.try_number, "since": utc_now()},
            ttl_seconds=settings.LOCK_TTL_SECONDS,
            wait_seconds=settings.LOCK_WAIT_SECONDS,
        )
        hive_hook = HiveServer2Hook(hiveserver2_conn_id=self.hive_conn_id)
        with contextlib.ExitStack() as stack:
            mysql_conn = stack.enter_context(
                contextlib.closing(
                    FunnelMySqlHook(mysql_conn_id=self.mysql_conn_id, local_infile=settings.MYSQL_BULK_LOAD).get_conn()
                )
            )

            def batches() -> Iterator[list[Any]]:
                hive_conn = stack.enter_context(contextlib.closing(hive_hook.get_conn()))
                return stream_first_column(hive_conn, self.query, self.batch_size, get_context_from_env_var())

            refresher = Refresher(
                mysql=MySqlSegmentStore(mysql_conn, bulk_load=settings.MYSQL_BULK_LOAD),
                redis=RedisSegmentStore(redis_client, settings.STAGING_TTL_SECONDS, settings.CHANGE_TTL_SECONDS),
                history=RunHistory(mysql_conn),
                batch_size=self.batch_size,
                keep_versions=settings.KEEP_VERSIONS,
                progress_every=settings.PROGRESS_EVERY_ROWS,
            )
            try:
                result = refresher.refresh(request, batches, lock)
            except RefreshSkipped as skipped:
                self.log.info("segment %s: skipped: %s", self.segment_id, skipped)
                raise AirflowSkipException(str(skipped)) from skipped
            except FunnelError:
                raise
            except Exception as exc:
                raise FunnelError(
                    f"segment {self.segment_id!r}: refresh failed ({type(exc).__name__}: {exc}); readers still "
                    "see a complete version, and the next attempt cleans up and brings Redis level with MySQL"
                ) from exc
        context["outlet_events"][Asset(layout.asset_uri(self.segment_id))].extra = {
            "segment_id": result.segment_id,
            "version": result.version,
            "size": result.size,
            "entered": result.entered,
            "exited": result.exited,
        }
        self.log.info(
            "segment %s: version %s is live with %s members (+%s entered, -%s exited; %s rows read, "
            "%s NULL ids skipped) in %.1fs",
            result.segment_id,
            result.version,
            f"{result.size:,}",
            f"{result.entered:,}",
            f"{result.exited:,}",
            f"{result.rows_read:,}",
            f"{result.null_ids:,}",
            result.seconds,
        )
        return {
            "segment_id": result.segment_id,
            "version": result.version,
            "size": result.size,
            "entered": result.entered,
            "exited": result.exited,
        }


def _date_macros(moment: dt.datetime) -> dict[str, Any]:
    """Airflow's logical-date macros, computed for ``moment`` (as Airflow does for the logical date)."""
    ds = moment.strftime("%Y-%m-%d")
    ts = moment.isoformat()
    return {
        "logical_date": moment,
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": ts,
        "ts_nodash": moment.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": ts.replace("-", "").replace(":", ""),
    }


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
