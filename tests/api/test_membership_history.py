"""The membership history over the API: ``?at=`` on a membership, a user's history, proxy
segments' changes logged by the events that cause them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnel.core.utc_time import utc_now
from funnel.storage import layout

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VERSIONS = [["1", "2"], ["2", "3"], ["3"], ["1", "3"], ["4"]]
LOYAL = '{"tag": "order_count", "op": ">=", "value": 3}'


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parsed(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def member_at(api: TestClient, segment_id: str, user_id: str, moment: dt.datetime) -> Any:
    return api.get(f"/v1/segments/{segment_id}/members/{user_id}", params={"at": iso(moment)})


def test_membership_at_a_time_is_what_the_version_live_then_held(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    before_first = utc_now()
    after_each = []
    for members in VERSIONS:  # 5 versions: 1 and 2 go beyond keep_versions (3), archived
        refresh("s", members)
        after_each.append(utc_now())
    for version, (members, moment) in enumerate(zip(VERSIONS, after_each, strict=True), 1):
        for user in "1234":
            answer = member_at(api, "s", user, moment)
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Funnel-Source"] == "history"
            body = answer.json()
            assert (body["member"], body["version"]) == (user in members, version), (user, version)
            assert (body["segment_id"], body["user_id"], body["source"]) == ("s", user, "history")
            assert parsed(body["at"]) == moment
    first = member_at(api, "s", "1", before_first).json()
    assert (first["member"], first["version"]) == (False, None)
    assert first["note"].startswith("before the segment's first version (1, live since ")
    # without ?at= the hot path answers from Redis as before
    plain = api.get("/v1/segments/s/members/4")
    assert (plain.json()["member"], plain.headers["X-Funnel-Source"]) == (True, "redis")
    # version 1 is archived: its members cannot be paged any more, but the history answers for it
    cur = api.get("/v1/segments/s/versions").json()
    assert [v["version"] for v in cur["versions"]] == [3, 4, 5]


def test_at_outside_the_history_is_410_naming_the_horizon_and_bad_times_422(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("s")
    add_segment("never")
    refresh("s", ["1"])
    old = utc_now() - dt.timedelta(days=91)
    gone = member_at(api, "s", "1", old)
    assert gone.status_code == 410
    assert "is before the membership history's horizon" in gone.json()["error"]
    assert "the setting change_history_days is 90" in gone.json()["error"]
    horizon = gone.json()["error"].split("horizon, ")[1].split(" (")[0]
    assert abs(parsed(horizon) - (utc_now() - dt.timedelta(days=90))) < dt.timedelta(minutes=1)
    never = member_at(api, "never", "1", utc_now())
    assert (never.status_code, never.json()["error"]) == (
        409,
        "segment 'never' is not computed yet; it has no history to answer from",
    )
    bad = api.get("/v1/segments/s/members/1", params={"at": "yesterday"})
    assert (bad.status_code, bad.json()["error"]) == (
        422,
        "at 'yesterday' is not a time. Fix: send an ISO-8601 time with its offset, e.g. 2026-11-29T09:30:00Z",
    )
    naive = api.get("/v1/segments/s/members/1", params={"at": "2030-01-01T10:00:00"})
    assert naive.status_code == 422
    assert "has no time zone" in naive.json()["error"]
    future = member_at(api, "s", "1", utc_now() + dt.timedelta(days=1))
    assert future.status_code == 422
    assert "is in the future" in future.json()["error"]
    # a '+00:00' offset sent unencoded arrives as a space; it still reads as the offset
    now = utc_now().isoformat()
    spaced = api.get(f"/v1/segments/s/members/1?at={now}")
    assert spaced.status_code == 200
    assert spaced.json()["member"] is True
    assert api.get("/v1/segments/nope/members/1", params={"at": iso(utc_now())}).status_code == 404


def test_an_event_that_moves_a_user_across_a_proxy_rule_is_logged_and_answers_at(
    api: TestClient,
    add_segment: Callable[..., None],
    tags_in_redis: None,
    post_events: Callable[..., Any],
    event: Callable[..., dict[str, str]],
) -> None:
    add_segment("loyal", rule=LOYAL)
    add_segment("newbies", rule='{"tag": "new_user", "days": 30}')
    orders = [event(f"o-{n}", "u1", minutes_ago=40 - 10 * n) for n in range(3)]  # 40, 30, 20 minutes ago
    assert post_events(*orders).status_code == 200
    cancel = event("c-1", "u1", minutes_ago=10, kind="order_cancelled")
    assert post_events(cancel).status_code == 200
    entered_at, exited_at = parsed(orders[2]["at"]), parsed(cancel["at"])

    history = api.get("/v1/users/u1/history").json()
    assert history["proxy_changes"] == [
        {"segment_id": "loyal", "at": entered_at.isoformat(), "change": "entered", "event_id": "o-2"},
        {"segment_id": "loyal", "at": exited_at.isoformat(), "change": "exited", "event_id": "c-1"},
    ]
    assert history["stays"] == []
    assert history["change_history_days"] == 90
    assert history["truncated"] is False
    second = dt.timedelta(seconds=1)
    for moment, expected in ((entered_at - second, False), (entered_at + second, True), (exited_at + second, False)):
        answer = member_at(api, "loyal", "u1", moment).json()
        assert (answer["member"], answer["version"], answer["source"]) == (expected, None, "history"), moment
    # a sign-up enters new_user by an event; past membership of a time-based rule is not told
    assert post_events(event("s-1", "u2", minutes_ago=5, kind="signup")).status_code == 200
    u2 = api.get("/v1/users/u2/history").json()["proxy_changes"]
    assert [(c["segment_id"], c["change"], c["event_id"]) for c in u2] == [("newbies", "entered", "s-1")]
    refused = member_at(api, "newbies", "u2", utc_now())
    assert refused.status_code == 422
    assert "depends on time (new_user or old_user)" in refused.json()["error"]


def test_a_users_history_lists_stays_by_version_filtered_and_bounded(
    api: TestClient, add_segment: Callable[..., None], refresh: Callable[..., Any], mysql_conn: Any
) -> None:
    add_segment("s")
    add_segment("t")
    after_each = []
    for members in VERSIONS:
        refresh("s", members)
        after_each.append(utc_now())
    refresh("t", ["1"])
    body = api.get("/v1/users/1/history").json()
    assert body["user_id"] == "1"
    assert body["limit"] == 1000
    assert [(s["segment_id"], s["entered_version"], s["exited_version"]) for s in body["stays"]] == [
        ("s", 1, 2),
        ("s", 4, 5),
        ("t", 1, None),
    ]
    cur = mysql_conn.cursor()
    cur.execute(f"SELECT version, promoted_at FROM {layout.VERSIONS_TABLE} WHERE segment_id = 's'")
    promoted = {version: at.replace(tzinfo=dt.UTC) for version, at in cur.fetchall()}
    mysql_conn.commit()
    first = body["stays"][0]
    assert (parsed(first["entered_at"]), parsed(first["exited_at"])) == (promoted[1], promoted[2])
    assert body["stays"][2]["exited_at"] is None
    narrowed = api.get("/v1/users/1/history", params={"segment": "s", "since": iso(after_each[2])}).json()
    assert [(s["entered_version"], s["exited_version"]) for s in narrowed["stays"]] == [(4, 5)]
    capped = api.get("/v1/users/1/history", params={"limit": "2"}).json()
    assert capped["truncated"] is True
    assert len(capped["stays"]) == 2
    bad = api.get("/v1/users/1/history", params={"since": "soon"})
    assert bad.status_code == 422
    assert "since 'soon' is not a time" in bad.json()["error"]
    assert api.get("/v1/users/1/history", headers={"Authorization": "Bearer nope"}).status_code == 401
