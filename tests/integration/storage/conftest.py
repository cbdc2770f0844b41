"""Fixtures of the storage tests (on the real MySQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from funnel.storage.hooks import FunnelMySqlHook


@pytest.fixture
def bulk_conn(mysql_conn: Any) -> Iterator[Any]:
    """A second connection to the emptied test database that allows LOAD DATA LOCAL INFILE."""
    conn = FunnelMySqlHook(local_infile=True).get_conn()
    yield conn
    conn.close()
