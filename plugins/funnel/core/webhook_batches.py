"""What one version of a segment becomes on the wire, and how long to wait between attempts.

A version's changes go in ``batches`` of at most ``batch_size`` ids: its entered ids first,
then its exited ids, each kind in user id order; a version that changed nobody still gets
one (empty) batch, so a receiver sees every version. Batches are numbered from 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPlan:
    """The batches of one version: ``entered_batches`` of entered ids, then the exited ones."""

    segment_id: str
    version: int
    entered: int
    exited: int
    batch_size: int

    @property
    def entered_batches(self) -> int:
        return math.ceil(self.entered / self.batch_size)

    @property
    def batches(self) -> int:
        return max(1, self.entered_batches + math.ceil(self.exited / self.batch_size))


@dataclass(frozen=True)
class Cursor:
    """A subscription's place: ``version`` delivered in full, ``batches`` of the next one
    delivered (cut at ``batch_size`` ids)."""

    version: int
    batches: int = 0
    batch_size: int = 0

    def resume_after(self, batch_size: int) -> int:
        """Batches of the next version already delivered at ``batch_size`` (0: start it over,
        as the setting changed since they were cut)."""
        return self.batches if self.batch_size == batch_size else 0


def body(plan: VersionPlan, batch: int, entered: list[str], exited: list[str]) -> bytes:
    """The JSON body of one batch (compact, keys in a fixed order)."""
    return json.dumps(
        {
            "segment_id": plan.segment_id,
            "version": plan.version,
            "batch": batch,
            "batches": plan.batches,
            "entered": entered,
            "exited": exited,
            "delivery_id": delivery_id(plan.segment_id, plan.version, batch),
        },
        separators=(",", ":"),
    ).encode()


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """How long to wait after failed attempt ``attempt`` (from 1): ``base`` doubled each time, at most ``cap``."""
    return min(base * 2 ** (attempt - 1), cap)


def delivery_id(segment_id: str, version: int, batch: int) -> str:
    """A webhook delivery's idempotency key (``X-Funnel-Delivery``): the same for every repeat."""
    return f"{segment_id}:{version}:{batch}"
