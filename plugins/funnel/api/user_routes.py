"""A user's side: every segment the user is in now, and when the user entered and left each.

``user_segments_answer`` is also what the hot path answers (``funnel.api.fast_paths``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from funnel.api.answers import UserHistory, UserSegments
from funnel.api.bodies import SEGMENT_ID_SCHEMA
from funnel.api.error_answers import JSON
from funnel.api.request_inputs import Limit, TimeParam, UserIdPath, optional_time, parse_limit, parse_user_id
from funnel.api.route_statuses import error_statuses
from funnel.api.service import Service
from funnel.api.service_access import request_service
from funnel.core import ids
from funnel.core.errors import BadInput

router = APIRouter(tags=["membership"])

SegmentFilter = Annotated[
    str | None, WithJsonSchema(SEGMENT_ID_SCHEMA), Query(description="only this segment's stays and changes")
]


async def user_segments_answer(service: Service, raw_user_id: str) -> tuple[dict[str, Any], str]:
    """``GET /v1/users/{user_id}/segments``: the body and its source."""
    answer = await service.segments_of(parse_user_id(raw_user_id))
    return answer, answer["source"]


@router.get(
    "/v1/users/{user_id:anytext}/segments",
    summary="Every segment the user is in",
    response_model=UserSegments,
    responses=error_statuses(401, 403, 422, 503),
)
async def user_segments(user_id: UserIdPath, request: Request) -> Response:
    body, source = await user_segments_answer(await request_service(request, "read"), user_id)
    return JSON(body, headers={"X-Funnel-Source": source})


@router.get(
    "/v1/users/{user_id:anytext}/history",
    summary="When the user entered and left each segment (stays by version, proxy changes by event), "
    "within change_history_days; ?segment=, ?since=, ?until=, ?limit=",
    response_model=UserHistory,
    responses=error_statuses(401, 403, 422, 503),
)
async def user_history(
    user_id: UserIdPath,
    request: Request,
    segment: SegmentFilter = None,
    since: TimeParam = None,
    until: TimeParam = None,
    limit: Limit = None,
) -> Response:
    service = await request_service(request, "read")
    checked = parse_user_id(user_id)
    if segment is not None and not ids.is_segment_id(segment):
        raise BadInput(
            f"segment {segment[:80]!r} is not a segment id. Fix: send the id of a segment (GET /v1/segments)"
        )
    first, last = optional_time(since, "since"), optional_time(until, "until")
    if first is not None and last is not None and first > last:
        raise BadInput("since is after until. Fix: send since <= until")
    count = parse_limit(limit)
    history = await service.user_history(checked, limit=count, segment_id=segment or None, since=first, until=last)
    return JSON(history, headers={"X-Funnel-Source": "history"})
