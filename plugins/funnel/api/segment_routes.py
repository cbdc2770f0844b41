"""The segments: every one (``GET /v1/segments``), one with its definition, its kept versions
and its latest refresh attempts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from funnel import settings
from funnel.api.answers import RunList, SegmentDetail, SegmentList, VersionList
from funnel.api.error_answers import JSON
from funnel.api.http_semantics import tagged_answer
from funnel.api.request_inputs import Limit, SegmentIdPath, parse_limit, parse_stale_filter
from funnel.api.route_statuses import error_statuses, linked
from funnel.api.service_access import request_service
from funnel.core.composite_expr import expression_in_words, parse_expression, to_json
from funnel.core.segment import LABELS_MAX, OWNER_MAX_LENGTH, selected
from funnel.core.states import Freshness

router = APIRouter(tags=["segments"])

StaleFilter = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "enum": ["true", "false"]}),
    Query(description="true: the stale and failing segments only; false: the fresh ones"),
]
OwnerFilter = Annotated[
    str | None, Query(max_length=OWNER_MAX_LENGTH, description="only the segments of this owner (any case)")
]
LabelFilter = Annotated[
    list[str] | None,
    Query(max_length=LABELS_MAX, description="only the segments with this label (repeat it: with every one)"),
]


@router.get(
    "/v1/segments",
    summary="Every segment: kind, size, version, refreshed_at, enabled, freshness, last run; "
    "?stale=true: the stale and failing ones only (false: the fresh ones); ?owner= and ?label= filter",
    response_model=SegmentList,
    responses={
        **error_statuses(304, 401, 403, 422, 503),
        **linked(200, "segment_id", "$response.body#/segments/0/segment_id", "get_segment"),
    },
)
async def list_segments(
    request: Request, stale: StaleFilter = None, owner: OwnerFilter = None, label: LabelFilter = None
) -> Response:
    service = await request_service(request, "read")
    flagged = parse_stale_filter(stale)
    entries = sorted(
        (
            entry
            for entry in (await service.catalog()).values()
            if selected(entry.segment.owner, entry.segment.labels, owner, label or ())
        ),
        key=lambda e: e.segment_id,
    )
    described = await service.describe(entries)
    if flagged is not None:
        described = [item for item in described if (item["freshness"] != Freshness.FRESH) == flagged]
    return tagged_answer(request, {"segments": described})


@router.get(
    "/v1/segments/{segment_id}",
    summary="One segment: meta, changes, freshness, its query or rule",
    response_model=SegmentDetail,
    responses={
        **error_statuses(304, 401, 403, 404, 410, 503),
        **linked(
            200,
            "segment_id",
            "$response.body#/segment_id",
            "list_versions",
            "list_runs",
            "list_members",
            "list_changes",
        ),
    },
)
async def get_segment(segment_id: SegmentIdPath, request: Request) -> Response:
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
    response_model=VersionList,
    responses=error_statuses(401, 403, 404, 409, 410, 503),
)
async def list_versions(segment_id: SegmentIdPath, request: Request) -> Response:
    service = await request_service(request, "read")
    entry = (await service.entry(segment_id)).refreshed("versions")
    kept = await service.kept_versions(segment_id)
    return JSON({"segment_id": entry.segment_id, "keep_versions": settings.KEEP_VERSIONS, "versions": kept})


@router.get(
    "/v1/segments/{segment_id}/runs",
    summary="The latest refresh attempts (funnel_segment_runs), newest first",
    response_model=RunList,
    responses=error_statuses(401, 403, 404, 409, 410, 422, 503),
)
async def list_runs(segment_id: SegmentIdPath, request: Request, limit: Limit = None) -> Response:
    service = await request_service(request, "read")
    entry = (await service.entry(segment_id)).refreshed("refresh attempts")
    runs = await service.recent_attempts(segment_id, parse_limit(limit, settings.RUNS_LIMIT_DEFAULT))
    return JSON({"segment_id": entry.segment_id, "runs": runs})
