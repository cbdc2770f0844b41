"""What the API answers, as pydantic models: the contract of ``docs/openapi.json`` and the types of
``funnel.client``.

The routes build their answers as plain data and serialize them once with orjson (the hot paths
must not pay for a model per answer); these models declare the shapes on the routes
(``response_model``, ``responses=``) and ``tests/api`` checks every answer the suite gets against
them (``answer_matches``): the bytes a route sends and the model it declares cannot drift apart.
Fields a kind of segment does not have are absent, not null (``operands`` of a composite, the
``rule`` of a proxy segment, ``note`` of a membership at a time).

This module imports only pydantic and the pure core, so ``funnel.client`` can use it anywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from funnel.core.segment import Kind
from funnel.core.states import ChangeType, DeliveryStatus, Freshness, RevisionChange, RunStatus, VersionState

#: A time as the API writes it: ISO 8601 with its UTC offset (``2026-11-29T09:30:00+00:00``).
Time = Annotated[dt.datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str)]
#: Where an answer was read: ``redis`` (the first level), ``mysql`` (Redis did not hold it) or ``history``.
Source = Annotated[str, Field(description="redis, mysql (Redis did not hold it; it is restored) or history")]


class Answer(BaseModel):
    """Every answer: fields the client does not know yet are ignored, so a newer server does not
    break an older client."""

    model_config = ConfigDict(extra="ignore")


class ErrorAnswer(Answer):
    """Every 4xx and 5xx: what was wrong and the fix, in words. A 5xx never names a host, a
    setting or a secret; its details are in the server's log."""

    error: str = Field(
        examples=["segment 'nosuch' is not in the catalog. Fix: list the segments with GET /v1/segments"]
    )


class GoneAnswer(ErrorAnswer):
    """410: gone. A retired segment's answer says when it was retired (null: its catalog row was
    deleted by hand and no parse recorded it yet); a cursor's or a time's says nothing more."""

    retired_at: Time | None = Field(default=None, description="when the segment was retired")


# ----------------------------------------------------------------------------------- health


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    """``ready``, or ``unavailable`` with what fails (``redis``, ``mysql``); ``warnings``: what
    keeps segments from being refreshed though the API serves (a missing Airflow pool), in words
    with the fix."""

    status: Literal["ready", "unavailable"]
    failing: list[str] | None = None
    warnings: list[str] | None = None


class Access(Answer):
    """What the caller's credential may do, and who its changes are recorded as."""

    scope: Literal["read", "define", "write"] = Field(
        description="read; define: also previews and segment definitions; write: also events and webhooks"
    )
    actor: str = Field(examples=["api:crm-sync", "airflow:alice"])


# ----------------------------------------------------------------------------------- segments


class LastRun(Answer):
    """A segment's latest refresh attempt."""

    status: RunStatus
    error: str | None
    started_at: Time
    finished_at: Time | None
    dag_id: str | None
    run_id: str | None
    try_number: int | None


class SegmentSummary(Answer):
    """A segment as the catalog lists it: what it is, what Redis serves of it, and its freshness."""

    segment_id: str = Field(examples=["big_spenders"])
    name: str
    kind: Kind
    enabled: bool
    owner: str | None = Field(description="who to ask about it: a team or an address (null: nobody named)")
    labels: list[str] = Field(description="its labels, sorted")
    operands: list[str] | None = Field(default=None, description="a composite's operand segments")
    size: int | None = Field(description="members of the live version (a proxy segment: counted now); null: none yet")
    version: int | None
    refreshed_at: Time | None
    entered: int | None = Field(default=None, description="users the live version took in (not for proxy segments)")
    exited: int | None = Field(default=None, description="users the live version let go (not for proxy segments)")
    rule: dict[str, Any] | None = Field(default=None, description="a proxy segment's tag rule; a composite's set rule")
    freshness: Freshness
    freshness_reason: str
    last_run: LastRun | None


class SegmentDetail(SegmentSummary):
    """One segment: its summary and its definition (the query as written, templates unrendered)."""

    query: str | None = None
    run_at: Time | None = Field(default=None, description="a static segment's run time")
    expression: str | None = Field(default=None, description="a composite's rule in words")


class SegmentList(Answer):
    segments: list[SegmentSummary]


class SegmentRevision(Answer):
    """One change of a segment's definition: who, when, the definition after it, what it changed
    (``{field: [before, after]}``)."""

    segment_id: str
    revision: int
    change: RevisionChange
    actor: str
    at: Time
    definition: dict[str, Any]
    changed: dict[str, list[Any]]
    comment: str | None


class RevisionList(Answer):
    segment_id: str
    revisions: list[SegmentRevision]


class Dependents(Answer):
    """What stops working without the segment: ``composite <id>``, ``webhook <id>``."""

    segment_id: str
    dependents: list[str]


class KeptVersion(Answer):
    version: int
    state: VersionState
    logical_date: Time
    size: int | None
    entered: int | None
    exited: int | None
    dag_id: str
    run_id: str
    created_at: Time
    promoted_at: Time | None
    revision: int | None = Field(
        description="the revision of the definition it was computed from (GET .../revisions); null: not recorded"
    )


class VersionList(Answer):
    segment_id: str
    keep_versions: int
    versions: list[KeptVersion]


class RefreshAttempt(Answer):
    id: int
    status: RunStatus
    version: int | None
    dag_id: str
    run_id: str
    try_number: int
    logical_date: Time
    started_at: Time
    finished_at: Time | None
    size: int | None
    entered: int | None
    exited: int | None
    error: str | None
    inputs: list[dict[str, Any]] | None = Field(description="a composite's operand versions")


class RunList(Answer):
    segment_id: str
    runs: list[RefreshAttempt]


# ----------------------------------------------------------------------------------- membership


class Membership(Answer):
    """Is the user a member now, of which version, and how fresh that version is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "segment_id": "big_spenders",
                    "user_id": "1001",
                    "member": True,
                    "version": 3,
                    "refreshed_at": "2026-11-29T09:04:12.831901+00:00",
                    "stale": False,
                    "source": "redis",
                }
            ]
        }
    )

    segment_id: str
    user_id: str
    member: bool
    version: int | None
    refreshed_at: Time | None
    stale: bool
    source: Source


class MembershipAt(Answer):
    """Was the user a member at ``at`` (``?at=``), from the membership history."""

    segment_id: str
    user_id: str
    member: bool
    at: Time
    version: int | None
    source: Literal["history"]
    note: str | None = Field(default=None, description="why the answer is what it is, when it needs saying")


class CheckAnswer(Answer):
    """Membership of many users in one segment, one version for all."""

    segment_id: str
    version: int | None
    refreshed_at: Time | None
    stale: bool
    source: Source
    members: dict[str, bool] = Field(examples=[{"1001": True, "1002": False}])


class MemberPage(Answer):
    """A page of members; ``next_cursor`` (null on the last page) pins the version the first page read."""

    segment_id: str
    version: int | None = Field(description="null for a proxy segment (its live tags)")
    refreshed_at: Time | None
    stale: bool
    members: list[str]
    next_cursor: str | None


class ChangePage(Answer):
    """A page of who entered or exited in a version."""

    segment_id: str
    version: int
    type: ChangeType
    user_ids: list[str]
    next_cursor: str | None


class SegmentVersion(Answer):
    version: int
    refreshed_at: Time | None
    stale: bool


class UserSegments(Answer):
    """Every enabled segment the user is in now, with the version each answer comes from."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "1001",
                    "segments": ["big_spenders", "new_users"],
                    "versions": {
                        "big_spenders": {"version": 3, "refreshed_at": "2026-11-29T09:04:12+00:00", "stale": False},
                        "new_users": {"version": 12, "refreshed_at": "2026-11-29T09:10:00+00:00", "stale": False},
                    },
                    "stale": [],
                    "not_computed": [],
                    "source": "redis",
                }
            ]
        }
    )

    user_id: str
    segments: list[str]
    versions: dict[str, SegmentVersion]
    stale: list[str] = Field(description="segments that missed their freshness objective")
    not_computed: list[str] = Field(description="stored segments with no live version yet")
    source: Source


class Stay(Answer):
    segment_id: str
    entered_at: Time | None
    entered_version: int
    exited_at: Time | None
    exited_version: int | None


class ProxyCrossing(Answer):
    segment_id: str
    at: Time
    change: ChangeType
    event_id: str | None


class UserHistory(Answer):
    """When the user entered and left each segment, within ``change_history_days``."""

    user_id: str
    horizon: Time
    change_history_days: int
    limit: int
    truncated: bool
    stays: list[Stay]
    proxy_changes: list[ProxyCrossing]


# ----------------------------------------------------------------------------------- events


class EventsResult(Answer):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"accepted": 1, "duplicates": 0, "before_baseline": 0, "tags_version": 4}]}
    )

    accepted: int = Field(description="events recorded and applied now")
    duplicates: int = Field(description="events whose event_id was already recorded: not applied again")
    before_baseline: int = Field(description="events older than the tags' baseline: recorded, already counted")
    tags_version: int


# ----------------------------------------------------------------------------------- preview


class PreviewOverlap(Answer):
    segment_id: str
    kind: str
    overlap: int | None
    size: int | None
    exact: bool
    reason: str | None


class PreviewAgainstLive(Answer):
    version: int | None
    size: int | None
    entered: int | None
    exited: int | None
    guard: str | None
    would_refuse: bool | None
    reason: str | None


class PreviewAnswer(Answer):
    segment_id: str | None
    kind: str
    size: int
    capped: bool
    rows_read: int
    null_ids: int
    sample: list[str]
    query_seconds: float
    overlap: list[PreviewOverlap]
    against_live: PreviewAgainstLive | None


class SavedRevision(SegmentRevision):
    """A saved change: its revision, and the preview it ran first (absent: not previewed)."""

    preview: PreviewAnswer | None = Field(default=None, description="what the new definition holds and changes")


# ----------------------------------------------------------------------------------- webhooks


class Webhook(Answer):
    id: int
    segment_id: str
    url: str
    enabled: bool
    created_at: Time
    delivered_version: int | None = Field(description="the last version delivered (or skipped when subscribing)")


class NewWebhook(Webhook):
    secret: str = Field(description="the signing secret: answered this once, never again")


class WebhookList(Answer):
    webhooks: list[Webhook]


class RemovedWebhook(Answer):
    id: int
    removed: Literal[True]


class VersionDelivery(Answer):
    version: int
    status: DeliveryStatus
    batches: int
    delivered: int
    attempts: int
    last_error: str | None
    updated_at: Time


class WebhookDeliveries(Webhook):
    versions: list[VersionDelivery]
