"""What a request sends, read and checked before any store is asked: user ids, limits, times,
filters and webhook ids; the bodies' shapes are ``funnel.api.bodies``. Bad input is ``BadInput``
(422, or 413 for too many items) or ``WebhookError``, with a message that names the field and the fix.

Importing this module registers the ``anytext`` path convertor the user routes use.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import WithJsonSchema
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

# The parameters as the OpenAPI document declares them. Each is read as the text it came as and
# checked by its parser below, which names the parameter and the fix; the schema tells clients
# (and generators, and Schemathesis) the same rule.
_TIME_SCHEMA = {"type": "string", "format": "date-time", "example": ISO_EXAMPLE}
#: ``?limit=`` of the listings (``parse_limit``).
Limit = Annotated[
    str | None,
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": settings.PAGE_LIMIT_MAX}),
    Query(description=f"how many to answer, 1 to page_limit_max ({settings.PAGE_LIMIT_MAX})"),
]
#: A cursor from the previous page (``funnel.api.cursors``).
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page; absent: the first page")]
#: A time of the query string (``parse_time``).
TimeParam = Annotated[str | None, WithJsonSchema(_TIME_SCHEMA), Query(description="ISO 8601 with its offset")]
#: A segment id in the path: any text (an unknown or ill-formed one is a 404).
SegmentIdPath = Annotated[str, Path(description="the segment's id", examples=["big_spenders"])]
#: A user id in the path (``parse_user_id``).
UserIdPath = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": f"^{ids.USER_ID_PATTERN.pattern}$", "example": "1001"}),
    Path(description=f"1 to {ids.USER_ID_MAX_LENGTH} printable ASCII characters without surrounding spaces"),
]
#: A webhook id in the path (``parse_webhook_id``).
WebhookIdPath = Annotated[
    str,
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 10**18 - 1}),
    Path(description="the id POST /v1/webhooks answered"),
]


def parse_user_id(raw: object, where: str = "user_id") -> str:
    """A user id (an int is taken as its decimal text), or 422 naming ``where`` and the problem."""
    raw = ids.json_number_as_text(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):  # an integer json_number_as_text left out
        raise BadInput(f"{where} {raw} is beyond what JSON numbers hold exactly. Fix: send the user id as a string")
    if not isinstance(raw, str):
        raise BadInput(f"{where} must be a string")
    if ids.USER_ID_PATTERN.fullmatch(raw) is None:
        raise BadInput(f"{where} {raw[:80]!r} {ids.user_id_problem(raw)}")
    return raw


def user_ids_of(user_ids: list[Any]) -> list[str]:
    """The ``user_ids`` of a ``members:check`` body (``CheckBody``: a list of at least one), each
    checked, without repeats (in order)."""
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


def parse_webhook_id(raw: str) -> int:
    """A webhook id from the path, or ``WebhookError`` naming where to find one."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise WebhookError("webhook_id", f"{raw[:40]!r} is not a webhook id", "use the id GET /v1/webhooks lists")
    return int(raw)
