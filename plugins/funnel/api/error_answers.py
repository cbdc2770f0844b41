"""The API's one answer to an error: ``FunnelError.http_status`` and a JSON body ``{"error": ...}``.

A 4xx answer carries the error's message (what was wrong and the fix); a 5xx answer carries the
class's ``client_message`` and the message goes to the log (it may name hosts and ports). Any
other exception is a 503 with ``STORE_UNAVAILABLE`` and a traceback in the log. The routes and
the hot paths (``funnel.api.fast_paths``) both answer through ``error_answer``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from funnel import settings
from funnel.api.bodies import Body, body_problem
from funnel.api.http_semantics import allowed_methods
from funnel.core.errors import STORE_UNAVAILABLE, FunnelError

log = logging.getLogger("funnel.api")


class JSON(JSONResponse):
    """A JSON answer serialized with orjson (a ``JSONResponse``, so the OpenAPI document shows the
    route's model for it)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_answer(exc: BaseException, where: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for ``exc`` raised while answering ``where`` (``METHOD /path``)."""
    return _with_retry_after(_answer_to(exc, where))


def _answer_to(exc: BaseException, where: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    if not isinstance(exc, FunnelError):
        log.exception("funnel API: %s failed", where, exc_info=exc)
        return 503, {"error": STORE_UNAVAILABLE}, {}
    status = exc.http_status
    if status >= 500 and exc.client_message is not None:
        log.warning("funnel API: %s: %s", where, exc)  # the details stay here
        return status, {"error": exc.client_message}, {}
    body = {"error": str(exc), **exc.answer_fields()}
    return status, body, ({"WWW-Authenticate": "Bearer"} if status == 401 else {})


def _with_retry_after(answer: tuple[int, dict[str, Any], dict[str, str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """429 and 503 say when to try again (``Retry-After``, RFC 9110), which ``funnel.client`` honours."""
    status, body, headers = answer
    if status in (429, 503):
        headers = {**headers, "Retry-After": str(settings.RETRY_AFTER_SECONDS)}
    return status, body, headers


def body_model(route: Any) -> type[Body] | None:
    """The body model of a route (``funnel.api.bodies``), if it takes one."""
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return model if isinstance(model, type) and issubclass(model, Body) else None


def add_error_handlers(app: FastAPI) -> None:
    async def funnel_error(request: Request, exc: Exception) -> Response:
        status, body, headers = error_answer(exc, f"{request.method} {request.url.path}")
        return JSON(body, status_code=status, headers=headers or None)

    async def unreadable(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        if any(error.get("loc", ("",))[0] == "body" for error in errors):
            message = body_problem(errors, body_model(request.scope.get("route")))
        else:
            first = errors[0] if errors else {}
            where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the request"
            message = f"{where}: {first.get('msg', 'is not valid')}"
        return JSON({"error": message}, status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of every route at this path, not only the first route's
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return JSON({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers or None)

    app.add_exception_handler(FunnelError, funnel_error)
    app.add_exception_handler(RequestValidationError, unreadable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, funnel_error)
