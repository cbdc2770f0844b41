"""HTTP as RFC 9110 has it, for every route: ``HEAD`` wherever ``GET`` is, a 405 that says which
methods the path allows (``Allow``), and entity tags on the catalog's answers (``ETag``, answered
``304 Not Modified`` when the client's ``If-None-Match`` already names it).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi import Request, Response
from starlette.routing import Match

from funnel.api.serving_metrics import SENT_METHOD_KEY


class HeadAsGet:
    """ASGI middleware: a ``HEAD`` request is answered as its ``GET`` would be (status, headers,
    ``Content-Length``), without the body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET", SENT_METHOD_KEY: "HEAD"}, receive, headers_only)


def allowed_methods(app: Any, scope: Any) -> list[str]:
    """Every method some route answers at this request's path (``HEAD`` with ``GET``), sorted."""
    methods: set[str] = set()
    for route in app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(scope)[0] is not Match.NONE:  # PARTIAL: the path, not the method
            methods |= set(route_methods)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def tagged_answer(request: Request, body: Any) -> Response:
    """``body`` as JSON with a strong ``ETag`` (a digest of the bytes); ``304`` without a body when
    the request's ``If-None-Match`` names that tag (or is ``*``)."""
    payload = orjson.dumps(body)
    etag = f'"{hashlib.blake2b(payload, digest_size=12).hexdigest()}"'
    headers = {"ETag": etag}
    wanted = request.headers.get("if-none-match")
    if wanted is not None:
        tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
        if etag in tags or "*" in tags:
            return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)
