"""The operator that deletes the data of segments retired longer than ``change_history_days``
(``funnel.services.segment_admin.SegmentAdmin.purge``): MySQL's rows, then their Redis keys.
Their revisions stay, so the history of a purged segment can still be read, and ``restore``
brings back its definition (with no data)."""

from __future__ import annotations

import contextlib
from typing import Any

from airflow.sdk import BaseOperator, Context

from funnel import settings, wiring


class PurgeRetiredOperator(BaseOperator):
    """Delete the data of every segment retired more than ``horizon_days`` ago.

    :param horizon_days: how long a retired segment's data is kept (default: the setting
        ``change_history_days``, the membership history's horizon).
    :param mysql_conn_id: MySQL connection holding funnel's tables.
    :param redis_conn_id: Redis connection serving membership.
    """

    ui_color = "#f1e9e4"

    def __init__(
        self,
        *,
        horizon_days: float = settings.CHANGE_HISTORY_DAYS,
        mysql_conn_id: str = settings.MYSQL_CONN_ID,
        redis_conn_id: str = settings.REDIS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.horizon_days = horizon_days
        self.mysql_conn_id = mysql_conn_id
        self.redis_conn_id = redis_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        redis = wiring.redis_store(wiring.redis_client(self.redis_conn_id))
        with contextlib.closing(wiring.mysql_connection(self.mysql_conn_id)) as conn:
            purged = wiring.segment_admin(conn).purge(self.horizon_days, redis.forget)
        self.log.info(
            "purged %d segments retired over %g days ago: %s", len(purged), self.horizon_days, purged or "none"
        )
        return {"purged": purged}
