"""The proxy segments' rule crossings in MySQL (``funnel_proxy_changes``), until their feeds have them.

An event batch that moves a user across a proxy segment's rule records the crossing here, in
the batch's transaction (``funnel.storage.mysql.event_ledger``); a sweep then publishes every
change not yet ``published`` to its segment's change feed and marks it
(``funnel.services.event_ingest.publish_proxy_changes``). The membership history reads the
log (``funnel.storage.mysql.membership_history``); a tag load deletes what is older than
``change_history_days``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from funnel.core.proxy_changes import ProxyChange
from funnel.core.states import ChangeType
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.sql_params import in_chunks, marks


class ProxyChangeLog:
    """Proxy segments' changes in MySQL, over one DB-API (mysqlclient) connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def record(self, changes: Sequence[ProxyChange], now: dt.datetime) -> None:
        """Inside the caller's transaction: log proxy segments' rule crossings."""
        if not changes:
            return
        cur = self.conn.cursor()
        cur.executemany(
            f"INSERT INTO {layout.PROXY_CHANGES_TABLE} (segment_id, user_id, at, change_type, event_id, recorded_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (c.segment_id, c.user_id, to_naive_utc(c.at), c.change.value, c.event_id, to_naive_utc(now))
                for c in changes
            ],
        )

    def unpublished(self, limit: int) -> list[tuple[int, ProxyChange]]:
        """Up to ``limit`` proxy changes not yet in their change feeds, oldest first, with their ids."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT id, segment_id, user_id, at, change_type, event_id FROM {layout.PROXY_CHANGES_TABLE}"
            " WHERE published = FALSE ORDER BY id LIMIT %s",
            (limit,),
        )
        rows = cur.fetchall()
        self.conn.commit()
        return [
            (int(row_id), ProxyChange(segment_id, user_id, from_naive_utc(at), ChangeType(change), event_id))
            for row_id, segment_id, user_id, at, change, event_id in rows
        ]

    def mark_published(self, change_ids: Sequence[int]) -> None:
        """Note that these proxy changes are in their change feeds."""
        if not change_ids:
            return
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.PROXY_CHANGES_TABLE} SET published = TRUE WHERE id IN ({marks(change_ids)})",
            tuple(change_ids),
        )
        self.conn.commit()

    def prune(self, older_than: dt.datetime) -> int:
        """Delete proxy segments' changes from before ``older_than`` (by the ``at`` index, in chunks)."""
        return in_chunks(
            self.conn, f"DELETE FROM {layout.PROXY_CHANGES_TABLE} WHERE at < %s", (to_naive_utc(older_than),)
        )
