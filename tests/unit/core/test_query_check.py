"""Only one read-only HiveQL SELECT passes; each rejection names the segment and the fix.

A SELECT can still run code or read files through what it calls or reads, so the check also
refuses functions outside the Hive built-ins (``funnel.core.hive_functions``) and file paths used
as tables. Pure: no service is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from funnel.core.errors import SegmentError
from funnel.core.hive_functions import ALLOWED_FUNCTIONS, REFUSED_FUNCTIONS
from funnel.core.query_check import check_query


def refusal(query: str, **kwargs: frozenset[str]) -> str:
    """The message check_query refuses ``query`` with (fails the test if it passes)."""
    with pytest.raises(SegmentError) as caught:
        check_query("seg", query, **kwargs)
    assert caught.value.field == "query"
    message = str(caught.value)
    assert message.startswith("segment 'seg': field 'query'")
    return message


@pytest.mark.parametrize(
    "query",
    [
        "SELECT user_id FROM dw.users WHERE country = 'DE'",
        "WITH buyers AS (SELECT user_id FROM dw.orders) SELECT user_id FROM buyers",
        "SELECT user_id FROM a UNION ALL SELECT user_id FROM b",
        "SELECT user_id FROM dw.events LATERAL VIEW explode(tags) t AS tag WHERE tag = 'x'",
        "SELECT user_id FROM dw.events WHERE event_date >= date_sub('{{ ds }}', 30)",
        "SELECT user_id FROM {{ params.table }} WHERE dt = {{ ds_nodash }}",
        "SELECT user_id FROM dw.users;",
    ],
)
def test_read_only_queries_pass(query: str) -> None:
    check_query("seg", query)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("INSERT INTO dw.x SELECT 1", "contains INSERT"),
        ("FROM dw.a INSERT OVERWRITE TABLE dw.b SELECT user_id", "contains INSERT"),
        ("DROP TABLE dw.users", "DROP"),
        ("CREATE TABLE dw.x AS SELECT user_id FROM dw.users", "contains CREATE"),
        ("SELECT user_id FROM dw.users; DROP TABLE dw.users", "holds 2 statements"),
        ("SET hive.exec.parallel=true", "contains SET"),
        ("ADD JAR /tmp/evil.jar", "contains a command"),
        ("SELECT TRANSFORM(user_id) USING '/bin/sh evil.sh' AS x FROM dw.users", "TRANSFORM ... USING"),
        ("DESCRIBE dw.users", "not a SELECT"),
        ("SELECT FROM WHERE", "is not valid HiveQL"),
        ("", "holds 0 statements"),
        # sqlglot raises TokenError, IndexError or RecursionError here; a crash would break every segment.
        ("SELECT 'unclosed FROM dw.users", "is not valid HiveQL"),
        ("SELECT `unclosed FROM dw.users", "is not valid HiveQL"),
        ("SELECT MAP(user_id) USING 'cat' AS x FROM dw.users", "is not valid HiveQL"),
        ("SELECT " + "(" * 3000 + "1" + ")" * 3000, "is not valid HiveQL"),
    ],
)
def test_everything_else_is_rejected(query: str, problem: str) -> None:
    message = refusal(query)
    assert problem in message
    assert "Fix: make query a single HiveQL SELECT" in message


# Segment queries as authors write them: every one must keep passing.
REALISTIC_QUERIES = [
    # joins, filters, grouping
    "SELECT u.user_id FROM dw.users u JOIN dw.orders o ON o.user_id = u.user_id "
    "LEFT JOIN dw.refunds r ON r.order_id = o.order_id WHERE r.order_id IS NULL AND o.amount > 100 "
    "GROUP BY u.user_id HAVING count(DISTINCT o.order_id) >= 3",
    "SELECT user_id FROM dw.users WHERE country IN ('DE', 'AT') AND age BETWEEN 18 AND 30 "
    "AND NOT (is_test OR email LIKE '%@example.com') AND email RLIKE '^[a-z]' AND name REGEXP 'x'",
    "SELECT user_id FROM dw.a LEFT SEMI JOIN dw.b ON a.user_id = b.user_id",
    "SELECT user_id FROM dw.users WHERE user_id NOT IN (SELECT user_id FROM dw.churned WHERE dt = '{{ ds }}')",
    "SELECT user_id FROM dw.users u WHERE EXISTS (SELECT 1 FROM dw.orders o WHERE o.user_id = u.user_id)",
    "SELECT DISTINCT user_id FROM dw.events WHERE dt = '{{ ds }}' AND event_name = 'purchase'",
    "SELECT user_id FROM dw.users TABLESAMPLE (BUCKET 1 OUT OF 10 ON user_id) s",
    # window functions
    "SELECT user_id FROM (SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY ts DESC) AS rn "
    "FROM dw.events) e WHERE rn = 1",
    "SELECT user_id FROM (SELECT user_id, lag(ts, 1) OVER (PARTITION BY user_id ORDER BY ts) AS prev_ts, "
    "rank() OVER (ORDER BY amount DESC) AS r, dense_rank() OVER (ORDER BY amount) AS d, "
    "sum(amount) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s, "
    "first_value(ts) OVER (PARTITION BY user_id) AS f, ntile(10) OVER (ORDER BY amount) AS decile "
    "FROM dw.orders) o WHERE decile = 10",
    # dates and times
    "SELECT user_id FROM dw.events WHERE to_date(ts) = date_sub(current_date, 1) "
    "AND datediff(current_date(), to_date(from_unixtime(created_at))) <= 30 "
    "AND unix_timestamp(ts) > unix_timestamp() - 86400 AND year(ts) = 2024 AND month(ts) = 5 "
    "AND day(ts) = 1 AND hour(ts) < 12 AND date_format(ts, 'yyyy-MM') = '2024-05' "
    "AND dt >= date_add('{{ ds }}', -7) AND add_months(ts, 1) > current_timestamp "
    "AND weekofyear(ts) = 10 AND last_day(ts) = to_date('2024-05-31') AND trunc(ts, 'MM') = '2024-05-01' "
    "AND from_unixtime(unix_timestamp('{{ ds }}', 'yyyy-MM-dd'), 'yyyyMMdd') = dt "
    "AND ts > current_timestamp - INTERVAL 1 DAY AND dt > DATE '2024-01-01'",
    "SELECT user_id FROM dw.events WHERE extract(year FROM ts) = 2024 AND months_between(ts, signup) > 1",
    # strings
    "SELECT lower(trim(user_id)) FROM dw.users WHERE upper(substr(country, 1, 2)) = 'DE' "
    "AND SUBSTRING(name, 1, 3) = 'abc' AND concat_ws('-', a, b) <> '' AND length(email) > 5 "
    "AND instr(email, '@') > 0 AND split(email, '@')[1] = 'example.com' AND lpad(code, 5, '0') = '00042' "
    "AND regexp_replace(phone, '[^0-9]', '') LIKE '49%' AND concat(a, b) = 'ab' "
    "AND regexp_extract(url, 'utm_source=([^&]+)', 1) = 'newsletter' AND trim(BOTH 'x' FROM code) = 'y' "
    "AND parse_url(url, 'HOST') = 'shop.example.com' AND md5(email) <> '' AND a || b = 'ab'",
    # collections
    "SELECT user_id FROM (SELECT user_id, collect_set(category) AS cats, collect_list(sku) AS skus "
    "FROM dw.orders GROUP BY user_id) x WHERE size(cats) >= 3 AND array_contains(cats, 'books') "
    "AND sort_array(skus)[0] = 'a' AND map_keys(props)[0] = 'k' AND props['k'] = 'v'",
    "SELECT user_id FROM dw.events LATERAL VIEW posexplode(items) i AS pos, item WHERE pos = 0",
    "SELECT user_id FROM dw.events LATERAL VIEW OUTER explode(tags) t AS tag "
    "LATERAL VIEW inline(array(struct(1, 'a'))) s AS n, l",
    "SELECT user_id FROM dw.events LATERAL VIEW json_tuple(payload, 'a', 'b') j AS a, b",
    "SELECT user_id FROM dw.events LATERAL VIEW stack(2, 'a', 1, 'b', 2) s AS k, v",
    "SELECT user_id FROM dw.events LATERAL VIEW parse_url_tuple(url, 'HOST', 'PATH') p AS host, path",
    "SELECT user_id FROM dw.events WHERE exists(items, x -> x.price > 100) AND size(filter(tags, t -> t = 'a')) > 0",
    # JSON
    "SELECT get_json_object(payload, '$.user.id') FROM dw.events WHERE get_json_object(payload, '$.type') = 'click'",
    # conditionals, casts, aggregates
    "SELECT coalesce(u.user_id, e.user_id) FROM dw.users u FULL OUTER JOIN dw.events e ON u.user_id = e.user_id "
    "WHERE nvl(u.country, 'unknown') <> 'unknown' AND if(e.amount > 0, 1, 0) = 1 "
    "AND CASE WHEN e.kind = 'a' THEN 1 WHEN e.kind = 'b' THEN 2 ELSE 0 END > 0 "
    "AND CASE e.kind WHEN 'a' THEN true ELSE false END AND nullif(e.kind, '') IS NOT NULL "
    "AND CAST(e.amount AS DECIMAL(10, 2)) > 1.5 AND cast(e.user_id AS STRING) <> '' AND isnotnull(e.ts) "
    "AND greatest(e.a, e.b) > least(e.c, e.d)",
    "SELECT user_id FROM dw.orders GROUP BY user_id HAVING count(*) > 1 AND count(DISTINCT sku) > 2 "
    "AND sum(amount) > 100 AND avg(amount) > 10 AND max(ts) > '{{ ds }}' AND min(ts) < '{{ ds }}' "
    "AND percentile_approx(amount, 0.5) > 20 AND percentile(CAST(amount AS BIGINT), 0.9) > 50 "
    "AND stddev_pop(amount) > 0 AND variance(amount) > 0 AND approx_count_distinct(sku) > 1",
    "SELECT user_id, round(sum(amount), 2), floor(avg(amount)), ceil(max(amount)), abs(min(delta)), "
    "pmod(hash(user_id), 100) FROM dw.orders GROUP BY user_id",
    "SELECT user_id FROM dw.users WHERE pmod(abs(hash(user_id)), 100) < 10 AND rand() < 0.5",
    "SELECT user_id FROM dw.users GROUP BY user_id, country GROUPING SETS ((user_id), (user_id, country))",
    # row sources and templates
    "SELECT id AS user_id FROM range(1000)",
    "SELECT id FROM range(0, 10, 2) r",
    "SELECT col FROM explode(array(1, 2, 3))",
    "SELECT user_id FROM dw.users WHERE dt = '{{ ds }}' AND dt > '{{ macros.ds_add(ds, -7) }}' "
    "{% if params.only_de %}AND country = 'DE'{% endif %}",
    "SELECT user_id FROM {{ params.db }}.{{ params.table }} WHERE dt = '{{ ds }}'",
    # a three-part table name: catalog.db.table is a table, not a file
    "SELECT user_id FROM spark_catalog.dw.users",
    # planner hints name a plan, they call nothing
    "SELECT /*+ MAPJOIN(u) */ o.user_id FROM dw.orders o JOIN dw.users u ON o.user_id = u.user_id",
    "SELECT /*+ BROADCAST(u), COALESCE(3) */ o.user_id FROM dw.orders o JOIN dw.users u ON o.user_id = u.user_id",
    # other syntax that sqlglot turns into typed nodes with no written name
    "SELECT user_id FROM dw.events WHERE flag IS TRUE AND a NOT RLIKE 'x' AND CAST(x AS ARRAY<STRING>)[0] = 'a' "
    "AND ts > TIMESTAMP '2024-01-01 00:00:00' AND s.field = 1 AND a <=> b AND a % 2 = 0 AND a DIV 2 = 1 "
    "AND ~a = 0 AND -a < 0 AND a & 1 = 0 AND x = ANY (SELECT y FROM dw.u) ORDER BY ts NULLS LAST",
    "SELECT user_id FROM dw.events GROUP BY user_id, c WITH ROLLUP",
    "SELECT user_id FROM dw.events GROUP BY CUBE(user_id, c)",
    "SELECT user_id, sum(a) OVER w FROM dw.events WINDOW w AS (PARTITION BY user_id) DISTRIBUTE BY user_id SORT BY ts",
    "SELECT x FROM VALUES (1), (2) AS v(x)",
]


@pytest.mark.parametrize("query", REALISTIC_QUERIES)
def test_realistic_segment_queries_pass(query: str) -> None:
    check_query("seg", query)


def call_forms(name: str) -> list[str]:
    """``name`` called the way a Hive author would, then with 0 to 5 arguments."""
    special = {
        "cast": "CAST(a AS INT)",
        "try_cast": "try_cast(a AS INT)",
        "case": "CASE WHEN a THEN 1 ELSE 0 END",
        "extract": "extract(day FROM a)",
    }
    if name in special:
        return [special[name]]
    return [f"{name}({args})" for args in ("a", "a, b", "a, b, c", "", "a, b, c, d", "a, b, c, d, e")]


def first_call_that_parses(name: str, case: Callable[[str], str]) -> str | None:
    """The first of ``call_forms(name)`` that is valid HiveQL, provided check_query accepts it."""
    for call in map(case, call_forms(name)):
        try:
            check_query("seg", f"SELECT {call} FROM dw.t")
        except SegmentError as exc:
            if "is not valid HiveQL" in str(exc):
                continue
            raise
        return call
    return None


@pytest.mark.parametrize("name", sorted(ALLOWED_FUNCTIONS))
def test_every_allowed_function_passes(name: str) -> None:
    """sqlglot turns many names into typed nodes (SUBSTR into Substring, nvl into Coalesce,
    date_sub into TsOrDsAdd, IF, CASE, CAST); each must still pass, in lower and upper case."""
    assert first_call_that_parses(name, str.lower) is not None
    assert first_call_that_parses(name, str.upper) is not None


def test_the_allowlist_is_lower_case_and_never_allows_a_refused_function() -> None:
    assert len(ALLOWED_FUNCTIONS) > 500
    assert all(name == name.lower() and name.isidentifier() for name in ALLOWED_FUNCTIONS)
    assert not ALLOWED_FUNCTIONS & set(REFUSED_FUNCTIONS)
    dangerous = {"reflect", "reflect2", "java_method", "try_reflect", "in_file", "xpath", "xpath_string"}
    dangerous |= {f"xpath_{kind}" for kind in ("boolean", "int", "long", "short", "float", "double", "number")}
    assert dangerous <= set(REFUSED_FUNCTIONS)


@pytest.mark.parametrize("name", sorted(REFUSED_FUNCTIONS))
def test_every_refused_function_is_refused_with_its_reason(name: str) -> None:
    for call in call_forms(name)[:3]:
        message = refusal(f"SELECT {call} FROM dw.t")
        assert f"calls {name}(), which {REFUSED_FUNCTIONS[name]}" in message
        assert f"Fix: remove {name}() from the query" in message


# {f} stands for the function; every position a call can take in a SELECT.
POSITIONS = [
    "SELECT {f}('java.lang.System', 'exit', 0) FROM t",
    "SELECT user_id FROM t WHERE {f}('java.lang.Math', 'abs', -1) = '1'",
    "SELECT user_id FROM t WHERE coalesce(upper({f}('java.lang.Math', 'abs', x)), 'a') = 'a'",
    "SELECT user_id, count(*) FROM t GROUP BY user_id HAVING max({f}('a', 'b')) > 0",
    "SELECT user_id FROM t ORDER BY {f}('a', 'b')",
    "SELECT user_id, row_number() OVER (PARTITION BY {f}('a', 'b') ORDER BY ts) FROM t",
    "WITH c AS (SELECT {f}('a', 'b') AS x FROM t) SELECT x FROM c",
    "SELECT x FROM (SELECT {f}('a', 'b') AS x FROM t) s",
    "SELECT user_id FROM t WHERE user_id IN (SELECT {f}('a', 'b') FROM u)",
    "SELECT user_id FROM t JOIN u ON t.id = {f}('a', u.id)",
    "SELECT user_id FROM t UNION ALL SELECT {f}('a', 'b') FROM u",
    "SELECT user_id FROM t LATERAL VIEW {f}('a', 'b') v AS x",
    "SELECT user_id FROM t LATERAL VIEW explode(array({f}('a', 'b'))) v AS x",
    "SELECT * FROM {f}('a', 'b')",
    "SELECT * FROM {f}('a', 'b') AS r",
    "SELECT user_id FROM t WHERE exists(items, x -> {f}('a', x) = '1')",
    "SELECT CASE WHEN a THEN {f}('a', 'b') END FROM t",
    "SELECT if({f}('a', 'b') = '1', 1, 0) FROM t",
    "SELECT CAST({f}('a', 'b') AS INT) FROM t",
    "SELECT /*+ REPARTITION({f}('a', 'b')) */ user_id FROM t",
]


@pytest.mark.parametrize("name", ["reflect", "java_method", "reflect2", "try_reflect", "in_file", "xpath_string"])
@pytest.mark.parametrize("position", POSITIONS)
def test_dangerous_functions_are_refused_in_every_position(name: str, position: str) -> None:
    message = refusal(position.format(f=name))
    assert f"calls {name}(), which {REFUSED_FUNCTIONS[name]}" in message


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("REFLECT", "reflect"),
        ("Reflect", "reflect"),
        ("`reflect`", "reflect"),
        ("`Java_Method`", "java_method"),
        ("default.reflect", "default.reflect"),
        ("`default`.`reflect`", "default.reflect"),
        ("spark_catalog.default.reflect", "spark_catalog.default.reflect"),
        ("system.builtin.reflect", "system.builtin.reflect"),
    ],
)
def test_dangerous_functions_are_refused_however_written(written: str, shown: str) -> None:
    for query in (
        f"SELECT {written}('java.lang.System', 'exit', 0) FROM t",
        f"SELECT * FROM {written}('java.lang.System', 'exit', 0)",
        f"SELECT user_id FROM t LATERAL VIEW {written}('a', 'b') v AS x",
    ):
        message = refusal(query)
        assert f"calls {shown}(), which runs an arbitrary Java method inside HiveServer2" in message


def test_the_reported_query_is_refused() -> None:
    """The query from the issue: it passed, and running it stopped HiveServer2."""
    message = refusal("SELECT reflect('java.lang.System', 'exit', 0) FROM t")
    assert message == (
        "segment 'seg': field 'query' calls reflect(), which runs an arbitrary Java method inside "
        "HiveServer2. Fix: remove reflect() from the query: a segment query may not run code, read files "
        "or reach the network, and no setting allows it"
    )


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("SELECT my_udf(user_id) FROM dw.users", "my_udf"),
        ("SELECT user_id FROM dw.users WHERE MY_UDF(x) = 1", "my_udf"),
        ("SELECT user_id FROM dw.users LATERAL VIEW my_udtf(tags) t AS tag", "my_udtf"),
        ("SELECT * FROM my_table_fn(1)", "my_table_fn"),
        ("SELECT * FROM db.my_table_fn(1)", "db.my_table_fn"),
        ("SELECT db.my_udf(user_id) FROM dw.users", "db.my_udf"),
        # Spark resolves builtin.abs to the built-in, but any qualified name is judged whole.
        ("SELECT system.builtin.abs(-1)", "system.builtin.abs"),
        # sqlglot parses these into typed nodes (If, TsOrDsToDate, Cast, JSONObject); Hive has no such function.
        ("SELECT iif(a, 1, 0) FROM t", "iif"),
        ("SELECT ts_or_ds_to_date(a) FROM t", "ts_or_ds_to_date"),
        ("SELECT safe_cast(a AS INT) FROM t", "safe_cast"),
        ("SELECT json_object('a', 1) FROM t", "json_object"),
        # Spark's IDENTIFIER() clause would build a table or function name from a string.
        ("SELECT * FROM IDENTIFIER('text.`/etc/hostname`')", "identifier"),
    ],
)
def test_unknown_functions_are_refused(query: str, name: str) -> None:
    message = refusal(query)
    assert f"calls {name}(), which is not a known Hive built-in function" in message
    assert f"an administrator adds {name!r} to the setting allowed_functions" in message


def test_an_administrator_can_allow_site_udfs() -> None:
    site = frozenset({"my_udf", "dw.score", "my_udtf"})
    check_query(
        "seg", "SELECT user_id FROM dw.users WHERE my_udf(x) = 1 AND dw.score(user_id) > 0.5", extra_allowed=site
    )
    check_query("seg", "SELECT user_id FROM dw.users LATERAL VIEW my_udtf(tags) t AS tag", extra_allowed=site)
    # Allowing the bare name does not allow another database's function of that name, nor the reverse.
    assert "calls other.my_udf()" in refusal("SELECT other.my_udf(x) FROM t", extra_allowed=site)
    assert "calls score()" in refusal("SELECT score(x) FROM t", extra_allowed=site)
    # Nor does the setting re-allow a refused built-in.
    message = refusal("SELECT reflect('a', 'b') FROM t", extra_allowed=frozenset({"reflect"}))
    assert "calls reflect(), which runs an arbitrary Java method inside HiveServer2" in message


# Spark's "SQL on files": on the local HiveServer2 (Spark Thrift Server 4.3),
# SELECT * FROM text.`/etc/hostname` returned the host name, binaryFile.`/etc/hostname` its bytes,
# and text.`etc` looked for file:/work/main/.run/hive/etc (relative paths work too).
@pytest.mark.parametrize(
    ("query", "table"),
    [
        ("SELECT * FROM text.`/etc/passwd`", "text.`/etc/passwd`"),
        ("SELECT * FROM TEXT.`file:///etc/hostname`", "TEXT.`file:///etc/hostname`"),
        ("SELECT * FROM parquet.`/tmp/x`", "parquet.`/tmp/x`"),
        ("SELECT * FROM csv.`/etc/hostname`", "csv.`/etc/hostname`"),
        ("SELECT * FROM json.`hdfs://nn/data/x.json`", "json.`hdfs://nn/data/x.json`"),
        ("SELECT * FROM orc.`/warehouse/x`", "orc.`/warehouse/x`"),
        ("SELECT * FROM avro.`/tmp/x.avro`", "avro.`/tmp/x.avro`"),
        ("SELECT * FROM binaryFile.`/etc/hostname`", "binaryFile.`/etc/hostname`"),
        ("SELECT * FROM delta.`/lake/events`", "delta.`/lake/events`"),
        ("SELECT * FROM text.`etc`", "text.etc"),
        ("SELECT * FROM `org.apache.spark.sql.parquet`.`x`", "`org.apache.spark.sql.parquet`.x"),
        ("SELECT * FROM `/etc/passwd`", "`/etc/passwd`"),
        ("SELECT u.user_id FROM dw.users u JOIN text.`/etc/passwd` p ON u.user_id = p.value", "text.`/etc/passwd`"),
        ("WITH p AS (SELECT value FROM csv.`/etc/passwd`) SELECT value FROM p", "csv.`/etc/passwd`"),
        ("SELECT user_id FROM dw.users WHERE user_id IN (SELECT value FROM text.`/etc/passwd`)", "text.`/etc/passwd`"),
    ],
)
def test_file_paths_as_tables_are_refused(query: str, table: str) -> None:
    message = refusal(query)
    assert f"reads {table}, which is a file on HiveServer2's file system" in message
    assert "Fix: read Hive tables by database.table name" in message


def test_a_template_as_function_name_is_refused() -> None:
    """What ``{{ params.fn }}(x)`` calls is known only once rendered, too late for the parse-time check."""
    message = refusal("SELECT {{ params.fn }}(user_id) FROM dw.users")
    assert "calls a function whose name is a template ({{ ... }}), which cannot be checked" in message
