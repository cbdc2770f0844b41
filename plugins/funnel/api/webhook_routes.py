"""Webhook subscriptions, all in the write scope (they hold where changes go, and a secret):
subscribe, list, pause or resume, remove, and how each version's deliveries went."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel.api.error_answers import JSON
from funnel.api.request_inputs import json_body, parse_limit, parse_webhook_id
from funnel.api.service_access import request_service
from funnel.core.errors import BadInput, WebhookError

router = APIRouter(tags=["webhooks"])


@router.post(
    "/v1/webhooks",
    status_code=201,
    summary="Subscribe a URL to a segment's changes; answers the signing secret this once (write scope)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "example": {"segment_id": "big_spenders", "url": "https://hooks.example.com/funnel"}
                }
            },
        }
    },
)
async def add_webhook(request: Request) -> Response:
    service = await request_service(request, "write")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadInput('send {"segment_id": "...", "url": "https://...", "secret"?: "...", "from_version"?: 1}')
    webhook, secret = await service.subscribe_webhook(
        body.get("segment_id"), body.get("url"), body.get("secret"), body.get("from_version")
    )
    return JSON({**webhook.public(), "secret": secret}, status_code=201)


@router.get("/v1/webhooks", summary="Every subscription, without secrets (write scope)")
async def list_webhooks(request: Request) -> Response:
    service = await request_service(request, "write")
    return JSON({"webhooks": [webhook.public() for webhook in await service.webhooks()]})


@router.patch("/v1/webhooks/{webhook_id}", summary='{"enabled": true|false} (write scope)')
async def patch_webhook(webhook_id: str, request: Request) -> Response:
    service = await request_service(request, "write")
    number = parse_webhook_id(webhook_id)
    body = await json_body(request)
    enabled = body.get("enabled") if isinstance(body, dict) else None
    if not isinstance(enabled, bool):
        raise WebhookError("enabled", "must be true or false", 'send {"enabled": false} to pause, true to resume')
    return JSON((await service.set_webhook_enabled(number, enabled)).public())


@router.delete("/v1/webhooks/{webhook_id}", summary="Remove a subscription (write scope)")
async def delete_webhook(webhook_id: str, request: Request) -> Response:
    service = await request_service(request, "write")
    number = parse_webhook_id(webhook_id)
    await service.remove_webhook(number)
    return JSON({"id": number, "removed": True})


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    summary="How each version went, newest first: status, batches, attempts, last error (write scope)",
)
async def list_deliveries(webhook_id: str, request: Request) -> Response:
    service = await request_service(request, "write")
    number = parse_webhook_id(webhook_id)
    limit = parse_limit(request.query_params.get("limit"), 100)
    webhook, rows = await service.webhook_deliveries(number, limit)
    return JSON({**webhook.public(), "versions": [row.public() for row in rows]})
