"""The catalog against a real MySQL: both sources, per-row validation, the last-good snapshot."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from helpers import insert_segments

from funnel import wiring
from funnel.core.errors import CatalogError
from funnel.core.query_check import rules_fingerprint
from funnel.services.catalog import MYSQL_SOURCE, load_catalog
from funnel.storage import catalog_snapshot

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

DYNAMIC = {"name": "Buyers", "kind": "dynamic", "query": "SELECT user_id FROM dw.orders"}


@pytest.fixture
def snapshot_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "catalog.json"
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(path))
    return path


def ids(catalog: Any) -> list[str]:
    return [s.segment_id for s in catalog.segments]


def test_rows_added_or_disabled_show_at_next_read(mysql_conn: Any, snapshot_path: Path) -> None:
    insert_segments(mysql_conn, {"segment_id": "a", **DYNAMIC})
    assert ids(load_catalog(wiring.catalog_hook())) == ["a"]
    insert_segments(mysql_conn, {"segment_id": "b", **DYNAMIC})
    assert ids(load_catalog(wiring.catalog_hook())) == ["a", "b"]
    cur = mysql_conn.cursor()
    cur.execute("UPDATE funnel_segments SET enabled = FALSE WHERE segment_id = 'a'")
    mysql_conn.commit()
    catalog = load_catalog(wiring.catalog_hook())
    assert [(s.segment_id, s.enabled) for s in catalog.segments] == [("a", False), ("b", True)]


def test_variable_rows_join_and_mysql_wins_a_clash(
    mysql_conn: Any, snapshot_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    insert_segments(mysql_conn, {"segment_id": "shared", **DYNAMIC})
    rows = [
        {"segment_id": "shared", "name": "From the Variable", "kind": "dynamic", "query": "SELECT 2"},
        {"segment_id": "only_var", "name": "Var", "kind": "dynamic", "query": "SELECT user_id FROM v"},
    ]
    monkeypatch.setenv("AIRFLOW_VAR_FUNNEL_SEGMENTS", json.dumps(rows))
    with caplog.at_level(logging.WARNING):
        catalog = load_catalog(wiring.catalog_hook())
    assert ids(catalog) == ["only_var", "shared"]
    shared = catalog.segments[1]
    assert (shared.name, shared.source) == ("Buyers", MYSQL_SOURCE)
    assert catalog.segments[0].source == "Airflow Variable funnel_segments"
    assert "'shared' is defined in both MySQL table funnel_segments and Airflow Variable funnel_segments" in caplog.text


def test_malformed_variable_is_an_error_not_a_crash(
    mysql_conn: Any, snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_segments(mysql_conn, {"segment_id": "a", **DYNAMIC})
    monkeypatch.setenv("AIRFLOW_VAR_FUNNEL_SEGMENTS", '{"segment_id": "x"}')
    catalog = load_catalog(wiring.catalog_hook())
    assert ids(catalog) == ["a"]
    assert [str(e) for e in catalog.errors] == [
        "segment 'variable:funnel_segments': field 'value' is not a JSON list of objects. Fix: set the "
        "Variable funnel_segments to a JSON list of objects with the columns of funnel_segments"
    ]


def test_each_invalid_row_is_reported_while_the_others_build(mysql_conn: Any, snapshot_path: Path) -> None:
    insert_segments(
        mysql_conn,
        {"segment_id": "good", **DYNAMIC},
        {"segment_id": "drops", **DYNAMIC, "query": "DROP TABLE dw.orders"},
        {"segment_id": "no_run_at", **DYNAMIC, "kind": "static"},
        {"segment_id": "stray_rule", **DYNAMIC, "rule": '{"tag": "x"}'},
        {"segment_id": "Bad Id", **DYNAMIC},
    )
    catalog = load_catalog(wiring.catalog_hook())
    assert ids(catalog) == ["good"]
    errors = sorted(str(e) for e in catalog.errors)
    assert errors[0].startswith("segment 'Bad Id': field 'segment_id' is not a lower-case slug")
    assert errors[1].startswith("segment 'drops': field 'query' contains DROP")
    assert errors[2].startswith("segment 'no_run_at': field 'run_at' is missing for a static segment")
    assert errors[3].startswith("segment 'stray_rule': field 'rule' is set but a dynamic segment does not use it")


def test_mysql_down_builds_from_last_good_snapshot(
    mysql_conn: Any, snapshot_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    insert_segments(mysql_conn, {"segment_id": "a", **DYNAMIC}, {"segment_id": "b", **DYNAMIC})
    online = load_catalog(wiring.catalog_hook())
    assert snapshot_path.exists()
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", "mysql://root@127.0.0.1:1/funnel_test")
    with caplog.at_level(logging.WARNING):
        offline = load_catalog(wiring.catalog_hook())
    assert offline.from_snapshot
    assert offline.segments == online.segments
    assert "building 2 segments from the last-good snapshot" in caplog.text


def test_mysql_down_without_snapshot_says_what_to_fix(snapshot_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", "mysql://root@127.0.0.1:1/funnel_test")
    with pytest.raises(CatalogError, match=r"no last-good snapshot at .*Fix: make MySQL connection 'funnel_mysql'"):
        load_catalog(wiring.catalog_hook())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a hung MySQL)."""
    with helpers.silent_server() as port:
        yield port


def test_hung_mysql_times_out_quickly_and_uses_snapshot(
    mysql_conn: Any, snapshot_path: Path, monkeypatch: pytest.MonkeyPatch, silent_server: int
) -> None:
    insert_segments(mysql_conn, {"segment_id": "a", **DYNAMIC})
    load_catalog(wiring.catalog_hook())
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", f"mysql://root@127.0.0.1:{silent_server}/funnel_test")
    started = time.monotonic()
    catalog = load_catalog(wiring.catalog_hook())
    elapsed = time.monotonic() - started
    assert catalog.from_snapshot
    assert ids(catalog) == ["a"]
    assert elapsed < 10


def test_snapshot_remembers_checked_queries(mysql_conn: Any, snapshot_path: Path) -> None:
    insert_segments(mysql_conn, {"segment_id": "a", **DYNAMIC})
    load_catalog(wiring.catalog_hook())
    saved = catalog_snapshot.load(str(snapshot_path))
    assert saved is not None
    assert saved.checked_queries == {catalog_snapshot.query_digest(DYNAMIC["query"], rules_fingerprint())}
    assert saved.rows[0]["segment_id"] == "a"


def test_a_query_checked_under_older_rules_is_checked_again() -> None:
    from funnel.services.catalog import validate_rows

    # The snapshot of an older funnel remembered this query as checked (it let reflect() pass).
    evil = "SELECT reflect('java.lang.System', 'exit', 0) FROM dw.users"
    old_digest = catalog_snapshot.query_digest(evil)
    catalog = validate_rows([({"segment_id": "evil", **DYNAMIC, "query": evil}, MYSQL_SOURCE)], {old_digest}, None)
    assert catalog.segments == []
    assert "calls reflect(), which runs an arbitrary Java method inside HiveServer2" in str(catalog.errors[0])


def test_new_queries_past_the_parse_budget_build_and_are_checked_later() -> None:
    from funnel.services.catalog import validate_rows

    rows = [
        ({"segment_id": "good", **DYNAMIC}, MYSQL_SOURCE),
        ({"segment_id": "evil", **DYNAMIC, "query": "DROP TABLE dw.orders"}, MYSQL_SOURCE),
    ]
    hurried = validate_rows(rows, check_budget_seconds=0)
    assert (ids(hurried), hurried.unchecked, hurried.errors, hurried.checked_queries) == (
        ["evil", "good"],
        2,
        [],
        set(),
    )
    thorough = validate_rows(rows, hurried.checked_queries, check_budget_seconds=None)
    assert ids(thorough) == ["good"]
    assert [e.segment_id for e in thorough.errors] == ["evil"]
