"""What a preview is asked (``PreviewRequest``), the limits it runs under (``PreviewLimits``) and what
it answers (``Preview``, with its ``Overlap`` and ``AgainstLive`` parts): frozen values, shared by
``funnel.services.previewer``, the CLI and the API."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PreviewRequest:
    """What to preview: a segment id alone (its catalog definition), or a query or a rule (with
    the id of the existing segment it would replace, if any). ``kind``: ``dynamic`` (default)
    or ``static`` for a query; a rule is a proxy segment's."""

    segment_id: str | None = None
    query: str | None = None
    rule: object = None  # a JSON object, or its text
    kind: str | None = None

    @classmethod
    def from_text(cls, text: str, segment_id: str | None = None, kind: str | None = None) -> PreviewRequest:
        """A file's or stdin's text: a JSON object is a rule, anything else a query."""
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return cls(segment_id=segment_id, rule=text, kind=kind)
        return cls(segment_id=segment_id, query=text, kind=kind)


@dataclass(frozen=True)
class PreviewLimits:
    """The settings a preview runs under (``funnel.wiring.previewer`` reads them)."""

    timeout_seconds: float
    max_rows: int
    sample_size: int
    batch_size: int
    max_shrink_pct: float
    new_user_days: int
    allowed_functions: frozenset[str] = frozenset()
    hive_poll_seconds: float = 1.0
    hive_log_every_seconds: float = 60.0


@dataclass(frozen=True)
class Overlap:
    """How many of the preview's ids one existing segment holds now (``overlap`` None: not
    compared, ``reason`` says why). Not ``exact`` when the preview was capped: then it counts
    only the ids read before the cap, a lower bound."""

    segment_id: str
    kind: str
    overlap: int | None
    size: int | None
    exact: bool
    reason: str | None = None


@dataclass(frozen=True)
class AgainstLive:
    """What the segment's next refresh would do if its query returned the preview's result.

    ``entered`` / ``exited`` are None (with the ``reason``) when they cannot be counted
    exactly. ``guard`` is the guards' refusal in words, or None; ``would_refuse`` is
    True / False, or None when a capped preview cannot tell.
    """

    version: int | None
    size: int | None
    entered: int | None
    exited: int | None
    guard: str | None
    would_refuse: bool | None
    reason: str | None = None


@dataclass(frozen=True)
class Preview:
    """The answer of a preview (``to_dict`` is what the CLI's ``--json`` and the API return)."""

    segment_id: str | None
    kind: str
    size: int
    capped: bool
    rows_read: int
    null_ids: int
    sample: list[str]
    query_seconds: float
    overlap: list[Overlap]
    against_live: AgainstLive | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
