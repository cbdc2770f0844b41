"""A definition as a revision records it: JSON values, compared field by field."""

from __future__ import annotations

import datetime as dt
import decimal

from funnel.core.segment import segment_from_row
from funnel.core.segment_revisions import (
    DEFINITION_FIELDS,
    Revision,
    catalog_revisions,
    changed_fields,
    definition,
    digest,
    segment_definition,
)
from funnel.core.states import RevisionChange


def test_a_definition_holds_every_field_as_a_json_value() -> None:
    row = {
        "segment_id": "launch",
        "name": "Launch",
        "kind": "static",
        "query": "SELECT user_id FROM t",
        "run_at": dt.datetime(2026, 11, 20, 9, 0),  # MySQL's naive UTC
        "max_shrink_pct": decimal.Decimal("12.50"),
        "enabled": 1,
        "labels": '["growth", "nl"]',  # MySQL's JSON column
    }
    assert definition(row) == {
        "segment_id": "launch",
        "name": "Launch",
        "kind": "static",
        "query": "SELECT user_id FROM t",
        "run_at": "2026-11-20T09:00:00+00:00",
        "rule": None,
        "max_shrink_pct": 12.5,
        "enabled": True,
        "owner": None,
        "labels": ["growth", "nl"],
    }
    assert tuple(definition(row)) == DEFINITION_FIELDS


def test_a_rule_compares_as_json_not_as_its_spelling() -> None:
    spaced, tight = definition({"rule": '{"tag": "new_user"}'}), definition({"rule": '{"tag":"new_user"}'})
    assert spaced["rule"] == {"tag": "new_user"}
    assert changed_fields(spaced, tight) == {}
    assert definition({"rule": "{oops"})["rule"] == "{oops"  # kept as written; the catalog names it


def test_changed_fields_are_the_differing_ones_in_order() -> None:
    before = definition({"segment_id": "s", "name": "Old", "kind": "dynamic", "enabled": True})
    after = {**before, "name": "New", "enabled": False}
    assert changed_fields(before, after) == {"name": ["Old", "New"], "enabled": [True, False]}
    assert list(changed_fields({}, after)) == ["segment_id", "name", "kind", "enabled"]


def test_a_valid_segment_has_the_definition_and_digest_of_the_row_stored_for_it() -> None:
    written = {
        "segment_id": "launch",
        "name": "  Launch ",
        "kind": "static",
        "query": "SELECT user_id FROM t;",
        "run_at": "2026-11-20T10:00:00+01:00",
        "rule": None,
        "labels": ["nl", "growth", "nl"],
        "owner": "growth@example.com",
    }
    stored = {  # what the write path stores for it, as MySQL gives it back
        **written,
        "name": "Launch",
        "query": "SELECT user_id FROM t",
        "run_at": dt.datetime(2026, 11, 20, 9, 0),
        "labels": '["growth", "nl"]',
        "enabled": 1,
    }
    segment = segment_from_row(written)
    assert segment_definition(segment) == definition(stored)
    assert digest(segment_definition(segment)) == digest(definition(stored))
    assert digest(definition(stored)) != digest({**definition(stored), "owner": "someone-else"})


def test_no_labels_is_null_however_the_row_says_it() -> None:
    assert {definition({"labels": raw})["labels"] for raw in (None, "[]", [], ())} == {None}


def test_a_digest_ignores_key_order_and_is_hex_sha256() -> None:
    one, two = {"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}
    assert digest(one) == digest(two)
    assert len(digest(one)) == 64
    assert set(digest(one)) <= set("0123456789abcdef")


def _revision(segment_id: str, number: int, change: RevisionChange, definition_: dict) -> Revision:
    return Revision(segment_id, number, change, "cli:ann", dt.datetime(2026, 12, 1, tzinfo=dt.UTC), definition_, {})


def test_a_parse_records_what_changed_outside_the_write_path() -> None:
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    same = definition({"segment_id": "same", "name": "Same", "kind": "dynamic", "query": "SELECT 1"})
    edited = definition({"segment_id": "edited", "name": "New", "kind": "dynamic", "query": "SELECT 1"})
    back = definition({"segment_id": "back", "name": "Back", "kind": "dynamic", "query": "SELECT 1"})
    new = definition({"segment_id": "new", "name": "New", "kind": "dynamic", "query": "SELECT 1"})
    latest = {
        "same": _revision("same", 2, RevisionChange.EDITED, same),
        "edited": _revision("edited", 1, RevisionChange.CREATED, {**edited, "name": "Old"}),
        "back": _revision("back", 3, RevisionChange.RETIRED, back),
        "gone": _revision("gone", 4, RevisionChange.EDITED, {**same, "segment_id": "gone"}),
        "broken": _revision("broken", 1, RevisionChange.CREATED, {**same, "segment_id": "broken"}),
        "was_retired": _revision("was_retired", 2, RevisionChange.RETIRED, same),
    }
    current = {"same": same, "edited": edited, "back": back, "new": new}
    found = catalog_revisions(current, latest, {"broken"}, now)
    assert [(r.segment_id, r.revision, r.change.value, r.actor) for r in found] == [
        ("back", 4, "catalog", "catalog"),
        ("edited", 2, "catalog", "catalog"),
        ("new", 1, "catalog", "catalog"),
        ("gone", 5, "retired", "catalog"),
    ]
    assert found[1].changed == {"name": ["Old", "New"]}
    assert list(found[2].changed) == ["segment_id", "name", "kind", "query"]  # the fields it has
    assert (found[3].definition, found[3].at) == (latest["gone"].definition, now)  # kept, for a restore
    assert catalog_revisions(current, {**latest, **{r.segment_id: r for r in found}}, {"broken"}, now) == []
