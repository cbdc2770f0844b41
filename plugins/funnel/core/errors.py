"""funnel's exception tree: every error funnel raises on purpose, and the HTTP status it answers.

Small on purpose, so callers can catch by meaning. Each class says its ``http_status``; the API
has one handler for ``FunnelError`` (``funnel.api.error_answers``). A 4xx answer carries the message,
which names what was wrong and the fix; a 5xx answer carries ``client_message`` instead, and the
message (which may name hosts and ports) goes to the log only.

The states funnel stores are in ``funnel.core.states``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from funnel.core.states import RunStatus

#: What an API client hears when a store fails (the details go to the log, never to the client).
STORE_UNAVAILABLE = "a store (Redis or MySQL) did not answer; try again"


class FunnelError(Exception):
    """Base of every error funnel raises on purpose."""

    #: The API's answer to this error.
    http_status: ClassVar[int] = 503
    #: For a 5xx: what the client hears instead of the message (None: the message itself).
    client_message: ClassVar[str | None] = STORE_UNAVAILABLE

    def answer_fields(self) -> dict[str, object]:
        """What the API's error answer carries besides ``error`` (JSON values)."""
        return {}


# --------------------------------------------------------------------------- bad input (4xx)


class SegmentError(FunnelError, ValueError):
    """A segment row is invalid. The message names the segment, the field and the fix."""

    http_status = 422

    def __init__(self, segment_id: str, field: str, problem: str, fix: str) -> None:
        self.segment_id = segment_id
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"segment {segment_id!r}: field {field!r} {problem}. Fix: {fix}")


class BadInput(FunnelError, ValueError):
    """An API request is malformed."""

    http_status = 422


class TooLarge(BadInput):
    """An API request over a limit (ids per check, events per batch)."""

    http_status = 413


class UserIdRefused(FunnelError, ValueError):
    """A value that is not a user id (``funnel.core.ids``): ``shown`` is the value as text, ``problem`` says why."""

    http_status = 422

    def __init__(self, shown: str, problem: str) -> None:
        super().__init__(f"user id {shown[:80]!r}, which {problem}")
        self.shown = shown
        self.problem = problem


class UserIdError(FunnelError, ValueError):
    """A query returned a user id the stores cannot hold; the message names the segment and the fix."""

    http_status = 422


class TimeRefused(FunnelError, ValueError):
    """Text that is not a time funnel can read (``funnel.core.utc_time``); ``problem`` says why."""

    http_status = 422

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class EventError(FunnelError, ValueError):
    """An event in a batch is malformed; the message names the event, the field and the fix."""

    http_status = 422


class TagRowError(FunnelError, ValueError):
    """A tag query returned a row the stores cannot hold; the message names it and the fix."""

    http_status = 422


class PreviewError(FunnelError, ValueError):
    """A preview cannot be made from what was asked (nothing to preview, two things at once). The
    message names what was wrong and the fix."""

    http_status = 422


class PreviewNotAvailable(PreviewError):
    """Nothing to preview yet: previews of this kind of segment are not built, or a composite's
    operands have no live version. A definition is saved without its preview then."""


class NotReconstructable(FunnelError, ValueError):
    """A proxy segment whose past membership the history cannot answer (a time-based rule)."""

    http_status = 422


class WebhookError(FunnelError, ValueError):
    """A webhook subscription is invalid. The message names the field and the fix."""

    http_status = 422

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class HiveQueryError(FunnelError):
    """Hive refused or failed a query. The message is Hive's own, lifted out of the Thrift reply."""

    http_status = 422


class HiveQueryCancelled(HiveQueryError):
    """A Hive query was cancelled (on request or by someone else) before all its rows were read."""


class Unauthorized(FunnelError):
    """No token, or not a token this service knows."""

    http_status = 401


class Forbidden(FunnelError):
    """A known token without the scope the endpoint needs."""

    http_status = 403


class UnknownSegment(FunnelError, LookupError):
    """A segment id that the catalog does not hold (or a resource of it)."""

    http_status = 404


class UnknownWebhook(FunnelError, LookupError):
    """No webhook subscription has this id."""

    http_status = 404


class NotComputed(FunnelError, LookupError):
    """A static or dynamic segment that has no live version yet, or a proxy segment asked for what
    only a computed segment has."""

    http_status = 409


class EventConflict(FunnelError):
    """An ``event_id`` already recorded for a different event (a retry must be identical)."""

    http_status = 409


class SegmentExists(FunnelError):
    """A segment is added under an id the catalog already has."""

    http_status = 409


class RevisionConflict(FunnelError):
    """An edit started from a revision that is no longer the segment's latest: someone changed it
    since. ``changed``: each field the other change touched, ``[theirs before, theirs after]``."""

    http_status = 409

    def __init__(self, segment_id: str, expected: int, current: int, changed: dict[str, list[object]]) -> None:
        self.segment_id, self.expected, self.current, self.changed = segment_id, expected, current, changed
        fields = ", ".join(f"{name} ({before!r} -> {after!r})" for name, (before, after) in changed.items())
        super().__init__(
            f"segment {segment_id!r} is at revision {current}, not {expected}: it was changed since"
            f"{f' ({fields})' if fields else ''}. Fix: read it again (segments show {segment_id}) and edit "
            f"revision {current}"
        )


class SegmentInUse(FunnelError):
    """A segment others depend on cannot be disabled or retired: ``dependents`` names them."""

    http_status = 409

    def __init__(self, segment_id: str, action: str, dependents: list[str]) -> None:
        self.segment_id, self.dependents = segment_id, dependents
        super().__init__(
            f"segment {segment_id!r} cannot be {action}: {', '.join(dependents)} depend on it. Fix: disable or "
            f"change {'them' if len(dependents) > 1 else 'it'} first"
        )


class Gone(FunnelError):
    """What was asked for is no longer kept: a cursor's version."""

    http_status = 410


class SegmentRetired(Gone):
    """A retired segment: it has no task and answers nothing; ``restore`` brings it back.
    ``retired_at``: when (None: its catalog row was deleted by hand and no parse recorded it yet)."""

    def __init__(self, segment_id: str, retired_at: dt.datetime | None) -> None:
        self.segment_id, self.retired_at = segment_id, retired_at
        when = f" at {retired_at.isoformat()}" if retired_at else " (its catalog row was deleted)"
        super().__init__(
            f"segment {segment_id!r} was retired{when}. Fix: restore it (segments restore {segment_id}, "
            f"POST /v1/segments/{segment_id}:restore) to use it again"
        )

    def answer_fields(self) -> dict[str, object]:
        return {"retired_at": None if self.retired_at is None else self.retired_at.isoformat()}


class HistoryGone(Gone):
    """A time older than the membership history keeps; the message names the horizon and the setting."""

    def __init__(self, message: str, horizon: object) -> None:
        super().__init__(message)
        self.horizon = horizon


class Busy(FunnelError):
    """More previews at once than ``preview_concurrency`` allows."""

    http_status = 429


# --------------------------------------------------------------------------- the services (5xx)


class StoreError(FunnelError):
    """Redis or MySQL rejected or lost part of a refresh; live data is untouched."""


class PartialWrite(StoreError):
    """MySQL took a write but Redis did not; the message tells the client how to finish it."""

    client_message = None


class LockConflict(StoreError):
    """MySQL rolled a transaction back on a lock conflict (a deadlock or a lock wait timeout) more
    times in a row than ``mysql_lock_retries`` allows; nothing of it was written."""


class RespError(StoreError):
    """Redis answered a command of the API's lean client (``funnel.storage.redis.resp_client``) with an error."""


class CatalogError(FunnelError):
    """The segment catalog cannot be read and no last-good copy exists."""


class HiveUnavailable(FunnelError):
    """HiveServer2 could not be reached or did not answer in time. The message names the connection and the fix."""

    client_message = "HiveServer2 did not answer, so the query was not previewed; nothing was written. Try again"


class PreviewTimeout(FunnelError):
    """A preview's query ran past ``preview_timeout_seconds`` and was cancelled on HiveServer2."""

    http_status = 504
    client_message = None


# --------------------------------------------------------------------------- a refresh's own outcomes


class RefreshRejected(FunnelError):
    """A refresh was computed but refused before the swap (a guard); live data is untouched."""

    def __init__(self, message: str, version: int | None = None, size: int | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.size = size


class RefreshSkipped(FunnelError):
    """The refresh did not change live data, on purpose (overshoot, frozen, superseded). ``status``
    is how the run history records it."""

    status: ClassVar[RunStatus] = RunStatus.SKIPPED


class RefreshSuperseded(RefreshSkipped):
    """The result was computed, but a version for a later logical date is live and stays."""

    status: ClassVar[RunStatus] = RunStatus.SUPERSEDED


class OperandNotComputed(RefreshSkipped):
    """An operand of a composite has no live version yet, so the composite cannot be computed this time."""


class RefreshCancelled(FunnelError):
    """The refresh was told to stop (the task was killed or timed out); live data is untouched."""


class SegmentBusy(FunnelError):
    """Another refresh of the same segment held the lock for as long as this one could wait."""

    http_status = 409
    client_message = None

    def __init__(self, segment_id: str, holder: dict[str, Any], waited_seconds: float, held_by: str) -> None:
        self.segment_id = segment_id
        self.holder = holder
        super().__init__(f"segment {segment_id!r} is being refreshed by {held_by}; waited {waited_seconds:.0f}s")


class LockLost(FunnelError):
    """The lock expired or was taken over while this refresh still worked; it must not swap."""


class DeliveriesParked(FunnelError):
    """A webhook delivery run parked deliveries (after delivering everything else it could)."""
