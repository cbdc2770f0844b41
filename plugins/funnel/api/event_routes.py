"""``POST /v1/events``: sign-ups, orders and cancellations, applied to the users' tags at once
(write scope); idempotent by ``event_id``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from funnel import settings
from funnel.api.answers import EventsResult
from funnel.api.bodies import EventsBody
from funnel.api.error_answers import JSON
from funnel.api.json_requests import JsonRoute
from funnel.api.route_statuses import error_statuses
from funnel.api.service_access import WriteService
from funnel.api.serving_metrics import EVENTS
from funnel.core.errors import FunnelError, TooLarge
from funnel.core.user_events import parse_events
from funnel.core.utc_time import utc_now

router = APIRouter(tags=["events"], route_class=JsonRoute)


@router.post(
    "/v1/events",
    summary="Sign-ups, orders and cancellations, applied at once; idempotent by event_id (write scope)",
    response_model=EventsResult,
    responses=error_statuses(401, 403, 409, 413, 422, 503),
)
async def post_events(body: EventsBody, service: WriteService) -> Response:
    items = body.events
    try:
        if len(items) > settings.MAX_EVENTS_PER_REQUEST:
            raise TooLarge(f"at most {settings.MAX_EVENTS_PER_REQUEST} events per request; got {len(items)}")
        events = parse_events(items, utc_now())  # EventError: 422 naming the event, the field and the fix
    except FunnelError:
        EVENTS.labels("refused").inc(len(items))
        raise
    outcome = await service.ingest(events)  # PartialWrite: 503 naming what MySQL took
    return JSON(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "before_baseline": outcome.before_baseline,
            "tags_version": outcome.version,
        }
    )
