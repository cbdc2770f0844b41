"""A segment's members: is a user in it (now, or ``?at=`` a time), which of many users are,
and the listings (its members, and who entered or exited in the latest refresh), paged.

``member_answer`` is also what the hot path answers (``funnel.api.fast_paths``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from funnel.api.cursors import kept_page, next_cursor, read_cursor
from funnel.api.error_answers import JSON
from funnel.api.request_inputs import json_body, parse_limit, parse_time, parse_user_id, user_ids_of
from funnel.api.service import Service
from funnel.api.service_access import request_service
from funnel.core.errors import BadInput
from funnel.core.states import ChangeType
from funnel.core.utc_time import utc_now

router = APIRouter()


async def member_answer(service: Service, segment_id: str, raw_user_id: str) -> tuple[dict[str, Any], str]:
    """``GET /v1/segments/{id}/members/{user_id}``: the body and its source."""
    user_id = parse_user_id(raw_user_id)
    entry = await service.entry(segment_id)
    answer = await service.check(entry, [user_id])
    body = {
        "segment_id": entry.segment_id,
        "user_id": user_id,
        "member": answer.members[user_id],
        "version": answer.version,
        "refreshed_at": answer.refreshed_at,
        "stale": answer.stale,
        "source": answer.source,
    }
    return body, answer.source


async def _member_at_answer(service: Service, segment_id: str, raw_user_id: str, raw_at: str) -> dict[str, Any]:
    """``GET /v1/segments/{id}/members/{user_id}?at=``: membership as it was then, from the history."""
    user_id = parse_user_id(raw_user_id)
    at = parse_time(raw_at, "at")
    now = utc_now()
    if at > now:
        raise BadInput(f"at {raw_at[:80]!r} is in the future. Fix: ask without at for the membership now")
    entry = await service.entry(segment_id)
    answer = await service.membership_at(entry, user_id, at, now)
    body: dict[str, Any] = {
        "segment_id": entry.segment_id,
        "user_id": user_id,
        "member": answer.member,
        "at": at.isoformat(),
        "version": answer.version,
        "source": "history",
    }
    if answer.note:
        body["note"] = answer.note
    return body


@router.get(
    "/v1/segments/{segment_id}/members/{user_id:anytext}",
    tags=["membership"],
    summary="Is this user a member, and of which version",
)
async def is_member(segment_id: str, user_id: str, request: Request, at: str | None = None) -> Response:
    service = await request_service(request, "read")
    if at is not None:  # ?at=<ISO time>: as it was then (the membership history)
        return JSON(await _member_at_answer(service, segment_id, user_id, at), headers={"X-Funnel-Source": "history"})
    body, source = await member_answer(service, segment_id, user_id)
    return JSON(body, headers={"X-Funnel-Source": source})


@router.post(
    "/v1/segments/{segment_id}/members:check",
    tags=["membership"],
    summary="Membership of up to max_check_ids users at once",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"example": {"user_ids": ["1001", "1002"]}}},
        }
    },
)
async def check_members(segment_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    user_ids = user_ids_of(await json_body(request))
    entry = await service.entry(segment_id)
    answer = await service.check(entry, user_ids)
    body = {
        "segment_id": entry.segment_id,
        "version": answer.version,
        "refreshed_at": answer.refreshed_at,
        "stale": answer.stale,
        "source": answer.source,
        "members": answer.members,
    }
    return JSON(body, headers={"X-Funnel-Source": answer.source})


@router.get(
    "/v1/segments/{segment_id}/members",
    tags=["listings"],
    summary="Page through the members; a cursor pins the version it started on",
)
async def list_members(segment_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    entry = await service.entry(segment_id)
    limit = parse_limit(request.query_params.get("limit"))
    pinned, after = read_cursor(request.query_params.get("cursor"), segment_id, versioned=not entry.is_proxy)
    refreshed_at: str | None = None
    if entry.is_proxy:  # the live tags, no versions to pin
        page, version = await service.page_proxy(entry, after, limit), None
    else:
        version = pinned if pinned is not None else (await service.live_version(segment_id)).version
        kept, refreshed_at = await service.page_members(segment_id, version, after, limit)
        page = kept_page(kept, segment_id, version)
    cursor = next_cursor(page, limit, segment_id, version)
    body = {"segment_id": segment_id, "version": version, "refreshed_at": refreshed_at, "stale": entry.stale}
    return JSON({**body, "members": page, "next_cursor": cursor})


@router.get(
    "/v1/segments/{segment_id}/changes",
    tags=["listings"],
    summary="Who entered or exited in the latest refresh, paged",
)
async def list_changes(segment_id: str, request: Request) -> Response:
    service = await request_service(request, "read")
    entry = await service.entry(segment_id)
    change = request.query_params.get("type", ChangeType.ENTERED.value)
    if change not in tuple(ChangeType):
        raise BadInput("type must be 'entered' or 'exited'")
    entry.refreshed("refreshes")
    limit = parse_limit(request.query_params.get("limit"))
    pinned, after = read_cursor(request.query_params.get("cursor"), segment_id, versioned=True)
    version = pinned if pinned is not None else (await service.live_version(segment_id)).version
    page = kept_page(await service.page_changes(segment_id, version, change, after, limit), segment_id, version)
    cursor = next_cursor(page, limit, segment_id, version)
    return JSON({"segment_id": segment_id, "version": version, "type": change, "user_ids": page, "next_cursor": cursor})
