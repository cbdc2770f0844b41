"""``GET /metrics``: the API's Prometheus metrics (``funnel.api.serving_metrics``), for a scraper.

Allowed with a read-scope token, with ``metrics_token`` (a token for the scraper alone), or with
nothing from loopback when ``metrics_open_on_loopback`` is on.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel import settings
from funnel.api.route_statuses import error_statuses
from funnel.api.service_access import request_service
from funnel.api.serving_metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


@router.get(
    "/metrics",
    summary="Prometheus metrics, every worker's added up (read scope, metrics_token, or loopback when configured)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}, "description": "text format"},
        **error_statuses(401, 403),
    },
)
async def get_metrics(request: Request) -> Response:
    service = await request_service(request, None if _scraper(request) else "read")
    return Response(await service.metrics_text(), media_type=CONTENT_TYPE)


def _scraper(request: Request) -> bool:
    """Whether the request is the configured scraper's: its token, or loopback when allowed."""
    token = settings.METRICS_TOKEN
    header = request.headers.get("authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    return settings.METRICS_OPEN_ON_LOOPBACK and request.client is not None and request.client.host in _LOOPBACK
