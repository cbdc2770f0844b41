"""funnel's exception tree: small on purpose, so callers can catch by meaning."""

from __future__ import annotations


class FunnelError(Exception):
    """Base of every error funnel raises on purpose."""


class SegmentError(FunnelError, ValueError):
    """A segment row is invalid. The message names the segment, the field and the fix."""

    def __init__(self, segment_id: str, field: str, problem: str, fix: str) -> None:
        self.segment_id = segment_id
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"segment {segment_id!r}: field {field!r} {problem}. Fix: {fix}")


class CatalogError(FunnelError):
    """The segment catalog cannot be read and no last-good copy exists."""


class StoreError(FunnelError):
    """Redis or MySQL rejected or lost part of a refresh; live data is untouched."""


class RefreshRejected(FunnelError):
    """A refresh was computed but refused before the swap (a guard); live data is untouched."""
