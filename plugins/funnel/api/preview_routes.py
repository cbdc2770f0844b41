"""``POST /v1/preview``: what a segment, a query or a rule would hold and change (write scope,
or an Airflow login that may edit DAGs). The query runs on Hive in a thread of the preview
pool; nothing is written."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from funnel.api.answers import PreviewAnswer
from funnel.api.bodies import PreviewBody
from funnel.api.error_answers import JSON
from funnel.api.json_requests import JsonRoute
from funnel.api.route_statuses import error_statuses
from funnel.api.service_access import DefineService
from funnel.core.errors import BadInput

router = APIRouter(tags=["preview"], route_class=JsonRoute)


@router.post(
    "/v1/preview",
    summary="What a segment, a query or a rule would hold and change, without writing anything (write scope, "
    "or an Airflow login that may edit DAGs)",
    response_model=PreviewAnswer,
    responses=error_statuses(401, 403, 404, 413, 422, 429, 503, 504),
)
async def preview(body: PreviewBody, service: DefineService) -> Response:
    from funnel.services.preview_values import PreviewRequest  # Hive's client: loaded at the first preview

    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise BadInput(PreviewBody.usage)
    answer = await service.preview(PreviewRequest(**fields))  # errors answer through funnel.api.error_answers
    return JSON(answer)
