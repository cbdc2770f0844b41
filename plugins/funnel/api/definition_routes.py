"""Segment definitions through the one write path (``funnel.services.segment_admin``): add a
segment, change (PATCH), replace (PUT), retire and restore it, and read its revisions and
dependents. Writes need the write scope; each is checked as the catalog checks a row (the same
message, naming the field and the fix), previewed unless ``?preview=false``, and recorded as a
revision; a refused one writes nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from funnel.api.answers import Dependents, RevisionList, SavedRevision, SegmentRevision
from funnel.api.bodies import CommentBody, SegmentBody, SegmentDefinition, SegmentPatch
from funnel.api.error_answers import JSON
from funnel.api.json_requests import JsonRoute
from funnel.api.request_inputs import SegmentIdPath
from funnel.api.route_statuses import error_statuses, linked
from funnel.api.service import Service
from funnel.api.service_access import DefineActor, DefineService, request_service
from funnel.core.errors import BadInput
from funnel.core.segment_revisions import DEFINITION_FIELDS, Revision
from funnel.services.preview_values import Preview

router = APIRouter(tags=["definitions"], route_class=JsonRoute)

IfMatch = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "pattern": '^(W/)?"?[0-9]+"?$', "example": '"3"'}),
    Header(
        alias="If-Match", description="the revision the change started from: refused (409) when it is not the latest"
    ),
]


def _revision_of(if_match: str | None) -> int | None:
    """``If-Match: "3"``: the revision an edit started from."""
    if if_match is None:
        return None
    raw = if_match.strip().removeprefix("W/").strip('"')
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise BadInput(f"If-Match {if_match[:40]!r} is not a revision. Fix: send the revision you read, e.g. '\"3\"'")
    return int(raw)


def _fields(body: SegmentBody | SegmentPatch | SegmentDefinition) -> dict[str, Any]:
    """The body's definition fields that were sent."""
    return body.model_dump(exclude={"comment"}, exclude_unset=True)


PreviewFirst = Annotated[
    bool,
    Query(
        description="preview the definition first (its query on Hive): a failing query, or an "
        "everyone-segment (max_share_of_users), is refused and nothing is saved; false: save without it"
    ),
]
Force = Annotated[bool, Query(description="save even a segment over max_share_of_users of the users with tags")]


def _saved(revision: Revision, preview: Preview | None, status_code: int = 200) -> Response:
    answer = revision.public()
    if preview is not None:
        answer["preview"] = preview.to_dict()
    return JSON(answer, status_code=status_code)


@router.post(
    "/v1/segments",
    status_code=201,
    summary="Add a segment, checked as the catalog checks it and previewed; the answer is its first revision and "
    "the preview (write scope, or an Airflow login that may edit DAGs)",
    response_model=SavedRevision,
    responses={
        **error_statuses(401, 403, 409, 413, 422, 429, 503, 504),
        **linked(201, "segment_id", "$response.body#/segment_id", "edit_segment", "list_revisions", "list_dependents"),
    },
)
async def add_segment(
    body: SegmentBody, service: DefineService, actor: DefineActor, preview: PreviewFirst = True, force: Force = False
) -> Response:
    fields = {"enabled": body.enabled, **_fields(body)}
    revision, previewed = await service.add_segment(fields, actor, body.comment, preview, force)
    return _saved(revision, previewed, status_code=201)


@router.patch(
    "/v1/segments/{segment_id}",
    summary="Change some fields of a segment (not its id or kind), previewed when its query, rule, run_at or "
    "enabling changes; enabled: false is refused while a composite or webhook uses it (write scope, or an "
    "Airflow login that may edit DAGs)",
    response_model=SavedRevision,
    responses=error_statuses(401, 403, 404, 409, 410, 413, 422, 429, 503, 504),
)
async def edit_segment(
    segment_id: SegmentIdPath,
    body: SegmentPatch,
    service: DefineService,
    actor: DefineActor,
    if_match: IfMatch = None,
    preview: PreviewFirst = True,
    force: Force = False,
) -> Response:
    changes = _fields(body)
    if not changes:
        raise BadInput(SegmentPatch.usage)
    return await _edited(service, segment_id, changes, actor, if_match, body.comment, preview, force)


@router.put(
    "/v1/segments/{segment_id}",
    summary="Replace a segment's definition (a field not sent is emptied; enabled defaults to true; its id and "
    "kind stay), previewed as an edit is (write scope, or an Airflow login that may edit DAGs)",
    response_model=SavedRevision,
    responses=error_statuses(401, 403, 404, 409, 410, 413, 422, 429, 503, 504),
)
async def replace_segment(
    segment_id: SegmentIdPath,
    body: SegmentDefinition,
    service: DefineService,
    actor: DefineActor,
    if_match: IfMatch = None,
    preview: PreviewFirst = True,
    force: Force = False,
) -> Response:
    if body.segment_id is not None and body.segment_id != segment_id:
        raise BadInput(
            f"segment_id {body.segment_id[:80]!r} is not the path's {segment_id!r}. Fix: a segment's id never "
            "changes: send the path's id or none"
        )
    emptied = {name: None for name in DEFINITION_FIELDS if name != "segment_id"}
    changes = {**emptied, "enabled": True, **_fields(body)}
    changes.pop("segment_id", None)
    return await _edited(service, segment_id, changes, actor, if_match, body.comment, preview, force)


async def _edited(
    service: Service,
    segment_id: str,
    changes: dict[str, Any],
    actor: str,
    if_match: str | None,
    comment: str | None,
    preview: bool,
    force: bool,
) -> Response:
    expected = _revision_of(if_match)
    revision, previewed = await service.edit_segment(segment_id, changes, actor, expected, comment, preview, force)
    if revision is None:
        raise BadInput(f"nothing to change: segment {segment_id!r} already has these values (and no revision yet)")
    return _saved(revision, previewed)


@router.post(
    "/v1/segments/{segment_id}:retire",
    summary="Retire a segment: no task, its answers 410, its data kept change_history_days; refused (409) "
    "while a composite or webhook uses it (write scope, or an Airflow login that may edit DAGs)",
    response_model=SegmentRevision,
    responses=error_statuses(401, 403, 404, 409, 410, 413, 422, 503),
)
async def retire_segment(
    segment_id: SegmentIdPath, service: DefineService, actor: DefineActor, body: CommentBody | None = None
) -> Response:
    revision = await service.retire_segment(segment_id, True, actor, body.comment if body else None)
    return JSON(revision.public())


@router.post(
    "/v1/segments/{segment_id}:restore",
    summary="Bring a retired segment back as it was (write scope, or an Airflow login that may edit DAGs)",
    response_model=SegmentRevision,
    responses=error_statuses(401, 403, 404, 409, 413, 422, 503),
)
async def restore_segment(
    segment_id: SegmentIdPath, service: DefineService, actor: DefineActor, body: CommentBody | None = None
) -> Response:
    revision = await service.retire_segment(segment_id, False, actor, body.comment if body else None)
    return JSON(revision.public())


@router.get(
    "/v1/segments/{segment_id}/revisions",
    summary="Every change of the segment's definition, oldest first: who, when, what changed",
    response_model=RevisionList,
    responses=error_statuses(401, 403, 404, 503),
)
async def list_revisions(segment_id: SegmentIdPath, request: Request) -> Response:
    service = await request_service(request, "read")
    revisions = await service.segment_revisions(segment_id)
    return JSON({"segment_id": segment_id, "revisions": [revision.public() for revision in revisions]})


@router.get(
    "/v1/segments/{segment_id}/dependents",
    summary="The enabled composites and webhooks that use the segment (what disabling it would break)",
    response_model=Dependents,
    responses=error_statuses(401, 403, 404, 410, 503),
)
async def list_dependents(segment_id: SegmentIdPath, request: Request) -> Response:
    service = await request_service(request, "read")
    return JSON({"segment_id": segment_id, "dependents": await service.segment_dependents(segment_id)})
