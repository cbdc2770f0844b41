"""The two operators that make a segment's new version live: from its Hive query
(``SegmentRefreshOperator``) or from its operands' live versions (``CompositeRefreshOperator``).

Both run the one refresh (``funnel.services.refresh``) the same way, in ``BaseRefreshOperator``:
the request from the run, the segment's lock, the refresher, a skip as Airflow's skip, the
attempt's metrics sent through Airflow's (``funnel.airflow.refresh_metrics``), and the result
announced on the segment's Asset. They differ only in what the refresh streams.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from airflow.sdk import Asset, Context
from airflow.sdk.exceptions import AirflowSkipException

from funnel import settings, wiring
from funnel.airflow import refresh_metrics
from funnel.airflow.operator_base import (
    BaseAttemptOperator,
    BaseHiveQueryOperator,
    forced,
    lock_holder,
    run_info,
)
from funnel.core.composite_expr import Expr, parse_expression
from funnel.core.errors import RefreshSkipped
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.services.refresh import Refresher, RefreshRequest, RefreshResult
from funnel.storage import layout

Batches = Callable[[], Iterable[Sequence[object]]]
#: Opens what a refresh streams, around the refresh: ``open_batches(refresher, run)``.
OpenBatches = Callable[[Refresher, RunInfo], contextlib.AbstractContextManager[Batches]]


class BaseRefreshOperator(BaseAttemptOperator):
    """What both segment refreshes share: the segment's Asset as outlet, the shrink guard's
    threshold, and the refresh itself (``_refresh``)."""

    def __init__(
        self, *, segment_id: str, max_shrink_pct: float | None, definition_digest: str | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("outlets", [Asset(layout.asset_uri(segment_id))])
        super().__init__(**kwargs)
        self.segment_id = self.subject = segment_id
        self.max_shrink_pct = max_shrink_pct
        self.definition_digest = definition_digest

    def _refresh(self, context: Context, kind: Kind, open_batches: OpenBatches) -> dict[str, Any]:
        """Refresh the segment under its lock from what ``open_batches`` streams; a skip
        (overshoot, freeze, a newer version live) becomes Airflow's skip. Whatever the outcome,
        the attempt's metrics go to Airflow's metrics."""
        run = run_info(context)
        request = RefreshRequest(
            segment_id=self.segment_id,
            kind=kind,
            run=run,
            force=forced(context),
            max_shrink_pct=settings.MAX_SHRINK_PCT if self.max_shrink_pct is None else self.max_shrink_pct,
            definition_digest=self.definition_digest,
            max_share_of_users=settings.MAX_SHARE_OF_USERS,
        )
        redis_client = wiring.redis_client(self.redis_conn_id)
        lock = wiring.segment_lock(redis_client, self.segment_id, lock_holder(run))
        with (
            wiring.refresher(
                mysql_conn_id=self.mysql_conn_id, redis_client=redis_client, batch_size=self.batch_size
            ) as refresher,
            open_batches(refresher, run) as batches,
        ):
            report = refresh_metrics.refresh_reporter(dag_id=run.dag_id, segment_id=self.segment_id, kind=kind)
            try:
                result = refresher.refresh(request, batches, lock, report=report)
            except RefreshSkipped as skipped:
                self.log.info("segment %s: skipped: %s", self.segment_id, skipped)
                raise AirflowSkipException(str(skipped)) from skipped
        return self._announce(context, result)

    def _announce(self, context: Context, result: RefreshResult) -> dict[str, Any]:
        """Log what the refresh made live and put it on the segment's Asset event."""
        summary = {
            "segment_id": result.segment_id,
            "version": result.version,
            "size": result.size,
            "entered": result.entered,
            "exited": result.exited,
        }
        context["outlet_events"][Asset(layout.asset_uri(result.segment_id))].extra = summary
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
        return summary


class SegmentRefreshOperator(BaseHiveQueryOperator, BaseRefreshOperator):
    """Run a segment's HiveQL query and make its first column the segment's live members.

    :param segment_id: the segment to refresh (names the Redis keys and MySQL rows).
    :param query: HiveQL SELECT whose first column is the user id. (templated: only the
        run's dates, rendered in a sandbox; see ``funnel.core.templating``)
    :param kind: ``dynamic`` or ``static``: which scheduling rules apply (overshoot, freeze).
    :param max_shrink_pct: refuse a result that shrinks more than this against the live
        version (None: the global ``max_shrink_pct`` setting).
    :param definition_digest: the digest of the segment's definition
        (``funnel.core.segment_revisions.digest``); each version records the revision it names.
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
        definition_digest: str | None = None,
        hive_conn_id: str = settings.HIVE_CONN_ID,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        batch_size: int = settings.BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            segment_id=segment_id,
            max_shrink_pct=max_shrink_pct,
            definition_digest=definition_digest,
            hive_conn_id=hive_conn_id,
            mysql_conn_id=mysql_conn_id,
            redis_conn_id=redis_conn_id,
            batch_size=batch_size,
            **kwargs,
        )
        self.query = query
        self.kind = kind

    def execute(self, context: Context) -> dict[str, Any]:
        kind = Kind(self.kind)
        if forced(context):
            self.log.warning("segment %s: forced run: guards, overshoot skip and freeze are off", self.segment_id)
        return self._refresh(context, kind, lambda refresher, _run: self._streaming(refresher))


class CompositeRefreshOperator(BaseRefreshOperator):
    """Compute a composite segment (a set expression over other segments) from its operands'
    live versions in MySQL, without Hive, and make it live like a query segment's result:
    locked, staged, diffed, guarded, swapped, versioned and announced on its Asset.

    :param segment_id: the composite segment.
    :param rule: its set expression (``funnel.core.composite_expr``), as JSON text.
    :param max_shrink_pct: refuse a result that shrinks more than this against the live
        version (None: the global ``max_shrink_pct`` setting).
    :param definition_digest: the digest of the segment's definition
        (``funnel.core.segment_revisions.digest``); each version records the revision it names.
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
        definition_digest: str | None = None,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        batch_size: int = settings.BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(
            segment_id=segment_id,
            max_shrink_pct=max_shrink_pct,
            definition_digest=definition_digest,
            mysql_conn_id=mysql_conn_id,
            redis_conn_id=redis_conn_id,
            batch_size=batch_size,
            **kwargs,
        )
        self.rule = rule

    def execute(self, context: Context) -> dict[str, Any]:
        expr = parse_expression(self.segment_id, self.rule)
        return self._refresh(context, Kind.COMPOSITE, functools.partial(self._operand_batches, expr))

    @contextlib.contextmanager
    def _operand_batches(self, expr: Expr, refresher: Refresher, run: RunInfo) -> Iterator[Batches]:
        """The composite's ids, merged from its operands' live versions; ``on_kill`` stops the
        attempt while inside."""
        from funnel.services.composite_input import composite_batches

        with wiring.composite_source(self.mysql_conn_id) as source, self._stoppable(refresher):
            yield composite_batches(
                self.segment_id, expr, source, run, refresher.note_inputs, self.batch_size, self.log
            )
