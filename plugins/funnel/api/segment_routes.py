"""The segments: every one (``GET /v1/segments``), one with its definition, its kept versions
and its latest refresh attempts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel import settings
from funnel.api.error_answers import JSON
from funnel.api.http_semantics import tagged_answer
from funnel.api.request_inputs import parse_limit, parse_stale_filter
from funnel.api.service_access import request_service
from funnel.core.composite_expr import expression_in_words, parse_expression, to_json
from funnel.core.states import Freshness

router = APIRouter(tags=["segments"])


@router.get(
    "/v1/segments",
    summary="Every segment: kind, size, version, refreshed_at, enabled, freshness, last run; "
    "?stale=true: the stale and failing ones only (false: the fresh ones)",
)
async def list_segments(request: Request) -> Response:
    service = await request_service(request, "read")
    flagged = parse_stale_filter(request.query_params.get("stale"))
    entries = sorted((await service.catalog()).values(), key=lambda e: e.segment_id)
    described = await service.describe(entries)
    if flagged is not None:
        described = [item for item in described if (item["freshness"] != Freshness.FRESH) == flagged]
    return tagged_answer(request, {"segments": described})


@router.get("/v1/segments/{segment_id}", summary="One segment: meta, changes, freshness, its query or rule")
async def get_segment(segment_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    entry = await service.entry(segment_id)
    (described,) = await service.describe([entry])
    if entry.segment.query is not None:  # the definition, as the catalog row has it (templates unrendered)
        described["query"] = entry.segment.query
    if entry.segment.run_at is not None:
        described["run_at"] = entry.segment.run_at.isoformat()
    if entry.operands:  # a composite: its set expression, as written and as read
        expr = parse_expression(entry.segment_id, entry.segment.rule)
        described["rule"] = to_json(expr)
        described["expression"] = expression_in_words(expr)
    return tagged_answer(request, described)


@router.get(
    "/v1/segments/{segment_id}/versions",
    summary="The kept versions, oldest first: size, entered and exited of each refresh",
)
async def list_versions(segment_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    entry = (await service.entry(segment_id)).refreshed("versions")
    kept = await service.kept_versions(segment_id)
    return JSON({"segment_id": entry.segment_id, "keep_versions": settings.KEEP_VERSIONS, "versions": kept})


@router.get(
    "/v1/segments/{segment_id}/runs",
    summary="The latest refresh attempts (funnel_segment_runs), newest first",
)
async def list_runs(segment_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    entry = (await service.entry(segment_id)).refreshed("refresh attempts")
    limit = parse_limit(request.query_params.get("limit"), settings.RUNS_LIMIT_DEFAULT)
    runs = await service.recent_attempts(segment_id, limit)
    return JSON({"segment_id": entry.segment_id, "runs": runs})
