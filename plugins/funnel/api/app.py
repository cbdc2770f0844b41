"""The serving API, a FastAPI app: ``create_app()``.

It runs on its own (``python -m funnel.cli serve``: uvicorn on 127.0.0.1 by default), as a
service in ``docker-compose.yaml``, and inside Airflow's API server under ``/funnel``
(``plugins/funnel_plugin.py``). OpenAPI: ``/docs`` and ``/openapi.json``.

Every answer is JSON. Bad input gets a 4xx with a plain message (``{"error": "..."}``);
a store that does not answer gets a 503; never a 500, a stack trace, a setting or a secret.
The hot paths (membership) parse and answer without models, in one Redis round trip.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette._utils import get_route_path
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import cookie_parser

from funnel import settings
from funnel.api.auth import AIRFLOW_LOGIN_COOKIE, granted_scope, require
from funnel.api.error_answers import JSON, add_error_handlers, error_answer
from funnel.api.service import Service
from funnel.core import ids
from funnel.core.composite_expr import describe, parse_expression, to_json
from funnel.core.errors import (
    BadInput,
    EventError,
    Gone,
    NotComputed,
    TimeRefused,
    WebhookError,
)
from funnel.core.states import Freshness
from funnel.core.user_events import parse_events
from funnel.core.utc_time import ISO_EXAMPLE, Naive, parse_utc, utc_now
from funnel.storage import layout
from funnel.storage.mysql import membership_history, segment_timeline
from funnel.ui import mount_ui

log = logging.getLogger(__name__)


class _AnyText(Convertor):  # type: ignore[type-arg]
    """A path segment that may hold any character, newlines included, so a user id with a
    control character reaches the handler and gets 422 naming it: Starlette's ``path``
    (``.*``) stops at a newline, and its trailing ``$`` would read ``7\n`` as ``7``."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())


def create_app(airflow_login: bool = False) -> FastAPI:
    """The API. Clients and stores are made on the first request (a mounted app gets no lifespan).

    ``airflow_login``: the app is mounted in Airflow's API server (the plugin), where an
    Airflow login grants the read scope (``auth.granted_scope``).
    """
    tokens = settings.api_tokens()
    if not tokens:
        log.warning("funnel API: no [funnel] api_tokens are configured; every request but /healthz gets 401")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gc.freeze()  # what start-up made lives forever: collections need not walk it again
        yield
        service = getattr(app.state, "service", None)
        if service is not None:
            await service.close()

    app = FastAPI(
        title="funnel",
        summary="Who is in which user segment: membership, listings, user segments, events",
        version="1",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.add_middleware(FastPaths, api=app)
    app.state.tokens = tokens
    app.state.airflow_login = airflow_login
    app.state.service_lock = asyncio.Lock()
    add_error_handlers(app)
    _add_routes(app)
    _add_webhook_routes(app)
    mount_ui(app)
    return app


async def _service(request: Request, scope: str | None) -> Service:
    """Check the token (``scope`` None: no auth), then the app's ``Service``, made once."""
    return await _service_of(
        request.app,
        request.headers.get("authorization"),
        scope,
        request.cookies.get(AIRFLOW_LOGIN_COOKIE),
        request.method in ("GET", "HEAD"),
    )


async def _service_of(
    app: FastAPI,
    authorization: str | None,
    scope: str | None,
    login_cookie: str | None = None,
    safe_method: bool = True,
) -> Service:
    if scope is not None:
        granted = await granted_scope(
            authorization,
            app.state.tokens,
            airflow_login=app.state.airflow_login,
            login_cookie=login_cookie,
            safe_method=safe_method,
        )
        require(scope, granted)
    service = getattr(app.state, "service", None)
    if service is None:
        async with app.state.service_lock:
            service = getattr(app.state, "service", None)
            if service is None:
                service = app.state.service = Service()
    return service


def _user_id(raw: object, where: str = "user_id") -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise BadInput(f"{where} must be a string")
    if ids.USER_ID_PATTERN.fullmatch(raw) is None:
        raise BadInput(f"{where} {raw[:80]!r} {ids.user_id_problem(raw)}")
    return raw


def _limit(raw: str | None, default: int | None = None) -> int:
    if raw is None:
        return settings.PAGE_LIMIT_DEFAULT if default is None else default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= settings.PAGE_LIMIT_MAX:
        raise BadInput(f"limit must be a whole number from 1 to {settings.PAGE_LIMIT_MAX}")
    return int(raw)


def _refreshed(entry: Any, what: str) -> Any:
    """The entry of a static or dynamic segment; a proxy segment has no refreshes (409)."""
    if entry.is_proxy:
        raise NotComputed(f"segment {entry.segment_id!r} is a proxy segment: it is answered live and has no {what}")
    return entry


def _stale_filter(raw: str | None) -> bool | None:
    """``?stale=true``: only stale and failing segments; ``false``: only fresh ones; absent: all."""
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise BadInput("stale must be 'true' (the stale and failing segments) or 'false' (the fresh ones)")
    return raw == "true"


def _cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def _read_cursor(raw: str | None, segment_id: str, versioned: bool) -> tuple[int | None, str]:
    """(pinned version, last user id) of a cursor this API gave out for this segment's listing."""
    if not raw:
        return None, ""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        data = None
    version = data.get("v") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("s") != segment_id
        or not isinstance(data.get("a"), str)
        or (versioned and type(version) is not int)
    ):
        raise BadInput("cursor is not one this API gave out for this listing; start again without a cursor")
    return version, data["a"]


def _next_cursor(page: list[str], limit: int, segment_id: str, version: int | None) -> str | None:
    if len(page) < limit:
        return None
    data: dict[str, Any] = {"s": segment_id, "a": page[-1]}
    if version is not None:
        data["v"] = version
    return _cursor(data)


def _kept(page: list[str] | None, segment_id: str, version: int) -> list[str]:
    """A page, or 410 when the cursor's version is no longer kept."""
    if page is None:
        raise Gone(
            f"version {version} of segment {segment_id!r} is no longer kept (MySQL keeps the last "
            f"{settings.KEEP_VERSIONS}); start again without a cursor to page the live version"
        )
    return page


async def _is_member(service: Service, segment_id: str, raw_user_id: str) -> tuple[dict[str, Any], str]:
    """``GET /v1/segments/{id}/members/{user_id}``: the body and its source."""
    user_id = _user_id(raw_user_id)
    entry = await service.entry(segment_id)
    answer = await service.check(entry, [user_id])
    body = {
        "segment_id": entry.segment_id,
        "user_id": user_id,
        "member": answer.members[user_id],
        "version": answer.version,
        "refreshed_at": answer.refreshed_at,
        "stale": answer.stale,
        "source": answer.source,
    }
    return body, answer.source


_TIME_FORMAT = f"an ISO-8601 time with its offset, e.g. {ISO_EXAMPLE}"


def _time(raw: str | None, name: str) -> dt.datetime | None:
    """An optional ``?name=`` time (``_parse_time``)."""
    return None if raw is None else _parse_time(raw, name)


def _parse_time(raw: str, name: str) -> dt.datetime:
    """A ``?name=`` time: aware, as UTC; 422 naming the format otherwise."""
    try:
        return parse_utc(raw, Naive.REFUSE, query_string=True)
    except TimeRefused as refused:
        problem = "is not a time" if refused.problem != "has no time zone" else refused.problem
        raise BadInput(f"{name} {raw[:80]!r} {problem}. Fix: send {_TIME_FORMAT}") from None


async def _is_member_at(service: Service, segment_id: str, raw_user_id: str, raw_at: str) -> dict[str, Any]:
    """``GET /v1/segments/{id}/members/{user_id}?at=``: membership as it was then, from the history."""
    user_id = _user_id(raw_user_id)
    at = _parse_time(raw_at, "at")
    now = utc_now()
    if at > now:
        raise BadInput(f"at {raw_at[:80]!r} is in the future. Fix: ask without at for the membership now")
    entry = await service.entry(segment_id)
    answer = await service.membership_at(entry, user_id, at, now)
    body: dict[str, Any] = {
        "segment_id": entry.segment_id,
        "user_id": user_id,
        "member": answer.member,
        "at": at.isoformat(),
        "version": answer.version,
        "source": "history",
    }
    if answer.note:
        body["note"] = answer.note
    return body


async def _user_segments(service: Service, raw_user_id: str) -> tuple[dict[str, Any], str]:
    """``GET /v1/users/{user_id}/segments``: the body and its source."""
    answer = await service.segments_of(_user_id(raw_user_id))
    return answer, answer["source"]


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
                    await self._answer(scope, send, lambda service: _is_member(service, segment_id, user_id))
                    return
            elif path.startswith("/v1/users/") and path.endswith("/segments") and len(path) >= 19:
                user_id = path[10:-9]
                await self._answer(scope, send, lambda service: _user_segments(service, user_id))
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Any, send: Any, answer: Any) -> None:
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        login_cookie = None
        if self.api.state.airflow_login:
            cookies = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie"), "")
            login_cookie = cookie_parser(cookies).get(AIRFLOW_LOGIN_COOKIE)
        try:
            body, source = await answer(await _service_of(self.api, authorization, "read", login_cookie))
            status, extra = 200, [(b"x-funnel-source", source.encode())]
        except Exception as exc:
            status, body, headers = error_answer(exc, f"GET {scope['path']}")
            extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        payload = orjson.dumps(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _add_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is up (no auth)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Redis and MySQL answer (no auth)")
    async def readyz(request: Request) -> Response:
        service = await _service(request, None)
        problems = await service.ready()
        if problems:
            return JSON({"status": "unavailable", "failing": sorted(problems)}, status_code=503)
        return JSON({"status": "ready"})

    @app.get(
        "/v1/segments",
        tags=["segments"],
        summary="Every segment: kind, size, version, refreshed_at, enabled, freshness, last run; "
        "?stale=true: the stale and failing ones only (false: the fresh ones)",
    )
    async def list_segments(request: Request) -> Response:
        service = await _service(request, "read")
        flagged = _stale_filter(request.query_params.get("stale"))
        entries = sorted((await service.catalog()).values(), key=lambda e: e.segment_id)
        described = await service.describe(entries)
        if flagged is not None:
            described = [item for item in described if (item["freshness"] != Freshness.FRESH) == flagged]
        return JSON({"segments": described})

    @app.get(
        "/v1/segments/{segment_id}",
        tags=["segments"],
        summary="One segment: meta, changes, freshness, its query or rule",
    )
    async def get_segment(segment_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        entry = await service.entry(segment_id)
        (described,) = await service.describe([entry])
        if entry.segment.query is not None:  # the definition, as the catalog row has it (templates unrendered)
            described["query"] = entry.segment.query
        if entry.segment.run_at is not None:
            described["run_at"] = entry.segment.run_at.isoformat()
        if entry.operands:  # a composite: its set expression, as written and as read
            expr = parse_expression(entry.segment_id, entry.segment.rule)
            described["rule"] = to_json(expr)
            described["expression"] = describe(expr)
        return JSON(described)

    @app.get(
        "/v1/segments/{segment_id}/versions",
        tags=["segments"],
        summary="The kept versions, oldest first: size, entered and exited of each refresh",
    )
    async def list_versions(segment_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        entry = _refreshed(await service.entry(segment_id), "versions")
        kept = await service.in_thread(
            service.with_mysql(lambda conn: segment_timeline.kept_versions(conn, segment_id))
        )
        return JSON({"segment_id": entry.segment_id, "keep_versions": settings.KEEP_VERSIONS, "versions": kept})

    @app.get(
        "/v1/segments/{segment_id}/runs",
        tags=["segments"],
        summary="The latest refresh attempts (funnel_segment_runs), newest first",
    )
    async def list_runs(segment_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        entry = _refreshed(await service.entry(segment_id), "refresh attempts")
        limit = _limit(request.query_params.get("limit"), settings.RUNS_LIMIT_DEFAULT)
        runs = await service.in_thread(
            service.with_mysql(lambda conn: segment_timeline.recent_attempts(conn, segment_id, limit))
        )
        return JSON({"segment_id": entry.segment_id, "runs": runs})

    @app.get(
        "/v1/segments/{segment_id}/members/{user_id:anytext}",
        tags=["membership"],
        summary="Is this user a member, and of which version",
    )
    async def is_member(segment_id: str, user_id: str, request: Request, at: str | None = None) -> Response:
        service = await _service(request, "read")
        if at is not None:  # ?at=<ISO time>: as it was then (the membership history)
            return JSON(await _is_member_at(service, segment_id, user_id, at), headers={"X-Funnel-Source": "history"})
        body, source = await _is_member(service, segment_id, user_id)
        return JSON(body, headers={"X-Funnel-Source": source})

    @app.post(
        "/v1/segments/{segment_id}/members:check",
        tags=["membership"],
        summary="Membership of up to max_check_ids users at once",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"example": {"user_ids": ["1001", "1002"]}}},
            }
        },
    )
    async def check_members(segment_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        user_ids = _ids_of(await _json_body(request))
        entry = await service.entry(segment_id)
        answer = await service.check(entry, user_ids)
        body = {
            "segment_id": entry.segment_id,
            "version": answer.version,
            "refreshed_at": answer.refreshed_at,
            "stale": answer.stale,
            "source": answer.source,
            "members": answer.members,
        }
        return JSON(body, headers={"X-Funnel-Source": answer.source})

    @app.get(
        "/v1/segments/{segment_id}/members",
        tags=["listings"],
        summary="Page through the members; a cursor pins the version it started on",
    )
    async def list_members(segment_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        entry = await service.entry(segment_id)
        limit = _limit(request.query_params.get("limit"))
        pinned, after = _read_cursor(request.query_params.get("cursor"), segment_id, versioned=not entry.is_proxy)
        refreshed_at: str | None = None
        if entry.is_proxy:  # the live tags, no versions to pin
            page, version = await service.page_proxy(entry, after, limit), None
        else:
            version = pinned if pinned is not None else (await service.live_version(segment_id)).version
            kept, refreshed_at = await service.page_members(segment_id, version, after, limit)
            page = _kept(kept, segment_id, version)
        next_cursor = _next_cursor(page, limit, segment_id, version)
        body = {"segment_id": segment_id, "version": version, "refreshed_at": refreshed_at, "stale": entry.stale}
        return JSON({**body, "members": page, "next_cursor": next_cursor})

    @app.get(
        "/v1/segments/{segment_id}/changes",
        tags=["listings"],
        summary="Who entered or exited in the latest refresh, paged",
    )
    async def list_changes(segment_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        entry = await service.entry(segment_id)
        change = request.query_params.get("type", "entered")
        if change not in ("entered", "exited"):
            raise BadInput("type must be 'entered' or 'exited'")
        if entry.is_proxy:
            raise NotComputed(f"segment {segment_id!r} is a proxy segment: it is answered live and has no refreshes")
        limit = _limit(request.query_params.get("limit"))
        pinned, after = _read_cursor(request.query_params.get("cursor"), segment_id, versioned=True)
        version = pinned if pinned is not None else (await service.live_version(segment_id)).version
        page = _kept(await service.page_changes(segment_id, version, change, after, limit), segment_id, version)
        next_cursor = _next_cursor(page, limit, segment_id, version)
        return JSON(
            {"segment_id": segment_id, "version": version, "type": change, "user_ids": page, "next_cursor": next_cursor}
        )

    @app.get("/v1/users/{user_id:anytext}/segments", tags=["membership"], summary="Every segment the user is in")
    async def user_segments(user_id: str, request: Request) -> Response:
        body, source = await _user_segments(await _service(request, "read"), user_id)
        return JSON(body, headers={"X-Funnel-Source": source})

    @app.get(
        "/v1/users/{user_id:anytext}/history",
        tags=["membership"],
        summary="When the user entered and left each segment (stays by version, proxy changes by event), "
        "within change_history_days; ?segment=, ?since=, ?until=, ?limit=",
    )
    async def user_history(user_id: str, request: Request) -> Response:
        service = await _service(request, "read")
        checked = _user_id(user_id)
        query = request.query_params
        segment_id = query.get("segment") or None
        since, until = _time(query.get("since"), "since"), _time(query.get("until"), "until")
        if since is not None and until is not None and since > until:
            raise BadInput("since is after until. Fix: send since <= until")
        limit = _limit(query.get("limit"))
        now = utc_now()
        history = await service.in_thread(
            service.with_mysql(
                lambda conn: membership_history.user_history(
                    conn,
                    checked,
                    now=now,
                    days=settings.CHANGE_HISTORY_DAYS,
                    limit=limit,
                    segment_id=segment_id,
                    since=since,
                    until=until,
                )
            )
        )
        return JSON(history, headers={"X-Funnel-Source": "history"})

    @app.post(
        "/v1/events",
        tags=["events"],
        summary="Sign-ups, orders and cancellations, applied at once; idempotent by event_id (write scope)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "example": {
                            "events": [
                                {"event_id": "o-1", "type": "order", "user_id": "1001", "at": "2026-11-29T09:30:00Z"}
                            ]
                        }
                    }
                },
            }
        },
    )
    async def post_events(request: Request) -> Response:
        service = await _service(request, "write")
        body = await _json_body(request)
        items = body.get("events") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise BadInput('send {"events": [{"event_id", "type", "user_id", "at"}, ...]}')
        if len(items) > settings.MAX_EVENTS_PER_REQUEST:
            raise BadInput(f"at most {settings.MAX_EVENTS_PER_REQUEST} events per request; got {len(items)}", 413)
        try:
            events = parse_events(items, utc_now())
        except EventError as exc:
            raise BadInput(str(exc)) from None
        outcome, in_redis = await service.ingest(events)  # PartialWrite: 503 naming what MySQL took
        if not in_redis:
            service.restorer.schedule(layout.TAGS_ID)
        return JSON(
            {
                "accepted": outcome.accepted,
                "duplicates": outcome.duplicates,
                "before_baseline": outcome.before_baseline,
                "tags_version": outcome.version,
            }
        )

    @app.post(
        "/v1/preview",
        tags=["preview"],
        summary="What a segment, a query or a rule would hold and change, without writing anything (write scope)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "example": {"segment_id": "german_users", "query": "SELECT user_id FROM dw.users"}
                    }
                },
            }
        },
    )
    async def preview(request: Request) -> Response:
        service = await _service(request, "write")
        return await _preview(service, await _json_body(request))


async def _preview(service: Service, body: Any) -> Response:
    """``POST /v1/preview``: validate, run the query on Hive (in a thread of the preview pool),
    compare with the live segments; nothing is written."""
    from funnel.services.preview import PreviewRequest

    request = PreviewRequest(**_preview_fields(body))
    answer = await service.previews.run(request)  # errors answer through funnel.api.error_answers
    return JSON(answer)


_PREVIEW_FIELDS = {"segment_id": str, "query": str, "rule": (dict, str), "kind": str}


def _preview_fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not body:
        raise BadInput('send {"segment_id": "..."}, {"query": "SELECT ..."} or {"rule": {...}} (optional "kind")')
    for name, value in body.items():
        if name not in _PREVIEW_FIELDS:
            raise BadInput(f"{name!r} is not a preview field; use segment_id, query, rule and kind")
        if not isinstance(value, _PREVIEW_FIELDS[name]):
            shape = "a JSON object" if name == "rule" else "a string"
            raise BadInput(f"{name} must be {shape}")
    return body


def _add_webhook_routes(app: FastAPI) -> None:
    """Webhook subscriptions, all in the write scope (they hold where changes go, and a secret)."""
    from funnel.services.webhook_admin import subscribe
    from funnel.storage.mysql.webhook_store import WebhookStore

    @app.post(
        "/v1/webhooks",
        tags=["webhooks"],
        status_code=201,
        summary="Subscribe a URL to a segment's changes; answers the signing secret this once (write scope)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "example": {"segment_id": "big_spenders", "url": "https://hooks.example.com/funnel"}
                    }
                },
            }
        },
    )
    async def add_webhook(request: Request) -> Response:
        service = await _service(request, "write")
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise BadInput('send {"segment_id": "...", "url": "https://...", "secret"?: "...", "from_version"?: 1}')
        segments = {segment_id: entry.segment for segment_id, entry in (await service.catalog()).items()}

        def add(conn: Any) -> tuple[Any, str]:
            return subscribe(
                conn,
                segments,
                body.get("segment_id"),
                body.get("url"),
                body.get("secret"),
                body.get("from_version"),
                refuse_private=settings.WEBHOOK_REFUSE_PRIVATE,
            )

        webhook, secret = await service.in_thread(service.with_mysql(add))
        return JSON({**webhook.public(), "secret": secret}, status_code=201)

    @app.get("/v1/webhooks", tags=["webhooks"], summary="Every subscription, without secrets (write scope)")
    async def list_webhooks(request: Request) -> Response:
        service = await _service(request, "write")
        found = await service.in_thread(service.with_mysql(lambda conn: WebhookStore(conn).list()))
        return JSON({"webhooks": [webhook.public() for webhook in found]})

    @app.patch("/v1/webhooks/{webhook_id}", tags=["webhooks"], summary='{"enabled": true|false} (write scope)')
    async def patch_webhook(webhook_id: str, request: Request) -> Response:
        service = await _service(request, "write")
        number = _webhook_id(webhook_id)
        body = await _json_body(request)
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            raise WebhookError("enabled", "must be true or false", 'send {"enabled": false} to pause, true to resume')
        webhook = await service.in_thread(
            service.with_mysql(lambda conn: WebhookStore(conn).set_enabled(number, enabled))
        )
        return JSON(webhook.public())

    @app.delete("/v1/webhooks/{webhook_id}", tags=["webhooks"], summary="Remove a subscription (write scope)")
    async def delete_webhook(webhook_id: str, request: Request) -> Response:
        service = await _service(request, "write")
        number = _webhook_id(webhook_id)
        await service.in_thread(service.with_mysql(lambda conn: WebhookStore(conn).remove(number)))
        return JSON({"id": number, "removed": True})

    @app.get(
        "/v1/webhooks/{webhook_id}/deliveries",
        tags=["webhooks"],
        summary="How each version went, newest first: status, batches, attempts, last error (write scope)",
    )
    async def list_deliveries(webhook_id: str, request: Request) -> Response:
        service = await _service(request, "write")
        number = _webhook_id(webhook_id)
        limit = _limit(request.query_params.get("limit"), 100)

        def read(conn: Any) -> tuple[Any, list[Any]]:
            store = WebhookStore(conn)
            return store.get(number), store.by_version(number, limit)

        webhook, rows = await service.in_thread(service.with_mysql(read))
        return JSON({**webhook.public(), "versions": [row.public() for row in rows]})


def _webhook_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise WebhookError("webhook_id", f"{raw[:40]!r} is not a webhook id", "use the id GET /v1/webhooks lists")
    return int(raw)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadInput("the body is not valid JSON") from None


def _ids_of(body: Any) -> list[str]:
    user_ids = body.get("user_ids") if isinstance(body, dict) else None
    if not isinstance(user_ids, list) or not user_ids:
        raise BadInput('send {"user_ids": ["...", ...]} with at least one user id')
    if len(user_ids) > settings.MAX_CHECK_IDS:
        raise BadInput(f"at most {settings.MAX_CHECK_IDS} user ids per request; got {len(user_ids)}", 413)
    match = ids.USER_ID_PATTERN.fullmatch
    if not all(isinstance(i, str) and match(i) for i in user_ids):
        user_ids = [_user_id(raw, f"user_ids[{index}]") for index, raw in enumerate(user_ids)]
    return list(dict.fromkeys(user_ids))
