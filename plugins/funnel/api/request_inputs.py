"""What a request sends, read and checked before any store is asked: user ids, limits, times,
filters, JSON bodies and webhook ids. Bad input is ``BadInput`` (422, or 413 for too many
items) or ``WebhookError``, with a message that names the field and the fix.

Importing this module registers the ``anytext`` path convertor the user routes use.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from fastapi import Request
from starlette.convertors import Convertor, register_url_convertor

from funnel import settings
from funnel.core import ids
from funnel.core.errors import BadInput, TimeRefused, TooLarge, WebhookError
from funnel.core.utc_time import ISO_EXAMPLE, Naive, parse_utc


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


def parse_user_id(raw: object, where: str = "user_id") -> str:
    """A user id (an int is taken as its decimal text), or 422 naming ``where`` and the problem."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise BadInput(f"{where} must be a string")
    if ids.USER_ID_PATTERN.fullmatch(raw) is None:
        raise BadInput(f"{where} {raw[:80]!r} {ids.user_id_problem(raw)}")
    return raw


def user_ids_of(body: Any) -> list[str]:
    """The ``user_ids`` of a ``members:check`` body, each checked, without repeats (in order)."""
    user_ids = body.get("user_ids") if isinstance(body, dict) else None
    if not isinstance(user_ids, list) or not user_ids:
        raise BadInput('send {"user_ids": ["...", ...]} with at least one user id')
    if len(user_ids) > settings.MAX_CHECK_IDS:
        raise TooLarge(f"at most {settings.MAX_CHECK_IDS} user ids per request; got {len(user_ids)}")
    match = ids.USER_ID_PATTERN.fullmatch
    if not all(isinstance(i, str) and match(i) for i in user_ids):
        user_ids = [parse_user_id(raw, f"user_ids[{index}]") for index, raw in enumerate(user_ids)]
    return list(dict.fromkeys(user_ids))


def parse_limit(raw: str | None, default: int | None = None) -> int:
    """``?limit=``: a whole number from 1 to ``page_limit_max``; absent: ``default`` (or ``page_limit_default``)."""
    if raw is None:
        return settings.PAGE_LIMIT_DEFAULT if default is None else default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= settings.PAGE_LIMIT_MAX:
        raise BadInput(f"limit must be a whole number from 1 to {settings.PAGE_LIMIT_MAX}")
    return int(raw)


def parse_stale_filter(raw: str | None) -> bool | None:
    """``?stale=true``: only stale and failing segments; ``false``: only fresh ones; absent: all."""
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise BadInput("stale must be 'true' (the stale and failing segments) or 'false' (the fresh ones)")
    return raw == "true"


_TIME_FORMAT = f"an ISO-8601 time with its offset, e.g. {ISO_EXAMPLE}"


def optional_time(raw: str | None, name: str) -> dt.datetime | None:
    """An optional ``?name=`` time (``parse_time``)."""
    return None if raw is None else parse_time(raw, name)


def parse_time(raw: str, name: str) -> dt.datetime:
    """A ``?name=`` time: aware, as UTC; 422 naming the format otherwise."""
    try:
        return parse_utc(raw, Naive.REFUSE, query_string=True)
    except TimeRefused as refused:
        problem = "is not a time" if refused.problem != "has no time zone" else refused.problem
        raise BadInput(f"{name} {raw[:80]!r} {problem}. Fix: send {_TIME_FORMAT}") from None


async def json_body(request: Request) -> Any:
    """The request's body as JSON, or 422."""
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadInput("the body is not valid JSON") from None


def parse_webhook_id(raw: str) -> int:
    """A webhook id from the path, or ``WebhookError`` naming where to find one."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise WebhookError("webhook_id", f"{raw[:40]!r} is not a webhook id", "use the id GET /v1/webhooks lists")
    return int(raw)


_PREVIEW_FIELDS = {"segment_id": str, "query": str, "rule": (dict, str), "kind": str}


def preview_fields(body: Any) -> dict[str, Any]:
    """The fields of a ``POST /v1/preview`` body, each of its type (``PreviewRequest`` checks the rest)."""
    if not isinstance(body, dict) or not body:
        raise BadInput('send {"segment_id": "..."}, {"query": "SELECT ..."} or {"rule": {...}} (optional "kind")')
    for name, value in body.items():
        if name not in _PREVIEW_FIELDS:
            raise BadInput(f"{name!r} is not a preview field; use segment_id, query, rule and kind")
        if not isinstance(value, _PREVIEW_FIELDS[name]):
            shape = "a JSON object" if name == "rule" else "a string"
            raise BadInput(f"{name} must be {shape}")
    return body
