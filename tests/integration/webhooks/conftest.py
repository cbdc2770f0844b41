"""Webhook fixtures: a live segment refreshed by the real Refresher, and a real HTTP receiver."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import WebhookReceiver, insert_segments, refresh_segment


@pytest.fixture
def refresh(mysql_conn: Any, redis_client: Any) -> Callable[..., Any]:
    """Make a new version of a (dynamic) segment live, as its Airflow task would; each call a later slot."""
    slots = itertools.count()
    return lambda segment_id, members: refresh_segment(redis_client, segment_id, members, next(slots))


@pytest.fixture
def segments(mysql_conn: Any) -> Callable[..., None]:
    """Catalog rows: ``segments("a", "b")`` are dynamic; ``segments(proxy="p")`` adds a proxy one."""

    def add(*segment_ids: str, proxy: str | None = None) -> None:
        rows = [
            {"segment_id": s, "name": s.title(), "kind": "dynamic", "query": "SELECT user_id FROM dw.users"}
            for s in segment_ids
        ]
        if proxy:
            rows.append({"segment_id": proxy, "name": "Proxy", "kind": "proxy", "rule": '{"tag": "new_user"}'})
        insert_segments(mysql_conn, *rows)

    return add


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver()
    yield hook
    hook.down()
