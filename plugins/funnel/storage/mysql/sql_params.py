"""Writing funnel's SQL: values (ids, states) always travel as parameters; big deletes go in chunks.

A state set such as ``funnel.core.states.PAGEABLE_STATES`` goes into SQL as
``state IN ({marks(PAGEABLE_STATES)})`` with the states among the parameters, never as quoted
literals, so the set is written once, in ``funnel.core.states``.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

#: Rows per statement of a chunked DELETE/UPDATE: short transactions, so a big delete never holds
#: locks (or a replica) for long.
DELETE_CHUNK = 10_000


def marks(values: Sized) -> str:
    """``%s, %s, ...``: one DB-API parameter mark per value, for an ``IN (...)`` or ``VALUES (...)`` list."""
    return ", ".join(["%s"] * len(values))


def in_chunks(conn: Any, sql: str, params: tuple[object, ...]) -> int:
    """Run a single-table DELETE/UPDATE ``sql`` as statements of ``DELETE_CHUNK`` rows (``LIMIT``
    appended), each committed, until one affects fewer; return how many rows in all."""
    cur = conn.cursor()
    total = 0
    while True:
        cur.execute(f"{sql} LIMIT {DELETE_CHUNK}", params)
        affected = int(cur.rowcount)
        conn.commit()
        total += affected
        if affected < DELETE_CHUNK:
            return total
