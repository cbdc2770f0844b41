"""Streaming a query's first column out of the real HiveServer2, batch by batch."""

from __future__ import annotations

from typing import Any

from funnel.hive_source import stream_first_column


def test_first_column_arrives_in_batches_of_the_requested_size(hive_conn: Any) -> None:
    query = "SELECT IF(id = 3, NULL, id) AS user_id, 'ignored' AS other FROM range(25) ORDER BY id"
    batches = list(stream_first_column(hive_conn, query, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [v for b in batches for v in b] == [None if i == 3 else i for i in range(25)]


def test_empty_result_yields_no_batch(hive_conn: Any) -> None:
    assert list(stream_first_column(hive_conn, "SELECT id FROM range(0)", batch_size=10)) == []
