"""One webhook POST: the signed body to the receiver, with connect and read timeouts.

Redirects are not followed (a 3xx is a failure, named in the reason): a POST body must not
be dropped or re-sent elsewhere silently.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from funnel.core.webhook_batches import delivery_id
from funnel.core.webhook_signing import sign

#: How much of a failed response's body the reason keeps.
EXCERPT_CHARS = 200
USER_AGENT = "funnel-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ``ok`` (2xx) or the reason it failed, in words."""

    ok: bool
    reason: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def headers(segment_id: str, version: int, batch: int, secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery: idempotency key, timestamp, signature."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Funnel-Delivery": delivery_id(segment_id, version, batch),
        "X-Funnel-Timestamp": str(timestamp),
        "X-Funnel-Signature": sign(secret, timestamp, body),
    }


def post(url: str, body: bytes, header_map: dict[str, str], timeout_seconds: float) -> Outcome:
    """POST ``body``; never raises for what the receiver or the network did."""
    request = urllib.request.Request(url, data=body, headers=header_map, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_seconds) as response:
            response.read(EXCERPT_CHARS)
            status = response.status
    except urllib.error.HTTPError as exc:
        try:
            excerpt = exc.read(EXCERPT_CHARS).decode("utf-8", "replace").strip()
        except Exception:
            excerpt = ""
        shown = f": {excerpt}" if excerpt else ""
        return Outcome(False, f"HTTP {exc.code} {exc.reason}{shown}"[: EXCERPT_CHARS + 40])
    except urllib.error.URLError as exc:
        return Outcome(False, f"cannot reach {_origin(url)}: {exc.reason}")
    except (TimeoutError, OSError) as exc:
        return Outcome(False, f"cannot reach {_origin(url)}: {type(exc).__name__}: {exc}")
    if 200 <= status < 300:
        return Outcome(True)
    return Outcome(False, f"HTTP {status} (not 2xx)")


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
