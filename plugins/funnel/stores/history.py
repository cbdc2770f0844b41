"""The run history in MySQL: one ``funnel_segment_runs`` row per refresh attempt.

Written on its own autocommit statements, so an attempt that fails half-way (or is
killed) still leaves its row: a row left 'running' by a dead attempt is marked failed
by the next attempt of the same segment, which holds the segment's lock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from funnel import layout
from funnel.stores.run_info import RunInfo, from_naive_utc, to_naive_utc

#: Longest error text kept per attempt (the task log has the rest).
ERROR_MAX_CHARS = 4000


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    status: str  # success, failed, rejected, skipped, superseded
    version: int | None = None
    size: int | None = None
    entered: int | None = None
    exited: int | None = None
    error: str | None = None


class RunHistory:
    """Attempts of segment refreshes, over one DB-API (mysqlclient) connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def start(self, segment_id: str, run: RunInfo, now: dt.datetime) -> int:
        """Record a new attempt as 'running'; return its id."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.RUNS_TABLE}"
            " (segment_id, dag_id, run_id, try_number, logical_date, started_at, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'running')",
            (segment_id, run.dag_id, run.run_id, run.try_number, to_naive_utc(run.logical_date), to_naive_utc(now)),
        )
        attempt_id = int(cur.lastrowid)
        self.conn.commit()
        return attempt_id

    def finish(self, attempt_id: int, outcome: Outcome, now: dt.datetime) -> None:
        self.conn.rollback()  # whatever the failed attempt left open
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.RUNS_TABLE} SET finished_at = %s, status = %s, version = %s, size = %s,"
            " entered = %s, exited = %s, error = %s WHERE id = %s",
            (
                to_naive_utc(now),
                outcome.status,
                outcome.version,
                outcome.size,
                outcome.entered,
                outcome.exited,
                outcome.error[:ERROR_MAX_CHARS] if outcome.error else None,
                attempt_id,
            ),
        )
        self.conn.commit()

    def mark_abandoned(self, segment_id: str, current_attempt: int, now: dt.datetime) -> int:
        """Mark attempts still 'running' (their process died) as failed; the caller holds the lock."""
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.RUNS_TABLE} SET status = 'failed', finished_at = %s,"
            " error = 'the attempt ended without finishing (process killed or lost)'"
            " WHERE segment_id = %s AND status = 'running' AND id <> %s",
            (to_naive_utc(now), segment_id, current_attempt),
        )
        count = cur.rowcount
        self.conn.commit()
        return count

    def last_success_started_at(self, segment_id: str, other_than: RunInfo) -> dt.datetime | None:
        """When the latest successful refresh of the segment by another Airflow run started."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT MAX(started_at) FROM {layout.RUNS_TABLE}"
            " WHERE segment_id = %s AND status = 'success' AND NOT (dag_id = %s AND run_id = %s)",
            (segment_id, other_than.dag_id, other_than.run_id),
        )
        (value,) = cur.fetchone()
        self.conn.commit()
        return from_naive_utc(value) if value is not None else None
