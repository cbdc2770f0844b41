"""Webhook subscriptions and their deliveries in MySQL (``funnel_webhooks``,
``funnel_webhook_deliveries``), and which versions a subscription has yet to get.

A subscription's cursor (the last version delivered in full, and the batches of the next
one) moves in the same transaction that records a batch as delivered, so a run that dies
between the two never skips a batch: at worst it sends one again, under the same id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.errors import UnknownWebhook
from funnel.core.states import LOGGED_STATES, DeliveryStatus, RunStatus
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.core.webhook_batches import Cursor
from funnel.storage import layout
from funnel.storage.mysql.sql_params import marks

_COLUMNS = "id, segment_id, url, secret, enabled, created_at, delivered_version, delivered_batches, batch_size"


@dataclass(frozen=True)
class Webhook:
    """One subscription. ``secret`` is for signing only: never shown after it was made."""

    id: int
    segment_id: str
    url: str
    secret: str
    enabled: bool
    created_at: dt.datetime
    cursor: Cursor

    def public(self) -> dict[str, Any]:
        """The subscription as the CLI and the API show it (no secret)."""
        return {
            "id": self.id,
            "segment_id": self.segment_id,
            "url": self.url,
            "enabled": self.enabled,
            "created_at": self.created_at.isoformat(),
            "delivered_version": self.cursor.version,
        }


@dataclass(frozen=True)
class VersionDeliveries:
    """How one version went for one subscription."""

    version: int
    batches: int
    delivered: int
    pending: int
    parked: int
    attempts: int
    last_error: str | None
    updated_at: dt.datetime

    @property
    def status(self) -> DeliveryStatus:
        if self.parked:
            return DeliveryStatus.PARKED
        if self.delivered >= self.batches:
            return DeliveryStatus.DELIVERED
        return DeliveryStatus.PENDING

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status.value,
            "batches": self.batches,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "updated_at": self.updated_at.isoformat(),
        }


class WebhookStore:
    """Subscriptions, their cursors and their deliveries, over one DB-API (mysqlclient) connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # ------------------------------------------------------------------ subscriptions

    def add(self, segment_id: str, url: str, secret: str, delivered_version: int, now: dt.datetime) -> Webhook:
        """A new enabled subscription whose next version is the first after ``delivered_version``."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.WEBHOOKS_TABLE} (segment_id, url, secret, enabled, created_at, delivered_version)"
            " VALUES (%s, %s, %s, TRUE, %s, %s)",
            (segment_id, url, secret, to_naive_utc(now), delivered_version),
        )
        webhook_id = int(cur.lastrowid)
        self.conn.commit()
        return self.get(webhook_id)

    def get(self, webhook_id: int) -> Webhook:
        cur = self.conn.cursor()
        cur.execute(f"SELECT {_COLUMNS} FROM {layout.WEBHOOKS_TABLE} WHERE id = %s", (webhook_id,))
        row = cur.fetchone()
        self.conn.commit()
        if row is None:
            raise UnknownWebhook(f"webhook {webhook_id} does not exist (list them with GET /v1/webhooks)")
        return _webhook(row)

    def list(self, *, enabled_only: bool = False) -> list[Webhook]:
        """Every subscription (the enabled ones only, if asked), by id."""
        cur = self.conn.cursor()
        where = " WHERE enabled" if enabled_only else ""
        cur.execute(f"SELECT {_COLUMNS} FROM {layout.WEBHOOKS_TABLE}{where} ORDER BY id")
        found = [_webhook(row) for row in cur.fetchall()]
        self.conn.commit()
        return found

    def enabled_ids_on(self, segment_id: str) -> list[int]:
        """The enabled subscriptions on the segment, in the caller's transaction (no commit)."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT id FROM {layout.WEBHOOKS_TABLE} WHERE enabled AND segment_id = %s ORDER BY id", (segment_id,)
        )
        return [int(row[0]) for row in cur.fetchall()]

    def set_enabled(self, webhook_id: int, enabled: bool) -> Webhook:
        self.get(webhook_id)
        cur = self.conn.cursor()
        cur.execute(f"UPDATE {layout.WEBHOOKS_TABLE} SET enabled = %s WHERE id = %s", (enabled, webhook_id))
        self.conn.commit()
        return self.get(webhook_id)

    def remove(self, webhook_id: int) -> None:
        """Delete a subscription and its delivery records."""
        self.get(webhook_id)
        cur = self.conn.cursor()
        cur.execute(f"DELETE FROM {layout.WEBHOOK_DELIVERIES_TABLE} WHERE webhook_id = %s", (webhook_id,))
        cur.execute(f"DELETE FROM {layout.WEBHOOKS_TABLE} WHERE id = %s", (webhook_id,))
        self.conn.commit()

    def subscribed_segments(self) -> list[str]:
        """The segments with at least one enabled subscription, sorted (the DAG's schedule)."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT DISTINCT segment_id FROM {layout.WEBHOOKS_TABLE} WHERE enabled ORDER BY segment_id")
        found = [row[0] for row in cur.fetchall()]
        self.conn.commit()
        return found

    # ------------------------------------------------------------------ versions to deliver

    def versions_after(self, segment_id: str, after: int) -> list[tuple[int, bool]]:
        """The versions made live after ``after``, in order, each with whether its changes are still
        kept (live, retired, or archived within ``change_history_days``). A version made live is one
        a successful refresh recorded (``funnel_segment_runs``, never pruned) or one still kept; a
        version computed but never made live (rejected, superseded, failed) is not one."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version FROM {layout.RUNS_TABLE} WHERE segment_id = %s AND status = %s AND version > %s"
            f" UNION SELECT version FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version > %s"
            f" AND state IN ({marks(LOGGED_STATES)}) ORDER BY version",
            (segment_id, RunStatus.SUCCESS.value, after, segment_id, after, *LOGGED_STATES),
        )
        made_live = [int(row[0]) for row in cur.fetchall()]
        cur.execute(
            f"SELECT version FROM {layout.VERSIONS_TABLE} WHERE segment_id = %s AND version > %s"
            f" AND state IN ({marks(LOGGED_STATES)})",
            (segment_id, after, *LOGGED_STATES),
        )
        kept = {int(row[0]) for row in cur.fetchall()}
        self.conn.commit()
        return [(version, version in kept) for version in made_live]

    # ------------------------------------------------------------------ deliveries

    def attempt(self, webhook: Webhook, version: int, batch: int, batches: int, now: dt.datetime) -> None:
        """Record one more attempt at a batch (pending until it is delivered or parked)."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.WEBHOOK_DELIVERIES_TABLE}"
            " (webhook_id, segment_id, version, batch, batches, status, attempts, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, 1, %s)"
            " ON DUPLICATE KEY UPDATE status = VALUES(status), attempts = attempts + 1, batches = VALUES(batches),"
            " updated_at = VALUES(updated_at)",
            (webhook.id, webhook.segment_id, version, batch, batches, DeliveryStatus.PENDING.value, to_naive_utc(now)),
        )
        self.conn.commit()

    def failed(self, webhook: Webhook, version: int, batch: int, error: str, now: dt.datetime) -> None:
        """Note why the last attempt at a batch failed (it stays pending)."""
        self._set(webhook, version, batch, DeliveryStatus.PENDING, error, now)

    def delivered(
        self, webhook: Webhook, version: int, batch: int, batches: int, batch_size: int, now: dt.datetime
    ) -> None:
        """Record a batch as delivered and move the cursor past it, in one transaction."""
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.WEBHOOK_DELIVERIES_TABLE} SET status = %s, last_error = NULL, updated_at = %s"
            " WHERE webhook_id = %s AND segment_id = %s AND version = %s AND batch = %s",
            (DeliveryStatus.DELIVERED.value, to_naive_utc(now), webhook.id, webhook.segment_id, version, batch),
        )
        if batch >= batches:
            cur.execute(
                f"UPDATE {layout.WEBHOOKS_TABLE} SET delivered_version = %s, delivered_batches = 0, batch_size = 0"
                " WHERE id = %s",
                (version, webhook.id),
            )
        else:
            cur.execute(
                f"UPDATE {layout.WEBHOOKS_TABLE} SET delivered_batches = %s, batch_size = %s WHERE id = %s",
                (batch, batch_size, webhook.id),
            )
        self.conn.commit()

    def park(self, webhook: Webhook, version: int, batch: int, batches: int, reason: str, now: dt.datetime) -> None:
        """Give a batch up until a manual run: status parked, with the reason."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.WEBHOOK_DELIVERIES_TABLE}"
            " (webhook_id, segment_id, version, batch, batches, status, attempts, last_error, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s)"
            " ON DUPLICATE KEY UPDATE status = VALUES(status), last_error = VALUES(last_error),"
            " updated_at = VALUES(updated_at)",
            (
                webhook.id,
                webhook.segment_id,
                version,
                batch,
                batches,
                DeliveryStatus.PARKED.value,
                reason,
                to_naive_utc(now),
            ),
        )
        self.conn.commit()

    def parked(self, webhook_id: int) -> list[tuple[int, int, str]]:
        """The parked batches of a subscription: (version, batch, reason), oldest first."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT version, batch, last_error FROM {layout.WEBHOOK_DELIVERIES_TABLE}"
            " WHERE webhook_id = %s AND status = %s ORDER BY version, batch",
            (webhook_id, DeliveryStatus.PARKED.value),
        )
        found = [(int(v), int(b), str(e or "")) for v, b, e in cur.fetchall()]
        self.conn.commit()
        return found

    def parked_counts(self) -> dict[int, int]:
        """Every subscription's parked batches: webhook id -> how many (none parked: absent)."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT webhook_id, COUNT(*) FROM {layout.WEBHOOK_DELIVERIES_TABLE} WHERE status = %s GROUP BY webhook_id",
            (DeliveryStatus.PARKED.value,),
        )
        found = {int(webhook_id): int(count) for webhook_id, count in cur.fetchall()}
        self.conn.commit()
        return found

    def unpark(self, webhook_id: int, now: dt.datetime) -> int:
        """Make a subscription's parked batches pending again (the next run sends them); return how many."""
        self.get(webhook_id)
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.WEBHOOK_DELIVERIES_TABLE} SET status = %s, updated_at = %s"
            " WHERE webhook_id = %s AND status = %s",
            (DeliveryStatus.PENDING.value, to_naive_utc(now), webhook_id, DeliveryStatus.PARKED.value),
        )
        count = int(cur.rowcount)
        self.conn.commit()
        return count

    def by_version(self, webhook_id: int, limit: int = 100) -> list[VersionDeliveries]:
        """How each version went for a subscription, newest first (at most ``limit`` versions)."""
        self.get(webhook_id)
        cur = self.conn.cursor()
        cur.execute(
            "SELECT version, MAX(batches),"
            " SUM(status = %s), SUM(status = %s), SUM(status = %s), SUM(attempts),"
            " MAX(CASE WHEN status <> %s THEN last_error END), MAX(updated_at)"
            f" FROM {layout.WEBHOOK_DELIVERIES_TABLE} WHERE webhook_id = %s"
            " GROUP BY version ORDER BY version DESC LIMIT %s",
            (
                DeliveryStatus.DELIVERED.value,
                DeliveryStatus.PENDING.value,
                DeliveryStatus.PARKED.value,
                DeliveryStatus.DELIVERED.value,
                webhook_id,
                limit,
            ),
        )
        rows = cur.fetchall()
        self.conn.commit()
        return [
            VersionDeliveries(int(v), int(n), int(d), int(p), int(k), int(a), e, from_naive_utc(at))
            for v, n, d, p, k, a, e, at in rows
        ]

    def _set(
        self, webhook: Webhook, version: int, batch: int, status: DeliveryStatus, error: str, now: dt.datetime
    ) -> None:
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.WEBHOOK_DELIVERIES_TABLE} SET status = %s, last_error = %s, updated_at = %s"
            " WHERE webhook_id = %s AND segment_id = %s AND version = %s AND batch = %s",
            (status.value, error, to_naive_utc(now), webhook.id, webhook.segment_id, version, batch),
        )
        self.conn.commit()


def _webhook(row: Sequence[Any]) -> Webhook:
    webhook_id, segment_id, url, secret, enabled, created_at, version, batches, batch_size = row
    return Webhook(
        int(webhook_id),
        segment_id,
        url,
        secret,
        bool(enabled),
        from_naive_utc(created_at),
        Cursor(int(version), int(batches), int(batch_size)),
    )
