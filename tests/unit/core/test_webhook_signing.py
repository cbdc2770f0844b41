"""The signature a receiver checks: byte for byte, and what it refuses."""

from __future__ import annotations

import hashlib
import hmac

from funnel.core.webhook_signing import sign, verify

BODY = b'{"segment_id":"s","version":2}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_with_the_secret() -> None:
    expected = hmac.new(b"k" * 16, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("k" * 16, 1700000000, BODY) == f"sha256={expected}"


def test_verify_accepts_a_recent_genuine_body_and_names_what_is_wrong_otherwise() -> None:
    signature = sign("secret-secret-16", 1000, BODY)
    assert verify("secret-secret-16", signature, "1000", BODY, now=1200) is None
    assert verify("secret-secret-16", signature, "1000", BODY + b" ", now=1000) == (
        "X-Funnel-Signature does not match the body"
    )
    assert verify("another-secret-1", signature, "1000", BODY, now=1000) == "X-Funnel-Signature does not match the body"
    # a replay: the same body and signature, later than the window
    assert verify("secret-secret-16", signature, "1000", BODY, now=1301) == (
        "X-Funnel-Timestamp is 301s away from now (more than 300s)"
    )
    # the timestamp is signed: moving it forward breaks the signature
    assert verify("secret-secret-16", signature, "1300", BODY, now=1300) == "X-Funnel-Signature does not match the body"
    assert verify("secret-secret-16", signature, "soon", BODY, now=1000) == (
        "X-Funnel-Timestamp is not a number of seconds"
    )
