"""A composite segment's members, computed in MySQL from its operands' pinned versions.

Each operand is read at one version (``entered <= v AND (exited IS NULL OR exited > v)``
over ``funnel_memberships``, the span layout in ``funnel.layout``), and the expression
becomes one statement of ``UNION`` / ``INTERSECT`` / ``EXCEPT`` (MariaDB 10.4+, MySQL
8.0.31+), so the whole result is one consistent snapshot whatever refreshes run meanwhile.
It is streamed with a server-side cursor on a connection of its own: memory stays flat
whatever the operands' sizes. Nothing is written.

Why MySQL and not Redis's ``SUNIONSTORE`` family: MySQL holds every kept version, so the
composite reads exactly the versions it names in its run history, and it works the same
when the segments live on different Redis Cluster slots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from funnel import layout
from funnel.composite.expr import INTERSECT, MINUS, UNION, Expr
from funnel.stores.mysql_store import _IN_VERSION, LiveVersion, MySqlSegmentStore

_SET_OPERATOR = {UNION: "UNION", INTERSECT: "INTERSECT", MINUS: "EXCEPT"}
_LEAF = f"SELECT m.user_id FROM {layout.MEMBERSHIPS_TABLE} m WHERE m.segment_id = %s AND " + _IN_VERSION.format(m="m")


def expression_sql(expr: Expr, versions: Mapping[str, int]) -> tuple[str, tuple[object, ...]]:
    """One SELECT of the expression's members, with its parameters (each operand at ``versions[id]``)."""
    if isinstance(expr, str):
        version = versions[expr]
        return _LEAF, (expr, version, version)
    parts = [expression_sql(item, versions) for item in expr.operands]
    joined = f" {_SET_OPERATOR[expr.op]} ".join(f"({sql})" for sql, _ in parts)
    params = tuple(param for _, item_params in parts for param in item_params)
    return joined, params


class CompositeSource:
    """Reads operands' live versions and streams a composite's members, over ``conn`` (a
    mysqlclient connection used for nothing else while a stream is open)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def live_versions(self, segment_ids: Iterable[str]) -> dict[str, LiveVersion | None]:
        """Each operand's live version (None: never computed)."""
        store = MySqlSegmentStore(self.conn)
        return {segment_id: store.live_version(segment_id) for segment_id in segment_ids}

    def stream(self, expr: Expr, versions: Mapping[str, int], batch_size: int) -> Iterator[list[str]]:
        """The expression's members over the pinned ``versions``, ``batch_size`` ids at a time,
        each once, in no particular order."""
        import MySQLdb.cursors

        sql, params = expression_sql(expr, versions)
        cur = self.conn.cursor(MySQLdb.cursors.SSCursor)
        finished = False
        try:
            cur.execute(sql, params)
            while rows := cur.fetchmany(batch_size):
                yield [row[0] for row in rows]
            finished = True
        finally:
            if finished:
                cur.close()
                self.conn.commit()
            else:  # stopped early: closing the cursor would first read every remaining row
                with contextlib.suppress(Exception):
                    self.conn.close()
