"""Helpers the tests share: independent reads of each store and catalog writes."""

from __future__ import annotations

from typing import Any

from funnel import layout


def hive_execute(conn: Any, *statements: str) -> None:
    cursor = conn.cursor()
    for statement in statements:
        cursor.execute(statement)
    cursor.close()


def hive_first_column(conn: Any, query: str) -> set[str]:
    """Run a query independently of funnel and return its first column as strings."""
    cursor = conn.cursor()
    cursor.execute(query)
    values = {str(row[0]) for row in cursor.fetchall() if row[0] is not None}
    cursor.close()
    return values


def mysql_live_members(conn: Any, segment_id: str) -> set[str]:
    cur = conn.cursor()
    cur.execute(f"SELECT user_id FROM {layout.CURRENT_MEMBERS_VIEW} WHERE segment_id = %s", (segment_id,))
    members = {row[0] for row in cur.fetchall()}
    conn.commit()
    return members


def redis_live_members(client: Any, segment_id: str) -> set[str]:
    return {m.decode() for m in client.smembers(layout.members_key(segment_id))}


def insert_segments(conn: Any, *rows: dict[str, Any]) -> None:
    """Write catalog rows the way a data engineer would: plain SQL into funnel_segments."""
    cur = conn.cursor()
    for row in rows:
        columns = ", ".join(row)
        placeholders = ", ".join(["%s"] * len(row))
        cur.execute(f"REPLACE INTO {layout.SEGMENTS_TABLE} ({columns}) VALUES ({placeholders})", tuple(row.values()))
    conn.commit()
