"""The states funnel stores and answers, as ``StrEnum``s. Pure.

Each mirrors a MySQL ENUM column of the same values (``funnel.storage.migrations``); SQL takes
them as parameters (never as quoted literals), and the tuples below name the sets that SQL
and code ask about more than once.
"""

from __future__ import annotations

import enum


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


class Freshness(enum.StrEnum):
    """Whether a segment meets its freshness objective (``funnel.core.freshness``; not stored, computed on reading)."""

    FRESH = "fresh"  # within its objective (or nothing to be late: proxy, disabled, not due yet)
    STALE = "stale"  # missed its objective: no successful refresh for its last two slots, or past run_at + grace
    FAILING = "failing"  # its last finished attempt failed or was rejected, with no success since


class DeliveryStatus(enum.StrEnum):
    """Where one webhook delivery (a batch of a version) is (``funnel_webhook_deliveries.status``, a MySQL
    ENUM of the same values)."""

    PENDING = "pending"  # being sent (or to be sent again: unparked by ``webhooks retry``)
    DELIVERED = "delivered"  # the receiver answered 2xx
    PARKED = "parked"  # failed past ``webhook_max_attempts`` (or its changes are gone); waits for a manual retry


class RevisionChange(enum.StrEnum):
    """What a revision of a segment's definition did (``funnel_segment_revisions.change_type``, a
    MySQL ENUM of the same values)."""

    CREATED = "created"
    EDITED = "edited"
    ENABLED = "enabled"
    DISABLED = "disabled"
    RETIRED = "retired"
    RESTORED = "restored"
    CATALOG = "catalog"  # changed outside funnel's write path (the row or the Variable, by hand), seen at parse


class FeedChange(enum.StrEnum):
    """The ``change`` field of a change-feed entry (README, "Change feed")."""

    ENTERED = "entered"
    EXITED = "exited"
    END = "end"  # the closing entry of a version: its entered and exited counts


#: The versions whose members MySQL still holds and pages (the live one and the retired ones).
#: SQL asks ``state IN (%s, %s)`` with these as parameters (``funnel.storage.mysql.sql_params.marks``).
PAGEABLE_STATES = (VersionState.LIVE, VersionState.RETIRED)
#: The versions whose change log (entered / exited) and member spans are kept: the pageable ones and
#: the archived ones (the membership history and webhooks read them). In SQL as ``PAGEABLE_STATES``.
LOGGED_STATES = (VersionState.LIVE, VersionState.RETIRED, VersionState.ARCHIVED)
#: How an attempt ended when it did not change live data on purpose.
SKIPPED_STATUSES = (RunStatus.SKIPPED, RunStatus.SUPERSEDED)
