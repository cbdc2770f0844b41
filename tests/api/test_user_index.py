"""A user's segments through the user index (``funnel.storage.redis.user_index``): one read for
the segments it holds in full, the same answer as each segment's own members across every kind,
exact right after a swap, and exact again when Redis lost the index."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel.core.segment import Kind
from funnel.storage import layout
from funnel.storage.layout import MetaField
from funnel.storage.redis.user_index import RedisUserIndex

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'
BOTH = {"intersect": ["early", "late"]}
USERS = [f"u{n}" for n in range(12)]


def read_copy_now(api: TestClient) -> Any:
    """Make the API read its catalog copy (and the index) at its next request; that view."""
    service = api.app.state.service  # type: ignore[attr-defined]
    service._catalog.expire()
    api.get("/v1/segments")
    return service._catalog._view


def members_by_check(api: TestClient, user_id: str, segment_ids: list[str]) -> set[str]:
    """The segments among ``segment_ids`` that hold ``user_id``, asked of each segment."""
    assert segment_ids
    return {s for s in segment_ids if api.get(f"/v1/segments/{s}/members/{user_id}").json()["member"]}


@pytest.fixture
def every_kind(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    refresh_composite: Callable[..., Any],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> list[str]:
    """Two dynamic segments (one refreshed twice, so its index follows a change log), a static one,
    a composite over the two dynamic ones and a proxy; the ids of all of them."""
    add_segment("early")
    add_segment("late")
    add_segment("launch", "static")
    add_segment("both", "composite", rule=json.dumps(BOTH))
    add_segment("vips", rule=VIPS_RULE)
    refresh("early", USERS[:6])
    refresh("late", USERS[4:10])
    refresh("launch", USERS[::3], Kind.STATIC)
    refresh("early", USERS[1:8])  # u0 exits, u6 and u7 enter
    refresh_composite("both", BOTH)
    post_events(event("o1", "u2"), event("o2", "u2"), event("o3", "u11"))
    return ["early", "late", "launch", "both", "vips"]


def test_a_users_segments_from_the_index_are_each_segments_own_members(
    api: TestClient, every_kind: list[str], redis_client: Any
) -> None:
    view = read_copy_now(api)
    assert view.indexed_ids == {"early", "late", "launch", "both"}  # every stored segment, in one read
    assert view.unindexed == ()
    numbers = redis_client.smembers(layout.user_segments_key("u6"))
    assert len(numbers) == 4  # early (entered by its change log), late, launch (every third) and both

    for user_id in USERS:
        answer = api.get(f"/v1/users/{user_id}/segments").json()
        assert set(answer["segments"]) == members_by_check(api, user_id, every_kind), user_id
        assert answer["source"] == "redis"
    early = api.get("/v1/users/u1/segments").json()["versions"]["early"]
    assert (early["version"], early["refreshed_at"]) == (2, api.get("/v1/segments/early").json()["refreshed_at"])


def test_a_swap_after_the_copy_was_read_is_answered_exactly(
    api: TestClient, every_kind: list[str], refresh: Callable[..., Any]
) -> None:
    read_copy_now(api)
    refresh("late", ["u0", "u4", "u6", "u7", "u8", "u11"])  # the copy still says version 1 with u4..u9

    u0, u5 = api.get("/v1/users/u0/segments").json(), api.get("/v1/users/u5/segments").json()

    assert "late" in u0["segments"]
    assert u0["versions"]["late"]["version"] == 2
    assert "late" not in u5["segments"]
    assert set(u5["segments"]) == members_by_check(api, "u5", every_kind)


def test_an_unfinished_update_is_never_trusted(api: TestClient, every_kind: list[str], redis_client: Any) -> None:
    index = RedisUserIndex(redis_client)
    index.begin("late")  # a refresh that died between its swap and the index's end
    late = redis_client.hget(layout.meta_key("late"), MetaField.INDEX_NUMBER)
    assert redis_client.srem(layout.user_segments_key("u5"), late) == 1  # a write it had not made yet
    view = read_copy_now(api)
    assert "late" not in view.indexed_ids
    assert [e.segment_id for e in view.unindexed] == ["late"]

    assert "late" in api.get("/v1/users/u5/segments").json()["segments"]


def test_redis_losing_the_index_falls_back_to_each_segments_keys(
    api: TestClient, every_kind: list[str], redis_client: Any
) -> None:
    read_copy_now(api)
    redis_client.delete(*layout.index_keys(), *(layout.user_segments_key(u) for u in USERS))

    for user_id in ("u2", "u6", "u9"):
        answer = api.get(f"/v1/users/{user_id}/segments").json()
        assert set(answer["segments"]) == members_by_check(api, user_id, every_kind), user_id
        assert answer["segments"]  # each of these users is in at least one segment
    assert read_copy_now(api).index_epoch is None  # the next copy knows: no index
