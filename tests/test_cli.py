"""The command line the project's scripts use, against the real services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from funnel.cli import main, split_statements


def test_split_statements_keeps_semicolons_inside_lines() -> None:
    script = "-- a comment\nCREATE TABLE t (a INT);\nSELECT 'a;b' FROM t;\n\nSELECT 1\n"
    assert list(split_statements(script)) == ["CREATE TABLE t (a INT)", "SELECT 'a;b' FROM t", "SELECT 1"]


def test_ensure_pool_creates_the_hive_pool_with_the_configured_size(airflow_db: None) -> None:
    from airflow.models.pool import Pool

    assert main(["ensure-pool"]) == 0
    assert Pool.get_pool("funnel_hive").slots == 8


def test_mysql_script_loads_catalog_rows(mysql_conn: Any, tmp_path: Path) -> None:
    script = tmp_path / "rows.sql"
    script.write_text(
        "INSERT INTO funnel_segments (segment_id, name, kind, query) VALUES\n"
        "('a', 'A', 'dynamic', 'SELECT user_id FROM t');\n"
    )
    assert main(["mysql", str(script)]) == 0
    cur = mysql_conn.cursor()
    cur.execute("SELECT segment_id, kind FROM funnel_segments")
    assert cur.fetchall() == (("a", "dynamic"),)
