"""An attempt: a refresh or a tag load that another thread may stop while it runs, and that
reports how it ended.

The operators' ``on_kill`` calls ``abort`` from another thread; the attempt notices at its next
batch, fails without swapping, and its row in the run history says why. Whatever the outcome,
the attempt hands an ``AttemptReport`` to the caller's ``report`` (the operators send it to
Airflow's metrics, ``funnel.airflow.refresh_metrics``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from funnel.core.errors import RefreshRejected, RefreshSkipped
from funnel.core.states import RunStatus
from funnel.core.utc_time import utc_now
from funnel.storage.mysql.run_history import Outcome, RunHistory
from funnel.storage.redis.segment_lock import SegmentLock

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class AttemptReport(Generic[R]):
    """How one attempt ended, whatever the outcome."""

    #: as the run history records it: success, skipped, superseded, rejected or failed
    outcome: RunStatus
    #: from asking for the lock to the end (the lock wait included)
    seconds: float
    #: how long it waited for the lock (another attempt held it)
    lock_wait_seconds: float
    #: what a success made live (None for any other outcome)
    result: R | None = None


#: Where an attempt sends its report; a report that fails is logged and never changes the outcome.
Reporter = Callable[[AttemptReport[R]], None]


def outcome_of(exc: BaseException) -> RunStatus:
    """How the run history records an attempt that raised ``exc``."""
    if isinstance(exc, RefreshSkipped):
        return exc.status
    if isinstance(exc, RefreshRejected):
        return RunStatus.REJECTED
    return RunStatus.FAILED


@dataclass
class Reporting(Generic[R]):
    """What the body of ``reported`` sets: the result of a success."""

    result: R | None = None


@contextlib.contextmanager
def reported(lock: SegmentLock, report: Reporter[R] | None) -> Iterator[Reporting[R]]:
    """Time the attempt inside (from asking for ``lock``) and hand ``report`` how it ended: success
    with the ``result`` the body set when the body returns, else the outcome of what it raised."""
    began = time.monotonic()
    reporting: Reporting[R] = Reporting()
    outcome = RunStatus.FAILED
    try:
        yield reporting
        outcome = RunStatus.SUCCESS
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        if report is not None:
            seconds = time.monotonic() - began
            try:
                report(AttemptReport(outcome, seconds, lock.waited_seconds, reporting.result))
            except Exception as exc:
                log.warning("funnel: the attempt's report failed (%s); the attempt ended %s", exc, outcome)


class Stoppable:
    """An attempt that another thread (the operator's ``on_kill``) may stop while it runs.

    Subclasses set ``_attempt`` and ``_lock`` while they work and check ``cancelled``
    between batches.
    """

    history: RunHistory

    def _init_stoppable(self) -> None:
        self.cancelled = threading.Event()
        self._attempt: int | None = None
        self._lock: SegmentLock | None = None

    def abort(self, reason: str) -> None:
        """Stop the running attempt (from another thread): at the next batch it fails without
        swapping; its attempt is recorded as failed with ``reason`` now, on a new connection
        when ``history`` can reconnect; its lock is released, so the next try need not wait."""
        attempt, lock = self._attempt, self._lock
        try:
            history = self.history.on_new_connection() if attempt is not None else None
            if attempt is not None and history is not None:  # first, so the row says why it stopped
                try:
                    history.finish(attempt, Outcome(RunStatus.FAILED, error=reason), utc_now())
                finally:
                    history.close()
        finally:
            self.cancelled.set()
            if lock is not None:
                lock.release()


def describe_failure(exc: BaseException) -> str:
    """An error for the run history and the task log: the type and the message, never empty."""
    text = str(exc).strip()
    name = type(exc).__name__
    if name == "AirflowTaskTimeout":
        return "AirflowTaskTimeout: the task ran past its execution_timeout and was stopped"
    return f"{name}: {text}" if text else name
