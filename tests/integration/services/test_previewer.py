"""Previews (``funnel.services.previewer`` and ``python -m funnel.cli preview``) against the real services:
what a segment would hold and change, with nothing written to Redis or MySQL."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import insert_segments, load_tags, mysql_fingerprint, redis_dump

from funnel import settings, wiring
from funnel.cli.main import main
from funnel.core.errors import (
    HiveQueryCancelled,
    HiveQueryError,
    PreviewError,
    PreviewTimeout,
    SegmentError,
    UnknownSegment,
    UserIdError,
)
from funnel.core.refresh_guards import guard_violation
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.services.catalog import validate_rows
from funnel.services.preview_values import Preview, PreviewRequest
from funnel.services.refresh import RefreshRequest
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

#: 100,000,000 rows in 1,000 partitions: the Spark Thrift Server (incrementalCollect) computes a
#: partition at a time as it is fetched, so only a cap or a cancel ends it in reasonable time.
ENDLESS_QUERY = "SELECT id FROM range(0, 100000000, 1, 1000)"
#: Keeps HiveServer2 busy for minutes before its first row (tests/integration/storage/test_hive_query.py).
SLOW_QUERY = "SELECT a.id FROM range(100000) a CROSS JOIN range(100000) b WHERE a.id + b.id < 0"
NOW = dt.datetime.now(dt.UTC)


def refresh(redis_client: Any, segment_id: str, members: list[str]) -> None:
    """Make a version of ``segment_id`` live, as its Airflow task would."""
    run = RunInfo("funnel_test_preview", f"scheduled__{segment_id}", dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC))
    with wiring.refresher(redis_client=redis_client) as refresher:
        lock = wiring.segment_lock(redis_client, segment_id, {"run_id": run.run_id})
        refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, run), lambda: iter([members]), lock)


def dynamic(segment_id: str, query: str = "SELECT id FROM range(10)") -> dict[str, Any]:
    return {"segment_id": segment_id, "name": segment_id.title(), "kind": "dynamic", "query": query}


def proxy(segment_id: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {"segment_id": segment_id, "name": segment_id.title(), "kind": "proxy", "rule": json.dumps(rule)}


BUYERS = {"tag": "order_count", "op": ">=", "value": 5}
NEW_BUYERS = {"all": [{"tag": "order_count", "op": ">=", "value": 1}, {"tag": "new_user", "days": 30}]}


@pytest.fixture
def world(mysql_conn: Any, redis_client: Any, hive_conn: Any) -> Any:
    """Live segments: ``evens`` (0, 2, ... 98: 50 ids), ``low`` (0..9), ``big`` (0..199), ``never``
    (no version), the proxies ``buyers`` (5..9) and ``new_buyers`` (1..9 odd: new users with an
    order); users 0..9 have tags, order count = id, odd ids signed up a day ago, even ones a year ago."""
    insert_segments(
        mysql_conn,
        dynamic("evens"),
        dynamic("low"),
        dynamic("big"),
        dynamic("never"),
        proxy("buyers", BUYERS),
        proxy("new_buyers", NEW_BUYERS),
    )
    refresh(redis_client, "evens", [str(i) for i in range(0, 100, 2)])
    refresh(redis_client, "low", [str(i) for i in range(10)])
    refresh(redis_client, "big", [str(i) for i in range(200)])
    signed_up = {True: NOW - dt.timedelta(days=1), False: NOW - dt.timedelta(days=365)}
    load_tags(redis_client, [(str(i), signed_up[i % 2 == 1], i) for i in range(10)], NOW - dt.timedelta(hours=1))
    return redis_client


@pytest.fixture
def unchanged(world: Any, mysql_conn: Any) -> Iterator[None]:
    """Fails the test if anything in Redis or MySQL changed while it ran."""
    before = (redis_dump(world), mysql_fingerprint(mysql_conn))
    yield
    assert redis_dump(world) == before[0]
    assert mysql_fingerprint(mysql_conn) == before[1]


def preview(**request: Any) -> Preview:
    with wiring.previewer() as previewer:
        return previewer.preview(PreviewRequest(**request))


def overlaps(answer: Preview) -> dict[str, tuple[int | None, int | None]]:
    return {item.segment_id: (item.overlap, item.size) for item in answer.overlap}


def test_a_query_for_an_existing_segment_shows_size_sample_overlap_and_its_changes(unchanged: None) -> None:
    answer = preview(segment_id="evens", query="SELECT id AS user_id FROM range(0, 60)")
    assert (answer.segment_id, answer.kind, answer.size, answer.capped) == ("evens", "dynamic", 60, False)
    assert (answer.rows_read, answer.null_ids) == (60, 0)
    assert answer.sample == [str(i) for i in range(20)]  # the smallest, numeric ids in numeric order
    assert 0 < answer.query_seconds < 60
    assert overlaps(answer) == {
        "big": (60, 200),  # a live set larger than the preview: SMISMEMBER of the preview's ids
        "evens": (30, 50),  # smaller live sets are walked with SSCAN
        "low": (10, 10),
        "never": (None, None),
        "buyers": (5, 5),  # users 5..9: tags evaluated by the rule; one tag: its size is a ZCOUNT
        "new_buyers": (5, 5),  # 1, 3, 5, 7, 9: a combined rule, its size counted in MySQL
    }
    assert next(o.reason for o in answer.overlap if o.segment_id == "never") == "not computed yet: no live version"
    assert all(o.exact for o in answer.overlap)
    live = answer.against_live
    assert live is not None
    assert (live.version, live.size, live.entered, live.exited) == (1, 50, 30, 20)
    assert (live.guard, live.would_refuse, live.reason) == (None, False, None)


def test_the_guards_verdict_is_the_refresh_guards_own(unchanged: None) -> None:
    shrunk = preview(segment_id="evens", query="SELECT id FROM range(0, 10)")
    live = shrunk.against_live
    assert live is not None
    assert (live.entered, live.exited, live.would_refuse) == (5, 45, True)
    assert live.guard == guard_violation("evens", 10, 50, settings.MAX_SHRINK_PCT, force=False)
    assert "the new result has 10 users against 50 live, a 80.0% shrink over the 50% limit" in live.guard
    empty = preview(segment_id="evens", query="SELECT id FROM range(0)")
    assert empty.against_live is not None
    assert empty.against_live.would_refuse
    assert empty.against_live.guard == guard_violation("evens", 0, 50, 50.0, force=False)
    assert empty.sample == []


def test_an_existing_segment_previews_its_own_query_rendered_for_now(world: Any, mysql_conn: Any) -> None:
    query = "SELECT id FROM range(0, 100, 2) WHERE '{{ ds }}' = CAST(current_date() AS STRING)"
    insert_segments(mysql_conn, dynamic("evens", query))  # the catalog row changes; then nothing may
    before = (redis_dump(world), mysql_fingerprint(mysql_conn))
    answer = preview(segment_id="evens")
    assert answer.against_live is not None
    assert (answer.size, answer.against_live.entered, answer.against_live.exited) == (50, 0, 0)
    assert (redis_dump(world), mysql_fingerprint(mysql_conn)) == before


def test_null_ids_are_skipped_and_counted_and_bad_ids_refused_as_a_refresh_refuses_them(unchanged: None) -> None:
    answer = preview(query="SELECT IF(id % 3 = 0, NULL, CAST(id AS STRING)) FROM range(9)")
    assert (answer.segment_id, answer.size, answer.null_ids, answer.rows_read) == (None, 6, 3, 9)
    assert answer.against_live is None
    with pytest.raises(UserIdError) as error:
        preview(query="SELECT concat(CAST(id AS STRING), ' ') FROM range(3)")
    assert str(error.value).startswith("segment 'preview': query returned user id '0 ', which has leading or ")


def test_the_row_cap_stops_the_query_and_cancels_it_on_hiveserver2(
    unchanged: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings, "PREVIEW_MAX_ROWS", 1_000)
    monkeypatch.setattr(settings, "BATCH_SIZE", 300)
    caplog.set_level(logging.INFO, logger="funnel.storage.hive.hive_query")
    started = time.monotonic()
    answer = preview(segment_id="evens", query=ENDLESS_QUERY)
    assert time.monotonic() - started < 30  # all of it would take minutes
    assert (answer.size, answer.capped) == (1_000, True)
    assert answer.rows_read == 1_200  # four fetches of 300: the fourth held the 1,001st id
    assert re.search(r"segment evens: Hive query cancelled \((CANCELED|CLOSED)\) after \d+s", caplog.text)
    assert overlaps(answer)["evens"] == (50, 50)  # ids 0..999 hold every even id below 100
    assert not any(o.exact for o in answer.overlap)
    live = answer.against_live
    assert live is not None
    assert (live.entered, live.exited, live.guard, live.would_refuse) == (None, None, None, False)
    assert live.reason is not None
    assert live.reason.startswith("the preview stopped at preview_max_rows (1,000) ids, so who would enter")


def test_a_capped_result_smaller_than_the_guard_allows_gets_no_verdict(
    unchanged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "PREVIEW_MAX_ROWS", 10)  # 10 of the 50 live: the guard would refuse 10
    live = preview(segment_id="evens", query="SELECT id FROM range(100)").against_live
    assert live is not None
    assert (live.entered, live.exited, live.guard, live.would_refuse) == (None, None, None, None)
    assert "the guards' verdict is known only when the cap passes them" in (live.reason or "")


def test_the_time_limit_cancels_the_query_and_says_which_setting(
    unchanged: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "PREVIEW_TIMEOUT_SECONDS", 2.0)
    started = time.monotonic()
    with pytest.raises(PreviewTimeout) as error:
        preview(query=SLOW_QUERY)
    assert time.monotonic() - started < 2 + 8
    assert str(error.value) == (
        "the preview was still running after preview_timeout_seconds (2 s), so its query was cancelled on "
        "HiveServer2; nothing was written. Fix: narrow the query (a filter, a shorter date range), or raise "
        "[funnel] preview_timeout_seconds"
    )
    assert isinstance(error.value.__cause__, HiveQueryCancelled)  # cancelled on the server, not left running
    assert preview(query="SELECT 1").size == 1  # HiveServer2 is free again


BAD_QUERIES = [
    "DROP TABLE users",
    "SELECT reflect('java.lang.System', 'exit', 0) FROM range(1)",
    "SELECT id FROM text.`/etc/passwd`",
    "SELECT user_id FROM t WHERE pw = '{{ conn.funnel_mysql.password }}'",
    "SELECT 1; SELECT 2",
]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_a_bad_query_gets_the_catalogs_message(unchanged: None, mysql_conn: Any, query: str) -> None:
    row = dynamic("evens", query)
    (catalog_error,) = validate_rows([(row, "mysql")]).errors
    with pytest.raises(SegmentError) as error:
        preview(segment_id="evens", query=query)
    assert str(error.value) == str(catalog_error)
    # a new segment's query is validated under the placeholder id, the same way
    (anonymous,) = validate_rows([({**row, "segment_id": "preview", "name": "preview"}, "mysql")]).errors
    with pytest.raises(SegmentError) as error:
        preview(query=query)
    assert str(error.value) == str(anonymous)


def test_a_bad_catalog_row_previewed_by_id_gets_the_catalogs_message(mysql_conn: Any, world: Any) -> None:
    rows = [dynamic("drops", "DROP TABLE users"), proxy("vips", {"tag": "order_count", "op": "gte", "value": 3})]
    insert_segments(mysql_conn, *rows)
    before = (redis_dump(world), mysql_fingerprint(mysql_conn))
    catalog = validate_rows([(row, "mysql") for row in rows])
    for row, expected in zip(rows, catalog.errors, strict=True):
        with pytest.raises(SegmentError) as error:
            preview(segment_id=row["segment_id"])
        assert str(error.value) == str(expected)
    assert str(catalog.errors[1]).startswith("segment 'vips': field 'rule' has unknown op 'gte' at op. Fix:")
    assert (redis_dump(world), mysql_fingerprint(mysql_conn)) == before


def test_a_bad_rule_gets_the_catalogs_message(unchanged: None) -> None:
    for rule in ({"tag": "order_count", "op": "gte", "value": 3}, '{"tag": "new_user", "days": 3.0}', "{nope"):
        text = rule if isinstance(rule, str) else json.dumps(rule)
        (catalog_error,) = validate_rows([(proxy("preview", {}) | {"rule": text}, "mysql")]).errors
        with pytest.raises(SegmentError) as error:
            preview(rule=rule)
        assert str(error.value) == str(catalog_error)


def test_what_cannot_be_previewed_says_why(unchanged: None) -> None:
    with pytest.raises(UnknownSegment, match=r"^segment 'nosuch' is not in the catalog\. Fix: check the id"):
        preview(segment_id="nosuch")
    with pytest.raises(PreviewError, match=r"^nothing to preview"):
        preview()
    with pytest.raises(PreviewError, match=r"^both a query and a rule were given"):
        preview(query="SELECT 1", rule=BUYERS)
    with pytest.raises(SegmentError, match=r"^segment 'evens': field 'rule' is missing for a proxy segment\. Fix: "):
        preview(segment_id="evens", query="SELECT 1", kind="proxy")
    with pytest.raises(HiveQueryError, match=r"^segment 'preview': Hive query failed: .*TABLE_OR_VIEW_NOT_FOUND"):
        preview(query="SELECT user_id FROM funnel_test_nowhere.no_such_table")


def test_a_proxy_rule_previews_from_the_live_tags(unchanged: None, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = preview(rule=BUYERS)
    assert (answer.segment_id, answer.kind, answer.size, answer.capped) == (None, "proxy", 5, False)
    assert answer.sample == ["5", "6", "7", "8", "9"]
    assert overlaps(answer) == {
        "big": (5, 200),
        "evens": (2, 50),
        "low": (5, 10),
        "never": (None, None),
        "buyers": (5, 5),
        "new_buyers": (3, 5),
    }
    assert answer.against_live is None  # a proxy segment has no versions
    by_id = preview(segment_id="new_buyers")
    assert (by_id.size, by_id.sample) == (5, ["1", "3", "5", "7", "9"])
    monkeypatch.setattr(settings, "PREVIEW_MAX_ROWS", 3)
    capped = preview(segment_id="new_buyers")
    assert (capped.size, capped.capped, capped.sample) == (5, True, ["1", "3", "5"])  # the size stays exact


def test_a_segment_redis_does_not_serve_in_full_is_not_compared(world: Any) -> None:
    world.srem(layout.members_key("low"), "3")
    answer = preview(query="SELECT id FROM range(5)")
    (low,) = [o for o in answer.overlap if o.segment_id == "low"]
    assert (low.overlap, low.size) == (None, 10)
    assert low.reason == (
        "Redis does not serve its live version 1 in full; not compared. Fix: python -m funnel.cli rebuild-redis low"
    )


# ---------------------------------------------------------------------------- the CLI


def test_the_cli_previews_a_query_file_and_prints_it(
    unchanged: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.sql"
    path.write_text("SELECT id FROM range(0, 60)\n")
    assert main(["preview", "evens", "--query-file", str(path), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["segment_id"], answer["size"], answer["capped"]) == ("evens", 60, False)
    assert answer["against_live"] | {"guard": None} == {
        "version": 1,
        "size": 50,
        "entered": 30,
        "exited": 20,
        "guard": None,
        "would_refuse": False,
        "reason": None,
    }
    assert {o["segment_id"]: o["overlap"] for o in answer["overlap"]}["big"] == 60
    assert set(answer) == {
        "segment_id",
        "kind",
        "size",
        "capped",
        "rows_read",
        "null_ids",
        "sample",
        "query_seconds",
        "overlap",
        "against_live",
    }
    assert main(["preview", "evens", "--query-file", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "preview of segment evens (dynamic): 60 users"
    assert out[2] == "  sample: " + ", ".join(str(i) for i in range(20))
    assert out[3] == "  against live version 1 (50): +30 entered, -20 exited"
    assert out[4] == "  guards: pass"
    assert out[5].split() == ["overlap", "with", "kind", "overlap", "size"]
    assert out[6].split() == ["big", "dynamic", "60", "200"]
    assert out[9].split()[:4] == ["never", "dynamic", "-", "-"]


def test_the_cli_reads_a_rule_from_stdin(
    unchanged: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(BUYERS)))
    assert main(["preview", "--file", "-", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["kind"], answer["size"], answer["sample"]) == ("proxy", 5, ["5", "6", "7", "8", "9"])
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT id FROM range(3)"))
    assert main(["preview", "--file", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "dynamic"


def test_the_cli_exits_non_zero_with_the_message_on_bad_input(
    unchanged: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rule.json"
    path.write_text('{"tag": "order_count", "op": "gte", "value": 3}')
    assert main(["preview", "--rule-file", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("preview: segment 'preview': field 'rule' has unknown op 'gte' at op. Fix: ")
    assert main(["preview", "nosuch"]) == 1
    assert "segment 'nosuch' is not in the catalog" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["preview"])
    assert stopped.value.code == 2


def test_preview_request_from_text_reads_a_json_object_as_a_rule() -> None:
    assert PreviewRequest.from_text('{"tag": "new_user"}') == PreviewRequest(rule='{"tag": "new_user"}')
    assert PreviewRequest.from_text("SELECT 1", "s", "static") == PreviewRequest("s", query="SELECT 1", kind="static")
    assert PreviewRequest.from_text("[1, 2]").query == "[1, 2]"


def composite(segment_id: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {"segment_id": segment_id, "name": segment_id.title(), "kind": "composite", "rule": json.dumps(rule)}


def test_a_composite_rule_previews_from_the_operands_live_versions(unchanged: None) -> None:
    answer = preview(rule={"minus": ["big", ["evens", "low"]]})
    odd_above_ten = {str(i) for i in range(11, 200, 2)}
    evens_above_hundred = {str(i) for i in range(100, 200, 2)}
    assert (answer.kind, answer.size, answer.capped) == ("composite", len(odd_above_ten | evens_above_hundred), False)
    assert answer.sample == ["11", "13", "15", "17", "19", "21", "23", "25", "27", "29"] + [
        str(i) for i in range(31, 50, 2)
    ]
    assert {k: v for k, v in overlaps(answer).items() if k in ("big", "evens", "low")} == {
        "big": (145, 200),
        "evens": (0, 50),
        "low": (0, 10),
    }
    assert answer.against_live is None  # a new segment


def test_an_existing_composite_previews_its_next_version_against_its_live_one(mysql_conn: Any, world: Any) -> None:
    from funnel.core.composite_expr import parse_expression
    from funnel.services.composite_input import composite_batches

    rule = {"minus": ["low", "evens"]}
    insert_segments(mysql_conn, composite("odd_low", rule))
    run = RunInfo("funnel_test_preview", "scheduled__odd_low", dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC))
    with wiring.refresher(redis_client=world) as refresher, wiring.composite_source() as source:
        lock = wiring.segment_lock(world, "odd_low", {"run_id": run.run_id})
        batches = composite_batches(
            "odd_low", parse_expression("odd_low", rule), source, run, refresher.note_inputs, 100, logging.getLogger()
        )
        refresher.refresh(RefreshRequest("odd_low", Kind.COMPOSITE, run), batches, lock)
    before = (redis_dump(world), mysql_fingerprint(mysql_conn))

    by_id = preview(segment_id="odd_low")
    assert (by_id.size, by_id.sample) == (5, ["1", "3", "5", "7", "9"])
    assert by_id.against_live is not None
    assert (by_id.against_live.entered, by_id.against_live.exited, by_id.against_live.guard) == (0, 0, None)

    swapped = preview(segment_id="odd_low", rule={"intersect": ["low", "evens"]})
    assert (swapped.size, swapped.sample) == (5, ["0", "2", "4", "6", "8"])
    live = swapped.against_live
    assert live is not None
    assert (live.version, live.size, live.entered, live.exited, live.would_refuse) == (1, 5, 5, 5, False)
    assert (redis_dump(world), mysql_fingerprint(mysql_conn)) == before


def test_a_composite_preview_holds_the_cap(unchanged: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "PREVIEW_MAX_ROWS", 30)
    monkeypatch.setattr(settings, "BATCH_SIZE", 7)
    answer = preview(rule={"union": ["big", "evens"]})
    assert (answer.size, answer.capped, len(answer.sample)) == (30, True, 20)
    assert answer.rows_read <= 35


def test_a_bad_composite_gets_the_catalogs_message(mysql_conn: Any, world: Any) -> None:
    cur = mysql_conn.cursor()
    cur.execute(f"SELECT segment_id, name, kind, query, run_at, rule, enabled FROM {layout.SEGMENTS_TABLE}")
    columns = ("segment_id", "name", "kind", "query", "run_at", "rule", "enabled")
    rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    mysql_conn.commit()
    before = (redis_dump(world), mysql_fingerprint(mysql_conn))
    for rule in (
        {"union": ["evens", "buyers"]},  # a proxy operand
        {"intersect": ["evens", "nosuch"]},  # not in the catalog
        {"union": ["evens"]},  # one operand
        {"minus": ["evens", ["preview"]]},  # itself
    ):
        catalog = validate_rows([(row, "mysql") for row in [*rows, composite("preview", rule)]])
        (expected,) = [error for error in catalog.errors if error.segment_id == "preview"]
        with pytest.raises(SegmentError) as error:
            preview(rule=rule)
        assert str(error.value) == str(expected)
    with pytest.raises(PreviewError, match=r"operand\(s\) 'never' have no live version yet"):
        preview(rule={"union": ["evens", "never"]})
    assert (redis_dump(world), mysql_fingerprint(mysql_conn)) == before
