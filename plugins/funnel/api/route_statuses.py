"""What each route declares besides its answer: the statuses it can answer, each with its meaning
and the error model (``responses=``), and the OpenAPI links from its answer to the operations
that take a value of it."""

from __future__ import annotations

from typing import Any

from funnel.api.answers import ErrorAnswer, GoneAnswer

_MEANING = {
    304: "Not Modified: the If-None-Match tag is current",
    401: "no token, or not a valid one",
    403: "the token's scope does not allow this",
    404: "no such segment, webhook or path",
    409: "the segment has no such thing (a proxy segment has no versions; not computed yet)",
    410: "gone: a retired segment (retired_at says when), a cursor's version, or a time older than the history keeps",
    413: "too many items in one request, or a body over max_body_bytes",
    422: "the request is not valid: the answer names the field and the fix",
    429: "busy: try again after Retry-After seconds",
    503: "a store does not answer: try again after Retry-After seconds",
    504: "the query took longer than its timeout",
}


def error_statuses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with its meaning and the error model (304: no body)."""
    return {
        status: {"description": _MEANING[status]}
        if status == 304
        else {"model": GoneAnswer if status == 410 else ErrorAnswer, "description": _MEANING[status]}
        for status in statuses
    }


def linked(status: int, parameter: str, value: str, *operations: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI links of a route's ``status`` answer: ``value`` (a runtime expression such as
    ``$response.body#/id``) is ``parameter`` of each of ``operations`` (operation ids: the route
    functions' names). Clients and Schemathesis's stateful phase follow them."""
    return {
        status: {
            "links": {
                operation: {"operationId": operation, "parameters": {parameter: value}} for operation in operations
            }
        }
    }
