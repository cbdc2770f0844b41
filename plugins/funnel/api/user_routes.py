"""A user's side: every segment the user is in now, and when the user entered and left each.

``user_segments_answer`` is also what the hot path answers (``funnel.api.fast_paths``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel.api.error_answers import JSON
from funnel.api.request_inputs import optional_time, parse_limit, parse_user_id
from funnel.api.service import Service
from funnel.api.service_access import request_service
from funnel.core.errors import BadInput

router = APIRouter(tags=["membership"])


async def user_segments_answer(service: Service, raw_user_id: str) -> tuple[dict[str, Any], str]:
    """``GET /v1/users/{user_id}/segments``: the body and its source."""
    answer = await service.segments_of(parse_user_id(raw_user_id))
    return answer, answer["source"]


@router.get("/v1/users/{user_id:anytext}/segments", summary="Every segment the user is in")
async def user_segments(user_id: str, request: Request) -> Response:
    body, source = await user_segments_answer(await request_service(request, "read"), user_id)
    return JSON(body, headers={"X-Funnel-Source": source})


@router.get(
    "/v1/users/{user_id:anytext}/history",
    summary="When the user entered and left each segment (stays by version, proxy changes by event), "
    "within change_history_days; ?segment=, ?since=, ?until=, ?limit=",
)
async def user_history(user_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    checked = parse_user_id(user_id)
    query = request.query_params
    segment_id = query.get("segment") or None
    since, until = optional_time(query.get("since"), "since"), optional_time(query.get("until"), "until")
    if since is not None and until is not None and since > until:
        raise BadInput("since is after until. Fix: send since <= until")
    limit = parse_limit(query.get("limit"))
    history = await service.user_history(checked, limit=limit, segment_id=segment_id, since=since, until=until)
    return JSON(history, headers={"X-Funnel-Source": "history"})
