"""Bearer tokens with a scope: ``read`` (every GET and ``members:check``) or ``write`` (also
``POST /v1/events``). Tokens come from the settings (``api_tokens``, ``api_tokens_file``),
so from Airflow's configuration or a mounted secret; they are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

SCOPES = ("read", "write")


class Unauthorized(Exception):
    """No token, or not a token this service knows (401)."""


class Forbidden(Exception):
    """A known token without the scope the endpoint needs (403)."""


def scope_of(header: str | None, tokens: Mapping[str, str]) -> str:
    """The scope of the bearer token in an ``Authorization`` header, or ``Unauthorized``.

    Every configured token is compared, whatever matched, so the time taken says nothing
    about which token (or how much of one) was right.
    """
    if not header:
        raise Unauthorized("this endpoint needs a token: send the header 'Authorization: Bearer <token>'")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
    candidate = presented.strip().encode()
    found = ""
    for token, scope in tokens.items():
        if hmac.compare_digest(candidate, token.encode()):
            found = scope
    if not found:
        raise Unauthorized("the token is not valid for this service")
    return found


def require(scope: str, granted: str) -> None:
    """``Forbidden`` unless ``granted`` covers ``scope`` (write covers read)."""
    if scope == "write" and granted != "write":
        raise Forbidden("this endpoint needs a token with the write scope; this token can only read")
