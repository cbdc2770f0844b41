"""The per-segment refresh lock against a real Redis: short renewed lease, takeover by a
later try of the same task, log lines while waiting."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from funnel.core.errors import LockLost, SegmentBusy
from funnel.storage import layout
from funnel.storage.redis.segment_lock import SegmentLock

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)


def holder(run_id: str, try_number: int = 1, dag_id: str = "d") -> dict[str, Any]:
    return {"dag_id": dag_id, "run_id": run_id, "try_number": try_number}


def lock(client: Any, who: dict[str, Any], ttl: float = 30, wait: float = 0, **kw: Any) -> SegmentLock:
    return SegmentLock(client, "s", who, ttl_seconds=ttl, wait_seconds=wait, poll_seconds=0.05, **kw)


def test_second_holder_is_refused_and_told_who_holds_it(redis_client: Any) -> None:
    with lock(redis_client, holder("r1")):
        second = lock(redis_client, holder("r2"), wait=0.3)
        with pytest.raises(SegmentBusy, match=r"being refreshed by d/r1 \(try 1, since None, on .+ pid \d+\)"):
            second.acquire()
    assert not redis_client.exists(layout.lock_key("s"))
    with lock(redis_client, holder("r2")):
        pass


def test_the_holder_keeps_its_short_lease_alive(redis_client: Any) -> None:
    with lock(redis_client, holder("r1"), ttl=0.6) as held:
        time.sleep(1.5)
        assert 0 < redis_client.pttl(layout.lock_key("s")) <= 600
        held.check()


def test_a_dead_holder_blocks_for_one_lease_not_minutes(redis_client: Any) -> None:
    dead = lock(redis_client, holder("r1"), ttl=1)
    dead.acquire()
    dead._stop.set()  # the holder's process is gone: nobody renews
    started = time.monotonic()
    with lock(redis_client, holder("r2"), wait=10):
        waited = time.monotonic() - started
    assert waited < 2.5


def test_a_later_try_of_the_same_task_takes_over_at_once(redis_client: Any, caplog: Any) -> None:
    first = lock(redis_client, holder("r1", try_number=1))
    first.acquire()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="funnel.storage.redis.segment_lock"):
        retry = lock(redis_client, holder("r1", try_number=2), wait=30)
        retry.acquire()
    assert time.monotonic() - started < 1
    assert "took the refresh lock over from d/r1 (try 1" in caplog.text
    assert json.loads(redis_client.get(layout.lock_key("s")))["try_number"] == 2
    with pytest.raises(LockLost, match=r"now held by d/r1 \(try 2"):
        first.check()  # the earlier try, if alive, can no longer swap
    first.release()  # and never deletes its successor's lock
    retry.check()
    retry.release()


@pytest.mark.parametrize(
    "other",
    [holder("r1", try_number=1), holder("r2", try_number=1), holder("r1", try_number=3, dag_id="other")],
    ids=["same-try", "other-run", "other-dag"],
)
def test_no_takeover_from_anyone_else(redis_client: Any, other: dict[str, Any]) -> None:
    with lock(redis_client, holder("r1", try_number=2)), pytest.raises(SegmentBusy):
        lock(redis_client, other, wait=0.2).acquire()


def test_a_waiting_refresh_says_whom_it_waits_for(redis_client: Any, caplog: Any) -> None:
    with (
        lock(redis_client, holder("r1")),
        caplog.at_level(logging.INFO, logger="funnel.storage.redis.segment_lock"),
        pytest.raises(SegmentBusy),
    ):
        lock(redis_client, holder("r2"), wait=0.5, log_every_seconds=0.1).acquire()
    waits = [r.getMessage() for r in caplog.records if "waiting for the refresh lock" in r.getMessage()]
    assert len(waits) >= 2
    assert waits[0].startswith("segment s: waiting for the refresh lock held by d/r1 (try 1")


def test_a_lost_lock_is_noticed_and_never_deleted_from_its_new_holder(redis_client: Any) -> None:
    mine = lock(redis_client, {})
    mine.acquire()
    redis_client.set(layout.lock_key("s"), "someone else")  # expired and taken over
    with pytest.raises(LockLost, match="nothing was swapped"):
        mine.check()
    mine.release()
    assert redis_client.get(layout.lock_key("s")) == b"someone else"
