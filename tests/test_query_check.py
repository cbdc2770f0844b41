"""Only one read-only HiveQL SELECT passes; each rejection names the segment and the fix."""

from __future__ import annotations

import pytest

from funnel.errors import SegmentError
from funnel.query_check import check_query


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
    ],
)
def test_everything_else_is_rejected(query: str, problem: str) -> None:
    with pytest.raises(SegmentError) as caught:
        check_query("seg", query)
    assert caught.value.field == "query"
    assert problem in str(caught.value)
    assert str(caught.value).startswith("segment 'seg': field 'query'")
    assert "Fix: make query a single HiveQL SELECT" in str(caught.value)
