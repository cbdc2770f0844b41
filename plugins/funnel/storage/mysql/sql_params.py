"""DB-API parameter marks for funnel's SQL: values (ids, states) always travel as parameters.

A state set such as ``funnel.core.states.PAGEABLE_STATES`` goes into SQL as
``state IN ({marks(PAGEABLE_STATES)})`` with the states among the parameters, never as quoted
literals, so the set is written once, in ``funnel.core.states``.
"""

from __future__ import annotations

from collections.abc import Sized


def marks(values: Sized) -> str:
    """``%s, %s, ...``: one DB-API parameter mark per value, for an ``IN (...)`` or ``VALUES (...)`` list."""
    return ", ".join(["%s"] * len(values))
