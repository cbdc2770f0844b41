"""Webhook fixtures: a live segment refreshed by the real Refresher, and a real HTTP receiver."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import WebhookReceiver, insert_segments

from funnel import wiring
from funnel.refresh import RefreshRequest, RefreshResult
from funnel.segments import Kind
from funnel.stores.run_info import RunInfo


@pytest.fixture
def refresh(mysql_conn: Any, redis_client: Any) -> Callable[..., RefreshResult]:
    """Make a new version of a (dynamic) segment live, as its Airflow task would; each call a later slot."""
    slots = itertools.count()

    def run(segment_id: str, members: list[str]) -> RefreshResult:
        slot = next(slots)
        logical_date = dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=slot)
        info = RunInfo("funnel_test_webhooks", f"scheduled__{slot}", logical_date)
        with wiring.refresher(redis_client=redis_client) as refresher:
            lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
            return refresher.refresh(
                RefreshRequest(segment_id, Kind.DYNAMIC, info), lambda: iter([list(members)]), lock
            )

    return run


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
