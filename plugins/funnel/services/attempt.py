"""An attempt: a refresh or a tag load that another thread may stop while it runs.

The operators' ``on_kill`` calls ``abort`` from another thread; the attempt notices at its next
batch, fails without swapping, and its row in the run history says why.
"""

from __future__ import annotations

import threading

from funnel.core.states import RunStatus
from funnel.core.utc_time import utc_now
from funnel.storage.mysql.run_history import Outcome, RunHistory
from funnel.storage.redis.segment_lock import SegmentLock


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
