"""What funnel's operators share: an attempt that ``on_kill`` stops within a bound, a sandboxed,
checked query streamed from HiveServer2, and the run's facts taken from the Airflow context.

Hooks own the connections; the operators own the orchestration. Their constructors only
assign: every connection is opened in ``execute``, through ``funnel.wiring``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from funnel import settings, wiring
from funnel.core.errors import FunnelError
from funnel.core.query_check import check_query
from funnel.core.run_info import RunInfo
from funnel.core.templating import date_values, render_query
from funnel.core.utc_time import utc_now
from funnel.services.attempt import Stoppable, describe_failure
from funnel.storage.hive.hive_query import HiveQuery
from funnel.storage.hooks import FunnelHiveHook

log = logging.getLogger(__name__)

KILLED = "killed by Airflow: the task was stopped (marked failed or success, cleared, or past its execution_timeout)"


def run_info(context: Context) -> RunInfo:
    """The run a task works for: DAG, run, logical date (``run_after`` when it has none), try."""
    dag_run = context["dag_run"]
    return RunInfo(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        logical_date=dag_run.logical_date or dag_run.run_after,
        try_number=context["ti"].try_number,
    )


def forced(context: Context) -> bool:
    """Whether the run was triggered with conf ``{"force": true}``."""
    return (context["dag_run"].conf or {}).get("force") is True


def lock_holder(run: RunInfo) -> dict[str, Any]:
    """Who holds a segment's lock, as the lock records it."""
    return {"dag_id": run.dag_id, "run_id": run.run_id, "try_number": run.try_number, "since": utc_now()}


def _stop_bounded(stop: Callable[[str], None], timeout: float) -> None:
    """``stop(KILLED)`` on a helper thread, waited for at most ``timeout`` seconds (a dead server
    cannot make a kill hang)."""
    worker = threading.Thread(target=stop, args=(KILLED,), name="funnel-on-kill", daemon=True)
    worker.start()
    worker.join(timeout=timeout)


@dataclass
class _Running:
    """What ``on_kill`` needs to stop an attempt in flight (and its Hive query, if it reads Hive)."""

    attempt: Stoppable
    hive_hook: FunnelHiveHook | None = None
    query: HiveQuery | None = None

    def stop(self, reason: str) -> None:
        """Record why and free the lock (``abort``), then stop the query on the server."""
        try:
            self.attempt.abort(reason)
        except Exception as exc:  # MySQL may be what is down; the lease frees the lock anyway
            log.warning("funnel: stopping the attempt did not complete (%s)", describe_failure(exc))
        if self.query is not None and self.hive_hook is not None:
            self.query.cancel(self.hive_hook.get_conn)  # logs, never raises

    def stop_seconds(self) -> float:
        """How long ``on_kill`` waits for ``stop``: one connect (to Hive when the attempt reads
        Hive, else to MySQL) and 10 seconds."""
        if self.hive_hook is not None:
            return settings.HIVE_CONNECT_TIMEOUT_SECONDS + 10
        return settings.MYSQL_CONNECT_TIMEOUT_SECONDS + 10


class BaseAttemptOperator(BaseOperator):
    """An operator whose ``execute`` runs one attempt (a refresh or a load) into MySQL and Redis
    that ``on_kill`` can stop, with ``execution_timeout``, ``retries`` and ``retry_delay`` from
    the settings unless given."""

    #: Who the attempt is for in log and error messages (a segment id, or ``_tags``).
    subject: str

    def __init__(self, *, mysql_conn_id: str, redis_conn_id: str, batch_size: int, **kwargs: Any) -> None:
        kwargs.setdefault("execution_timeout", dt.timedelta(seconds=settings.REFRESH_TIMEOUT_SECONDS))
        kwargs.setdefault("retries", settings.REFRESH_RETRIES)
        kwargs.setdefault("retry_delay", dt.timedelta(seconds=settings.REFRESH_RETRY_DELAY_SECONDS))
        super().__init__(**kwargs)
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id
        self.batch_size = batch_size
        self._running: _Running | None = None

    @contextlib.contextmanager
    def _stoppable(self, attempt: Stoppable, hive_hook: FunnelHiveHook | None = None) -> Iterator[_Running]:
        """While inside, ``on_kill`` stops ``attempt`` (and the Hive query it reads, if any)."""
        running = self._running = _Running(attempt, hive_hook)
        try:
            yield running
        finally:
            self._running = None

    def on_kill(self) -> None:
        """Stop an attempt in flight: record it as failed and release its lock, then cancel its
        Hive query if it reads one, each over a new connection (the task's own may be in the
        middle of a call). Runs in a helper thread, bounded in time, so a dead server cannot
        make the kill itself hang."""
        running = self._running
        if running is None:
            return
        self.log.warning("%s: %s; stopping", self.subject, KILLED)
        _stop_bounded(running.stop, running.stop_seconds())


class BaseHiveQueryOperator(BaseAttemptOperator):
    """An attempt that reads a sandboxed, checked query streamed from HiveServer2, in the
    ``funnel_hive`` pool; ``on_kill`` also cancels the query on the server."""

    template_fields: Sequence[str] = ("query",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"query": "sql"}
    query: str

    def __init__(self, *, hive_conn_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("pool", settings.HIVE_POOL)
        super().__init__(**kwargs)
        self.hive_conn_id = hive_conn_id

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
        with contextlib.ExitStack() as hive, self._stoppable(attempt, hive_hook) as running:

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
