"""What the API's write and batch routes take in their bodies, as pydantic models.

FastAPI validates a body's shape against its model before the route runs: JSON, an object,
every field of its type, no field the model does not have (``extra="forbid"``). A refused body
is a 422 that names the field and the fix (``body_problem``, called by ``funnel.api.error_answers``).

The rules on the values themselves (what a user id, an event, a webhook URL may be) live in
the core, each once, and the routes call them after the model (``funnel.core.ids``,
``funnel.core.user_events``, ``funnel.core.webhook_subscription``); the models only declare those
rules in the OpenAPI document, so a client or a generator knows them too.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, WithJsonSchema

from funnel import settings
from funnel.core import ids
from funnel.core.segment import LABEL_PATTERN, LABELS_MAX, OWNER_MAX_LENGTH, Kind
from funnel.core.user_events import EventType
from funnel.core.webhook_subscription import SECRET_MAX_LENGTH, SECRET_MIN_LENGTH, URL_MAX_LENGTH

#: JSON Schema's patterns are not anchored; these match the core's rules whole.
USER_ID_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": f"^{ids.USER_ID_PATTERN.pattern}$", "example": "1001"},
        {"type": "integer", "minimum": ids.USER_ID_INT_MIN, "maximum": ids.USER_ID_INT_MAX},
    ],
    "description": f"1 to {ids.USER_ID_MAX_LENGTH} printable ASCII characters without surrounding spaces "
    "(an integer is taken as its decimal text)",
}
SEGMENT_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{ids.SEGMENT_ID_PATTERN.pattern}$",
    "maxLength": ids.SEGMENT_ID_MAX_LENGTH,
    "example": "big_spenders",
}


def _documented(schema: dict[str, Any]) -> Any:
    """A field the model takes as it comes, documented as ``schema``: the core checks its value."""
    return Annotated[Any, WithJsonSchema(schema)]


class Body(BaseModel):
    """A request body: no field the model does not name."""

    model_config = ConfigDict(extra="forbid")
    #: The body in one line, the fix of a body that is not one.
    usage: ClassVar[str]
    #: What the body is, for "'x' is not a <noun> field".
    noun: ClassVar[str]


class CheckBody(Body):
    usage: ClassVar[str] = 'send {"user_ids": ["...", ...]} with at least one user id'
    noun: ClassVar[str] = "members:check"
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"user_ids": ["1001", "1002"]}})

    user_ids: list[_documented(USER_ID_SCHEMA)] = Field(  # type: ignore[valid-type]
        min_length=1,
        json_schema_extra={"maxItems": settings.MAX_CHECK_IDS},
        description=f"at most max_check_ids ({settings.MAX_CHECK_IDS}) ids; more is a 413",
    )


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event_id", "type", "user_id", "at"],
    "properties": {
        "event_id": {
            "type": "string",
            "pattern": f"^[ -~]{{1,{ids.EVENT_ID_MAX_LENGTH}}}$",
            "description": "unique per event (e.g. the order id): a retry with the same id is not applied twice",
        },
        "type": {"type": "string", "enum": [t.value for t in EventType]},
        "user_id": USER_ID_SCHEMA,
        "at": {
            "type": "string",
            "format": "date-time",
            "description": "when it happened, with its offset; at most an hour ahead of the server's clock",
        },
    },
}


class EventsBody(Body):
    usage: ClassVar[str] = 'send {"events": [{"event_id", "type", "user_id", "at"}, ...]}'
    noun: ClassVar[str] = "events"
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "events": [{"event_id": "o-1", "type": "order", "user_id": "1001", "at": "2026-11-29T09:30:00Z"}]
            }
        },
    )

    events: list[Annotated[dict[str, Any], WithJsonSchema(EVENT_SCHEMA)]] = Field(
        json_schema_extra={"maxItems": settings.MAX_EVENTS_PER_REQUEST},
        description=f"at most max_events_per_request ({settings.MAX_EVENTS_PER_REQUEST}); more is a 413",
    )


class WebhookBody(Body):
    usage: ClassVar[str] = 'send {"segment_id": "...", "url": "https://...", "secret"?: "...", "from_version"?: 1}'
    noun: ClassVar[str] = "webhook"
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"segment_id": "big_spenders", "url": "https://hooks.example.com/funnel"}},
    )

    segment_id: _documented(SEGMENT_ID_SCHEMA)  # type: ignore[valid-type]
    url: _documented(  # type: ignore[valid-type]
        {
            "type": "string",
            "format": "uri",
            "pattern": "^https?://[^/?#@\\s]+",
            "maxLength": URL_MAX_LENGTH,
            "description": "the receiver: http or https, no credentials; its host must resolve to public "
            "addresses (not loopback, private or link-local) unless [funnel] webhook_refuse_private is off",
        }
    )
    secret: _documented(  # type: ignore[valid-type]
        {
            "anyOf": [
                {"type": "string", "pattern": f"^[!-~]{{{SECRET_MIN_LENGTH},{SECRET_MAX_LENGTH}}}$"},
                {"type": "null"},
            ],
            "description": "the HMAC signing secret; left out, one is generated",
        }
    ) = None
    from_version: _documented(  # type: ignore[valid-type]
        {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": ids.VERSION_MAX}, {"type": "null"}],
            "description": "deliver from this version on; left out, from the version after the live one",
        }
    ) = None


class WebhookPatch(Body):
    usage: ClassVar[str] = 'send {"enabled": false} to pause, true to resume'
    noun: ClassVar[str] = "webhook patch"
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"enabled": False}})

    enabled: StrictBool


class PreviewBody(Body):
    usage: ClassVar[str] = 'send {"segment_id": "..."}, {"query": "SELECT ..."} or {"rule": {...}} (optional "kind")'
    noun: ClassVar[str] = "preview"
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"segment_id": "german_users", "query": "SELECT user_id FROM dw.users"}},
    )

    segment_id: StrictStr | None = Field(default=None, description="an existing segment (alone: its definition)")
    query: StrictStr | None = Field(default=None, description="a HiveQL query whose first column is the user id")
    rule: dict[str, Any] | StrictStr | None = Field(default=None, description="a proxy or composite rule")
    kind: StrictStr | None = Field(default=None, description="dynamic (default) or static, for a query")


_DEFINITION_DOCS: dict[str, Any] = {
    "run_at": {
        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
        "description": "a static segment's run time",
    },
    "max_shrink_pct": {
        "anyOf": [{"type": "number", "minimum": 0, "maximum": 100}, {"type": "null"}],
        "description": "refuse a refresh that shrinks the segment by more (default: the setting)",
    },
    "owner": {
        "anyOf": [{"type": "string", "maxLength": OWNER_MAX_LENGTH}, {"type": "null"}],
        "description": "who to ask about it: a team or an address; its Airflow task's owner",
    },
    "labels": {
        "anyOf": [
            {
                "type": "array",
                "maxItems": LABELS_MAX,
                "items": {"type": "string", "pattern": f"^{LABEL_PATTERN.pattern}$"},
            },
            {"type": "null"},
        ],
        "description": "lower-case slugs to find it by",
    },
}


class SegmentBody(Body):
    """A new segment, as a catalog row holds it (``README``: "The segment catalog")."""

    usage: ClassVar[str] = (
        'send {"segment_id": "...", "name": "...", "kind": "dynamic", "query": "SELECT user_id FROM ..."} '
        "(static: also run_at; proxy and composite: rule instead of query)"
    )
    noun: ClassVar[str] = "segment"
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "segment_id": "dutch_users",
                "name": "Users in the Netherlands",
                "kind": "dynamic",
                "query": "SELECT user_id FROM dw.users WHERE country = 'NL'",
            }
        },
    )

    segment_id: _documented(SEGMENT_ID_SCHEMA)  # type: ignore[valid-type]
    name: StrictStr
    kind: _documented({"type": "string", "enum": [kind.value for kind in Kind]})  # type: ignore[valid-type]
    query: StrictStr | None = None
    run_at: _documented(_DEFINITION_DOCS["run_at"]) = None  # type: ignore[valid-type]
    rule: dict[str, Any] | StrictStr | None = Field(default=None, description="a proxy or composite rule")
    max_shrink_pct: _documented(_DEFINITION_DOCS["max_shrink_pct"]) = None  # type: ignore[valid-type]
    owner: _documented(_DEFINITION_DOCS["owner"]) = None  # type: ignore[valid-type]
    labels: _documented(_DEFINITION_DOCS["labels"]) = None  # type: ignore[valid-type]
    enabled: StrictBool = True
    comment: StrictStr | None = Field(default=None, max_length=1000, description="why: kept with the revision")


class SegmentDefinition(SegmentBody):
    """A segment's whole new definition (``PUT``): its id may be left out (the path names it)."""

    usage: ClassVar[str] = (
        'send the whole definition, e.g. {"name": "...", "kind": "dynamic", "query": "SELECT user_id FROM ..."}'
    )
    noun: ClassVar[str] = "segment definition"

    segment_id: _documented({"anyOf": [SEGMENT_ID_SCHEMA, {"type": "null"}]}) = None  # type: ignore[valid-type]


class CommentBody(Body):
    """Why, kept with the revision (optional)."""

    usage: ClassVar[str] = 'send {"comment": "why"} or no body'
    noun: ClassVar[str] = "comment"
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"comment": "the campaign ended"}})

    comment: StrictStr | None = Field(default=None, max_length=1000, description="why: kept with the revision")


class SegmentPatch(Body):
    """Some fields of a segment; the others stay. Its id and kind never change."""

    usage: ClassVar[str] = 'send the fields to change, e.g. {"name": "...", "enabled": false, "comment": "why"}'
    noun: ClassVar[str] = "segment patch"
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"name": "Dutch users", "comment": "rename"}}
    )

    name: StrictStr | None = None
    kind: StrictStr | None = Field(default=None, description="only its current kind: a kind never changes")
    query: StrictStr | None = None
    run_at: _documented(_DEFINITION_DOCS["run_at"]) = None  # type: ignore[valid-type]
    rule: dict[str, Any] | StrictStr | None = None
    max_shrink_pct: _documented(_DEFINITION_DOCS["max_shrink_pct"]) = None  # type: ignore[valid-type]
    owner: _documented(_DEFINITION_DOCS["owner"]) = None  # type: ignore[valid-type]
    labels: _documented(_DEFINITION_DOCS["labels"]) = None  # type: ignore[valid-type]
    enabled: StrictBool | None = None
    comment: StrictStr | None = Field(default=None, max_length=1000, description="why: kept with the revision")


_EXPECTED = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "list_type": "a list",
}


def body_problem(errors: list[dict[str, Any]], model: type[Body] | None) -> str:
    """The first of pydantic's ``errors`` about a body, in words that name the field and the fix."""
    usage = model.usage if model is not None else "send the JSON body this endpoint documents (/docs)"
    first = next((e for e in errors if e.get("type") == "json_invalid"), errors[0] if errors else {})
    kind, loc = first.get("type"), list(first.get("loc", ()))[1:]  # without "body"
    if kind == "json_invalid":
        return "the body is not valid JSON"
    if not loc:  # no body, or not an object
        return usage
    where = str(loc[0]) + "".join(f"[{part}]" for part in _indices(loc[1:]))
    if kind == "extra_forbidden" and model is not None:
        fields = list(model.model_fields)
        named = ", ".join(fields[:-1]) + f" and {fields[-1]}" if len(fields) > 1 else fields[0]
        return f"{where!r} is not a {model.noun} field; use {named}"
    if kind == "missing":
        return f"{where} is missing. Fix: {usage}"
    if kind == "too_short":
        return f"{where} is empty. Fix: {usage}"
    if kind == "string_too_long":
        return f"{where} is longer than {first.get('ctx', {}).get('max_length')} characters. Fix: shorten it"
    return f"{where} must be {_EXPECTED.get(str(kind), 'of its documented type')}. Fix: {usage}"


def _indices(parts: list[Any]) -> list[int]:
    """The list indices right after a field (a union's member names that follow are left out)."""
    found = []
    for part in parts:
        if not isinstance(part, int):
            break
        found.append(part)
    return found
