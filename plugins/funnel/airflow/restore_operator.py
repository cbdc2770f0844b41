"""The operator that brings Redis level with MySQL: every live segment, and the users' tags."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context

from funnel import wiring


class RestoreRedisOperator(BaseOperator):
    """Bring Redis level with MySQL for every segment with a live version, and the users' tags
    (after Redis restarted empty, say). Each segment is restored under its lock; one that Redis
    already serves in full is left alone."""

    ui_color = "#fdf3e1"

    def execute(self, context: Context) -> dict[str, Any]:
        from funnel.services.restore import restore_all

        checked, rebuilt = restore_all(wiring, by=self.dag_id)
        self.log.info("checked %d segments and the user tags; rebuilt %s", len(checked) - 1, rebuilt or "none")
        return {"checked": len(checked), "rebuilt": rebuilt}
