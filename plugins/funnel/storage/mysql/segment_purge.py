"""Deleting a retired segment's data from MySQL for good (``funnel.services.segment_admin.purge``),
once it has been retired longer than ``change_history_days``.

The tables that hold one segment's members, in an order a reader never trips on: the live row
first (nothing is served from then on), then the member spans and the change logs in committed
chunks (``in_chunks``), so no statement holds locks long however many members the segment had.
Its versions stay as ``dropped`` rows (so a version number is never handed out twice, and a
webhook's cursor never meets a number again), and so do its run history and its revisions,
which keep its id reserved: ``restore`` brings its definition back without data.
"""

from __future__ import annotations

from typing import Any

from funnel.core.states import VersionState
from funnel.storage import layout
from funnel.storage.mysql.sql_params import in_chunks

#: The tables with a segment's members, in the order they are emptied.
PURGED_TABLES = (layout.LIVE_TABLE, layout.MEMBERSHIPS_TABLE, layout.CHANGES_TABLE, layout.PROXY_CHANGES_TABLE)


def purge_segment_rows(conn: Any, segment_id: str) -> int:
    """Delete the segment's members and change logs, and mark its versions dropped; return how
    many rows were deleted."""
    deleted = sum(
        in_chunks(conn, f"DELETE FROM {table} WHERE segment_id = %s", (segment_id,)) for table in PURGED_TABLES
    )
    in_chunks(
        conn,
        f"UPDATE {layout.VERSIONS_TABLE} SET state = %s WHERE segment_id = %s AND state <> %s",
        (VersionState.DROPPED.value, segment_id, VersionState.DROPPED.value),
    )
    return deleted
