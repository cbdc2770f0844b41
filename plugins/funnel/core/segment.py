"""Segments as frozen values: a catalog row becomes a ``Segment`` or a ``SegmentError``.

Pure (no Airflow, no I/O), so every rule about what a valid segment is tests alone.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from funnel.core.errors import SegmentError, TimeRefused
from funnel.core.ids import NAME_SLUG_PATTERN, SEGMENT_ID_MAX_LENGTH, SEGMENT_ID_PATTERN
from funnel.core.templating import check_template
from funnel.core.utc_time import as_utc, parse_utc

NAME_MAX_LENGTH = 255
#: A query's longest text in bytes (UTF-8): what the catalog's TEXT column holds.
QUERY_MAX_BYTES = 65_535
OWNER_MAX_LENGTH = 255
#: A label: a lower-case slug ('-' and '.' allowed after the first character).
LABEL_PATTERN = NAME_SLUG_PATTERN
LABELS_MAX = 20


class Kind(enum.StrEnum):
    """How a segment's membership is computed."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    PROXY = "proxy"
    COMPOSITE = "composite"

    @property
    def stored(self) -> bool:
        """Its members are computed in batches and stored as versions (all but proxy)."""
        return self is not Kind.PROXY

    @property
    def on_slots(self) -> bool:
        """Refreshed at every slot of the dynamic schedule (dynamic and composite segments)."""
        return self in (Kind.DYNAMIC, Kind.COMPOSITE)


#: Fields each kind must have; any other optional field must be empty.
_REQUIRED: dict[Kind, frozenset[str]] = {
    Kind.STATIC: frozenset({"query", "run_at"}),
    Kind.DYNAMIC: frozenset({"query"}),
    Kind.PROXY: frozenset({"rule"}),
    Kind.COMPOSITE: frozenset({"rule"}),
}
_OPTIONAL_FIELDS = ("query", "run_at", "rule")


@dataclass(frozen=True, order=True)
class Segment:
    """One validated catalog row. Ordered by ``segment_id`` so plans are deterministic."""

    segment_id: str
    name: str
    kind: Kind
    query: str | None = None
    run_at: dt.datetime | None = None
    rule: str | None = None  # canonical JSON text, so the value stays hashable
    enabled: bool = True
    source: str = "mysql"
    #: Refuse a refresh that shrinks the segment by more than this percentage (None: the global setting).
    max_shrink_pct: float | None = None
    #: Who to ask about it: a team or an address (None: nobody named). Its Airflow task's owner.
    owner: str | None = None
    #: Slugs to find it by (sorted, each once).
    labels: tuple[str, ...] = ()


def segment_from_row(row: Mapping[str, Any], source: str = "mysql") -> Segment:
    """Validate one catalog row (MySQL or the Airflow Variable) into a ``Segment``."""
    segment_id = _segment_id(row)
    kind = _kind(segment_id, row.get("kind"))
    name = row.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SegmentError(segment_id, "name", "is empty", "give the segment a human-readable name")
    if len(name) > NAME_MAX_LENGTH:
        raise SegmentError(segment_id, "name", f"is {len(name)} characters long", f"shorten it to {NAME_MAX_LENGTH}")
    present = {field for field in _OPTIONAL_FIELDS if not _is_empty(row.get(field))}
    for field in sorted(_REQUIRED[kind] - present):
        raise SegmentError(segment_id, field, f"is missing for a {kind.value} segment", _FIX_MISSING[field])
    for field in sorted(present - _REQUIRED[kind]):
        raise SegmentError(
            segment_id,
            field,
            f"is set but a {kind.value} segment does not use it",
            f"set {field} to NULL, or change kind to one that uses it",
        )
    return Segment(
        segment_id=segment_id,
        name=name.strip(),
        kind=kind,
        query=_query(segment_id, row["query"]) if "query" in present else None,
        run_at=_run_at(segment_id, row["run_at"]) if "run_at" in present else None,
        rule=_rule(segment_id, kind, row["rule"]) if "rule" in present else None,
        enabled=_enabled(segment_id, row.get("enabled", True)),
        source=source,
        max_shrink_pct=_max_shrink_pct(segment_id, kind, row.get("max_shrink_pct")),
        owner=_owner(segment_id, row.get("owner")),
        labels=_labels(segment_id, row.get("labels")),
    )


_FIX_MISSING = {
    "query": "set query to a HiveQL SELECT whose first column is the user id",
    "run_at": "set run_at to the UTC date and time of the single run, e.g. '2026-12-01 09:00:00'",
    "rule": "set rule to the segment's JSON rule (a proxy rule over the user tags, or a composite's set expression)",
}


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _segment_id(row: Mapping[str, Any]) -> str:
    raw = row.get("segment_id")
    shown = str(raw) if raw is not None else "<missing>"
    if not isinstance(raw, str) or not SEGMENT_ID_PATTERN.fullmatch(raw):
        raise SegmentError(
            shown,
            "segment_id",
            "is not a lower-case slug",
            "use lower-case letters, digits and '_', starting with a letter (e.g. 'high_value_users')",
        )
    if len(raw) > SEGMENT_ID_MAX_LENGTH:
        raise SegmentError(
            raw, "segment_id", f"is {len(raw)} characters long", f"shorten it to {SEGMENT_ID_MAX_LENGTH}"
        )
    return raw


def _kind(segment_id: str, raw: object) -> Kind:
    try:
        return Kind(raw)
    except ValueError:
        allowed = ", ".join(repr(k.value) for k in Kind)
        raise SegmentError(segment_id, "kind", f"is {raw!r}", f"use one of {allowed}") from None


def _query(segment_id: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise SegmentError(segment_id, "query", "is not text", "store the HiveQL SELECT as a string")
    query = raw.strip().rstrip(";").strip()
    if not query:
        raise SegmentError(segment_id, "query", "is empty", _FIX_MISSING["query"])
    size = len(query.encode("utf-8", "surrogatepass"))
    if size > QUERY_MAX_BYTES:
        raise SegmentError(
            segment_id,
            "query",
            f"is {size:,} bytes long",
            f"shorten it to {QUERY_MAX_BYTES:,} bytes (what funnel_segments.query holds): move lists into a table",
        )
    check_template(segment_id, query)  # only the run's dates; no conn, var, ti or attribute walks
    return query


def _run_at(segment_id: str, raw: object) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        return as_utc(raw)
    if not isinstance(raw, str):
        raise SegmentError(segment_id, "run_at", f"is {raw!r}", "write it as ISO-8601 in UTC")
    try:
        return parse_utc(raw)
    except TimeRefused:
        raise SegmentError(
            segment_id,
            "run_at",
            f"is {raw!r}, not a date and time",
            "write it as ISO-8601 in UTC, e.g. '2026-12-01 09:00:00'",
        ) from None


def _rule(segment_id: str, kind: Kind, raw: object) -> str:
    """A proxy rule (``funnel.core.proxy_rule``) or a composite's set expression
    (``funnel.core.composite_expr``), validated, as canonical JSON of what the author wrote: a
    proxy leaf without ``days`` takes the setting ``new_user_days`` when it is evaluated, so
    changing the setting needs no catalog edit."""
    if kind is Kind.COMPOSITE:
        from funnel.core.composite_expr import parse_expression, to_json

        return json.dumps(to_json(parse_expression(segment_id, raw)), separators=(",", ":"))
    from funnel.core.proxy_rule import parse_rule

    parse_rule(segment_id, raw, default_days=1)  # names any error; days default at evaluation
    if isinstance(raw, str):
        raw = json.loads(raw)
    return json.dumps(raw, sort_keys=True, separators=(",", ":"))


def _enabled(segment_id: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise SegmentError(segment_id, "enabled", f"is {raw!r}", "use true or false")


def _max_shrink_pct(segment_id: str, kind: Kind, raw: object) -> float | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    fix = "set max_shrink_pct to a percentage from 0 to 100, or NULL for the global setting"
    if kind is Kind.PROXY:
        raise SegmentError(segment_id, "max_shrink_pct", "is set but a proxy segment has no refresh", fix)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SegmentError(segment_id, "max_shrink_pct", f"is {raw!r}, not a number", fix) from None
    if not 0 <= value <= 100:
        raise SegmentError(segment_id, "max_shrink_pct", f"is {value}, outside 0..100", fix)
    return value


def selected(owner: str | None, labels: Iterable[str], want_owner: str | None, want_labels: Iterable[str]) -> bool:
    """A segment's ``owner`` and ``labels`` pass the filters: its owner is ``want_owner`` (any
    case; None: any owner) and it has every one of ``want_labels``."""
    if want_owner is not None and (owner or "").casefold() != want_owner.strip().casefold():
        return False
    return set(want_labels) <= set(labels or ())


def _owner(segment_id: str, raw: object) -> str | None:
    if _is_empty(raw):
        return None
    fix = "set owner to a team's name or an e-mail address (one line), or leave it empty"
    if not isinstance(raw, str):
        raise SegmentError(segment_id, "owner", f"is {raw!r}, not text", fix)
    owner = raw.strip()
    if len(owner) > OWNER_MAX_LENGTH:
        raise SegmentError(segment_id, "owner", f"is {len(owner)} characters long", f"shorten it to {OWNER_MAX_LENGTH}")
    if not owner.isprintable():
        raise SegmentError(segment_id, "owner", "holds a line break or a control character", fix)
    return owner


def _labels(segment_id: str, raw: object) -> tuple[str, ...]:
    """A JSON list of slugs (or its JSON text, as MySQL's JSON column returns it)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ()
    fix = f'set labels to a JSON list of up to {LABELS_MAX} lower-case slugs, e.g. ["growth", "nl"]'
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SegmentError(segment_id, "labels", "is not valid JSON", fix) from None
    if not isinstance(raw, list | tuple):
        raise SegmentError(segment_id, "labels", f"is {type(raw).__name__}, not a list", fix)
    if len(raw) > LABELS_MAX:
        raise SegmentError(segment_id, "labels", f"has {len(raw)} labels", fix)
    for label in raw:
        if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
            raise SegmentError(segment_id, "labels", f"holds {str(label)[:70]!r}, not a lower-case slug", fix)
    return tuple(sorted(set(raw)))
