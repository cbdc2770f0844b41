"""The operator of an invalid segment's marker DAG: it fails with the validation error."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context

from funnel.core.errors import FunnelError


class InvalidSegmentOperator(BaseOperator):
    """Stands for a segment row that failed validation: running it fails with the reason.

    Its DAG (``funnel_invalid_<segment_id>``) is the visible marker in the Airflow UI.

    :param message: the validation error, naming the segment, the field and the fix.
    """

    ui_color = "#f8d7da"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        raise FunnelError(self.message)
