"""Stream a segment query's first column out of HiveServer2 in batches.

Never ``get_records``: a segment can hold tens of millions of users, so rows are fetched
``batch_size`` at a time with the cursor's ``arraysize`` set to match.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def stream_first_column(
    conn: Any, query: str, batch_size: int, hive_conf: Mapping[str, str] | None = None
) -> Iterator[list[Any]]:
    """Run ``query`` on a DB-API HiveServer2 connection; yield its first column in batches."""
    cursor = conn.cursor()
    try:
        cursor.arraysize = batch_size
        for key, value in (hive_conf or {}).items():
            cursor.execute(f"set {key}={value}")
        cursor.execute(query)
        while True:
            rows = cursor.fetchmany(batch_size)
            if not rows:
                return
            yield [row[0] for row in rows]
    finally:
        cursor.close()
