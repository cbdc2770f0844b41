"""Deleting a retired segment's data from MySQL for good (``funnel.services.segment_admin.purge``),
once it has been retired longer than ``change_history_days``.

Every table that holds rows of one segment, in an order a reader never trips on: the live row
first (nothing is served from then on), then the versions' rows in committed chunks
(``in_chunks``), so no statement holds locks long however many members the segment had. The
catalog's revisions stay: they are the segment's history, and they keep its id reserved until an
``add`` reuses it.
"""

from __future__ import annotations

from typing import Any

from funnel.storage import layout
from funnel.storage.mysql.sql_params import in_chunks

#: The tables with a segment's data, in the order they are emptied.
PURGED_TABLES = (
    layout.LIVE_TABLE,
    layout.MEMBERSHIPS_TABLE,
    layout.CHANGES_TABLE,
    layout.PROXY_CHANGES_TABLE,
    layout.RUNS_TABLE,
    layout.VERSIONS_TABLE,
)


def purge_segment_rows(conn: Any, segment_id: str) -> int:
    """Delete every row of the segment's data; return how many."""
    return sum(in_chunks(conn, f"DELETE FROM {table} WHERE segment_id = %s", (segment_id,)) for table in PURGED_TABLES)
