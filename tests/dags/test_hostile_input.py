"""Hostile and odd input, table-driven: segment rows a careless or malicious author could
write, and user ids a warehouse could return.

Every bad row becomes a ``funnel_invalid_<id>`` DAG whose description names the segment,
the field and the fix, while the good rows build; no bad query ever reaches Hive. Every
user id is either stored exactly as returned in both stores, or fails the refresh with the
id named and nothing swapped. ``docs/reliability.md`` lists them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import hive_execute, hive_first_column, mysql_live_members, redis_live_members

from funnel.airflow.dag_factory import invalid_dag_id
from funnel.airflow.refresh_operators import SegmentRefreshOperator
from funnel.core.dag_plan import DYNAMIC_DAG_ID
from funnel.core.errors import FunnelError

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

Q = "SELECT user_id FROM funnel_test.victim"


def dynamic(segment_id: str, query: str) -> dict[str, Any]:
    return {"segment_id": segment_id, "name": segment_id, "kind": "dynamic", "query": query}


# (row, field, words the error must hold)
HOSTILE_ROWS: list[tuple[dict[str, Any], str, str]] = [
    # Code execution on HiveServer2 through a function call (the first hole).
    (dynamic("exit_jvm", "SELECT reflect('java.lang.System', 'exit', 0) FROM t"), "query", "calls reflect()"),
    (dynamic("sleep", "SELECT java_method('java.lang.Thread', 'sleep', 3000L) FROM t"), "query", "java_method()"),
    (dynamic("refl2", "SELECT reflect2(user_id, 'getClass') FROM t"), "query", "calls reflect2()"),
    (dynamic("tryrefl", "SELECT try_reflect('java.lang.Runtime', 'getRuntime') FROM t"), "query", "try_reflect()"),
    (dynamic("infile", "SELECT user_id FROM t WHERE in_file(user_id, '/etc/passwd')"), "query", "calls in_file()"),
    (dynamic("nested", "SELECT upper(concat(reflect('a', 'b'), 'x')) FROM t"), "query", "calls reflect()"),
    (dynamic("in_cte", "WITH x AS (SELECT java_method('a', 'b') AS u FROM t) SELECT u FROM x"), "query", "java_method"),
    (dynamic("qualified", "SELECT default.reflect('a', 'b') FROM t"), "query", "reflect"),
    (dynamic("xxe", "SELECT xpath_string(payload, '/a') FROM t"), "query", "calls xpath_string()"),
    (dynamic("unknown_udf", "SELECT my_udf(user_id) FROM t"), "query", "not a known Hive built-in function"),
    (dynamic("read_file", "SELECT value FROM text.`/etc/passwd`"), "query", "/etc/passwd"),
    (dynamic("read_bin", "SELECT path FROM binaryFile.`/etc/hostname`"), "query", "/etc/hostname"),
    # Secrets through templates (the second hole).
    (dynamic("pw", "SELECT '{{ conn.funnel_mysql.password }}'"), "query", "uses {{ conn }}"),
    (dynamic("pw_rev", "SELECT '{{ conn.funnel_mysql.password | reverse }}'"), "query", "uses {{ conn }}"),
    (dynamic("var", "SELECT '{{ var.value.api_key }}'"), "query", "uses {{ var }}"),
    (dynamic("ti", "SELECT '{{ ti.xcom_pull(task_ids=\"x\") }}'"), "query", "uses {{ ti }}"),
    (dynamic("conf", "SELECT '{{ dag_run.conf }}'"), "query", "uses {{ dag_run }}"),
    (dynamic("params", "SELECT user_id FROM {{ params.table }}"), "query", "uses {{ params }}"),
    (dynamic("mro", "SELECT '{{ ds.__class__.__mro__ }}'"), "query", "attribute '.__class__'"),
    (dynamic("globals", "SELECT '{{ macros.ds_add.__globals__ }}'"), "query", "attribute '.__globals__'"),
    (dynamic("lipsum", "SELECT '{{ lipsum.__globals__.os }}'"), "query", "uses {{ lipsum }}"),
    (dynamic("loop", "{% for i in range(9) %}SELECT 1 {% endfor %}"), "query", "{% for %} template statement"),
    (dynamic("attr", "SELECT '{{ ds | attr(\"upper\") }}'"), "query", "filter 'attr'"),
    # The third hole, and other bad slugs.
    (dynamic("nl_seg\n", Q), "segment_id", "not a lower-case slug"),
    (dynamic("Bad-Id", Q), "segment_id", "not a lower-case slug"),
    (dynamic("9lives", Q), "segment_id", "not a lower-case slug"),
    (dynamic("with space", Q), "segment_id", "not a lower-case slug"),
    (dynamic("x" * 65, Q), "segment_id", "65 characters long"),
    (dynamic("semi;--colon", Q), "segment_id", "not a lower-case slug"),
    # Every kind of statement that is not a query.
    (dynamic("ins", "INSERT INTO funnel_test.victim SELECT 1"), "query", "contains INSERT"),
    (dynamic("ins_ow", "INSERT OVERWRITE TABLE funnel_test.victim SELECT 1"), "query", "contains INSERT"),
    (dynamic("multi_ins", "FROM funnel_test.victim INSERT OVERWRITE TABLE x SELECT user_id"), "query", "INSERT"),
    (dynamic("drop", "DROP TABLE funnel_test.victim"), "query", "DROP"),
    (dynamic("ctas", "CREATE TABLE x AS SELECT user_id FROM funnel_test.victim"), "query", "contains CREATE"),
    (dynamic("delete", "DELETE FROM funnel_test.victim WHERE 1 = 1"), "query", "contains DELETE"),
    (dynamic("update", "UPDATE funnel_test.victim SET user_id = 0"), "query", "contains UPDATE"),
    (dynamic("truncate", "TRUNCATE TABLE funnel_test.victim"), "query", "TRUNCATE"),
    (dynamic("alter", "ALTER TABLE funnel_test.victim RENAME TO gone"), "query", "ALTER"),
    (dynamic("set", "SET hive.exec.parallel=true"), "query", "contains SET"),
    (dynamic("addjar", "ADD JAR /tmp/evil.jar"), "query", "contains a command"),
    (dynamic("udf", "CREATE TEMPORARY FUNCTION evil AS 'x.Evil' USING JAR '/tmp/e.jar'"), "query", "CREATE"),
    (dynamic("transform", "SELECT TRANSFORM(user_id) USING '/bin/sh x' AS y FROM t"), "query", "TRANSFORM"),
    (dynamic("load", "LOAD DATA INPATH '/tmp/x' INTO TABLE funnel_test.victim"), "query", "LOAD DATA"),
    (dynamic("two", f"{Q}; DROP TABLE funnel_test.victim"), "query", "holds 2 statements"),
    (dynamic("describe", "DESCRIBE funnel_test.victim"), "query", "not a SELECT"),
    (dynamic("show", "SHOW TABLES"), "query", "query"),
    (dynamic("dfs", "dfs -rm -r /user/hive"), "query", "query"),
    (dynamic("shell", "!rm -rf /"), "query", "query"),
    (dynamic("unclosed", "SELECT 'abc FROM t"), "query", "is not valid HiveQL"),
    (dynamic("empty", "   ;  "), "query", "is empty"),
    # Bad kinds and fields.
    ({**dynamic("weekly", Q), "kind": "weekly"}, "kind", "use one of 'static', 'dynamic', 'proxy'"),
    ({**dynamic("nokind", Q), "kind": None}, "kind", "use one of"),
    ({**dynamic("noname", Q), "name": ""}, "name", "is empty"),
    ({**dynamic("longname", Q), "name": "n" * 256}, "name", "256 characters long"),
    ({"segment_id": "st", "name": "St", "kind": "static", "query": Q}, "run_at", "is missing for a static"),
    ({"segment_id": "st2", "name": "St", "kind": "static", "query": Q, "run_at": "soon"}, "run_at", "ISO-8601"),
    ({"segment_id": "px", "name": "Px", "kind": "proxy", "query": Q, "rule": "{}"}, "query", "does not use it"),
    ({"segment_id": "px2", "name": "Px", "kind": "proxy", "rule": "{oops"}, "rule", "not valid JSON"),
    ({**dynamic("en", Q), "enabled": "sometimes"}, "enabled", "use true or false"),
    ({**dynamic("shrink", Q), "max_shrink_pct": 250}, "max_shrink_pct", "outside 0..100"),
    ({**dynamic("dyn_runat", Q), "run_at": "2026-12-01 09:00:00"}, "run_at", "does not use it"),
]
GOOD_ROWS = [dynamic("fine", Q), dynamic("fine_dated", f"{Q} WHERE '{{{{ macros.ds_add(ds, -1) }}}}' < '2100'")]


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW__FUNNEL__STRICT_CATALOG", "False")
    monkeypatch.setenv("AIRFLOW__FUNNEL__QUERY_CHECK_BUDGET_SECONDS", "60")
    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))


def test_there_are_at_least_forty_hostile_rows() -> None:
    assert len(HOSTILE_ROWS) >= 40
    assert len({invalid_dag_id_for(row) for row, _, _ in HOSTILE_ROWS}) == len(HOSTILE_ROWS)


def invalid_dag_id_for(row: dict[str, Any]) -> str:
    from funnel.core.errors import SegmentError

    return invalid_dag_id(SegmentError(str(row["segment_id"]), "x", "y", "z"))


def test_every_hostile_row_becomes_a_marker_dag_naming_field_and_fix_and_nothing_reaches_hive(
    lenient: None, mysql_conn: Any, hive_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    hive_execute(hive_conn, "CREATE TABLE IF NOT EXISTS funnel_test.victim AS SELECT id AS user_id FROM range(3)")
    rows = [row for row, _, _ in HOSTILE_ROWS] + GOOD_ROWS
    monkeypatch.setenv("AIRFLOW_VAR_FUNNEL_SEGMENTS", json.dumps(rows))
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert bag.import_errors == {}
    assert [t.task_id for t in bag.dags[DYNAMIC_DAG_ID].tasks] == ["fine", "fine_dated"]
    wrong = []
    for row, field, words in HOSTILE_ROWS:
        marker = bag.dags.get(invalid_dag_id_for(row))
        shown = repr(row["segment_id"])
        if marker is None:
            wrong.append(f"{shown}: no marker DAG")
            continue
        text = marker.description
        if not (text.startswith(f"segment {shown}: field '{field}'") and words in text and "Fix: " in text):
            wrong.append(f"{shown}: {text}")
    assert wrong == []
    # Parsing ran none of them: the table every statement above aimed at is intact.
    assert hive_first_column(hive_conn, "SELECT user_id FROM funnel_test.victim") == {"0", "1", "2"}


# ---------------------------------------------------------------- odd user ids, end to end


def refresh(query: str, run_id: str) -> dict[str, Any]:
    op = SegmentRefreshOperator(task_id="ids", segment_id="ids", query=query)
    when = dt.datetime(2030, 4, 1, 9, tzinfo=dt.UTC)
    dag_run = SimpleNamespace(dag_id="d", run_id=run_id, logical_date=when, run_after=when, conf={})
    ctx = {"dag_run": dag_run, "ti": SimpleNamespace(try_number=1), "outlet_events": defaultdict(SimpleNamespace)}
    return op.execute(ctx)


def hive_strings(*expressions: str) -> str:
    """A Hive query whose first column is each expression (Spark SQL string expressions)."""
    return "SELECT u FROM (SELECT explode(array(" + ", ".join(expressions) + ")) AS u) t"


# (Spark SQL expression, the id both stores must hold)
KEPT_IDS = [
    ("'plain'", "plain"),
    ("'12345'", "12345"),
    ('"quote\'single"', "quote'single"),
    ("'quote\"double'", 'quote"double'),
    ("'back\\\\slash'", "back\\slash"),
    ("'\\\\N'", "\\N"),  # LOAD DATA's NULL marker, as an ordinary id
    ("'NULL'", "NULL"),
    ("'in ner'", "in ner"),
    ("repeat('x', 64)", "x" * 64),
    ("'a,b;c|d'", "a,b;c|d"),
    ("'x;DROP TABLE t'", "x;DROP TABLE t"),
    ("'%_*?'", "%_*?"),
    ("'`tick`'", "`tick`"),
    ("'~!@#$^&()[]{}<>'", "~!@#$^&()[]{}<>"),
]
# (Spark SQL expression, words of the refusal)
REFUSED_IDS = [
    ("concat('tab', chr(9), 'x')", "not printable ASCII"),
    ("concat('new', chr(10), 'line')", "not printable ASCII"),
    ("concat('cr', chr(13), 'x')", "not printable ASCII"),
    ("concat('nul', chr(0), 'x')", "not printable ASCII"),
    ("'caf\\u00e9'", "not printable ASCII"),
    ("'\\u7528\\u6237'", "not printable ASCII"),
    ("repeat('x', 65)", "65 characters long"),
    ("'trail '", "leading or trailing whitespace"),
    ("' lead'", "leading or trailing whitespace"),
    ("'   '", "leading or trailing whitespace"),
]


def test_odd_but_valid_ids_are_stored_exactly_in_both_stores(
    mysql_conn: Any, redis_client: Any, hive_conn: Any
) -> None:
    expected = {stored for _, stored in KEPT_IDS}
    result = refresh(hive_strings(*(expression for expression, _ in KEPT_IDS), "NULL", "''"), "kept")
    assert result["size"] == len(expected)
    assert mysql_live_members(mysql_conn, "ids") == expected
    assert redis_live_members(redis_client, "ids") == expected


@pytest.mark.parametrize(("expression", "words"), REFUSED_IDS, ids=[e for e, _ in REFUSED_IDS])
def test_ids_the_stores_cannot_serve_fail_the_refresh_and_swap_nothing(
    expression: str, words: str, mysql_conn: Any, redis_client: Any, hive_conn: Any
) -> None:
    refresh(hive_strings("'a'", "'b'"), "seed")
    with pytest.raises(FunnelError, match="which ") as caught:
        refresh(hive_strings("'c'", expression), "bad")
    assert words in str(caught.value)
    assert "nothing was swapped" in str(caught.value)
    assert mysql_live_members(mysql_conn, "ids") == {"a", "b"}
    assert redis_live_members(redis_client, "ids") == {"a", "b"}
