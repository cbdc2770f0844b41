"""A segment's past as the Segments page shows it: its kept versions and its recent attempts.

Read-only, over a DB-API (mysqlclient) connection: ``funnel_segment_versions`` (the
versions MySQL still keeps: the live one and the retired ones, ``keep_versions`` in all)
and ``funnel_segment_runs`` (one row per refresh attempt, whatever its outcome).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from funnel.core.states import PAGEABLE_STATES, RunStatus, VersionState
from funnel.core.utc_time import from_naive_utc
from funnel.storage import layout
from funnel.storage.mysql.sql_params import marks


@dataclass(frozen=True)
class KeptVersion:
    """A version MySQL still holds: its size and who entered and exited in it."""

    version: int
    state: VersionState
    logical_date: dt.datetime
    size: int | None
    entered: int | None
    exited: int | None
    dag_id: str
    run_id: str
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    #: the revision of the definition it was computed from (None: not recorded)
    revision: int | None = None


@dataclass(frozen=True)
class Attempt:
    """One refresh attempt (``funnel_segment_runs``), however it ended."""

    id: int
    status: RunStatus
    version: int | None
    dag_id: str
    run_id: str
    try_number: int
    logical_date: dt.datetime
    started_at: dt.datetime
    finished_at: dt.datetime | None
    size: int | None
    entered: int | None
    exited: int | None
    error: str | None
    #: A composite's attempt: the version of each operand it computed from (``funnel_segment_runs.inputs``).
    inputs: list[dict[str, Any]] | None = None


def kept_versions(conn: Any, segment_id: str) -> list[KeptVersion]:
    """The segment's kept versions, oldest first (at most ``keep_versions`` of them)."""
    cur = conn.cursor()
    cur.execute(
        "SELECT version, state, logical_date, size, entered, exited, dag_id, run_id, created_at, promoted_at,"
        f" revision FROM {layout.VERSIONS_TABLE}"
        f" WHERE segment_id = %s AND state IN ({marks(PAGEABLE_STATES)}) ORDER BY version",
        (segment_id, *PAGEABLE_STATES),
    )
    rows = cur.fetchall()
    conn.commit()
    return [_kept(row) for row in rows]


def recent_attempts(conn: Any, segment_id: str, limit: int) -> list[Attempt]:
    """The segment's latest ``limit`` refresh attempts, newest first."""
    cur = conn.cursor()
    cur.execute(
        "SELECT id, status, version, dag_id, run_id, try_number, logical_date, started_at, finished_at,"
        f" size, entered, exited, error, inputs FROM {layout.RUNS_TABLE}"
        " WHERE segment_id = %s ORDER BY started_at DESC, id DESC LIMIT %s",
        (segment_id, limit),
    )
    rows = cur.fetchall()
    conn.commit()
    return [_attempt(row) for row in rows]


def _kept(row: Sequence[Any]) -> KeptVersion:
    version, state, logical_date, size, entered, exited, dag_id, run_id, created_at, promoted_at, revision = row
    return KeptVersion(
        int(version),
        VersionState(state),
        from_naive_utc(logical_date),
        _int(size),
        _int(entered),
        _int(exited),
        dag_id,
        run_id,
        from_naive_utc(created_at),
        from_naive_utc(promoted_at) if promoted_at is not None else None,
        _int(revision),
    )


def _attempt(row: Sequence[Any]) -> Attempt:
    (attempt_id, status, version, dag_id, run_id, try_number, logical_date, started_at, finished_at) = row[:9]
    size, entered, exited, error, inputs = row[9:]
    return Attempt(
        int(attempt_id),
        RunStatus(status),
        _int(version),
        dag_id,
        run_id,
        int(try_number),
        from_naive_utc(logical_date),
        from_naive_utc(started_at),
        from_naive_utc(finished_at) if finished_at is not None else None,
        _int(size),
        _int(entered),
        _int(exited),
        error,
        json.loads(inputs) if inputs else None,
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
