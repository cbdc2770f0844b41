"""What a webhook subscription may be: the segment, the URL and the secret, checked before
anything is stored. Each check raises ``WebhookError`` naming the field and the fix."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from funnel.core import ids
from funnel.core.errors import WebhookError
from funnel.core.segment import Kind, Segment

URL_MAX_LENGTH = 2048
SECRET_MIN_LENGTH = 16
SECRET_MAX_LENGTH = 128


def new_secret() -> str:
    """A random signing secret (256 bits), shown once when the subscription is made."""
    return f"whsec_{secrets.token_hex(32)}"


def check_segment(segment_id: str, segment: Segment | None) -> None:
    """A subscription needs a stored segment (static, dynamic, composite) of the catalog."""
    if segment is None:
        raise WebhookError(
            "segment_id",
            f"segment {segment_id[:80]!r} is not in the catalog",
            "name a segment of funnel_segments (GET /v1/segments lists them)",
        )
    if segment.kind is Kind.PROXY:
        raise WebhookError(
            "segment_id",
            f"segment {segment_id!r} is a proxy segment: it is answered at request time from users' tags and "
            "has no versions, so there are no version changes to deliver",
            "subscribe to a static, dynamic or composite segment",
        )


def literal_addresses(host: str) -> list[str]:
    """The address a host written as an IP literal is; a name resolves to nothing here (no I/O)."""
    try:
        return [str(ipaddress.ip_address(host.split("%")[0]))]
    except ValueError:
        return []


def check_url(url: object, *, refuse_private: bool, resolve: Callable[[str], Iterable[str]] = literal_addresses) -> str:
    """An http(s) URL with a host and no credentials in it; returned as given. With
    ``refuse_private`` (``[funnel] webhook_refuse_private``), a host any of whose addresses
    (``resolve``: the caller's resolver, an IP literal's own address by default) is loopback,
    private or link-local is refused (``private_receiver``; deliveries check again)."""
    if not isinstance(url, str) or not url:
        raise WebhookError("url", "is missing", "give the receiver's URL, e.g. https://hooks.example.com/funnel")
    if len(url) > URL_MAX_LENGTH:
        raise WebhookError("url", f"is {len(url)} characters long", f"use a URL of at most {URL_MAX_LENGTH}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise WebhookError("url", f"is not a valid URL ({exc})", "give an http:// or https:// URL") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError(
            "url", f"has scheme {parts.scheme!r}", "give an http:// or https:// URL (webhooks are HTTP POSTs)"
        )
    if not host:
        raise WebhookError("url", "has no host", "give the receiver's host, e.g. https://hooks.example.com/funnel")
    if parts.username or parts.password:
        raise WebhookError(
            "url",
            "holds credentials (user:password@)",
            "leave them out: the receiver authenticates funnel by the X-Funnel-Signature header",
        )
    if any(ord(ch) < 33 or ord(ch) > 126 for ch in url):
        raise WebhookError("url", "holds spaces, control or non-ASCII characters", "percent-encode them")
    if refuse_private and (refused := private_receiver(host, resolve(host))):
        raise WebhookError("url", refused, PRIVATE_RECEIVER_FIX)
    return url


#: What to do about a receiver ``webhook_refuse_private`` refuses (subscribing and delivering alike).
PRIVATE_RECEIVER_FIX = (
    "use a public receiver, or, where receivers are trusted internal services, set [funnel] "
    "webhook_refuse_private = False (AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE=False)"
)


def is_private_address(address: str) -> bool:
    """Whether an IP address is loopback, private or link-local (or unspecified): one funnel must not
    POST to when ``webhook_refuse_private`` is on. An IPv4-mapped IPv6 address counts as its IPv4 one."""
    ip = ipaddress.ip_address(address.split("%")[0])  # a scoped IPv6 address: fe80::1%eth0
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified


def private_receiver(host: str, addresses: Iterable[str]) -> str | None:
    """Why ``webhook_refuse_private`` refuses a receiver at ``host`` that resolves to ``addresses``,
    in words; None when every address is public (or there is none: the connection will say so)."""
    private = sorted({address for address in addresses if is_private_address(address)})
    if not private:
        return None
    where = f"points at {host!r}"
    if not literal_addresses(host):  # a name: say what it resolved to
        where += f", which resolves to {', '.join(private)}"
    return f"{where}, a loopback, private or link-local address, which [funnel] webhook_refuse_private forbids"


def check_secret(secret: object) -> str:
    """A signing secret: printable ASCII without spaces, 16 to 128 characters."""
    if not isinstance(secret, str):
        raise WebhookError("secret", "must be a string", "leave it out to have one generated")
    if not (SECRET_MIN_LENGTH <= len(secret) <= SECRET_MAX_LENGTH) or not all(33 <= ord(c) <= 126 for c in secret):
        raise WebhookError(
            "secret",
            f"must be {SECRET_MIN_LENGTH} to {SECRET_MAX_LENGTH} printable ASCII characters without spaces",
            "leave it out to have one generated",
        )
    return secret


def check_from_version(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ids.VERSION_MAX:
        raise WebhookError(
            "from_version",
            f"must be a version number (1 to {ids.VERSION_MAX})",
            "leave it out to start after the live version",
        )
    return value
