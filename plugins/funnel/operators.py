"""The operator that refreshes one segment from Hive into Redis and MySQL.

Hooks own the connections; this operator owns the orchestration. Its constructor only
assigns: every connection is opened in ``execute``, through ``funnel.wiring``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from funnel import layout, settings, wiring
from funnel.errors import FunnelError
from funnel.hive_source import HiveQuery
from funnel.hooks import FunnelHiveHook
from funnel.query_check import check_query
from funnel.refresh import Refresher, RefreshRequest, RefreshSkipped, describe_failure
from funnel.segments import Kind
from funnel.stores.run_info import RunInfo, utc_now
from funnel.templating import date_values, render_query

log = logging.getLogger(__name__)

KILLED = "killed by Airflow: the task was stopped (marked failed or success, cleared, or past its execution_timeout)"


@dataclass
class _Running:
    """What ``on_kill`` needs to stop a refresh in flight."""

    refresher: Refresher
    hive_hook: FunnelHiveHook
    query: HiveQuery | None = None

    def stop(self, reason: str) -> None:
        """Record why and free the lock (``abort``), then stop the query on the server."""
        try:
            self.refresher.abort(reason)
        except Exception as exc:  # MySQL may be what is down; the lease frees the lock anyway
            log.warning("funnel: stopping the refresh did not complete (%s)", describe_failure(exc))
        if self.query is not None:
            self.query.cancel(self.hive_hook.get_conn)  # logs, never raises


class SegmentRefreshOperator(BaseOperator):
    """Run a segment's HiveQL query and make its first column the segment's live members.

    :param segment_id: the segment to refresh (names the Redis keys and MySQL rows).
    :param query: HiveQL SELECT whose first column is the user id. (templated: only the
        run's dates, rendered in a sandbox; see ``funnel.templating``)
    :param kind: ``dynamic`` or ``static``: which scheduling rules apply (overshoot, freeze).
    :param max_shrink_pct: refuse a result that shrinks more than this against the live
        version (None: the global ``max_shrink_pct`` setting).
    :param hive_conn_id: HiveServer2 connection.
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    :param batch_size: rows per fetch from Hive and per write to each store.

    Runs in the ``funnel_hive`` pool, with ``execution_timeout``, ``retries`` and
    ``retry_delay`` from the settings, unless given. Each successful refresh updates the
    Asset ``funnel://segment/<segment_id>`` with version, size, entered and exited in the
    event's extra. Trigger conf ``{"force": true}`` overrides the guards, the overshoot skip
    and a static segment's freeze. ``on_kill`` cancels the Hive query, records the attempt
    as failed and releases the segment's lock, so the next try starts at once.
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
        kwargs.setdefault("execution_timeout", dt.timedelta(seconds=settings.REFRESH_TIMEOUT_SECONDS))
        kwargs.setdefault("retries", settings.REFRESH_RETRIES)
        kwargs.setdefault("retry_delay", dt.timedelta(seconds=settings.REFRESH_RETRY_DELAY_SECONDS))
        super().__init__(**kwargs)
        self.segment_id = segment_id
        self.query = query
        self.kind = kind
        self.max_shrink_pct = max_shrink_pct
        self.hive_conn_id = hive_conn_id
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id
        self.batch_size = batch_size
        self._running: _Running | None = None

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the query with the run's dates only, in a sandbox (never Airflow's full
        context: no connections, Variables or task instance reach a segment query).

        A run without a logical date (REST ``"logical_date": null``) gets the dates of its
        ``run_after``, so ``{{ ds }}`` works for every kind of trigger.
        """
        moment = context.get("logical_date") or context["dag_run"].run_after
        values = date_values(moment, context.get("data_interval_start"), context.get("data_interval_end"))
        self.query = render_query(self.segment_id, self.query, values)

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
        from airflow.providers.apache.hive.hooks.hive import get_context_from_env_var

        check_query(self.segment_id, self.query, extra_allowed=settings.ALLOWED_FUNCTIONS)  # before Hive sees it
        request = self._request(context)
        run = request.run
        if request.force:
            self.log.warning("segment %s: forced run: guards, overshoot skip and freeze are off", self.segment_id)
        redis_client = wiring.redis_client(self.redis_conn_id)
        holder = {"dag_id": run.dag_id, "run_id": run.run_id, "try_number": run.try_number, "since": utc_now()}
        lock = wiring.segment_lock(redis_client, self.segment_id, holder)
        hive_hook = wiring.hive_hook(self.hive_conn_id)
        with (
            wiring.refresher(
                mysql_conn_id=self.mysql_conn_id, redis_client=redis_client, batch_size=self.batch_size
            ) as refresher,
            contextlib.ExitStack() as hive,
        ):
            running = self._running = _Running(refresher, hive_hook)

            def batches() -> Iterator[list[Any]]:
                conn = hive.enter_context(contextlib.closing(hive_hook.get_conn()))
                running.query = HiveQuery(
                    conn,
                    self.query,
                    segment_id=self.segment_id,
                    batch_size=self.batch_size,
                    hive_conf=get_context_from_env_var(),
                    poll_seconds=settings.HIVE_POLL_SECONDS,
                    log_every_seconds=settings.HIVE_LOG_EVERY_SECONDS,
                    cancel_requested=refresher.cancelled,
                    connect=hive_hook.get_conn,  # to stop the query on the server after a timeout
                    log=self.log,
                )
                return running.query.batches()

            try:
                result = refresher.refresh(request, batches, lock)
            except RefreshSkipped as skipped:
                self.log.info("segment %s: skipped: %s", self.segment_id, skipped)
                raise AirflowSkipException(str(skipped)) from skipped
            except FunnelError:
                raise
            except Exception as exc:
                raise FunnelError(
                    f"segment {self.segment_id!r}: refresh failed ({describe_failure(exc)}); readers still "
                    "see a complete version, and the next attempt cleans up and brings Redis level with MySQL"
                ) from exc
            except BaseException:  # a timeout or a kill: the query must not run on without us
                if running.query is not None:
                    running.query.cancel(hive_hook.get_conn)
                raise
            finally:
                self._running = None
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

    def on_kill(self) -> None:
        """Stop a refresh in flight: cancel its Hive query, record the attempt as failed and
        release the segment's lock, each over a new connection (the task's own may be in the
        middle of a call). Runs in a helper thread, bounded in time, so a dead server cannot
        make the kill itself hang."""
        running = self._running
        if running is None:
            return
        self.log.warning("segment %s: %s; stopping the refresh", self.segment_id, KILLED)
        worker = threading.Thread(target=running.stop, args=(KILLED,), name="funnel-on-kill", daemon=True)
        worker.start()
        worker.join(timeout=settings.HIVE_CONNECT_TIMEOUT_SECONDS + 10)


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
