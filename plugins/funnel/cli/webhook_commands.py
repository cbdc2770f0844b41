"""``webhooks add|list|enable|disable|remove|deliveries|retry``: webhook subscriptions."""

from __future__ import annotations

import argparse
import contextlib
import sys

from funnel import settings, wiring


def webhooks_command(args: argparse.Namespace) -> int:
    """Manage webhook subscriptions (``webhooks add|list|enable|disable|remove|deliveries|retry``)."""
    from funnel.core.errors import UnknownWebhook, WebhookError
    from funnel.core.utc_time import utc_now
    from funnel.services.catalog import serving_catalog
    from funnel.services.webhook_admin import subscribe

    with contextlib.closing(wiring.mysql_connection()) as conn:
        store = wiring.webhook_store(conn)
        try:
            if args.action == "add":
                segments = {s.segment_id: s for s in serving_catalog(wiring.mysql_hook()).segments}
                webhook, secret = subscribe(
                    store,
                    wiring.mysql_store(conn),
                    segments,
                    args.segment_id,
                    args.url,
                    args.secret,
                    args.from_version,
                    refuse_private=settings.WEBHOOK_REFUSE_PRIVATE,
                )
                print(
                    f"webhook {webhook.id}: segment {webhook.segment_id} -> {webhook.url}, from version "
                    f"{webhook.cursor.version + 1}"
                )
                print(f"secret (shown once; the receiver checks X-Funnel-Signature with it): {secret}")
            elif args.action == "list":
                print(f"{'id':>4}  {'segment':<24} {'enabled':<8} {'delivered':>9}  url")
                for webhook in store.list():
                    print(
                        f"{webhook.id:>4}  {webhook.segment_id:<24} {'yes' if webhook.enabled else 'no':<8} "
                        f"{webhook.cursor.version:>9}  {webhook.url}"
                    )
            elif args.action in ("enable", "disable"):
                webhook = store.set_enabled(args.id, args.action == "enable")
                print(f"webhook {webhook.id}: {'enabled' if webhook.enabled else 'disabled'}")
            elif args.action == "remove":
                store.remove(args.id)
                print(f"webhook {args.id}: removed, with its delivery records")
            elif args.action == "deliveries":
                rows = store.by_version(args.id)
                print(f"{'version':>7}  {'status':<9} {'batches':>7} {'attempts':>8}  last error")
                for row in rows:
                    line = (
                        f"{row.version:>7}  {row.status.value:<9} {row.delivered:>3}/{row.batches:<3} "
                        f"{row.attempts:>8}  {row.last_error or ''}"
                    )
                    print(line.rstrip())
                if not rows:
                    print("no deliveries yet")
            elif args.action == "retry":
                count = store.unpark(args.id, utc_now())
                print(
                    f"webhook {args.id}: {count} parked batch(es) will be sent again by the next run of "
                    "funnel_webhooks (trigger it now: airflow dags trigger funnel_webhooks)"
                )
        except (WebhookError, UnknownWebhook) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0
