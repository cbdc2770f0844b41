"""Bearer tokens with a scope: ``read`` (every GET and ``members:check``) or ``write`` (also
``POST /v1/events``, webhooks, previews and definitions), and a name. Tokens come from the
settings (``api_tokens``, ``api_tokens_file``), so from Airflow's configuration or a mounted
secret; they are compared in constant time. Inside Airflow's API server, an Airflow login also
grants ``read``, and ``define`` (previews and definitions, not events or webhooks) to a user
whom Airflow's auth manager lets edit DAGs (``granted_scope``). A ``Grant`` says what a request
may do and who it is (``actor``: ``api:<token name>`` or ``airflow:<user>``, what a
definition's revision records).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from funnel.core.errors import Forbidden, Unauthorized

#: The scopes, each covering those before it.
SCOPES = ("read", "define", "write")
#: The header the Segments page sends with each request. A write with Airflow's login cookie
#: counts only with it: another site's page cannot send it (the API allows no cross-origin
#: request), so the cookie cannot be used against a logged-in user (CSRF).
PAGE_HEADER = "x-funnel-page"


@dataclass(frozen=True)
class Grant:
    """What a request may do (``scope``) and who made it (``actor``)."""

    scope: str
    actor: str


def scope_of(header: str | None, tokens: Mapping[str, tuple[str, str]]) -> Grant:
    """The grant of the bearer token in an ``Authorization`` header (``tokens``: token -> scope
    and name, ``settings.api_tokens``), or ``Unauthorized``.

    Every configured token is compared, whatever matched, so the time taken says nothing
    about which token (or how much of one) was right.
    """
    if not header:
        raise Unauthorized("this endpoint needs a token: send the header 'Authorization: Bearer <token>'")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
    candidate = presented.strip().encode()
    found: Grant | None = None
    for token, (scope, name) in tokens.items():
        if hmac.compare_digest(candidate, token.encode()):
            found = Grant(scope, f"api:{name}")
    if found is None:
        raise Unauthorized("the token is not valid for this service")
    return found


def require(scope: str, granted: Grant) -> None:
    """``Forbidden`` unless ``granted`` covers ``scope`` (each scope covers those before it)."""
    if SCOPES.index(granted.scope) >= SCOPES.index(scope):
        return
    if scope == "define":
        raise Forbidden(
            "this endpoint needs a token with the write scope, or inside Airflow a login that may edit DAGs; "
            "this one can only read"
        )
    if granted.scope == "define":
        raise Forbidden(
            "this endpoint needs a token with the write scope; an Airflow login can only read, preview and "
            "change segment definitions"
        )
    raise Forbidden("this endpoint needs a token with the write scope; this token can only read")


#: The cookie Airflow's UI keeps its login in (``COOKIE_NAME_JWT_TOKEN``; httpOnly, same origin).
AIRFLOW_LOGIN_COOKIE = "_token"


async def granted_scope(
    header: str | None,
    tokens: Mapping[str, tuple[str, str]],
    *,
    airflow_login: bool = False,
    login_cookie: str | None = None,
    safe_method: bool = True,
    from_page: bool = False,
) -> Grant:
    """The scope a request is granted: funnel's own bearer tokens, or, inside Airflow, a login.

    With ``airflow_login`` (the API mounted in Airflow's API server by the plugin), an Airflow
    JWT grants ``read`` and never more: sent as the bearer token (``POST /auth/token``), or as
    the login cookie of Airflow's UI, which a browser sends along with the Segments page's
    requests. The cookie counts on GET and HEAD, and on other methods only ``from_page`` (the
    ``PAGE_HEADER`` is there), so another site can never make a logged-in browser do more than
    read (and, the cookie being ``SameSite=Lax``, not even that). As in Airflow, a credential
    in the header wins over the cookie.
    """
    if header or not airflow_login:
        try:
            return scope_of(header, tokens)
        except Unauthorized:
            scheme, _, presented = (header or "").partition(" ")
            if not airflow_login or scheme.lower() != "bearer" or not presented.strip():
                raise
            return await airflow_login_scope(presented.strip())
    if login_cookie and (safe_method or from_page):
        return await airflow_login_scope(login_cookie)
    raise Unauthorized(
        "this endpoint needs a token: log in to Airflow, or send the header 'Authorization: Bearer <token>'"
    )


async def airflow_login_scope(token: str) -> Grant:
    """``read`` when Airflow's auth manager takes ``token`` as a user who may read DAGs;
    ``define`` when that user may also edit them.

    Only inside Airflow's API server, where the auth manager is set up: the same check
    (signature, expiry, audience, revocation) as Airflow's own API makes.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from jwt import ExpiredSignatureError, InvalidTokenError

    manager = get_auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except ExpiredSignatureError:
        raise Unauthorized("the Airflow login has expired: log in to Airflow again") from None
    except InvalidTokenError:
        raise Unauthorized("the token is not valid for this service") from None
    if not await asyncio.to_thread(lambda: manager.is_authorized_dag(method="GET", user=user)):
        raise Forbidden("this Airflow user may not read DAGs, so not the segments they refresh either")
    edits = await asyncio.to_thread(lambda: manager.is_authorized_dag(method="PUT", user=user))
    return Grant("define" if edits else "read", f"airflow:{user.get_name()}")
