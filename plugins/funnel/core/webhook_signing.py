"""Signing a webhook body, and the receiver's check of it.

The signature is ``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``: the timestamp
is signed with the body, so a receiver that refuses old timestamps also refuses a replay.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="
#: The receiver's choice; the README suggests this window.
SUGGESTED_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Funnel-Signature`` header of ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_PREFIX}{digest}"


def verify(
    secret: str,
    signature: str,
    timestamp: str,
    body: bytes,
    now: float,
    tolerance_seconds: float = SUGGESTED_TOLERANCE_SECONDS,
) -> str | None:
    """Why a received body must be refused, or None when it is genuine and recent."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return "X-Funnel-Timestamp is not a number of seconds"
    if abs(now - sent) > tolerance_seconds:
        return f"X-Funnel-Timestamp is {abs(now - sent):.0f}s away from now (more than {tolerance_seconds:.0f}s)"
    if not hmac.compare_digest(sign(secret, sent, body), signature or ""):
        return "X-Funnel-Signature does not match the body"
    return None
