"""``POST /v1/preview``: what a segment, a query or a rule would hold and change (write scope).
The query runs on Hive in a thread of the preview pool; nothing is written."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel.api.error_answers import JSON
from funnel.api.request_inputs import json_body, preview_fields
from funnel.api.service_access import request_service

router = APIRouter(tags=["preview"])


@router.post(
    "/v1/preview",
    summary="What a segment, a query or a rule would hold and change, without writing anything (write scope)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"example": {"segment_id": "german_users", "query": "SELECT user_id FROM dw.users"}}
            },
        }
    },
)
async def preview(request: Request) -> Response:
    from funnel.services.preview_values import PreviewRequest  # Hive's client: loaded at the first preview

    service = await request_service(request, "write")
    preview_request = PreviewRequest(**preview_fields(await json_body(request)))
    answer = await service.preview(preview_request)  # errors answer through funnel.api.error_answers
    return JSON(answer)
