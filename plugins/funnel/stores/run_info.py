"""What a store records about the Airflow run that produced a version."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class RunInfo:
    """The run computing a version. ``logical_date`` orders versions: live data only moves forward."""

    dag_id: str
    run_id: str
    logical_date: dt.datetime
    try_number: int = 1

    @property
    def logical_ts_us(self) -> int:
        """``logical_date`` as integer microseconds since the epoch (what Redis compares)."""
        delta = self.logical_date - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def utc_now() -> dt.datetime:
    """The current time in UTC (at run time only, never while building DAGs)."""
    return dt.datetime.now(dt.UTC)


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    """MySQL DATETIME columns hold UTC without a zone."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def from_naive_utc(value: dt.datetime) -> dt.datetime:
    """Read a MySQL DATETIME (UTC without a zone) back as an aware datetime."""
    return value.replace(tzinfo=dt.UTC)
