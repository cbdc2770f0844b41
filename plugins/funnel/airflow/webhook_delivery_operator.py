"""The operator that delivers the webhook subscriptions' new versions."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from airflow.sdk import BaseOperator, Context

from funnel import wiring
from funnel.airflow import refresh_metrics
from funnel.airflow.operator_base import KILLED
from funnel.core.errors import FunnelError


class WebhookDeliveryOperator(BaseOperator):
    """Deliver every enabled webhook subscription's new versions, in order, signed, in batches.

    Settings are parameters (the DAG passes the ``webhook_*`` settings; ``refuse_private``:
    each attempt refuses a receiver that resolves to a loopback, private or link-local address
    and connects to the address it checked). A manual run (or conf
    ``{"retry_parked": true}``) first retries what earlier runs parked. The task fails when a
    delivery is parked, after delivering everything else it could; the log says, per
    subscription, what was delivered and what was parked; the counts go to Airflow's metrics
    (``funnel.airflow.refresh_metrics``). ``on_kill`` stops between attempts.
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
        refuse_private: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.timeout_seconds = timeout_seconds
        self.refuse_private = refuse_private
        self._stop = threading.Event()

    def execute(self, context: Context) -> dict[str, Any]:
        from funnel.core.errors import DeliveriesParked
        from funnel.services.webhook_delivery import DeliverySettings

        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        retry_parked = run_type == "manual" or (dag_run.conf or {}).get("retry_parked") is True
        config = DeliverySettings(
            self.batch_size,
            self.max_attempts,
            self.backoff_seconds,
            self.backoff_max_seconds,
            self.timeout_seconds,
            self.refuse_private,
        )
        with contextlib.closing(wiring.mysql_connection()) as conn:
            reports = wiring.webhook_deliverer(conn, config, self._stop).run(retry_parked)
        for report in reports:
            self.log.info("%s", report.summary())
        refresh_metrics.send(refresh_metrics.webhook_metrics(reports, dag_id=dag_run.dag_id))
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
            lines = "\n".join(f"- {report.summary()}" for report in parked)
            raise DeliveriesParked(
                f"{len(parked)} webhook subscription(s) parked or failed (everything else was delivered):\n"
                f"{lines}\nFix: make the receiver answer 2xx (or MySQL answer), then trigger funnel_webhooks by "
                "hand (a manual run retries parked deliveries first)"
            )
        return summary

    def on_kill(self) -> None:
        self._stop.set()
