"""The run history in MySQL: one ``funnel_segment_runs`` row per refresh attempt.

Written on its own connection and its own autocommit statements, apart from the
connection that stages members, so an attempt whose staging connection was killed or
lost still records its real error. If the history's own connection is gone too, it
reconnects once (``reconnect``) to record the outcome. Only a process that is itself
killed leaves its row 'running'; the next attempt of the segment, which holds the
segment's lock, marks such rows failed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.freshness import Attempt, RunSummary, summarize
from funnel.core.run_info import RunInfo
from funnel.core.states import RunStatus
from funnel.core.utc_time import from_naive_utc, to_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.sql_params import marks

log = logging.getLogger(__name__)

#: Longest error text kept per attempt (the task log has the rest).
ERROR_MAX_CHARS = 4000
#: Segment ids per ``IN (...)`` list.
IN_CHUNK = 1000
ABANDONED_ERROR = "the attempt ended without finishing (process killed or lost)"


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended."""

    status: RunStatus
    version: int | None = None
    size: int | None = None
    entered: int | None = None
    exited: int | None = None
    error: str | None = None


class RunHistory:
    """Attempts of segment refreshes, over a DB-API (mysqlclient) connection of its own.

    :param reconnect: opens a new connection; used once when recording an outcome finds
        the connection dead (the attempt's own error is then still recorded).
    """

    def __init__(self, conn: Any, reconnect: Callable[[], Any] | None = None) -> None:
        self.conn = conn
        self.reconnect = reconnect

    def on_new_connection(self) -> RunHistory | None:
        """The same history on a connection of its own (None: this one cannot reconnect), for a
        thread that must record while another uses ``conn`` (an ``on_kill``)."""
        return None if self.reconnect is None else RunHistory(self.reconnect())

    def start(self, segment_id: str, run: RunInfo, now: dt.datetime) -> int:
        """Record a new attempt as 'running'; return its id."""
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.RUNS_TABLE}"
            " (segment_id, dag_id, run_id, try_number, logical_date, started_at, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                segment_id,
                run.dag_id,
                run.run_id,
                run.try_number,
                to_naive_utc(run.logical_date),
                to_naive_utc(now),
                RunStatus.RUNNING.value,
            ),
        )
        attempt_id = int(cur.lastrowid)
        self.conn.commit()
        return attempt_id

    def finish(self, attempt_id: int, outcome: Outcome, now: dt.datetime) -> None:
        """Record how the attempt ended (only while it is still 'running': a finished row stays)."""
        try:
            self._finish(attempt_id, outcome, now)
        except Exception as exc:
            if self.reconnect is None or not _is_connection_error(exc):
                raise
            log.warning("funnel: the run history's MySQL connection failed (%s); reconnecting to record", exc)
            self._close_quietly()
            self.conn = self.reconnect()
            self._finish(attempt_id, outcome, now)

    def _finish(self, attempt_id: int, outcome: Outcome, now: dt.datetime) -> None:
        self.conn.rollback()  # whatever the failed attempt left open
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.RUNS_TABLE} SET finished_at = %s, status = %s, version = %s, size = %s,"
            " entered = %s, exited = %s, error = %s WHERE id = %s AND status = %s",
            (
                to_naive_utc(now),
                RunStatus(outcome.status).value,
                outcome.version,
                outcome.size,
                outcome.entered,
                outcome.exited,
                outcome.error[:ERROR_MAX_CHARS] if outcome.error else None,
                attempt_id,
                RunStatus.RUNNING.value,
            ),
        )
        self.conn.commit()

    def set_inputs(self, attempt_id: int, inputs: str) -> None:
        """Record what the attempt computed from (a composite: each operand's version, as JSON)."""
        cur = self.conn.cursor()
        cur.execute(f"UPDATE {layout.RUNS_TABLE} SET inputs = %s WHERE id = %s", (inputs, attempt_id))
        self.conn.commit()

    def mark_abandoned(self, segment_id: str, current_attempt: int, now: dt.datetime) -> int:
        """Mark attempts still 'running' (their process died) as failed; the caller holds the lock."""
        cur = self.conn.cursor()
        cur.execute(
            f"UPDATE {layout.RUNS_TABLE} SET status = %s, finished_at = %s, error = %s"
            " WHERE segment_id = %s AND status = %s AND id <> %s",
            (
                RunStatus.FAILED.value,
                to_naive_utc(now),
                ABANDONED_ERROR,
                segment_id,
                RunStatus.RUNNING.value,
                current_attempt,
            ),
        )
        count = cur.rowcount
        self.conn.commit()
        return count

    def last_success_started_at(self, segment_id: str, other_than: RunInfo) -> dt.datetime | None:
        """When the latest successful refresh of the segment by another Airflow run started."""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT MAX(started_at) FROM {layout.RUNS_TABLE}"
            " WHERE segment_id = %s AND status = %s AND NOT (dag_id = %s AND run_id = %s)",
            (segment_id, RunStatus.SUCCESS.value, other_than.dag_id, other_than.run_id),
        )
        (value,) = cur.fetchone()
        self.conn.commit()
        return from_naive_utc(value) if value is not None else None

    def summaries(
        self, segment_id: str | None = None, memo: dict[str, tuple[tuple[Any, ...], RunSummary]] | None = None
    ) -> dict[str, RunSummary]:
        """What decides each segment's freshness (``funnel.core.freshness``), in one query.

        The latest attempt of each (segment, status) is read with a loose scan of the
        ``(segment_id, status)`` index (the primary key rides in it), so the cost grows with the
        number of segments, not with the history's length. ``segment_id``: that segment only.
        ``memo``: the last call's rows and summary per segment; a segment whose rows are the same
        is not summarized again, and the memo then holds this call's.
        """
        where = "WHERE segment_id = %s " if segment_id is not None else ""
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT r.id, r.segment_id, r.status, r.started_at, r.finished_at, r.error, r.dag_id, r.run_id,"
            f" r.try_number FROM (SELECT segment_id, status, MAX(id) AS id FROM {layout.RUNS_TABLE} {where}"
            f"GROUP BY segment_id, status) AS latest JOIN {layout.RUNS_TABLE} AS r ON r.id = latest.id",
            (segment_id,) if segment_id is not None else (),
        )
        rows = cur.fetchall()
        self.conn.commit()
        if memo is not None:
            return self._summaries_memoized(rows, memo)
        return self._summarized(rows)

    def _summaries_memoized(
        self, rows: Sequence[tuple[Any, ...]], memo: dict[str, tuple[tuple[Any, ...], RunSummary]]
    ) -> dict[str, RunSummary]:
        by_segment: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_segment.setdefault(row[1], []).append(row)
        keys = {sid: tuple(sorted(own)) for sid, own in by_segment.items()}
        fresh = {sid: memo[sid] for sid, key in keys.items() if sid in memo and memo[sid][0] == key}
        changed = [row for sid, own in by_segment.items() if sid not in fresh for row in own]
        fresh.update((sid, (keys[sid], summary)) for sid, summary in self._summarized(changed).items())
        memo.clear()
        memo.update(fresh)
        return {sid: summary for sid, (_, summary) in fresh.items()}

    @staticmethod
    def _summarized(rows: Sequence[tuple[Any, ...]]) -> dict[str, RunSummary]:
        attempts: dict[str, list[Attempt]] = {}
        for attempt_id, sid, status, started, finished, error, dag_id, run_id, try_number in rows:
            attempts.setdefault(sid, []).append(
                Attempt(
                    id=int(attempt_id),
                    status=RunStatus(status),
                    started_at=from_naive_utc(started),
                    finished_at=from_naive_utc(finished) if finished is not None else None,
                    error=error,
                    dag_id=dag_id,
                    run_id=run_id,
                    try_number=int(try_number),
                )
            )
        return {sid: summarize(found) for sid, found in attempts.items()}

    def statuses_in_run(
        self, dag_id: str, run_id: str, segment_ids: Sequence[str], since: dt.datetime
    ) -> dict[str, RunStatus]:
        """The latest status of each segment's attempts in one Airflow run (absent: none yet).

        ``since`` (the run's start) bounds the ``(segment_id, started_at)`` index range read per
        segment; ids go in chunks of ``IN_CHUNK``.
        """
        found: dict[str, RunStatus] = {}
        cur = self.conn.cursor()
        for start in range(0, len(segment_ids), IN_CHUNK):
            chunk = list(segment_ids[start : start + IN_CHUNK])
            cur.execute(
                f"SELECT segment_id, status FROM {layout.RUNS_TABLE} WHERE segment_id IN ({marks(chunk)})"
                " AND started_at >= %s AND dag_id = %s AND run_id = %s ORDER BY id",
                (*chunk, to_naive_utc(since), dag_id, run_id),
            )
            for sid, status in cur.fetchall():
                found[sid] = RunStatus(status)
        self.conn.commit()
        return found

    def close(self) -> None:
        self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self.conn.close()
        except Exception as exc:
            log.debug("funnel: closing the run history connection failed (%s)", exc)


def _is_connection_error(exc: BaseException) -> bool:
    """A MySQL error meaning the connection itself is gone (killed, lost, server away)."""
    import MySQLdb

    if isinstance(exc, MySQLdb.InterfaceError):
        return True
    return isinstance(exc, MySQLdb.OperationalError) and bool(exc.args) and exc.args[0] in _CONNECTION_GONE


#: 2006 server has gone away, 2013 lost connection, 2055 lost connection (system error),
#: 1927 connection killed (MariaDB), 1053 server shutdown, 4031 disconnected by the server.
_CONNECTION_GONE = {2006, 2013, 2055, 1927, 1053, 4031}
