"""funnel's exception tree (small on purpose, so callers can catch by meaning) and its state enums."""

from __future__ import annotations

import enum


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


class PartialWrite(StoreError):
    """MySQL took a write but Redis did not; the message tells the client how to finish it."""


class RefreshRejected(FunnelError):
    """A refresh was computed but refused before the swap (a guard); live data is untouched."""

    def __init__(self, message: str, version: int | None = None, size: int | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.size = size


class PreviewError(FunnelError, ValueError):
    """A preview cannot be made from what was asked (nothing to preview, two things at once). The
    message names what was wrong and the fix."""


class PreviewNotAvailable(PreviewError):
    """Previews of this kind of segment are not built yet (composite segments)."""


class UnknownSegment(FunnelError, LookupError):
    """A segment id that the catalog does not hold."""


class PreviewTimeout(FunnelError):
    """A preview's query ran past ``preview_timeout_seconds`` and was cancelled on HiveServer2."""


class RunStatus(enum.StrEnum):
    """How a refresh attempt ended (``funnel_segment_runs.status``, a MySQL ENUM of the same values)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"


class VersionState(enum.StrEnum):
    """Where a version is in its life (``funnel_segment_versions.state``, a MySQL ENUM of the same values)."""

    STAGING = "staging"  # being written by a refresh
    LIVE = "live"  # what readers see
    RETIRED = "retired"  # was live; one of the ``keep_versions`` kept: its members can still be paged
    # was live, beyond ``keep_versions`` but within ``change_history_days``: its members are no longer
    # pageable; its spans and change log stay, so the membership history (``?at=``, user history) answers
    ARCHIVED = "archived"
    DISCARDED = "discarded"  # computed but never made live (rejected, superseded, failed); rows being deleted
    DROPPED = "dropped"  # rows deleted; the row stays so the number is never reused


class ChangeType(enum.StrEnum):
    """Which way a user crossed a segment (``funnel_segment_changes`` / ``funnel_proxy_changes.change_type``)."""

    ENTERED = "entered"
    EXITED = "exited"


class HistoryGone(FunnelError):
    """A time older than the membership history keeps (410); the message names the horizon and the setting."""

    def __init__(self, message: str, horizon: object) -> None:
        super().__init__(message)
        self.horizon = horizon


class NotReconstructable(FunnelError, ValueError):
    """A proxy segment whose past membership the history cannot answer (a time-based rule; 422)."""


class Freshness(enum.StrEnum):
    """Whether a segment meets its freshness objective (``funnel.freshness``; not stored, computed on reading)."""

    FRESH = "fresh"  # within its objective (or nothing to be late: proxy, disabled, not due yet)
    STALE = "stale"  # missed its objective: no successful refresh for its last two slots, or past run_at + grace
    FAILING = "failing"  # its last finished attempt failed or was rejected, with no success since


class DeliveryStatus(enum.StrEnum):
    """Where one webhook delivery (a batch of a version) is (``funnel_webhook_deliveries.status``, a MySQL
    ENUM of the same values)."""

    PENDING = "pending"  # being sent (or to be sent again: unparked by ``webhooks retry``)
    DELIVERED = "delivered"  # the receiver answered 2xx
    PARKED = "parked"  # failed past ``webhook_max_attempts`` (or its changes are gone); waits for a manual retry


class WebhookError(FunnelError, ValueError):
    """A webhook subscription is invalid. The message names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class UnknownWebhook(FunnelError, LookupError):
    """No webhook subscription has this id."""


class DeliveriesParked(FunnelError):
    """A webhook delivery run parked deliveries (after delivering everything else it could)."""


class HiveUnavailable(FunnelError):
    """HiveServer2 could not be reached or did not answer in time. The message names the connection and the fix."""


class HiveQueryError(FunnelError):
    """Hive refused or failed a query. The message is Hive's own, lifted out of the Thrift reply."""


class HiveQueryCancelled(HiveQueryError):
    """A Hive query was cancelled (on request or by someone else) before all its rows were read."""


class FeedChange(enum.StrEnum):
    """The ``change`` field of a change-feed entry (README, "Change feed")."""

    ENTERED = "entered"
    EXITED = "exited"
    END = "end"  # the closing entry of a version: its entered and exited counts
