"""Which version of each operand a composite's attempt computes from, and how it says so.

Every operand is read at its live version when the attempt starts computing. The run
history's ``inputs`` column keeps, per operand, that version, the Airflow run that made it,
and whether it is this run's own (``this_run``): false when the operand's task was skipped
(overshoot), refused by a guard or failed in this run, or is a static segment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from funnel.refresh import RefreshSkipped
from funnel.stores.composite import CompositeSource
from funnel.stores.mysql_store import LiveVersion
from funnel.stores.run_info import RunInfo


class OperandNotComputed(RefreshSkipped):
    """An operand has no live version yet, so the composite cannot be computed this time."""


@dataclass(frozen=True)
class CompositeInputs:
    """The live version of each operand, pinned for one attempt."""

    lives: dict[str, LiveVersion]
    run: RunInfo

    @classmethod
    def read(cls, segment_id: str, source: CompositeSource, names: Iterable[str], run: RunInfo) -> CompositeInputs:
        """Each operand's live version now; ``OperandNotComputed`` when one has none."""
        found = source.live_versions(names)
        missing = sorted(name for name, live in found.items() if live is None)
        if missing:
            shown = ", ".join(repr(name) for name in missing)
            raise OperandNotComputed(
                f"composite segment {segment_id!r}: operand(s) {shown} have no live version yet (never computed), so "
                "it is not computed this time; it is computed at the first slot after every operand has one"
            )
        return cls({name: live for name, live in found.items() if live is not None}, run)

    @property
    def versions(self) -> dict[str, int]:
        return {name: live.version for name, live in self.lives.items()}

    def is_this_run(self, live: LiveVersion) -> bool:
        return (live.dag_id, live.run_id) == (self.run.dag_id, self.run.run_id)

    def to_json(self) -> str:
        """The history's ``inputs``: ``[{"segment_id", "version", "run_id", "this_run"}, ...]``."""
        return json.dumps(
            [
                {
                    "segment_id": name,
                    "version": live.version,
                    "dag_id": live.dag_id,
                    "run_id": live.run_id,
                    "this_run": self.is_this_run(live),
                }
                for name, live in sorted(self.lives.items())
            ],
            separators=(",", ":"),
        )

    def describe(self) -> str:
        """``a v12 (this run), b v7 (kept from scheduled__...)`` for the task log."""
        return ", ".join(
            f"{name} v{live.version} ({'this run' if self.is_this_run(live) else f'kept from {live.run_id}'})"
            for name, live in sorted(self.lives.items())
        )
