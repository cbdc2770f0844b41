"""``/healthz`` (the process is up) and ``/readyz`` (Redis and MySQL answer), both without auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel.api.answers import Health, Readiness
from funnel.api.error_answers import JSON
from funnel.api.service_access import request_service

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (no auth)", response_model=Health)
async def healthz() -> Response:
    return JSON({"status": "ok"})


@router.get(
    "/readyz",
    summary="Redis and MySQL answer (no auth); warnings: what keeps segments from being refreshed",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "what is not ready"}},
)
async def readyz(request: Request) -> Response:
    service = await request_service(request, None)
    problems, warnings = await service.ready(), await service.warnings()
    body: dict[str, object] = {"status": "ready"}
    if problems:
        body = {"status": "unavailable", "failing": sorted(problems)}
    if warnings:  # the API serves, but segments are not being refreshed
        body["warnings"] = warnings
    return JSON(body, status_code=503 if problems else 200)
