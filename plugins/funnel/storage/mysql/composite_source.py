"""A composite segment's members, read from MySQL at its operands' pinned versions.

Each operand is read at one version (``entered <= v AND (exited IS NULL OR exited > v)``
over ``funnel_memberships``, the span layout in ``funnel.storage.layout``) in user id order, in pages
along the primary key ``(segment_id, user_id, entered)``; ``funnel.core.sorted_merge`` combines
the sorted streams (union, intersect, minus) in one pass. Memory stays flat whatever the
operands' sizes, no temporary table is built, and nothing is written.

The pages of one operand are read at different moments, yet they are one consistent version:
a refresh meanwhile only adds spans entering after ``v`` and closes open spans at a later
version, neither of which changes who was a member at ``v``; and ``v`` was live when it was
pinned, so ``keep_versions`` refreshes must pass before pruning could touch it.

Why MySQL and not Redis's ``SINTERSTORE`` family: MySQL holds the exact versions the run
history names, and the operands' keys need not share a Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from funnel.core.composite_expr import Expr
from funnel.core.sorted_merge import batched, evaluate
from funnel.storage.mysql.segment_version_reader import LiveVersion, SegmentVersionReader


class CompositeSource:
    """Reads operands' live versions and streams a composite's members over ``conn`` (a
    mysqlclient connection; each page is read whole, so it may serve other reads in between)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.store = SegmentVersionReader(conn)

    def live_versions(self, segment_ids: Iterable[str]) -> dict[str, LiveVersion | None]:
        """Each operand's live version (None: never computed)."""
        return {segment_id: self.store.live_version(segment_id) for segment_id in segment_ids}

    def stream(self, expr: Expr, versions: Mapping[str, int], batch_size: int) -> Iterator[list[str]]:
        """The expression's members over the pinned ``versions``, ``batch_size`` ids at a time,
        each once, in user id order."""

        def operand(segment_id: str) -> Iterator[str]:
            for page in self.store.iter_members(segment_id, versions[segment_id], batch_size):
                yield from page

        return batched(evaluate(expr, operand), batch_size)
