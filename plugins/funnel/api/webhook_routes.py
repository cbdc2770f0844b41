"""Webhook subscriptions, all in the write scope (they hold where changes go, and a secret):
subscribe, list, pause or resume, remove, and how each version's deliveries went."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel import settings
from funnel.api.answers import NewWebhook, RemovedWebhook, Webhook, WebhookDeliveries, WebhookList
from funnel.api.bodies import WebhookBody, WebhookPatch
from funnel.api.error_answers import JSON
from funnel.api.json_requests import JsonRoute
from funnel.api.request_inputs import Limit, WebhookIdPath, parse_limit, parse_webhook_id
from funnel.api.route_statuses import error_statuses, linked
from funnel.api.service_access import WriteService, request_service

router = APIRouter(tags=["webhooks"], route_class=JsonRoute)


@router.post(
    "/v1/webhooks",
    status_code=201,
    summary="Subscribe a URL to a segment's changes; answers the signing secret this once (write scope)",
    response_model=NewWebhook,
    responses={
        **error_statuses(401, 403, 413, 422, 503),
        **linked(201, "webhook_id", "$response.body#/id", "list_deliveries", "patch_webhook", "delete_webhook"),
    },
)
async def add_webhook(body: WebhookBody, service: WriteService) -> Response:
    webhook, secret = await service.subscribe_webhook(body.segment_id, body.url, body.secret, body.from_version)
    return JSON({**webhook.public(), "secret": secret}, status_code=201)


@router.get(
    "/v1/webhooks",
    summary="Every subscription, without secrets (write scope)",
    response_model=WebhookList,
    responses=error_statuses(401, 403, 503),
)
async def list_webhooks(request: Request) -> Response:
    service = await request_service(request, "write")
    return JSON({"webhooks": [webhook.public() for webhook in await service.webhooks()]})


@router.patch(
    "/v1/webhooks/{webhook_id}",
    summary='Pause or resume a subscription: {"enabled": true|false} (write scope)',
    response_model=Webhook,
    responses=error_statuses(401, 403, 404, 413, 422, 503),
)
async def patch_webhook(webhook_id: WebhookIdPath, body: WebhookPatch, service: WriteService) -> Response:
    number = parse_webhook_id(webhook_id)
    return JSON((await service.set_webhook_enabled(number, body.enabled)).public())


@router.delete(
    "/v1/webhooks/{webhook_id}",
    summary="Remove a subscription (write scope)",
    response_model=RemovedWebhook,
    responses=error_statuses(401, 403, 404, 422, 503),
)
async def delete_webhook(webhook_id: WebhookIdPath, request: Request) -> Response:
    service = await request_service(request, "write")
    number = parse_webhook_id(webhook_id)
    await service.remove_webhook(number)
    return JSON({"id": number, "removed": True})


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    summary="How each version went, newest first: status, batches, attempts, last error (write scope)",
    response_model=WebhookDeliveries,
    responses=error_statuses(401, 403, 404, 422, 503),
)
async def list_deliveries(webhook_id: WebhookIdPath, request: Request, limit: Limit = None) -> Response:
    service = await request_service(request, "write")
    number = parse_webhook_id(webhook_id)
    webhook, rows = await service.webhook_deliveries(number, parse_limit(limit, settings.DELIVERIES_LIMIT_DEFAULT))
    return JSON({**webhook.public(), "versions": [row.public() for row in rows]})
