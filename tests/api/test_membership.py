"""Membership: one user, many users at once, and every segment of a user, over the real stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel import settings
from funnel.core.segment import Kind

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'


@pytest.mark.parametrize("kind", [Kind.DYNAMIC, Kind.STATIC])
def test_a_member_and_a_non_member_of_a_stored_segment(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], kind: Kind
) -> None:
    add_segment("s", kind.value)
    result = refresh("s", ["1", "2", "u-3"], kind)

    inside = api.get("/v1/segments/s/members/u-3")
    outside = api.get("/v1/segments/s/members/4")

    assert inside.status_code == outside.status_code == 200
    assert inside.headers["X-Funnel-Source"] == "redis"
    body = inside.json()
    assert {k: body[k] for k in ("segment_id", "user_id", "member", "version", "source")} == {
        "segment_id": "s",
        "user_id": "u-3",
        "member": True,
        "version": result.version,
        "source": "redis",
    }
    assert body["refreshed_at"] == api.get("/v1/segments/s").json()["refreshed_at"]
    assert (outside.json()["member"], outside.json()["version"]) == (False, result.version)


def test_membership_answers_the_version_now_live(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["1", "2"])
    before = {u: api.get(f"/v1/segments/s/members/{u}").json() for u in ("1", "3")}
    assert (before["1"]["member"], before["3"]["member"], before["1"]["version"]) == (True, False, 1)
    refresh("s", ["2", "3"])
    after = {u: api.get(f"/v1/segments/s/members/{u}").json() for u in ("1", "3")}
    assert (after["1"]["member"], after["1"]["version"]) == (False, 2)
    assert (after["3"]["member"], after["3"]["version"]) == (True, 2)


def test_a_proxy_segment_answers_from_the_users_tags(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    post_events(event("o1", "u1"), event("o2", "u1"), event("o3", "u2"))

    answers = {u: api.get(f"/v1/segments/vips/members/{u}") for u in ("u1", "u2", "never-seen")}

    assert {u: r.json()["member"] for u, r in answers.items()} == {"u1": True, "u2": False, "never-seen": False}
    assert {r.headers["X-Funnel-Source"] for r in answers.values()} == {"redis"}
    assert {r.json()["version"] for r in answers.values()} == {0}  # the tag version


def test_members_check_answers_each_id_once_with_the_version(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["1", "2", "3"])

    response = api.post("/v1/segments/s/members:check", json={"user_ids": ["3", "9", "1", "3"]})

    assert response.status_code == 200
    assert response.headers["X-Funnel-Source"] == "redis"
    body = response.json()
    assert body["members"] == {"3": True, "9": False, "1": True}
    assert (body["segment_id"], body["version"], body["source"]) == ("s", 1, "redis")


def test_members_check_on_a_proxy_segment(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("vips", rule=VIPS_RULE)
    post_events(event("o1", "u1"), event("o2", "u1"), event("o3", "u2"))
    body = api.post("/v1/segments/vips/members:check", json={"user_ids": ["u1", "u2", "u3"]}).json()
    assert body["members"] == {"u1": True, "u2": False, "u3": False}
    assert (body["version"], body["source"]) == (0, "redis")


def test_members_check_takes_max_check_ids_and_refuses_one_more_with_413(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", [str(i) for i in range(0, 20_000, 2)])
    most = settings.MAX_CHECK_IDS
    ids = [str(i) for i in range(most)]

    full = api.post("/v1/segments/s/members:check", json={"user_ids": ids})
    over = api.post("/v1/segments/s/members:check", json={"user_ids": [*ids, "one-more"]})

    assert full.status_code == 200
    members = full.json()["members"]
    assert len(members) == most
    assert sum(members.values()) == most // 2
    assert (members["0"], members["1"]) == (True, False)
    assert over.status_code == 413
    assert over.json() == {"error": f"at most {most} user ids per request; got {most + 1}"}


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["1", "2", " 3"], "user_ids[2] ' 3' has leading or trailing whitespace"),
        (["1", "a\tb"], "user_ids[1] 'a\\tb' holds a character that is not printable ASCII"),
        (["", "1"], "user_ids[0] '' is empty"),
        (["1", "x" * 65], "user_ids[1] 'xxxx"),
        (["1", None], "user_ids[1] must be a string"),
        (["1", True], "user_ids[1] must be a string"),
        (["1", ["2"]], "user_ids[1] must be a string"),
    ],
)
def test_members_check_names_the_index_of_a_bad_id(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], ids: list[Any], message: str
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.post("/v1/segments/s/members:check", json={"user_ids": ids})
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"user_ids": ["1"]',
        b"null",
        b"[]",
        b'"1"',
        b"{}",
        b'{"user_ids": []}',
        b'{"user_ids": "1"}',
        b'\xff{"user_ids": ["1"]}',  # not UTF-8
        b'{"user_ids": ["1"], "user_idz": ["2"]}',  # a field the body does not have
    ],
)
def test_members_check_refuses_a_body_that_is_not_a_list_of_ids(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], body: bytes
) -> None:
    add_segment("s")
    refresh("s", ["1"])
    response = api.post("/v1/segments/s/members:check", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]  # what is wrong (the field, when there is one), then the body to send
    usage = 'send {"user_ids": ["...", ...]} with at least one user id'
    named = "'user_idz' is not a members:check field; use user_ids"
    assert error in ("the body is not valid JSON", named) or error.endswith(usage)


def test_members_check_takes_numeric_ids_as_their_decimal_text(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["1001", "1002"])
    response = api.post("/v1/segments/s/members:check", json={"user_ids": [1001, 7]})
    assert response.status_code == 200, response.text
    assert response.json()["members"] == {"1001": True, "7": False}


def test_a_users_segments_are_static_dynamic_and_proxy_together(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("buyers")
    add_segment("launch", "static")
    add_segment("vips", rule=VIPS_RULE)
    add_segment("newcomers", rule='{"tag": "new_user", "days": 7}')
    add_segment("others")
    refresh("buyers", ["u1", "u2"])
    refresh("launch", ["u1", "u3"], Kind.STATIC)
    refresh("others", ["u2"])
    post_events(event("o1", "u1"), event("o2", "u1"), event("s1", "u1", kind="signup", minutes_ago=60))

    u1 = api.get("/v1/users/u1/segments")
    nobody = api.get("/v1/users/u9/segments")

    assert u1.status_code == nobody.status_code == 200
    body = u1.json()
    versions = body.pop("versions")
    assert body == {
        "user_id": "u1",
        "segments": ["buyers", "launch", "newcomers", "vips"],
        "stale": [],
        "not_computed": [],
        "source": "redis",
    }
    buyers, tags = api.get("/v1/segments/buyers/members/u1").json(), api.get("/v1/segments/vips/members/u1").json()
    assert versions["buyers"] == {"version": 1, "refreshed_at": buyers["refreshed_at"], "stale": False}
    assert versions["launch"]["version"] == 1
    proxy = {"version": tags["version"], "refreshed_at": tags["refreshed_at"], "stale": False}
    assert versions["vips"] == versions["newcomers"] == proxy  # the tag version and its load time
    assert u1.headers["X-Funnel-Source"] == "redis"
    assert nobody.json() == {
        "user_id": "u9",
        "segments": [],
        "versions": {},
        "stale": [],
        "not_computed": [],
        "source": "redis",
    }


def test_a_users_segments_name_the_version_now_live_and_its_refresh_time(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    refresh("s", ["u1"])
    before = api.get("/v1/users/u1/segments").json()["versions"]["s"]
    assert (before["version"], before["refreshed_at"]) == (1, api.get("/v1/segments/s").json()["refreshed_at"])
    assert api.get("/v1/users/u1/segments").json()["versions"]["s"] == before  # remembered: the same answer
    refresh("s", ["u1", "u2"])
    after = api.get("/v1/users/u1/segments").json()["versions"]["s"]
    assert (after["version"], after["refreshed_at"]) == (2, api.get("/v1/segments/s").json()["refreshed_at"])
    assert after["refreshed_at"] > before["refreshed_at"]
