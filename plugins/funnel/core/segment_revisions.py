"""A segment's definition as a revision records it, and what changed between two. Pure.

A definition is the catalog row's fields (``DEFINITION_FIELDS``) as JSON values: a time as its
ISO text in UTC, a rule as its JSON value, ``max_shrink_pct`` as a number, ``enabled`` as a boolean,
labels as a list (none: null), so that two definitions compare field by field, and their
``digest``s are equal, whatever store they were read from.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from funnel.core.errors import TimeRefused
from funnel.core.segment import Segment
from funnel.core.states import RevisionChange
from funnel.core.utc_time import as_utc, parse_utc

#: The columns of a catalog row (``funnel_segments``, the Airflow Variable's objects).
DEFINITION_FIELDS = (
    "segment_id",
    "name",
    "kind",
    "query",
    "run_at",
    "rule",
    "max_shrink_pct",
    "enabled",
    "owner",
    "labels",
)


def definition(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's definition fields as JSON values (absent fields are null)."""
    return {name: _json_value(name, row.get(name)) for name in DEFINITION_FIELDS}


def segment_definition(segment: Segment) -> dict[str, Any]:
    """A valid segment's definition: what ``definition`` gives for the row the write path stores
    for it (so a version finds the revision it was computed from by ``digest``)."""
    fields = {name: getattr(segment, name) for name in DEFINITION_FIELDS}
    fields["kind"] = segment.kind.value
    return definition(fields)


def digest(definition: Mapping[str, Any]) -> str:
    """The definition's SHA-256 (hex): equal definitions, equal digests, whatever the key order."""
    return json_digest(dict(definition))


def json_digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (keys sorted, no spaces; other values as text)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _json_value(name: str, value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat()  # MySQL's DATETIME is naive UTC
    if name == "run_at" and isinstance(value, str):
        try:
            return parse_utc(value).isoformat()  # one spelling of a time, whoever wrote it
        except TimeRefused:
            return value  # not a time: kept as written (the catalog refuses it, naming the field)
    if name == "labels":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value  # not JSON: kept as written (the catalog refuses it, naming the field)
        if isinstance(value, list | tuple):
            return list(value) or None  # no labels: null, however the row says it
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if name == "rule" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # not JSON: kept as written (the catalog refuses it, naming the field)
    if name == "enabled" and value is not None:
        return bool(value)
    return value


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Each field whose value differs: ``{field: [before, after]}``, in ``DEFINITION_FIELDS`` order."""
    return {
        name: [before.get(name), after.get(name)] for name in DEFINITION_FIELDS if before.get(name) != after.get(name)
    }


@dataclass(frozen=True)
class Revision:
    """One change of a segment's definition: its number (1 is the segment's creation), what it
    did, who did it and when, the definition after it and what it changed."""

    segment_id: str
    revision: int
    change: RevisionChange
    actor: str
    at: dt.datetime
    definition: dict[str, Any]
    changed: dict[str, list[Any]]
    comment: str | None = None

    def public(self) -> dict[str, Any]:
        """The revision as the CLI's ``--json`` (and the API) show it."""
        return {
            "segment_id": self.segment_id,
            "revision": self.revision,
            "change": self.change.value,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "definition": self.definition,
            "changed": self.changed,
            "comment": self.comment,
        }


#: Who changes made outside funnel's write path (a row written by hand, the Airflow Variable) are
#: recorded as, when a parse finds them.
CATALOG_ACTOR = "catalog"


def catalog_revisions(
    current: Mapping[str, dict[str, Any]],
    latest: Mapping[str, Revision],
    unreadable: frozenset[str] | set[str],
    now: dt.datetime,
) -> list[Revision]:
    """What a parse records of changes made outside the write path: a ``catalog`` revision for
    each segment whose definition (``current``: each valid catalog row's, by id) differs from its
    latest revision's, or has none, or was retired and is back; a ``retired`` one for each
    segment whose row is gone (its latest revision not a retire). ``unreadable``: ids whose row
    is there but invalid: neither recorded nor retired (its error DAG says what is wrong)."""
    found = []
    for segment_id, now_definition in sorted(current.items()):
        last = latest.get(segment_id)
        retired = last is not None and last.change is RevisionChange.RETIRED
        # definition(): a revision written by an older funnel lacks newer fields or spelled a time otherwise
        if last is not None and not retired and digest(definition(last.definition)) == digest(now_definition):
            continue
        before = {} if last is None or retired else last.definition
        number = 1 if last is None else last.revision + 1
        found.append(
            Revision(
                segment_id,
                number,
                RevisionChange.CATALOG,
                CATALOG_ACTOR,
                now,
                dict(now_definition),
                changed_fields(before, now_definition),
            )
        )
    for segment_id, last in sorted(latest.items()):
        if segment_id in current or segment_id in unreadable or last.change is RevisionChange.RETIRED:
            continue
        found.append(
            Revision(segment_id, last.revision + 1, RevisionChange.RETIRED, CATALOG_ACTOR, now, last.definition, {})
        )
    return found
