"""Adding a subscription, for the CLI and the API alike: checked, then stored."""

from __future__ import annotations

from collections.abc import Mapping

from funnel.core.errors import WebhookError
from funnel.core.segment import Segment
from funnel.core.utc_time import utc_now
from funnel.core.webhook_subscription import check_from_version, check_secret, check_segment, check_url, new_secret
from funnel.storage import webhook_sender
from funnel.storage.mysql.segment_version_reader import SegmentVersionReader
from funnel.storage.mysql.webhook_store import Webhook, WebhookStore


def subscribe(
    webhooks: WebhookStore,
    versions: SegmentVersionReader,
    segments: Mapping[str, Segment],
    segment_id: object,
    url: object,
    secret: object = None,
    from_version: object = None,
    *,
    refuse_private: bool,
) -> tuple[Webhook, str]:
    """Store a new enabled subscription; return it and its secret (shown this once).

    It gets the versions after the segment's live one (none yet: from the first), or from
    ``from_version`` on when asked. With ``refuse_private`` (``[funnel] webhook_refuse_private``)
    a URL whose host resolves to a loopback, private or link-local address is refused (each
    delivery checks again). Raises ``WebhookError`` naming the field and the fix.
    """
    if not isinstance(segment_id, str) or not segment_id:
        raise WebhookError("segment_id", "is missing", "name a segment of funnel_segments (GET /v1/segments)")
    check_segment(segment_id, segments.get(segment_id))
    checked_url = check_url(url, refuse_private=refuse_private, resolve=_addresses)
    checked_secret = check_secret(secret) if secret is not None else new_secret()
    start = check_from_version(from_version)
    if start is None:
        live = versions.live_version(segment_id)
        delivered = live.version if live is not None else 0
    else:
        delivered = start - 1
    return webhooks.add(segment_id, checked_url, checked_secret, delivered, utc_now()), checked_secret


def _addresses(host: str) -> list[str]:
    """Every address ``host`` resolves to now (none when it does not: the delivery will say so)."""
    try:
        return webhook_sender.resolve(host)
    except OSError:
        return []
