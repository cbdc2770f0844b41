"""A definition as a revision records it: JSON values, compared field by field."""

from __future__ import annotations

import datetime as dt
import decimal

from funnel.core.segment_revisions import DEFINITION_FIELDS, changed_fields, definition


def test_a_definition_holds_every_field_as_a_json_value() -> None:
    row = {
        "segment_id": "launch",
        "name": "Launch",
        "kind": "static",
        "query": "SELECT user_id FROM t",
        "run_at": dt.datetime(2026, 11, 20, 9, 0),  # MySQL's naive UTC
        "max_shrink_pct": decimal.Decimal("12.50"),
        "enabled": 1,
    }
    assert definition(row) == {
        "segment_id": "launch",
        "name": "Launch",
        "kind": "static",
        "query": "SELECT user_id FROM t",
        "run_at": "2026-11-20T09:00:00",
        "rule": None,
        "max_shrink_pct": 12.5,
        "enabled": True,
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
