"""Connections to funnel's stores, through the providers' hooks.

``FunnelMySqlHook`` is the provider's ``MySqlHook`` with timeouts: the catalog is read at
DAG parse time, where a MySQL that hangs must not hang the DAG processor.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.mysql.hooks.mysql import MySqlHook

from funnel import settings


class FunnelMySqlHook(MySqlHook):
    """``MySqlHook`` (mysqlclient) with utf8mb4 and optional connect/read timeouts in seconds."""

    def __init__(
        self,
        *args: Any,
        connect_timeout: int | None = None,
        read_timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mysql_conn_id", settings.MYSQL_CONN_ID)
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def _get_conn_config_mysql_client(self, conn: Any) -> dict:
        config = super()._get_conn_config_mysql_client(conn)
        config.setdefault("charset", "utf8mb4")
        config.setdefault("use_unicode", True)
        if self.connect_timeout:
            config["connect_timeout"] = self.connect_timeout
        if self.read_timeout:
            config["read_timeout"] = self.read_timeout
            config["write_timeout"] = self.read_timeout
        return config
