"""The per-segment refresh lock against a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from funnel import layout
from funnel.stores.lock import LockLost, SegmentBusy, SegmentLock


def test_second_holder_is_refused_and_told_who_holds_it(redis_client: Any) -> None:
    first = SegmentLock(redis_client, "s", {"dag_id": "d", "run_id": "r1", "try_number": 1}, 30, wait_seconds=0)
    with first:
        second = SegmentLock(redis_client, "s", {"run_id": "r2"}, 30, wait_seconds=0.3, poll_seconds=0.1)
        with pytest.raises(SegmentBusy, match=r"being refreshed by d/r1 \(try 1"):
            second.acquire()
    assert not redis_client.exists(layout.lock_key("s"))
    with SegmentLock(redis_client, "s", {"run_id": "r2"}, 30, wait_seconds=0):
        pass


def test_the_holder_keeps_its_lock_alive_past_the_ttl(redis_client: Any) -> None:
    with SegmentLock(redis_client, "s", {}, ttl_seconds=1, wait_seconds=0) as lock:
        time.sleep(2.5)
        assert redis_client.exists(layout.lock_key("s"))
        lock.check()


def test_a_lost_lock_is_noticed_and_never_deleted_from_its_new_holder(redis_client: Any) -> None:
    lock = SegmentLock(redis_client, "s", {}, ttl_seconds=30, wait_seconds=0)
    lock.acquire()
    redis_client.set(layout.lock_key("s"), "someone else")  # expired and taken over
    with pytest.raises(LockLost, match="nothing was swapped"):
        lock.check()
    lock.release()
    assert redis_client.get(layout.lock_key("s")) == b"someone else"
