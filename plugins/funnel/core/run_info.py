"""What a store records about the Airflow run that produced a version."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from funnel.core.utc_time import epoch_microseconds


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
        return epoch_microseconds(self.logical_date)
