"""Segment definitions over the API: add, change, revisions and dependents, through the one write
path (the CLI's), checked as the catalog checks a row; a refused change writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import HOSTILE_DEFINITIONS, mysql_fingerprint

from funnel.services.catalog import validate_rows

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

#: A query HiveServer2 runs without a table (each add and query edit is previewed on it first).
QUERY = "SELECT id AS user_id FROM range(0, 10)"
DUTCH = {"segment_id": "dutch", "name": "Dutch users", "kind": "dynamic", "query": QUERY}


@pytest.fixture
def writer(start_api: Callable[..., TestClient], write_auth: dict[str, str], mysql_conn: Any) -> TestClient:
    api = start_api(token=None)
    api.headers.update(write_auth)
    return api


def test_add_change_and_read_the_revisions(writer: TestClient) -> None:
    added = writer.post("/v1/segments", json={**DUTCH, "comment": "for the NL launch"})
    assert added.status_code == 201, added.text
    first = added.json()
    assert (first["revision"], first["change"], first["actor"], first["comment"]) == (
        1,
        "created",
        "api:write-token",
        "for the NL launch",
    )
    assert first["definition"]["query"] == QUERY
    assert writer.get("/v1/segments/dutch").json()["query"] == QUERY  # served at once by this worker

    changed = writer.patch("/v1/segments/dutch", json={"name": "NL users"}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["revision"], changed.json()["changed"]) == (2, {"name": ["Dutch users", "NL users"]})

    stale = writer.patch("/v1/segments/dutch", json={"name": "Late"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    assert "is at revision 2, not 1" in stale.json()["error"]
    assert "name ('Dutch users' -> 'NL users')" in stale.json()["error"]

    revisions = writer.get("/v1/segments/dutch/revisions").json()["revisions"]
    assert [(r["revision"], r["change"]) for r in revisions] == [(1, "created"), (2, "edited")]


def test_kind_stays_unknown_fields_are_named_and_a_used_segment_stays_enabled(writer: TestClient) -> None:
    assert writer.post("/v1/segments", json=DUTCH).status_code == 201
    assert writer.post("/v1/segments", json={**DUTCH, "segment_id": "german"}).status_code == 201
    both = {"segment_id": "both", "name": "Both", "kind": "composite", "rule": {"union": ["dutch", "german"]}}
    added_both = writer.post("/v1/segments", json=both)
    assert added_both.status_code == 201, added_both.text

    kind = writer.patch("/v1/segments/dutch", json={"kind": "static"})
    assert (kind.status_code, "field 'kind' cannot change from dynamic to static" in kind.json()["error"]) == (
        422,
        True,
    )
    team = writer.post("/v1/segments", json={**DUTCH, "segment_id": "x", "team": "growth"})
    assert team.json() == {
        "error": "'team' is not a segment field; use segment_id, name, kind, query, run_at, "
        "rule, max_shrink_pct, owner, labels, enabled and comment"
    }
    long_comment = writer.post("/v1/segments", json={**DUTCH, "segment_id": "y", "comment": "x" * 1001})
    assert long_comment.json() == {"error": "comment is longer than 1000 characters. Fix: shorten it"}
    again = writer.post("/v1/segments", json=DUTCH)
    assert (again.status_code, "already exists" in again.json()["error"]) == (409, True)

    assert writer.get("/v1/segments/dutch/dependents").json() == {
        "segment_id": "dutch",
        "dependents": ["composite both"],
    }
    used = writer.patch("/v1/segments/dutch", json={"enabled": False})
    assert used.status_code == 409
    assert used.json()["error"].startswith("segment 'dutch' cannot be disabled: composite both depend on it")
    assert writer.patch("/v1/segments/both", json={"enabled": False}).json()["change"] == "disabled"
    assert writer.patch("/v1/segments/dutch", json={"enabled": False}).json()["change"] == "disabled"
    assert writer.get("/v1/segments/nosuch/revisions").status_code == 404


HOSTILE = HOSTILE_DEFINITIONS


@pytest.mark.parametrize("row", HOSTILE, ids=[row["segment_id"] for row in HOSTILE])
def test_a_hostile_definition_is_refused_as_the_catalog_refuses_it_and_nothing_is_written(
    writer: TestClient, mysql_conn: Any, row: dict[str, Any]
) -> None:
    (expected,) = validate_rows([(row, "MySQL table funnel_segments")]).errors
    before = mysql_fingerprint(mysql_conn)
    refused = writer.post("/v1/segments", json=row)
    assert (refused.status_code, refused.json()) == (422, {"error": str(expected)})
    assert mysql_fingerprint(mysql_conn) == before


def test_a_read_token_cannot_write(start_api: Callable[..., TestClient], mysql_conn: Any) -> None:
    reader = start_api()
    assert reader.post("/v1/segments", json=DUTCH).status_code == 403
    assert reader.get("/v1/segments/dutch/revisions").status_code == 404  # reading is allowed: it does not exist


def test_owners_and_labels_are_shown_and_filter_the_list(writer: TestClient) -> None:
    for segment_id, owner, labels in (("nl", "growth", ["nl", "eu"]), ("de", "Growth", ["eu"]), ("vip", None, None)):
        added = writer.post("/v1/segments", json={**DUTCH, "segment_id": segment_id, "owner": owner, "labels": labels})
        assert added.status_code == 201, added.text
    nl = writer.get("/v1/segments/nl").json()
    assert (nl["owner"], nl["labels"]) == ("growth", ["eu", "nl"])
    assert (writer.get("/v1/segments/vip").json()["owner"], writer.get("/v1/segments/vip").json()["labels"]) == (
        None,
        [],
    )

    def listed(query: str) -> list[str]:
        answer = writer.get(f"/v1/segments?{query}")
        assert answer.status_code == 200, answer.text
        return [segment["segment_id"] for segment in answer.json()["segments"]]

    assert listed("owner=GROWTH") == ["de", "nl"]
    assert listed("label=eu") == ["de", "nl"]
    assert listed("label=eu&label=nl") == ["nl"]
    assert listed("owner=nobody") == []
    bad = writer.patch("/v1/segments/nl", json={"labels": ["Not A Slug"]})
    assert (bad.status_code, bad.json()["error"]) == (
        422,
        "segment 'nl': field 'labels' holds 'Not A Slug', not a lower-case slug. Fix: set labels to a JSON list "
        'of up to 20 lower-case slugs, e.g. ["growth", "nl"]',
    )


def test_retire_and_restore_a_segment(
    writer: TestClient, refresh: Callable[..., Any], mysql_conn: Any, redis_client: Any
) -> None:
    assert writer.post("/v1/segments", json=DUTCH).status_code == 201
    assert writer.post("/v1/segments", json={**DUTCH, "segment_id": "dutch_too"}).status_code == 201
    both = {"segment_id": "both", "name": "Both", "kind": "composite", "rule": {"union": ["dutch", "dutch_too"]}}
    added_both = writer.post("/v1/segments", json=both)
    assert added_both.status_code == 201, added_both.text
    refresh("dutch", ["1", "2"])
    assert writer.get("/v1/segments/dutch/members/1").json()["member"] is True

    used = writer.post("/v1/segments/dutch:retire")
    assert (used.status_code, used.json()["error"]) == (
        409,
        "segment 'dutch' cannot be retired: composite both depend on it. Fix: disable or change it first",
    )
    assert writer.patch("/v1/segments/both", json={"enabled": False}).status_code == 200
    before = mysql_fingerprint(mysql_conn)
    retired = writer.post("/v1/segments/dutch:retire", json={"comment": "campaign over"})
    assert retired.status_code == 200, retired.text
    assert (retired.json()["change"], retired.json()["comment"]) == ("retired", "campaign over")
    assert retired.json()["definition"]["query"] == QUERY  # kept, for restore

    for path in ("/v1/segments/dutch", "/v1/segments/dutch/members/1", "/v1/segments/dutch/versions"):
        gone = writer.get(path)
        assert gone.status_code == 410, path
        assert gone.json() == {
            "error": f"segment 'dutch' was retired at {retired.json()['at']}. Fix: restore it (segments restore "
            "dutch, POST /v1/segments/dutch:restore) to use it again",
            "retired_at": retired.json()["at"],
        }
    assert "dutch" not in [s["segment_id"] for s in writer.get("/v1/segments").json()["segments"]]
    assert writer.patch("/v1/segments/dutch", json={"name": "x"}).status_code == 410
    again = writer.post("/v1/segments", json=DUTCH)
    assert (again.status_code, "was retired at" in again.json()["error"]) == (409, True)
    after = mysql_fingerprint(mysql_conn)  # the data is kept: only the catalog row and a revision moved
    changed = {table for table in before if before[table] != after.get(table)}
    assert changed == {"funnel_segments", "funnel_segment_revisions"}

    restored = writer.post("/v1/segments/dutch:restore")
    assert (restored.status_code, restored.json()["change"]) == (200, "restored")
    assert writer.get("/v1/segments/dutch/members/1").json()["member"] is True
    assert writer.post("/v1/segments/dutch:restore").status_code == 409  # not retired
    revisions = writer.get("/v1/segments/dutch/revisions").json()["revisions"]
    assert [r["change"] for r in revisions] == ["created", "retired", "restored"]
    assert revisions[-1]["definition"] == revisions[0]["definition"]


def test_a_row_deleted_by_hand_answers_410_not_500(
    writer: TestClient, refresh: Callable[..., Any], mysql_conn: Any, start_api: Callable[..., TestClient]
) -> None:
    assert writer.post("/v1/segments", json=DUTCH).status_code == 201
    refresh("dutch", ["1"])
    cur = mysql_conn.cursor()
    cur.execute("DELETE FROM funnel_segments WHERE segment_id = 'dutch'")
    mysql_conn.commit()
    gone = start_api().get("/v1/segments/dutch/members/1")  # a worker that reads the catalog now
    assert (gone.status_code, gone.json()["retired_at"]) == (410, None)
    assert "was retired (its catalog row was deleted)" in gone.json()["error"]


def test_each_version_names_the_revision_it_was_computed_from(writer: TestClient, refresh: Callable[..., Any]) -> None:
    from funnel.core.segment import segment_from_row
    from funnel.core.segment_revisions import digest, segment_definition

    def built_from(revision: dict[str, Any]) -> str:  # what the DAG factory gives the segment's task
        return digest(segment_definition(segment_from_row(revision["definition"])))

    first = writer.post("/v1/segments", json=DUTCH).json()
    refresh("dutch", ["1"], definition_digest=built_from(first))
    second = writer.patch("/v1/segments/dutch", json={"query": QUERY + " WHERE id > 5"}).json()
    refresh("dutch", ["1", "2"], definition_digest=built_from(second))
    refresh("dutch", ["1", "2", "3"], definition_digest="0" * 64)  # a definition no revision records
    versions = writer.get("/v1/segments/dutch/versions").json()["versions"]
    assert [(v["version"], v["revision"]) for v in versions] == [(1, 1), (2, 2), (3, None)]


def test_a_change_is_recorded_under_the_name_of_the_token_that_made_it(
    start_api: Callable[..., TestClient], mysql_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import API_TOKENS

    from funnel.api.app import create_app

    monkeypatch.setenv("AIRFLOW__FUNNEL__API_TOKENS", f"{API_TOKENS},crm-sync=write:crm-token-5f1e0c")
    crm = start_api(token="crm-token-5f1e0c")
    added = crm.post("/v1/segments", json=DUTCH)
    assert (added.status_code, added.json()["actor"]) == (201, "api:crm-sync")
    retired = crm.post("/v1/segments/dutch:retire", json={"comment": "done"})
    assert retired.json()["actor"] == "api:crm-sync"

    for setting, problem in (
        ("Bad Name=write:t1", "the token name 'Bad Name' is not a slug"),
        ("a=write:t1,a=read:t2", "the token name 'a' is taken"),
        ("admin:t1", "each entry must be '[name=]read:<token>'"),
    ):
        monkeypatch.setenv("AIRFLOW__FUNNEL__API_TOKENS", setting)
        with pytest.raises(ValueError, match=problem.replace("[", r"\[")):
            create_app()


def test_a_definition_is_previewed_before_it_is_saved(
    writer: TestClient, mysql_conn: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    from helpers import load_tags

    from funnel import settings

    broken = {**DUTCH, "query": "SELECT user_id FROM no_such_table"}
    before = mysql_fingerprint(mysql_conn)
    refused = writer.post("/v1/segments", json=broken)
    assert (refused.status_code, "TABLE_OR_VIEW_NOT_FOUND" in refused.json()["error"]) == (422, True)
    assert mysql_fingerprint(mysql_conn) == before  # the query failed on Hive: nothing saved
    unchecked = writer.post("/v1/segments?preview=false", json=broken)
    assert (unchecked.status_code, "preview" in unchecked.json()) == (201, False)

    load_tags(redis_client, [(str(i), None, 1) for i in range(10)], dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    monkeypatch.setattr(settings, "MAX_SHARE_OF_USERS", 0.5)
    everyone = {**DUTCH, "segment_id": "everyone", "query": "SELECT id AS user_id FROM range(0, 8)"}
    before = mysql_fingerprint(mysql_conn)
    too_big = writer.post("/v1/segments", json=everyone)
    assert (too_big.status_code, too_big.json()["error"]) == (
        422,
        "segment 'everyone': field 'query' gives a segment that holds 8 users, 80.0% of the 10 users with tags, "
        "over the max_share_of_users limit of 50%; nothing was saved. Fix: check it (a lost WHERE?), or save it "
        "with force (--force, ?force=true) if it really holds nearly everyone",
    )
    assert mysql_fingerprint(mysql_conn) == before
    forced = writer.post("/v1/segments?force=true", json=everyone)
    assert forced.status_code == 201, forced.text
    assert (forced.json()["preview"]["size"], forced.json()["preview"]["sample"][:3]) == (8, ["0", "1", "2"])

    narrower = writer.patch("/v1/segments/everyone", json={"query": "SELECT id AS user_id FROM range(0, 3)"})
    assert (narrower.status_code, narrower.json()["preview"]["size"]) == (200, 3)
    assert narrower.json()["preview"]["against_live"]["version"] is None  # never refreshed yet
    renamed = writer.patch("/v1/segments/everyone", json={"name": "Some"})
    assert (renamed.status_code, "preview" in renamed.json()) == (200, False)  # nothing that decides membership


def test_put_replaces_the_whole_definition(writer: TestClient) -> None:
    added = writer.post("/v1/segments", json={**DUTCH, "owner": "growth", "labels": ["nl"], "max_shrink_pct": 20})
    assert added.status_code == 201
    replaced = writer.put("/v1/segments/dutch", json={"name": "Dutch", "kind": "dynamic", "query": QUERY})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["changed"] == {
        "name": ["Dutch users", "Dutch"],
        "max_shrink_pct": [20.0, None],
        "owner": ["growth", None],
        "labels": [["nl"], None],
    }
    other = writer.put("/v1/segments/dutch", json={"segment_id": "german", "name": "x", "kind": "dynamic"})
    assert (other.status_code, other.json()["error"]) == (
        422,
        "segment_id 'german' is not the path's 'dutch'. Fix: a segment's id never changes: send the path's id or none",
    )
    kind = writer.put("/v1/segments/dutch", json={"name": "x", "kind": "proxy", "rule": {"tag": "new_user"}})
    assert (kind.status_code, "cannot change from dynamic to proxy" in kind.json()["error"]) == (422, True)
    assert writer.put("/v1/segments/nosuch", json={"name": "x", "kind": "dynamic", "query": QUERY}).status_code == 404


def test_a_body_over_the_size_limit_is_413_before_it_is_read(writer: TestClient, mysql_conn: Any) -> None:
    from funnel import settings

    before = mysql_fingerprint(mysql_conn)
    huge = {**DUTCH, "comment": "x" * (settings.MAX_BODY_BYTES + 1)}
    answer = writer.post("/v1/segments", json=huge)
    assert (answer.status_code, answer.json()["error"].endswith("Fix: send fewer items per request")) == (413, True)
    long_query = writer.post("/v1/segments?preview=false", json={**DUTCH, "query": QUERY + " " * 70_000 + "-- x"})
    assert (long_query.status_code, "field 'query' is 70," in long_query.json()["error"]) == (422, True)
    assert mysql_fingerprint(mysql_conn) == before
