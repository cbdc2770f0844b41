"""A delivery run: every enabled subscription, strictly in version and batch order after its cursor.

For each subscription, the versions made live after its cursor go out one by one, each in
its batches; a batch is retried with backoff up to ``max_attempts`` times, then parked with
the reason, and that subscription stops for this run (later versions wait: nothing is
skipped, nothing goes out of order). Other subscriptions go on. A parked subscription stays
stopped until a run with ``retry_parked`` (a manual run) sends the parked batch again first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from funnel.core.utc_time import utc_now
from funnel.core.webhook_batches import VersionPlan, backoff_seconds, body, delivery_id
from funnel.storage import webhook_sender
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.webhook_store import Webhook, WebhookStore

log = logging.getLogger(__name__)

#: What ``_send`` answers when the task was stopped while it waited to retry.
_STOPPED = "stopped"

#: ``webhook_sender.post``: url, body, headers, timeout, refuse_private.
Post = Callable[[str, bytes, dict[str, str], float, bool], webhook_sender.Outcome]


@dataclass(frozen=True)
class DeliverySettings:
    """The knobs of a run (``webhook_*`` settings, passed as operator parameters)."""

    batch_size: int
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    timeout_seconds: float
    #: ``webhook_refuse_private``: each attempt resolves the receiver's host and refuses (a failed
    #: attempt, nothing sent) a loopback, private or link-local address; it connects to the address checked.
    refuse_private: bool


@dataclass
class Report:
    """What one run did for one subscription."""

    webhook_id: int
    segment_id: str
    delivered: list[str] = field(default_factory=list)  # delivery ids, in the order sent
    versions: list[int] = field(default_factory=list)  # versions delivered in full
    parked: str | None = None  # "<delivery id>: <reason>" when this subscription is parked
    retried: int = 0  # parked batches this run unparked first
    parked_batches: int = 0  # batches this run parked (0 for a subscription parked by an earlier run)
    failed_attempts: int = 0  # sends that failed (each retried with backoff until max_attempts, then parked)
    stopped: bool = False  # the task was killed mid-way
    error: str | None = None  # an unexpected failure (a store, say): this subscription stopped, the others went on

    def summary(self) -> str:
        head = f"webhook {self.webhook_id} (segment {self.segment_id}):"
        done = (
            f" delivered {len(self.delivered)} batch(es) of version(s) {_span(self.versions)}"
            if self.delivered
            else (" delivered nothing" if self.parked or self.stopped else " nothing new to deliver")
        )
        if self.delivered and not self.versions:
            done = f" delivered {len(self.delivered)} batch(es) ({self.delivered[0]} to {self.delivered[-1]})"
        retried = f"; retried {self.retried} parked batch(es) first" if self.retried else ""
        parked = f"; PARKED {self.parked}" if self.parked else ""
        stopped = "; stopped (task killed)" if self.stopped else ""
        error = f"; FAILED {self.error}" if self.error else ""
        return head + done + retried + parked + stopped + error


def _span(versions: list[int]) -> str:
    if not versions:
        return "none"
    return str(versions[0]) if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"


class Deliverer:
    """Runs deliveries over the stores; ``stop`` (set by ``on_kill``) ends it between attempts."""

    def __init__(
        self,
        webhooks: WebhookStore,
        changes: MySqlSegmentStore,
        config: DeliverySettings,
        *,
        stop: threading.Event | None = None,
        post: Post = webhook_sender.post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.webhooks = webhooks
        self.changes = changes
        self.config = config
        self.stop = stop or threading.Event()
        self.post = post
        self.clock = clock

    def run(self, retry_parked: bool) -> list[Report]:
        """Deliver for every enabled subscription (by id); one report each."""
        reports = []
        for webhook in self.webhooks.list(enabled_only=True):
            if self.stop.is_set():
                break
            try:
                report = self.deliver(webhook, retry_parked)
            except Exception as exc:  # one subscription's failure never stops the others
                log.exception("funnel webhooks: webhook %d failed", webhook.id)
                report = Report(webhook.id, webhook.segment_id, error=f"{type(exc).__name__}: {exc}")
            log.info("funnel webhooks: %s", report.summary())
            reports.append(report)
        return reports

    def deliver(self, webhook: Webhook, retry_parked: bool) -> Report:
        report = Report(webhook.id, webhook.segment_id)
        parked = self.webhooks.parked(webhook.id)
        if parked:
            version, batch, reason = parked[0]
            if not retry_parked:
                report.parked = (
                    f"{delivery_id(webhook.segment_id, version, batch)}: {reason} (still parked; a manual "
                    f"run of funnel_webhooks or `python -m funnel.cli webhooks retry {webhook.id}` retries it)"
                )
                return report
            report.retried = self.webhooks.unpark(webhook.id, utc_now())
        cursor = webhook.cursor
        versions = self.webhooks.versions_after(webhook.segment_id, cursor.version)
        for index, (version, kept) in enumerate(versions):
            # the cursor's partial batches belong to the first version after it
            resume = cursor.resume_after(self.config.batch_size) if index == 0 else 0
            if not kept:
                batch = resume + 1
                self.webhooks.park(
                    webhook,
                    version,
                    batch,
                    0,
                    f"version {version} of segment {webhook.segment_id} is no longer kept in MySQL (pruned), so its "
                    "changes cannot be sent. Fix: resync the receiver from GET /v1/segments/"
                    f"{webhook.segment_id}/members, then subscribe again (webhooks remove + add)",
                    utc_now(),
                )
                report.parked_batches += 1
                report.parked = f"{delivery_id(webhook.segment_id, version, batch)}: version {version} pruned"
                return report
            entered, exited = self.changes.count_changes(webhook.segment_id, version)
            plan = VersionPlan(webhook.segment_id, version, entered, exited, self.config.batch_size)
            for batch, entered_ids, exited_ids in self._batches(plan):
                if batch <= resume:
                    continue
                if self.stop.is_set():
                    report.stopped = True
                    return report
                failure = self._send(webhook, plan, batch, body(plan, batch, entered_ids, exited_ids), report)
                if failure is _STOPPED:
                    report.stopped = True
                    return report
                if failure is not None:
                    report.parked = f"{delivery_id(webhook.segment_id, version, batch)}: {failure}"
                    return report
                report.delivered.append(delivery_id(webhook.segment_id, version, batch))
            report.versions.append(version)
        return report

    def _batches(self, plan: VersionPlan) -> Iterator[tuple[int, list[str], list[str]]]:
        """Batch number, entered ids, exited ids: streamed page by page from MySQL."""
        batch = 0
        for kind in ("entered", "exited"):
            for page in self.changes.iter_changes(plan.segment_id, plan.version, kind, plan.batch_size):
                batch += 1
                yield (batch, page, []) if kind == "entered" else (batch, [], page)
        if batch == 0:
            yield 1, [], []

    def _send(self, webhook: Webhook, plan: VersionPlan, batch: int, payload: bytes, report: Report) -> str | None:
        """Send one batch with retries; None when delivered, else the reason it was parked
        (``report`` counts the failed sends and the parked batch)."""
        reason = ""
        for attempt in range(1, self.config.max_attempts + 1):
            self.webhooks.attempt(webhook, plan.version, batch, plan.batches, utc_now())
            timestamp = int(self.clock())
            header_map = webhook_sender.headers(
                webhook.segment_id, plan.version, batch, webhook.secret, timestamp, payload
            )
            outcome = self.post(
                webhook.url, payload, header_map, self.config.timeout_seconds, self.config.refuse_private
            )
            if outcome.ok:
                self.webhooks.delivered(webhook, plan.version, batch, plan.batches, plan.batch_size, utc_now())
                return None
            reason = outcome.reason
            report.failed_attempts += 1
            self.webhooks.failed(webhook, plan.version, batch, f"attempt {attempt}: {reason}", utc_now())
            log.warning(
                "funnel webhooks: webhook %d, %s, attempt %d of %d failed: %s",
                webhook.id,
                delivery_id(webhook.segment_id, plan.version, batch),
                attempt,
                self.config.max_attempts,
                reason,
            )
            if attempt < self.config.max_attempts:
                wait = backoff_seconds(attempt, self.config.backoff_seconds, self.config.backoff_max_seconds)
                if self.stop.wait(wait):
                    return _STOPPED  # killed: the batch stays pending, the next run sends it
        parked = f"{self.config.max_attempts} attempts failed, the last: {reason}"
        self.webhooks.park(webhook, plan.version, batch, plan.batches, parked, utc_now())
        report.parked_batches += 1
        return parked
