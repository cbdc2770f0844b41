"""The operators that run a query on Hive into Redis and MySQL: one segment's refresh, and
the user tags' load.

Hooks own the connections; these operators own the orchestration. Their constructors
only assign: every connection is opened in ``execute``, through ``funnel.wiring``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from funnel import settings, wiring
from funnel.core.errors import FunnelError, RefreshSkipped
from funnel.core.query_check import check_query
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.core.templating import date_values, render_query
from funnel.core.utc_time import utc_now
from funnel.services.attempt import Stoppable, describe_failure
from funnel.services.refresh import RefreshRequest, RefreshResult
from funnel.storage import layout
from funnel.storage.hive.hive_query import HiveQuery
from funnel.storage.hooks import FunnelHiveHook

log = logging.getLogger(__name__)

KILLED = "killed by Airflow: the task was stopped (marked failed or success, cleared, or past its execution_timeout)"


def _stop_bounded(stop: Callable[[str], None], timeout: float) -> None:
    """``stop(KILLED)`` on a helper thread, waited for at most ``timeout`` seconds (a dead server
    cannot make a kill hang)."""
    worker = threading.Thread(target=stop, args=(KILLED,), name="funnel-on-kill", daemon=True)
    worker.start()
    worker.join(timeout=timeout)


def _refresh_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A refreshing task's ``execution_timeout``, ``retries`` and ``retry_delay`` from the settings, unless given."""
    kwargs.setdefault("execution_timeout", dt.timedelta(seconds=settings.REFRESH_TIMEOUT_SECONDS))
    kwargs.setdefault("retries", settings.REFRESH_RETRIES)
    kwargs.setdefault("retry_delay", dt.timedelta(seconds=settings.REFRESH_RETRY_DELAY_SECONDS))
    return kwargs


def _run_info(context: Context) -> RunInfo:
    dag_run = context["dag_run"]
    return RunInfo(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        logical_date=dag_run.logical_date or dag_run.run_after,
        try_number=context["ti"].try_number,
    )


def _forced(context: Context) -> bool:
    return (context["dag_run"].conf or {}).get("force") is True


def _holder(run: RunInfo) -> dict[str, Any]:
    return {"dag_id": run.dag_id, "run_id": run.run_id, "try_number": run.try_number, "since": utc_now()}


def _announce(task: BaseOperator, context: Context, result: RefreshResult) -> dict[str, Any]:
    """Log what a segment refresh made live and put it on the segment's Asset event."""
    summary = {
        "segment_id": result.segment_id,
        "version": result.version,
        "size": result.size,
        "entered": result.entered,
        "exited": result.exited,
    }
    context["outlet_events"][Asset(layout.asset_uri(result.segment_id))].extra = summary
    task.log.info(
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
    return summary


@dataclass
class _Running:
    """What ``on_kill`` needs to stop an attempt in flight."""

    attempt: Stoppable
    hive_hook: FunnelHiveHook
    query: HiveQuery | None = None

    def stop(self, reason: str) -> None:
        """Record why and free the lock (``abort``), then stop the query on the server."""
        try:
            self.attempt.abort(reason)
        except Exception as exc:  # MySQL may be what is down; the lease frees the lock anyway
            log.warning("funnel: stopping the attempt did not complete (%s)", describe_failure(exc))
        if self.query is not None:
            self.query.cancel(self.hive_hook.get_conn)  # logs, never raises


class _HiveQueryOperator(BaseOperator):
    """What both operators share: a sandboxed, checked query streamed from HiveServer2 into
    an attempt that ``on_kill`` can stop, with the task defaults from the settings."""

    template_fields: Sequence[str] = ("query",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"query": "sql"}
    #: Who the query belongs to in error messages (a segment id, or ``_tags``).
    subject: str
    query: str

    def __init__(
        self,
        *,
        hive_conn_id: str,
        mysql_conn_id: str,
        redis_conn_id: str,
        batch_size: int,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", settings.HIVE_POOL)
        super().__init__(**_refresh_defaults(kwargs))
        self.hive_conn_id = hive_conn_id
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id
        self.batch_size = batch_size
        self._running: _Running | None = None

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the query with the run's dates only, in a sandbox (never Airflow's full
        context: no connections, Variables or task instance reach a query).

        A run without a logical date (REST ``"logical_date": null``) gets the dates of its
        ``run_after``, so ``{{ ds }}`` works for every kind of trigger.
        """
        moment = context.get("logical_date") or context["dag_run"].run_after
        values = date_values(moment, context.get("data_interval_start"), context.get("data_interval_end"))
        self.query = render_query(self.subject, self.query, values)

    @contextlib.contextmanager
    def _streaming(self, attempt: Stoppable, columns: int = 1) -> Iterator[Callable[[], Iterator[list[Any]]]]:
        """Yield ``batches()`` for ``attempt``: the checked query, run on HiveServer2 when called.

        While inside, ``on_kill`` can stop the attempt; a timeout or kill also cancels the
        query on the server. Errors other than funnel's own are wrapped in ``FunnelError``.
        """
        from airflow.providers.apache.hive.hooks.hive import get_context_from_env_var

        check_query(self.subject, self.query, extra_allowed=settings.ALLOWED_FUNCTIONS)  # before Hive sees it
        hive_hook = wiring.hive_hook(self.hive_conn_id)
        running = self._running = _Running(attempt, hive_hook)
        with contextlib.ExitStack() as hive:

            def batches() -> Iterator[list[Any]]:
                conn = hive.enter_context(contextlib.closing(hive_hook.get_conn()))
                running.query = HiveQuery(
                    conn,
                    self.query,
                    segment_id=self.subject,
                    batch_size=self.batch_size,
                    hive_conf=get_context_from_env_var(),
                    poll_seconds=settings.HIVE_POLL_SECONDS,
                    log_every_seconds=settings.HIVE_LOG_EVERY_SECONDS,
                    cancel_requested=attempt.cancelled,
                    connect=hive_hook.get_conn,  # to stop the query on the server after a timeout
                    log=self.log,
                    columns=columns,
                )
                return running.query.batches()

            try:
                yield batches
            except (FunnelError, AirflowSkipException):
                raise
            except Exception as exc:
                raise FunnelError(
                    f"{self.subject!r}: the attempt failed ({describe_failure(exc)}); readers still see a complete "
                    "version, and the next attempt cleans up and brings Redis level with MySQL"
                ) from exc
            except BaseException:  # a timeout or a kill: the query must not run on without us
                if running.query is not None:
                    running.query.cancel(hive_hook.get_conn)
                raise
            finally:
                self._running = None

    def on_kill(self) -> None:
        """Stop an attempt in flight: record it as failed and release its lock, then cancel its
        Hive query, each over a new connection (the task's own may be in the middle of a
        call). Runs in a helper thread, bounded in time, so a dead server cannot make the
        kill itself hang."""
        running = self._running
        if running is None:
            return
        self.log.warning("%s: %s; stopping", self.subject, KILLED)
        _stop_bounded(running.stop, settings.HIVE_CONNECT_TIMEOUT_SECONDS + 10)


class SegmentRefreshOperator(_HiveQueryOperator):
    """Run a segment's HiveQL query and make its first column the segment's live members.

    :param segment_id: the segment to refresh (names the Redis keys and MySQL rows).
    :param query: HiveQL SELECT whose first column is the user id. (templated: only the
        run's dates, rendered in a sandbox; see ``funnel.core.templating``)
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
    and a static segment's freeze. ``on_kill`` records the attempt as failed, releases the
    segment's lock, so the next try starts at once, and cancels the Hive query.
    """

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
        kwargs.setdefault("outlets", [Asset(layout.asset_uri(segment_id))])
        super().__init__(
            hive_conn_id=hive_conn_id,
            mysql_conn_id=mysql_conn_id,
            redis_conn_id=redis_conn_id,
            batch_size=batch_size,
            **kwargs,
        )
        self.segment_id = self.subject = segment_id
        self.query = query
        self.kind = kind
        self.max_shrink_pct = max_shrink_pct

    def execute(self, context: Context) -> dict[str, Any]:
        run = _run_info(context)
        request = RefreshRequest(
            segment_id=self.segment_id,
            kind=Kind(self.kind),
            run=run,
            force=_forced(context),
            max_shrink_pct=settings.MAX_SHRINK_PCT if self.max_shrink_pct is None else self.max_shrink_pct,
        )
        if request.force:
            self.log.warning("segment %s: forced run: guards, overshoot skip and freeze are off", self.segment_id)
        redis_client = wiring.redis_client(self.redis_conn_id)
        lock = wiring.segment_lock(redis_client, self.segment_id, _holder(run))
        with (
            wiring.refresher(
                mysql_conn_id=self.mysql_conn_id, redis_client=redis_client, batch_size=self.batch_size
            ) as refresher,
            self._streaming(refresher) as batches,
        ):
            try:
                result = refresher.refresh(request, batches, lock)
            except RefreshSkipped as skipped:
                self.log.info("segment %s: skipped: %s", self.segment_id, skipped)
                raise AirflowSkipException(str(skipped)) from skipped
        return _announce(self, context, result)


class CompositeRefreshOperator(BaseOperator):
    """Compute a composite segment (a set expression over other segments) from its operands'
    live versions in MySQL, without Hive, and make it live like a query segment's result:
    locked, staged, diffed, guarded, swapped, versioned and announced on its Asset.

    :param segment_id: the composite segment.
    :param rule: its set expression (``funnel.core.composite_expr``), as JSON text.
    :param max_shrink_pct: refuse a result that shrinks more than this against the live
        version (None: the global ``max_shrink_pct`` setting).
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    :param batch_size: ids per read from MySQL and per write to each store.

    Runs once every upstream task is done (``trigger_rule`` ``all_done``): an operand skipped
    (overshoot) or refused (guard) in this run keeps its live version, and the composite uses
    that. The attempt's history row (``inputs``) names each operand's version and whether this
    run made it. An operand never computed (a static segment before its ``run_at``) skips the
    composite. Not in the Hive pool: it sends Hive nothing. ``on_kill`` records the attempt as
    failed and releases the lock.
    """

    ui_color = "#efe8f8"

    def __init__(
        self,
        *,
        segment_id: str,
        rule: str,
        max_shrink_pct: float | None = None,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        batch_size: int = settings.BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [Asset(layout.asset_uri(segment_id))])
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**_refresh_defaults(kwargs))
        self.segment_id = segment_id
        self.rule = rule
        self.max_shrink_pct = max_shrink_pct
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id
        self.batch_size = batch_size
        self._attempt: Stoppable | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from funnel.core.composite_expr import parse_expression
        from funnel.services.composite_input import composite_batches

        expr = parse_expression(self.segment_id, self.rule)
        run = _run_info(context)
        request = RefreshRequest(
            segment_id=self.segment_id,
            kind=Kind.COMPOSITE,
            run=run,
            force=_forced(context),
            max_shrink_pct=settings.MAX_SHRINK_PCT if self.max_shrink_pct is None else self.max_shrink_pct,
        )
        redis_client = wiring.redis_client(self.redis_conn_id)
        lock = wiring.segment_lock(redis_client, self.segment_id, _holder(run))
        with (
            wiring.refresher(
                mysql_conn_id=self.mysql_conn_id, redis_client=redis_client, batch_size=self.batch_size
            ) as refresher,
            wiring.composite_source(self.mysql_conn_id) as source,
        ):
            batches = composite_batches(
                self.segment_id, expr, source, run, refresher.note_inputs, self.batch_size, self.log
            )
            self._attempt = refresher
            try:
                result = refresher.refresh(request, batches, lock)
            except RefreshSkipped as skipped:
                self.log.info("segment %s: skipped: %s", self.segment_id, skipped)
                raise AirflowSkipException(str(skipped)) from skipped
            finally:
                self._attempt = None
        return _announce(self, context, result)

    def on_kill(self) -> None:
        """Record the attempt as failed and release its lock (bounded in time, as for Hive)."""
        attempt = self._attempt
        if attempt is None:
            return
        self.log.warning("%s: %s; stopping", self.segment_id, KILLED)
        _stop_bounded(attempt.abort, settings.MYSQL_CONNECT_TIMEOUT_SECONDS + 10)


class UserTagsLoadOperator(_HiveQueryOperator):
    """Load every user's tags (``user_id, first_seen, order_count``) from the warehouse, as of
    the run's data interval end, and swap them in; events after that time are replayed on top.

    :param query: the tag query, HiveQL. (templated: only the run's dates, as segment queries)
    :param hive_conn_id: HiveServer2 connection.
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    :param batch_size: rows per fetch from Hive and per write to each store.

    Trigger conf ``{"force": true}`` accepts a result the guards refuse (empty, or shrunk
    beyond ``max_shrink_pct``).
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
        run = _run_info(context)
        as_of = context.get("data_interval_end") or context["dag_run"].run_after
        redis_client = wiring.redis_client(self.redis_conn_id)
        lock = wiring.segment_lock(redis_client, layout.TAGS_ID, _holder(run))
        with (
            wiring.tag_loader(
                mysql_conn_id=self.mysql_conn_id, redis_client=redis_client, batch_size=self.batch_size
            ) as loader,
            self._streaming(loader, columns=3) as batches,
        ):
            try:
                result = loader.load(
                    run, as_of, batches, lock, force=_forced(context), max_shrink_pct=settings.MAX_SHRINK_PCT
                )
            except RefreshSkipped as skipped:  # a newer load is live
                self.log.info("user tags: skipped: %s", skipped)
                raise AirflowSkipException(str(skipped)) from skipped
        return {"version": result.version, "size": result.size, "replayed": result.replayed, "as_of": as_of.isoformat()}


class RestoreRedisOperator(BaseOperator):
    """Bring Redis level with MySQL for every segment with a live version, and the users' tags
    (after Redis restarted empty, say). Each segment is restored under its lock; one that Redis
    already serves in full is left alone."""

    ui_color = "#fdf3e1"

    def execute(self, context: Context) -> dict[str, Any]:
        from funnel.services.restore import restore_all

        checked, rebuilt = restore_all(wiring, by=self.dag_id)
        self.log.info("checked %d segments and the user tags; rebuilt %s", len(checked) - 1, rebuilt or "none")
        return {"checked": len(checked), "rebuilt": rebuilt}


class WebhookDeliveryOperator(BaseOperator):
    """Deliver every enabled webhook subscription's new versions, in order, signed, in batches.

    Settings are parameters (the DAG passes the ``webhook_*`` settings). A manual run (or conf
    ``{"retry_parked": true}``) first retries what earlier runs parked. The task fails when a
    delivery is parked, after delivering everything else it could; the log says, per
    subscription, what was delivered and what was parked. ``on_kill`` stops between attempts.
    """

    ui_color = "#eaf4e4"

    def __init__(
        self,
        *,
        batch_size: int,
        max_attempts: int,
        backoff_seconds: float,
        backoff_max_seconds: float,
        timeout_seconds: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.timeout_seconds = timeout_seconds
        self._stop = threading.Event()

    def execute(self, context: Context) -> dict[str, Any]:
        from funnel.core.errors import DeliveriesParked
        from funnel.services.webhook_delivery import DeliverySettings

        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        retry_parked = run_type == "manual" or (dag_run.conf or {}).get("retry_parked") is True
        config = DeliverySettings(
            self.batch_size, self.max_attempts, self.backoff_seconds, self.backoff_max_seconds, self.timeout_seconds
        )
        with contextlib.closing(wiring.mysql_connection()) as conn:
            reports = wiring.webhook_deliverer(conn, config, self._stop).run(retry_parked)
        for report in reports:
            self.log.info("%s", report.describe())
        parked = [report for report in reports if report.parked or report.error]
        summary = {
            "subscriptions": len(reports),
            "delivered": sum(len(report.delivered) for report in reports),
            "parked": {report.webhook_id: report.parked for report in parked},
            "retried_parked": retry_parked,
        }
        if self._stop.is_set():
            raise FunnelError(KILLED)
        if parked:
            lines = "\n".join(f"- {report.describe()}" for report in parked)
            raise DeliveriesParked(
                f"{len(parked)} webhook subscription(s) parked or failed (everything else was delivered):\n"
                f"{lines}\nFix: make the receiver answer 2xx (or MySQL answer), then trigger funnel_webhooks by "
                "hand (a manual run retries parked deliveries first)"
            )
        return summary

    def on_kill(self) -> None:
        self._stop.set()


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
