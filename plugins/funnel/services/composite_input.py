"""A composite's refresh input: its members from the operands' live versions, and which
versions those were.

``composite_batches`` is what a ``Refresher`` streams for a composite (the operator and the
tests use it alike). Every operand is read at its live version when the attempt starts computing. The run
history's ``inputs`` column keeps, per operand, that version, the Airflow run that made it,
and whether it is this run's own (``this_run``): false when the operand's task was skipped
(overshoot), refused by a guard or failed in this run, or is a static segment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from funnel.core.composite_expr import Expr, expression_in_words, operands
from funnel.core.errors import OperandNotComputed
from funnel.core.run_info import RunInfo
from funnel.storage.mysql.composite_source import CompositeSource
from funnel.storage.mysql.segment_version_reader import LiveVersion


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

    @property
    def kept(self) -> int:
        """How many operands are used at a version an earlier run made (``this_run`` false)."""
        return sum(not self.is_this_run(live) for live in self.lives.values())

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

    def summary(self) -> str:
        """``a v12 (this run), b v7 (kept from scheduled__...)`` for the task log."""
        return ", ".join(
            f"{name} v{live.version} ({'this run' if self.is_this_run(live) else f'kept from {live.run_id}'})"
            for name, live in sorted(self.lives.items())
        )


def composite_batches(
    segment_id: str,
    expr: Expr,
    source: CompositeSource,
    run: RunInfo,
    note_inputs: Callable[[str, int], None],
    batch_size: int,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> Callable[[], Iterator[list[str]]]:
    """``batches()`` for ``Refresher.refresh``: when called (under the lock, once the refresh is
    sure to run), pins each operand's live version, records them with ``note_inputs`` (as JSON,
    and how many were kept from an earlier run), and streams the members."""

    def batches() -> Iterator[list[str]]:
        inputs = CompositeInputs.read(segment_id, source, operands(expr), run)
        note_inputs(inputs.to_json(), inputs.kept)
        log.info("segment %s = %s, from %s", segment_id, expression_in_words(expr), inputs.summary())
        return source.stream(expr, inputs.versions, batch_size)

    return batches
