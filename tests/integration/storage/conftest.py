"""Fixtures of the storage tests (on the real MySQL and Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import SEGMENT_LOCK

from funnel.storage import layout
from funnel.storage.hooks import FunnelMySqlHook
from funnel.storage.redis.segment_sets import RedisSegmentStore


@pytest.fixture
def bulk_conn(mysql_conn: Any) -> Iterator[Any]:
    """A second connection to the emptied test database that allows LOAD DATA LOCAL INFILE."""
    conn = FunnelMySqlHook(local_infile=True).get_conn()
    yield conn
    conn.close()


@pytest.fixture
def segment_store(redis_client: Any) -> RedisSegmentStore:
    """The Redis store of segment ``s``, its refresh lock held by ``SEGMENT_LOCK``."""
    redis_client.set(layout.lock_key("s"), SEGMENT_LOCK)
    return RedisSegmentStore(redis_client, staging_ttl_seconds=60)
