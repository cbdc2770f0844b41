"""The two hottest reads, answered before FastAPI: ``GET /v1/segments/{id}/members/{user_id}``
(no query string) and ``GET /v1/users/{user_id}/segments``.

FastAPI's routing and request parsing cost about a third of a membership check's CPU, so this
ASGI middleware answers these two itself, with the same functions, auth and errors as their
routes (which stay, for the OpenAPI page and for anything else, such as ``?at=``).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.requests import cookie_parser

from funnel.api.auth import AIRFLOW_LOGIN_COOKIE
from funnel.api.error_answers import error_answer
from funnel.api.member_routes import member_answer
from funnel.api.service_access import service_for
from funnel.api.serving_metrics import ROUTE_KEY
from funnel.api.user_routes import user_segments_answer

#: The route templates of the two reads (their routes' paths), as the metrics label them.
MEMBER_ROUTE = "/v1/segments/{segment_id}/members/{user_id}"
USER_SEGMENTS_ROUTE = "/v1/users/{user_id}/segments"


class FastPaths:
    """The two hottest reads answered before FastAPI's routing and request parsing (which
    cost about a third of a membership check's CPU): the same functions, auth and errors as
    their routes, which stay for the OpenAPI page. Anything else goes on to FastAPI."""

    def __init__(self, app: Any, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = get_route_path(scope)
            if path.startswith("/v1/segments/"):
                segment_id, found, user_id = path[13:].partition("/members/")
                if found and segment_id and "/" not in segment_id and not scope["query_string"]:
                    scope[ROUTE_KEY] = MEMBER_ROUTE
                    await self._answer(scope, send, lambda service: member_answer(service, segment_id, user_id))
                    return
            elif path.startswith("/v1/users/") and path.endswith("/segments") and len(path) >= 19:
                user_id = path[10:-9]
                scope[ROUTE_KEY] = USER_SEGMENTS_ROUTE
                await self._answer(scope, send, lambda service: user_segments_answer(service, user_id))
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Any, send: Any, answer: Any) -> None:
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        login_cookie = None
        if self.api.state.airflow_login:
            cookies = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie"), "")
            login_cookie = cookie_parser(cookies).get(AIRFLOW_LOGIN_COOKIE)
        try:
            body, source = await answer(await service_for(self.api, authorization, "read", login_cookie))
            status, extra = 200, [(b"x-funnel-source", source.encode())]
        except Exception as exc:
            status, body, headers = error_answer(exc, f"GET {scope['path']}")
            extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
