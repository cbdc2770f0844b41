"""A segment's members: is a user in it (now, or ``?at=`` a time), which of many users are,
and the listings (its members, and who entered or exited in the latest refresh), paged.

``member_answer`` is also what the hot path answers (``funnel.api.fast_paths``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from funnel.api.answers import ChangePage, CheckAnswer, MemberPage, Membership, MembershipAt
from funnel.api.bodies import CheckBody
from funnel.api.cursors import kept_page, next_cursor, read_cursor
from funnel.api.error_answers import JSON
from funnel.api.json_requests import JsonRoute
from funnel.api.request_inputs import (
    Cursor,
    Limit,
    SegmentIdPath,
    TimeParam,
    UserIdPath,
    parse_limit,
    parse_time,
    parse_user_id,
    user_ids_of,
)
from funnel.api.route_statuses import error_statuses
from funnel.api.service import Service
from funnel.api.service_access import ReadService, request_service
from funnel.core.errors import BadInput
from funnel.core.states import ChangeType
from funnel.core.utc_time import utc_now

router = APIRouter(route_class=JsonRoute)

ChangeTypeParam = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "enum": [c.value for c in ChangeType], "default": ChangeType.ENTERED.value}),
    Query(alias="type", description="entered (default) or exited"),
]


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
    summary="Is this user a member, and of which version; ?at=: as it was then (the membership history)",
    response_model=Membership | MembershipAt,
    responses=error_statuses(401, 403, 404, 409, 410, 422, 503),
)
async def is_member(segment_id: SegmentIdPath, user_id: UserIdPath, request: Request, at: TimeParam = None) -> Response:
    service = await request_service(request, "read")
    if at is not None:  # ?at=<ISO time>: as it was then (the membership history)
        return JSON(await _member_at_answer(service, segment_id, user_id, at), headers={"X-Funnel-Source": "history"})
    body, source = await member_answer(service, segment_id, user_id)
    return JSON(body, headers={"X-Funnel-Source": source})


@router.post(
    "/v1/segments/{segment_id}/members:check",
    tags=["membership"],
    summary="Membership of up to max_check_ids users at once",
    response_model=CheckAnswer,
    responses=error_statuses(401, 403, 404, 409, 410, 413, 422, 503),
)
async def check_members(segment_id: SegmentIdPath, body: CheckBody, service: ReadService) -> Response:
    user_ids = user_ids_of(body.user_ids)
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
    response_model=MemberPage,
    responses=error_statuses(401, 403, 404, 409, 410, 422, 503),
)
async def list_members(
    segment_id: SegmentIdPath, request: Request, limit: Limit = None, cursor: Cursor = None
) -> Response:
    service = await request_service(request, "read")
    entry = await service.entry(segment_id)
    count = parse_limit(limit)
    pinned, after = read_cursor(cursor, segment_id, versioned=not entry.is_proxy)
    refreshed_at: str | None = None
    if entry.is_proxy:  # the live tags, no versions to pin
        page, version = await service.page_proxy(entry, after, count), None
    else:
        version = pinned if pinned is not None else (await service.live_version(segment_id)).version
        kept, refreshed_at = await service.page_members(segment_id, version, after, count)
        page = kept_page(kept, segment_id, version)
    following = next_cursor(page, count, segment_id, version)
    body = {"segment_id": segment_id, "version": version, "refreshed_at": refreshed_at, "stale": entry.stale}
    return JSON({**body, "members": page, "next_cursor": following})


@router.get(
    "/v1/segments/{segment_id}/changes",
    tags=["listings"],
    summary="Who entered or exited in the latest refresh, paged",
    response_model=ChangePage,
    responses=error_statuses(401, 403, 404, 409, 410, 422, 503),
)
async def list_changes(
    segment_id: SegmentIdPath,
    request: Request,
    change_type: ChangeTypeParam = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    service = await request_service(request, "read")
    entry = await service.entry(segment_id)
    change = ChangeType.ENTERED.value if change_type is None else change_type
    if change not in tuple(ChangeType):
        raise BadInput("type must be 'entered' or 'exited'")
    entry.refreshed("refreshes")
    count = parse_limit(limit)
    pinned, after = read_cursor(cursor, segment_id, versioned=True)
    version = pinned if pinned is not None else (await service.live_version(segment_id)).version
    page = kept_page(await service.page_changes(segment_id, version, change, after, count), segment_id, version)
    following = next_cursor(page, count, segment_id, version)
    body = {"segment_id": segment_id, "version": version, "type": change, "user_ids": page}
    return JSON({**body, "next_cursor": following})
