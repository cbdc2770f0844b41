"""A catalog row becomes a Segment, or an error naming the segment, the field and the fix."""

from __future__ import annotations

import datetime as dt

import pytest

from funnel.core.errors import SegmentError
from funnel.core.segment import Kind, segment_from_row

DYNAMIC = {"segment_id": "buyers", "name": "Buyers", "kind": "dynamic", "query": "SELECT user_id FROM t"}
STATIC = {
    "segment_id": "bf",
    "name": "Black Friday",
    "kind": "static",
    "query": "SELECT user_id FROM t",
    "run_at": "2026-11-27 09:00:00",
}


def test_dynamic_row_becomes_segment() -> None:
    segment = segment_from_row({**DYNAMIC, "query": "  SELECT user_id FROM t ; "})
    assert segment.kind is Kind.DYNAMIC
    assert segment.query == "SELECT user_id FROM t"
    assert segment.enabled is True
    assert segment.run_at is None


def test_static_run_at_is_utc_aware() -> None:
    assert segment_from_row(STATIC).run_at == dt.datetime(2026, 11, 27, 9, tzinfo=dt.UTC)
    from_mysql = segment_from_row({**STATIC, "run_at": dt.datetime(2026, 11, 27, 9)})
    assert from_mysql.run_at == dt.datetime(2026, 11, 27, 9, tzinfo=dt.UTC)


def test_proxy_rule_is_canonical_json() -> None:
    row = {
        "segment_id": "vips",
        "name": "VIP",
        "kind": "proxy",
        "rule": '{"value": 3, "op": ">=", "tag": "order_count"}',
    }
    assert segment_from_row(row).rule == '{"op":">=","tag":"order_count","value":3}'


@pytest.mark.parametrize(
    ("row", "field", "fix"),
    [
        ({**DYNAMIC, "segment_id": "Bad-Id"}, "segment_id", "lower-case letters"),
        ({**DYNAMIC, "segment_id": "x" * 65}, "segment_id", "shorten it to 64"),
        ({**DYNAMIC, "segment_id": "nl_seg\n"}, "segment_id", "lower-case letters"),  # `$` matched before \n
        ({**DYNAMIC, "segment_id": "a\nb"}, "segment_id", "lower-case letters"),
        ({**DYNAMIC, "kind": "weekly"}, "kind", "'static', 'dynamic', 'proxy'"),
        ({**DYNAMIC, "name": " "}, "name", "human-readable name"),
        ({**DYNAMIC, "query": None}, "query", "HiveQL SELECT"),
        ({**STATIC, "run_at": None}, "run_at", "UTC date and time"),
        ({**STATIC, "run_at": "next tuesday"}, "run_at", "ISO-8601"),
        ({**DYNAMIC, "run_at": "2026-11-27 09:00:00"}, "run_at", "set run_at to NULL"),
        ({"segment_id": "p", "name": "P", "kind": "proxy", "rule": "{nope"}, "rule", "is not valid JSON"),
        ({"segment_id": "p", "name": "P", "kind": "proxy", "rule": '{"tag": "spend"}'}, "rule", "new_user"),
        ({**DYNAMIC, "enabled": "maybe"}, "enabled", "true or false"),
        ({**DYNAMIC, "max_shrink_pct": 150}, "max_shrink_pct", "from 0 to 100"),
        ({**DYNAMIC, "max_shrink_pct": "lots"}, "max_shrink_pct", "from 0 to 100"),
        (
            {"segment_id": "p", "name": "P", "kind": "proxy", "rule": '{"tag": "new_user"}', "max_shrink_pct": 10},
            "max_shrink_pct",
            "NULL",
        ),
        ({**DYNAMIC, "owner": 7}, "owner", "team's name or an e-mail"),
        ({**DYNAMIC, "owner": "growth\nteam"}, "owner", "one line"),
        ({**DYNAMIC, "owner": "x" * 256}, "owner", "shorten it to 255"),
        ({**DYNAMIC, "labels": "growth"}, "labels", "JSON list"),
        ({**DYNAMIC, "labels": {"a": 1}}, "labels", "JSON list"),
        ({**DYNAMIC, "labels": ["Growth"]}, "labels", "lower-case slugs"),
        ({**DYNAMIC, "labels": [1]}, "labels", "lower-case slugs"),
        ({**DYNAMIC, "labels": [f"l{i}" for i in range(21)]}, "labels", "up to 20"),
    ],
)
def test_invalid_rows_name_segment_field_and_fix(row: dict, field: str, fix: str) -> None:
    with pytest.raises(SegmentError) as caught:
        segment_from_row(row)
    assert caught.value.field == field
    message = str(caught.value)
    assert f"field {field!r}" in message
    assert fix in message
    assert "segment " in message


def test_segments_sort_by_id() -> None:
    rows = [{**DYNAMIC, "segment_id": sid} for sid in ("c", "a", "b")]
    assert [s.segment_id for s in sorted(segment_from_row(r) for r in rows)] == ["a", "b", "c"]


def test_per_segment_shrink_limit() -> None:
    assert segment_from_row({**DYNAMIC, "max_shrink_pct": "80.5"}).max_shrink_pct == 80.5
    assert segment_from_row(DYNAMIC).max_shrink_pct is None


def test_owner_and_labels() -> None:
    segment = segment_from_row({**DYNAMIC, "owner": " growth@example.com ", "labels": '["nl", "growth", "nl"]'})
    assert segment.owner == "growth@example.com"
    assert segment.labels == ("growth", "nl")  # sorted, each once
    assert segment_from_row({**DYNAMIC, "owner": "", "labels": None}).labels == ()
    assert segment_from_row({**DYNAMIC, "owner": "  "}).owner is None


def test_a_query_longer_than_the_catalog_column_is_refused_before_any_store() -> None:
    long_list = ", ".join(str(i) for i in range(20_000))
    with pytest.raises(SegmentError) as caught:
        segment_from_row({**DYNAMIC, "query": f"SELECT user_id FROM t WHERE id IN ({long_list})"})
    assert (caught.value.field, "bytes long" in str(caught.value)) == ("query", True)
    assert "shorten it to 65,535 bytes" in str(caught.value)
