"""Every answer the API tests get, checked against what its route declares in the OpenAPI
document: the status is one the route documents, and the body is its model, field for field
(``funnel.api.answers``; the routes send bytes they serialized themselves, so this is where the
bytes and the models are held together)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.routing import Match

from funnel.api.answers import ErrorAnswer

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def declared_model(app: Any, method: str, path: str, status: int) -> Any:
    """The model the route that answers ``method path`` declares for ``status`` (the error model
    where no route takes the request: 404, 405); AssertionError when the route does not
    document ``status``."""
    scope = {"type": "http", "path": path, "method": "GET" if method == "HEAD" else method, "root_path": ""}
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.matches(scope)[0] is Match.FULL:
            if status == route.status_code or (status == 200 and route.status_code is None):
                return route.response_model
            documented = route.responses.get(status)
            assert documented is not None, f"{method} {path} answered {status}, which its route does not document"
            return documented.get("model")
    assert status in (404, 405), f"{method} {path}: no route, yet {status}"
    return ErrorAnswer


def check_answer(app: Any, method: str, path: str, status: int, body: bytes) -> None:
    """``body`` is exactly the declared model's: it validates, and dumps back to the same JSON
    (no field the model lacks, none of another type)."""
    model = declared_model(app, method, path, status)
    if model is None or method == "HEAD" or status == 304:
        return
    adapter = _adapter(model)
    value = adapter.validate_json(body, strict=True)  # "yes" is not a bool, "1" not an int
    sent = orjson.loads(body)
    again = adapter.dump_python(value, mode="json", exclude_unset=True)
    assert again == sent, f"{method} {path} ({status}): the body is not {getattr(model, '__name__', model)}: {sent}"
