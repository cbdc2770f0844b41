"""Redis Cluster: segments on every master, answered right, each command on its slot's master.

The rest of the suite already runs every Redis test against the local cluster too
(``redis_mode``, tests/conftest.py); these tests are about what only a cluster has: keys on
three masters, a user's segments gathered with one pipeline per master, and a slot that
moves to another master while clients hold an old map of the slots.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import redis_live_members
from redis.crc import key_slot

from funnel import settings, wiring
from funnel.storage import layout

pytestmark = [pytest.mark.services, pytest.mark.parametrize("redis_mode", ["cluster"], indirect=True)]


def slot(segment_id: str) -> int:
    return key_slot(layout.members_key(segment_id).encode())


def segments_per_master(cluster: Any, per_master: int) -> dict[int, list[str]]:
    """Segment ids whose keys land on each master (``per_master`` each), by master port."""
    found: dict[int, list[str]] = {port: [] for port in cluster.ports}
    number = 0
    while any(len(ids) < per_master for ids in found.values()):
        segment_id = f"seg_{number}"
        number += 1
        owner = found[cluster.slot_owner(slot(segment_id))]
        if len(owner) < per_master:
            owner.append(segment_id)
    return found


def calls(master: Any, command: str) -> int:
    return int(master.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_all_of_a_segments_keys_share_one_slot_and_segments_spread_over_the_masters(
    redis_cluster: Any, redis_client: Any
) -> None:
    keys = [
        layout.members_key("german_users"),
        layout.meta_key("german_users"),
        layout.staging_key("german_users"),
        layout.entered_key("german_users"),
        layout.exited_key("german_users"),
        layout.staging_entered_key("german_users"),
        layout.staging_exited_key("german_users"),
        layout.lock_key("german_users"),
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    tag_keys = [*layout.tag_keys("live"), *layout.tag_keys("staging"), *layout.tag_keys("previous")]
    assert len({key_slot(k.encode()) for k in [*tag_keys, layout.tags_meta_key()]}) == 1
    owners = Counter(redis_cluster.slot_owner(slot(f"seg_{n}")) for n in range(30))
    assert set(owners) == set(redis_cluster.ports), owners


def test_segments_on_every_master_refresh_diff_and_answer_from_the_user_index(
    monkeypatch: pytest.MonkeyPatch,
    redis_cluster: Any,
    redis_client: Any,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    api: TestClient,
) -> None:
    monkeypatch.setattr(settings, "API_CATALOG_TTL_SECONDS", 3600)  # no re-read (its own SMEMBERS) while counting
    by_master = segments_per_master(redis_cluster, 2)
    segment_ids = [s for ids in by_master.values() for s in ids]
    for number, segment_id in enumerate(segment_ids):
        add_segment(segment_id)
        refresh(segment_id, ["u1", "u2", "u3"] if number % 2 else ["u2", "u3"])
        # the diff: u1 exits, u4 enters (or u1 never was and u1, u4 enter)
        second = refresh(segment_id, ["u2", "u3", "u4"])
        assert (second.entered, second.exited) == ((1, 1) if number % 2 else (1, 0))
        assert redis_live_members(redis_client, segment_id) == {"u2", "u3", "u4"}
        assert redis_client.smembers(layout.entered_key(segment_id)) == {b"u4"}

    api.get("/v1/users/u2/segments")  # the catalog read and the connections, before counting
    masters = {node.port: node.redis_connection for node in redis_client.get_primaries()}
    for master in masters.values():
        master.config_resetstat()
    body = api.get("/v1/users/u4/segments").json()
    assert {sid: v["version"] for sid, v in body.pop("versions").items()} == dict.fromkeys(segment_ids, 2)
    assert body == {
        "user_id": "u4",
        "segments": sorted(segment_ids),
        "stale": [],
        "not_computed": [],
        "source": "redis",
    }
    assert api.get("/v1/users/u1/segments").json()["segments"] == []
    assert by_master
    for port in by_master:  # the user index answered: no segment's own keys were read
        assert calls(masters[port], "sismember") == 0, port
    # two requests, each: the user's key and the index's "updating" set, wherever their slots are
    assert sum(calls(master, "smembers") for master in masters.values()) == 2 * 2

    check = api.post(f"/v1/segments/{segment_ids[-1]}/members:check", json={"user_ids": ["u1", "u4"]}).json()
    assert check["members"] == {"u1": False, "u4": True}
    listed = {s["segment_id"]: s["size"] for s in api.get("/v1/segments").json()["segments"]}
    assert listed == dict.fromkeys(segment_ids, 3)


def migrate_slot(cluster: Any, client: Any, segment_id: str) -> int:
    """Move the slot of ``segment_id`` (and its keys) to another master; the port it moved to."""
    number = slot(segment_id)
    source = cluster.slot_owner(number)
    target = next(port for port in cluster.ports if port != source)
    nodes = {node.port: node.redis_connection for node in client.get_primaries()}
    ids = {port: conn.execute_command("CLUSTER", "MYID").decode() for port, conn in nodes.items()}
    nodes[target].execute_command("CLUSTER", "SETSLOT", number, "IMPORTING", ids[source])
    nodes[source].execute_command("CLUSTER", "SETSLOT", number, "MIGRATING", ids[target])
    while keys := nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", number, 100):
        nodes[source].execute_command("MIGRATE", cluster.host, target, "", 0, 5000, "KEYS", *keys)
    for conn in nodes.values():
        conn.execute_command("CLUSTER", "SETSLOT", number, "NODE", ids[target])
    assert cluster.slot_owner(number) == target
    return target


def test_clients_holding_an_old_slot_map_follow_a_slot_that_moved(
    redis_cluster: Any,
    redis_client: Any,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    api: TestClient,
) -> None:
    add_segment("moving")
    refresh("moving", ["u1", "u2"])
    assert api.get("/v1/segments/moving/members/u1").json()["member"] is True  # the API reads the slot map
    store = wiring.redis_store(wiring.redis_client())  # and so does a refresh's store, on its client

    migrate_slot(redis_cluster, redis_client, "moving")

    answer = api.get("/v1/segments/moving/members/u2")
    assert (answer.json()["member"], answer.headers["X-Funnel-Source"]) == (True, "redis")
    assert api.get("/v1/users/u2/segments").json()["segments"] == ["moving"]
    # a refresh's staging (one buffer of commands on the slot's master) follows the slot too
    assert store.stage_diff("moving", ["u2", "u3"], against_live=True) == ["u3"]
    assert store.staged_size("moving") == 2


def test_a_cluster_that_stops_answering_is_503_and_readyz_names_redis(
    redis_client: Any,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    start_api: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis_cluster import LocalRedisCluster

    add_segment("s")
    refresh("s", ["1", "2"])
    doomed = LocalRedisCluster().start()  # a cluster of this test's own, stopped under the API
    try:
        conn = {"conn_type": "redis", "host": doomed.host, "port": doomed.ports[1], "extra": {"cluster": True}}
        monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_REDIS", json.dumps(conn))
        api = start_api()
        assert api.get("/readyz").status_code == 200
        assert api.get("/v1/users/1/segments").json()["segments"] == ["s"]  # from MySQL: that cluster is empty
    finally:
        doomed.stop()

    started = time.monotonic()
    member = api.get("/v1/segments/s/members/1")
    users = api.get("/v1/users/1/segments")
    assert time.monotonic() - started < 2 * settings.REDIS_TIMEOUT_SECONDS + 5
    for response in (member, users):
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "a store (Redis or MySQL) did not answer; try again"}
        assert str(doomed.ports[1]) not in response.text
    assert api.get("/readyz").json() == {"status": "unavailable", "failing": ["redis"]}


def test_startup_nodes_stand_in_for_a_first_node_that_does_not_answer(
    redis_cluster: Any,
    redis_client: Any,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    start_api: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis_cluster import free_ports

    add_segment("s")
    refresh("s", ["1", "2"])
    others = ",".join(f"{redis_cluster.host}:{port}" for port in redis_cluster.ports[1:])
    extra = {"cluster": True, "startup_nodes": others}
    conn = {"conn_type": "redis", "host": redis_cluster.host, "port": free_ports(1)[0], "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_REDIS", json.dumps(conn))
    api = start_api()

    member = api.get("/v1/segments/s/members/2")
    assert (member.json()["member"], member.headers["X-Funnel-Source"]) == (True, "redis")
    users = api.get("/v1/users/1/segments").json()
    assert (users["segments"], users["versions"]["s"]["version"], users["source"]) == (["s"], 1, "redis")
    assert api.get("/readyz").status_code == 200
