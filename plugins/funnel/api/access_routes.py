"""``GET /v1/access``: what the caller's credential may do (its scope) and who it is recorded as
(its actor), so that a client, or the Segments page, offers only what it may do."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel.api.answers import Access
from funnel.api.error_answers import JSON
from funnel.api.route_statuses import error_statuses
from funnel.api.service_access import request_service

router = APIRouter(tags=["access"])


@router.get(
    "/v1/access",
    summary="The caller's scope (read, define: previews and definitions, write: everything) and actor",
    response_model=Access,
    responses=error_statuses(401, 403, 503),
)
async def get_access(request: Request) -> Response:
    await request_service(request, "read")
    grant = request.state.grant
    return JSON({"scope": grant.scope, "actor": grant.actor})
