"""Deliveries to a real HTTP receiver on a loopback port that fails, goes down and comes back."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import WebhookReceiver, subscribe_on

from funnel import settings
from funnel.core.segment import Kind, Segment
from funnel.core.states import DeliveryStatus
from funnel.core.webhook_signing import verify
from funnel.services.webhook_delivery import Deliverer, DeliverySettings
from funnel.storage import layout
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.webhook_store import WebhookStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

SECRET = "test-secret-0123456789abcdef"
# The receivers are on loopback, which webhook_refuse_private (on by default) refuses: off here, on where tested.
FAST = DeliverySettings(
    batch_size=2,
    max_attempts=3,
    backoff_seconds=0.01,
    backoff_max_seconds=0.05,
    timeout_seconds=2,
    refuse_private=False,
)
CATALOG = {"buyers": Segment("buyers", "Buyers", Kind.DYNAMIC, query="SELECT 1")}


def deliverer(conn: Any, config: DeliverySettings = FAST) -> Deliverer:
    return Deliverer(WebhookStore(conn), MySqlSegmentStore(conn), config, stop=threading.Event())


def received(hook: WebhookReceiver) -> list[dict[str, Any]]:
    """Every accepted body, after checking its signature, timestamp and delivery id header."""
    bodies = []
    for headers, body in hook.accepted():
        assert verify(SECRET, headers["x-funnel-signature"], headers["x-funnel-timestamp"], body, time.time()) is None
        data = json.loads(body)
        assert headers["x-funnel-delivery"] == data["delivery_id"] == f"buyers:{data['version']}:{data['batch']}"
        bodies.append(data)
    return bodies


def changes_by_version(bodies: list[dict[str, Any]]) -> dict[int, tuple[set[str], set[str]]]:
    found: dict[int, tuple[set[str], set[str]]] = {}
    for data in bodies:
        entered, exited = found.setdefault(data["version"], (set(), set()))
        entered.update(data["entered"])
        exited.update(data["exited"])
    return found


def test_every_change_arrives_in_order_signed_across_failures_an_outage_and_a_manual_retry(
    mysql_conn: Any, refresh: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    members = [["a", "b", "c", "d", "e"], ["c", "d", "e", "f", "g"], ["c", "h", "k"], ["h", "i", "j"]]
    v1 = refresh("buyers", members[0]).version
    webhook, secret = subscribe_on(mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1)
    assert secret == SECRET
    v2 = refresh("buyers", members[1]).version

    # The receiver fails the first two attempts: retried with backoff, then everything arrives.
    receiver.fail_next(2)
    [report] = deliverer(mysql_conn).run(retry_parked=False)
    assert report.parked is None
    assert report.versions == [v1, v2]
    assert (report.failed_attempts, report.parked_batches) == (2, 0)
    first = receiver.requests[:3]
    assert [status for _, _, status in first] == [500, 500, 200]
    assert len({headers["x-funnel-delivery"] for headers, _, _ in first}) == 1  # repeats carry the same id
    assert len({body for _, body, _ in first}) == 1
    # v1: 5 entered in batches of 2 (3 batches); v2: 2 entered, then 2 exited (2 batches)
    assert [(b["version"], b["batch"], b["batches"]) for b in received(receiver)] == [
        (v1, 1, 3),
        (v1, 2, 3),
        (v1, 3, 3),
        (v2, 1, 2),
        (v2, 2, 2),
    ]

    # The receiver goes down: the next version's first batch is parked with the reason, later ones wait.
    v3 = refresh("buyers", members[2]).version
    v4 = refresh("buyers", members[3]).version
    receiver.down()
    [report] = deliverer(mysql_conn).run(retry_parked=False)
    assert report.delivered == []
    assert report.parked is not None
    assert (report.failed_attempts, report.parked_batches) == (3, 1)
    store = WebhookStore(mysql_conn)
    [(version, batch, reason)] = store.parked(webhook.id)
    assert (version, batch) == (v3, 1)
    assert reason.startswith("3 attempts failed, the last: cannot reach http://127.0.0.1:")
    assert "Connection refused" in reason
    assert store.get(webhook.id).cursor.version == v2
    statuses = {row.version: row.status for row in store.by_version(webhook.id)}
    assert statuses == {v1: DeliveryStatus.DELIVERED, v2: DeliveryStatus.DELIVERED, v3: DeliveryStatus.PARKED}

    # Back up, a scheduled run leaves the parked subscription alone; a manual run sends it, then the rest.
    receiver.up()
    accepted_before = len(receiver.accepted())
    [report] = deliverer(mysql_conn).run(retry_parked=False)
    assert report.parked is not None
    assert "still parked" in report.parked
    assert report.parked_batches == 0  # parked by the earlier run, not this one
    assert len(receiver.accepted()) == accepted_before
    [report] = deliverer(mysql_conn).run(retry_parked=True)
    assert report.retried == 1
    assert report.parked is None
    assert report.versions == [v3, v4]
    bodies = received(receiver)
    order = [(b["version"], b["batch"]) for b in bodies]
    assert order == sorted(order)  # version, then batch order, for this subscription
    assert [(b["version"], b["batch"]) for b in bodies[accepted_before:]] == [
        (v3, 1),
        (v3, 2),
        (v3, 3),
        (v4, 1),
        (v4, 2),
    ]

    # Every entered and exited id of every version arrived, as the members lists say.
    expected = {v1: (set(members[0]), set())}
    for version, (before, after) in zip((v2, v3, v4), itertools.pairwise(members), strict=True):
        expected[version] = (set(after) - set(before), set(before) - set(after))
    assert changes_by_version(bodies) == expected
    assert store.get(webhook.id).cursor.version == v4
    assert deliverer(mysql_conn).run(retry_parked=False)[0].delivered == []  # nothing twice once done


def test_a_new_subscription_starts_after_the_live_version_and_one_receiver_down_stops_only_its_own(
    mysql_conn: Any, refresh: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    refresh("buyers", ["a", "b"])
    catalog = {**CATALOG, "others": Segment("others", "Others", Kind.DYNAMIC, query="SELECT 1")}
    broken = WebhookReceiver()
    broken.down()
    try:
        subscribe_on(mysql_conn, catalog, "buyers", broken.url, SECRET)
        subscribe_on(mysql_conn, catalog, "buyers", receiver.url, SECRET)
        v2 = refresh("buyers", ["b", "c"]).version
        first, second = deliverer(mysql_conn).run(retry_parked=False)
    finally:
        broken.down()
    assert first.parked is not None
    assert second.parked is None
    assert [(b["version"], b["entered"], b["exited"]) for b in received(receiver)] == [
        (v2, ["c"], []),
        (v2, [], ["a"]),
    ]


def test_a_pruned_version_parks_with_the_reason_and_is_never_skipped(
    mysql_conn: Any, refresh: Callable[..., Any], receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "CHANGE_HISTORY_DAYS", 0)  # no history beyond keep_versions
    v1 = refresh("buyers", ["a"]).version
    webhook, _ = subscribe_on(mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1)
    for members in (["b"], ["c"], ["d"], ["e"]):  # keep_versions (3) prunes v1 and v2
        refresh("buyers", members)
    [report] = deliverer(mysql_conn).run(retry_parked=False)
    assert report.delivered == []
    assert receiver.requests == []
    [(version, batch, reason)] = WebhookStore(mysql_conn).parked(webhook.id)
    assert (version, batch) == (v1, 1)
    assert reason.startswith(f"version {v1} of segment buyers is no longer kept in MySQL (pruned)")
    assert "Fix: resync the receiver from GET /v1/segments/buyers/members" in reason


def test_versions_archived_within_the_history_horizon_are_still_delivered(
    mysql_conn: Any, refresh: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    v1 = refresh("buyers", ["a"]).version
    subscribe_on(mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1)
    for members in (["b"], ["c"], ["d"], ["e"]):  # beyond keep_versions (3), within change_history_days
        refresh("buyers", members)
    [report] = deliverer(mysql_conn).run(retry_parked=False)
    assert report.parked is None
    expected = [(v1, ["a"], [])]
    for n, (new, old) in enumerate(zip("bcde", "abcd", strict=True), start=1):
        expected += [(v1 + n, [new], []), (v1 + n, [], [old])]
    assert [(b["version"], b["entered"], b["exited"]) for b in received(receiver)] == expected


def test_a_changed_batch_size_restarts_the_version_it_was_in(
    mysql_conn: Any, refresh: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    v1 = refresh("buyers", ["a", "b", "c", "d", "e"]).version
    webhook, _ = subscribe_on(mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1)
    store = WebhookStore(mysql_conn)
    store.attempt(webhook, v1, 1, 3, time_now())
    store.delivered(webhook, v1, 1, 3, 2, time_now())  # batch 1 of 3 went out at 2 ids a batch
    assert store.get(webhook.id).cursor.batches == 1
    deliverer(mysql_conn).run(retry_parked=False)  # still 2 a batch: resumes at batch 2
    assert [b["batch"] for b in received(receiver)] == [2, 3]
    receiver.requests.clear()
    store.attempt(webhook, v1, 1, 3, time_now())
    with mysql_conn.cursor() as cur:
        cur.execute(f"UPDATE {layout.WEBHOOKS_TABLE} SET delivered_version = 0, delivered_batches = 1, batch_size = 2")
    mysql_conn.commit()
    bigger = dataclasses.replace(FAST, batch_size=10, max_attempts=1)
    deliverer(mysql_conn, bigger).run(retry_parked=False)  # 10 a batch: v1 again from its start, whole
    assert [(b["batch"], b["batches"], len(b["entered"])) for b in received(receiver)] == [(1, 1, 5)]


def time_now() -> Any:
    from funnel.core.utc_time import utc_now

    return utc_now()


def test_an_unexpected_failure_of_one_subscription_never_stops_the_others(
    mysql_conn: Any, refresh: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    from funnel.core.utc_time import utc_now

    v1 = refresh("buyers", ["a"]).version
    store = WebhookStore(mysql_conn)
    store.add("buyers", "not a url at all", SECRET, 0, utc_now())  # written around the checks
    subscribe_on(mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1)
    broken, working = deliverer(mysql_conn).run(retry_parked=False)
    assert broken.error == "ValueError: unknown url type: 'not a url at all'"
    assert "FAILED ValueError" in broken.summary()
    assert working.error is None
    assert working.versions == [v1]
    assert [b["entered"] for b in received(receiver)] == [["a"]]
