"""``POST /v1/events``: sign-ups, orders and cancellations, applied to the users' tags at once
(write scope); idempotent by ``event_id``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel import settings
from funnel.api.error_answers import JSON
from funnel.api.request_inputs import json_body
from funnel.api.service_access import request_service
from funnel.core.errors import BadInput, TooLarge
from funnel.core.user_events import parse_events
from funnel.core.utc_time import utc_now

router = APIRouter(tags=["events"])


@router.post(
    "/v1/events",
    summary="Sign-ups, orders and cancellations, applied at once; idempotent by event_id (write scope)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "example": {
                        "events": [
                            {"event_id": "o-1", "type": "order", "user_id": "1001", "at": "2026-11-29T09:30:00Z"}
                        ]
                    }
                }
            },
        }
    },
)
async def post_events(request: Request) -> Response:
    service = await request_service(request, "write")
    body = await json_body(request)
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadInput('send {"events": [{"event_id", "type", "user_id", "at"}, ...]}')
    if len(items) > settings.MAX_EVENTS_PER_REQUEST:
        raise TooLarge(f"at most {settings.MAX_EVENTS_PER_REQUEST} events per request; got {len(items)}")
    events = parse_events(items, utc_now())  # EventError: 422 naming the event, the field and the fix
    outcome = await service.ingest(events)  # PartialWrite: 503 naming what MySQL took
    return JSON(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "before_baseline": outcome.before_baseline,
            "tags_version": outcome.version,
        }
    )
