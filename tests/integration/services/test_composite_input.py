"""A composite's refresh input on the real stores: the versions it pins, a missing operand, a stop."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import mysql_live_members, redis_live_members

from funnel import wiring
from funnel.core.composite_expr import parse_expression
from funnel.core.errors import OperandNotComputed, RefreshCancelled
from funnel.core.run_info import RunInfo
from funnel.core.segment import Kind
from funnel.core.states import RunStatus
from funnel.services.composite_input import composite_batches
from funnel.services.refresh import RefreshRequest
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

RULE = {"union": ["a", "b"]}
_slots = itertools.count()


def run_info() -> RunInfo:
    slot = next(_slots)
    return RunInfo("funnel_test", f"run__{slot}", dt.datetime(2032, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=slot))


def refresh(redis_client: Any, segment_id: str, members: list[str]) -> None:
    info = run_info()
    with wiring.refresher(redis_client=redis_client) as refresher:
        lock = wiring.segment_lock(redis_client, segment_id, {"run_id": info.run_id})
        refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, info), lambda: iter([members]), lock)


def refresh_composite(
    redis_client: Any, wrap: Callable[[Any, Iterator[list[str]]], Iterator[list[str]]] | None = None
) -> Any:
    info = run_info()
    expr = parse_expression("c", json.dumps(RULE))
    with wiring.refresher(redis_client=redis_client, batch_size=2) as refresher, wiring.composite_source() as source:
        lock = wiring.segment_lock(redis_client, "c", {"run_id": info.run_id})
        batches = composite_batches("c", expr, source, info, refresher.note_inputs, 2, logging.getLogger("test"))
        feed = (lambda: wrap(refresher, batches())) if wrap else batches
        return refresher.refresh(RefreshRequest("c", Kind.COMPOSITE, info), feed, lock)


def last_attempt(conn: Any) -> tuple[str, str | None, str | None]:
    cur = conn.cursor()
    cur.execute(f"SELECT status, error, inputs FROM {layout.RUNS_TABLE} WHERE segment_id = 'c' ORDER BY id DESC")
    row = cur.fetchone()
    conn.commit()
    return row


def test_an_operand_never_computed_skips_the_composite_and_says_which(mysql_conn: Any, redis_client: Any) -> None:
    refresh(redis_client, "a", ["1", "2"])
    with pytest.raises(OperandNotComputed, match=r"operand\(s\) 'b' have no live version yet"):
        refresh_composite(redis_client)
    status, error, _ = last_attempt(mysql_conn)
    assert status == RunStatus.SKIPPED
    assert "'b' have no live version yet" in (error or "")
    assert redis_live_members(redis_client, "c") == set()


def test_a_composite_stopped_mid_stream_changes_nothing_live_and_frees_its_lock(
    mysql_conn: Any, redis_client: Any
) -> None:
    refresh(redis_client, "a", [str(i) for i in range(10)])
    refresh(redis_client, "b", [str(i) for i in range(5, 20)])
    first = refresh_composite(redis_client)
    assert (first.version, first.size) == (1, 20)
    assert first.inputs_kept == 2  # both operands made by other runs than the composite's
    refresh(redis_client, "b", [str(i) for i in range(5, 30)])

    def stop_after_first_batch(refresher: Any, batches: Iterator[list[str]]) -> Iterator[list[str]]:
        for index, batch in enumerate(batches):
            if index == 1:
                refresher.abort("killed by the test")  # what the operator's on_kill does
            yield batch

    with pytest.raises(RefreshCancelled):
        refresh_composite(redis_client, stop_after_first_batch)
    status, error, inputs = last_attempt(mysql_conn)
    assert (status, error) == (RunStatus.FAILED, "killed by the test")
    assert [(i["segment_id"], i["version"]) for i in json.loads(inputs or "[]")] == [("a", 1), ("b", 2)]
    want = {str(i) for i in range(20)}
    assert redis_live_members(redis_client, "c") == mysql_live_members(mysql_conn, "c") == want
    assert redis_client.get(layout.lock_key("c")) is None
    after = refresh_composite(redis_client)  # the next attempt starts at once and cleans up
    assert (after.size, after.entered, after.exited) == (30, 10, 0)
