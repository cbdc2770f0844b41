"""The one way a route or a hot path reaches the ``Service``: check the request's token against
the scope the endpoint needs, then the app's ``Service``, made at the first request (a mounted
app gets no lifespan, so clients and stores are never made at import or start-up)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from funnel.api.auth import AIRFLOW_LOGIN_COOKIE, PAGE_HEADER, Grant, granted_scope, require
from funnel.api.service import Service


async def request_service(request: Request, scope: str | None) -> Service:
    """Check the token (``scope`` None: no auth), then the app's ``Service``, made once. What
    was granted is ``request.state.grant`` from then on (``DefineActor``, ``GET /v1/access``)."""
    if scope is not None:
        request.state.grant = await _granted(
            request.app,
            request.headers.get("authorization"),
            scope,
            request.cookies.get(AIRFLOW_LOGIN_COOKIE),
            request.method in ("GET", "HEAD"),
            request.headers.get(PAGE_HEADER) == "1",
        )
    return await _service(request.app)


async def service_for(
    app: FastAPI,
    authorization: str | None,
    scope: str | None,
    login_cookie: str | None = None,
    safe_method: bool = True,
) -> Service:
    """``request_service`` from the parts of a request (the hot paths have no ``Request``)."""
    if scope is not None:
        await _granted(app, authorization, scope, login_cookie, safe_method)
    return await _service(app)


async def _granted(
    app: FastAPI,
    authorization: str | None,
    scope: str,
    login_cookie: str | None,
    safe_method: bool,
    from_page: bool = False,
) -> Grant:
    granted = await granted_scope(
        authorization,
        app.state.tokens,
        airflow_login=app.state.airflow_login,
        login_cookie=login_cookie,
        safe_method=safe_method,
        from_page=from_page,
    )
    require(scope, granted)
    return granted


async def _service(app: FastAPI) -> Service:
    service = getattr(app.state, "service", None)
    if service is None:
        async with app.state.service_lock:
            service = getattr(app.state, "service", None)
            if service is None:
                service = app.state.service = Service()
    return service


async def _reader(request: Request) -> Service:
    return await request_service(request, "read")


async def _definer(request: Request) -> Service:
    return await request_service(request, "define")


async def _writer(request: Request) -> Service:
    return await request_service(request, "write")


#: A route's ``Service`` as a dependency, for the routes that take a body: FastAPI solves
#: dependencies before it reads the body, so a request without the scope gets 401 or 403 before
#: its body is looked at.
ReadService = Annotated[Service, Depends(_reader)]
#: Previews and definitions: a write token, or inside Airflow a user who may edit DAGs.
DefineService = Annotated[Service, Depends(_definer)]
WriteService = Annotated[Service, Depends(_writer)]


async def _define_actor(request: Request, _service: DefineService) -> str:
    return str(request.state.grant.actor)


#: Who a change of a definition is recorded as: ``api:<token name>`` or ``airflow:<user>``.
DefineActor = Annotated[str, Depends(_define_actor)]
