"""``python -m funnel.cli segments ...``: the one write path for definitions, on the real MySQL.
A change is checked as the catalog checks it and recorded as a revision; a refused one writes
nothing."""

from __future__ import annotations

import getpass
import io
import json
from typing import Any

import pytest
from helpers import HOSTILE_DEFINITIONS, mysql_fingerprint

from funnel.cli.main import main
from funnel.services.catalog import validate_rows

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

ACTOR = f"cli:{getpass.getuser()}"
#: A query HiveServer2 runs without a table (each add and query edit is previewed on it first).
QUERY = "SELECT id AS user_id FROM range(0, 10)"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["segments", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def history(capsys: pytest.CaptureFixture[str], segment_id: str) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "history", segment_id, "--json")
    assert code == 0
    return json.loads(out.strip().splitlines()[-1])


def test_add_edit_and_history(mysql_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "add", "buyers", "--name", "Buyers", "--kind", "dynamic", "--query", QUERY)
    assert (code, err) == (0, "")
    assert "segment buyers: revision 1 (created" in out
    code, out, _ = run(
        capsys, "edit", "buyers", "--name", "Big buyers", "--expect-revision", "1", "--comment", "rename"
    )
    assert code == 0
    assert "revision 2 (edited: name)" in out

    first, second = history(capsys, "buyers")
    assert (first["revision"], first["change"], first["actor"]) == (1, "created", ACTOR)
    assert first["definition"]["query"] == QUERY
    assert second["changed"] == {"name": ["Buyers", "Big buyers"]}
    assert second["comment"] == "rename"
    cur = mysql_conn.cursor()
    cur.execute("SELECT name, kind, query, enabled FROM funnel_segments WHERE segment_id = 'buyers'")
    assert cur.fetchall() == (("Big buyers", "dynamic", QUERY, 1),)

    code, out, _ = run(capsys, "edit", "buyers", "--name", "Big buyers")
    assert (code, out.strip()) == (0, "segment: edit: nothing changed (no new revision)")
    assert len(history(capsys, "buyers")) == 2


def test_a_stale_edit_is_refused_with_what_changed_since(mysql_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "add", "buyers", "--name", "Buyers", "--kind", "dynamic", "--query", QUERY)[0] == 0
    assert run(capsys, "edit", "buyers", "--name", "B2", "--expect-revision", "1")[0] == 0
    code, _, err = run(capsys, "edit", "buyers", "--name", "B3", "--expect-revision", "1")
    assert code == 1
    assert "is at revision 2, not 1" in err
    assert "name ('Buyers' -> 'B2')" in err
    assert len(history(capsys, "buyers")) == 2


HOSTILE = [
    *HOSTILE_DEFINITIONS,
    {"segment_id": "en", "name": "x", "kind": "dynamic", "query": QUERY, "enabled": "sometimes"},
]


@pytest.mark.parametrize("row", HOSTILE, ids=[row["segment_id"] for row in HOSTILE])
def test_a_hostile_definition_is_refused_as_the_catalog_refuses_it_and_nothing_is_written(
    mysql_conn: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, row: dict[str, Any]
) -> None:
    (expected,) = validate_rows([(row, "MySQL table funnel_segments")]).errors
    before = mysql_fingerprint(mysql_conn)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(row)))
    code, _, err = run(capsys, "add", "--file", "-")
    assert code == 1
    assert err.strip() == f"refused: {expected}"
    assert mysql_fingerprint(mysql_conn) == before


def test_id_and_kind_stay_and_unknown_fields_are_named(
    mysql_conn: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "add", "buyers", "--name", "Buyers", "--kind", "dynamic", "--query", QUERY)[0] == 0
    code, _, err = run(capsys, "edit", "buyers", "--kind", "static")
    assert code == 1
    assert "field 'kind' cannot change from dynamic to static" in err
    code, _, err = run(capsys, "add", "buyers", "--name", "Again", "--kind", "dynamic", "--query", QUERY)
    assert (code, "segment 'buyers' already exists" in err) == (1, True)
    monkeypatch.setattr("sys.stdin", io.StringIO("segment_id: owned\nname: Owned\nkind: dynamic\nteam: growth\n"))
    code, _, err = run(capsys, "add", "--file", "-")  # YAML
    assert code == 1
    assert "segment 'owned': field 'team' is not a field of a segment. Fix: use segment_id, name, kind" in err
    code, _, err = run(capsys, "edit", "nosuch", "--name", "x")
    assert (code, "segment 'nosuch' is not in funnel_segments" in err) == (1, True)


def test_a_segment_in_use_cannot_be_disabled(mysql_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for segment_id in ("a", "b"):
        assert run(capsys, "add", segment_id, "--name", segment_id, "--kind", "dynamic", "--query", QUERY)[0] == 0
    rule = '{"union": ["a", "b"]}'
    assert run(capsys, "add", "both", "--name", "Both", "--kind", "composite", "--rule", rule)[0] == 0

    code, out, _ = run(capsys, "dependents", "a")
    assert (code, out.strip()) == (0, "composite both")
    code, _, err = run(capsys, "disable", "a")
    assert code == 1
    assert "segment 'a' cannot be disabled: composite both depend on it" in err
    assert [r["change"] for r in history(capsys, "a")] == ["created"]

    assert run(capsys, "disable", "both")[0] == 0
    assert run(capsys, "disable", "a")[0] == 0
    assert [r["change"] for r in history(capsys, "a")] == ["created", "disabled"]
    assert run(capsys, "enable", "a")[0] == 0
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["segment", "kind", "enabled", "revision", "owner", "name"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["a", "dynamic", "yes", "3"],
        ["b", "dynamic", "yes", "1"],
        ["both", "composite", "no", "2"],
    ]


def test_owners_and_labels_are_set_and_filter_the_list(mysql_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--kind", "dynamic", "--query", QUERY]
    labels = ["--label", "nl", "--label", "eu"]
    assert run(capsys, "add", "nl", "--name", "NL", *flags, "--owner", "growth", *labels)[0] == 0
    assert run(capsys, "add", "de", "--name", "DE", *flags, "--owner", "Growth", "--label", "eu")[0] == 0
    assert run(capsys, "add", "vip", "--name", "VIP", *flags)[0] == 0
    code, out, _ = run(capsys, "list", "--owner", "GROWTH", "--json")
    assert (code, [(d["segment_id"], d["owner"], d["labels"]) for d in json.loads(out)]) == (
        0,
        [("de", "Growth", ["eu"]), ("nl", "growth", ["eu", "nl"])],
    )
    both = json.loads(run(capsys, "list", "--label", "eu", "--label", "nl", "--json")[1])
    assert [d["segment_id"] for d in both] == ["nl"]
    code, out, _ = run(capsys, "list", "--label", "eu")
    assert [line.split()[4] for line in out.strip().splitlines()[1:]] == ["Growth", "growth"]
    assert run(capsys, "edit", "nl", "--label", "benelux")[0] == 0  # the labels given replace the old ones
    assert json.loads(run(capsys, "show", "nl", "--json")[1])["definition"]["labels"] == ["benelux"]
    code, _, err = run(capsys, "edit", "nl", "--label", "Not A Slug")
    assert (code, "field 'labels' holds 'Not A Slug', not a lower-case slug" in err) == (1, True)


def test_a_row_written_by_hand_is_edited_through_the_same_path(
    mysql_conn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cur = mysql_conn.cursor()
    cur.execute(
        "INSERT INTO funnel_segments (segment_id, name, kind, query) VALUES ('hand', 'Hand', 'dynamic', %s)", (QUERY,)
    )
    mysql_conn.commit()
    code, out, _ = run(capsys, "show", "hand", "--json")
    assert code == 0
    assert json.loads(out)["revision"] is None
    assert run(capsys, "edit", "hand", "--query", f"{QUERY} WHERE id > 5")[0] == 0
    (revision,) = history(capsys, "hand")
    assert (revision["revision"], revision["change"]) == (1, "edited")
    assert revision["changed"] == {"query": [QUERY, f"{QUERY} WHERE id > 5"]}


def test_retire_restore_and_purge_after_the_horizon(
    mysql_conn: Any, redis_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import refresh_segment

    from funnel.storage import layout

    assert run(capsys, "add", "old", "--name", "Old", "--kind", "dynamic", "--query", QUERY)[0] == 0
    assert run(capsys, "add", "kept", "--name", "Kept", "--kind", "dynamic", "--query", QUERY)[0] == 0
    for segment_id in ("old", "kept"):
        refresh_segment(redis_client, segment_id, ["1", "2"], slot=0)
    code, out, _ = run(capsys, "retire", "old", "--comment", "campaign over")
    assert (code, out.strip()) == (0, "segment old: revision 2 (retired: -)")
    code, _, err = run(capsys, "show", "old")
    assert (code, "segment 'old' was retired at" in err) == (1, True)
    assert run(capsys, "retire", "old")[0] == 1
    assert run(capsys, "restore", "old")[0] == 0
    assert json.loads(run(capsys, "show", "old", "--json")[1])["definition"]["query"] == QUERY
    assert run(capsys, "retire", "old")[0] == 0

    def rows(segment_id: str) -> int:
        cur = mysql_conn.cursor()
        cur.execute("SELECT COUNT(*) FROM funnel_memberships WHERE segment_id = %s", (segment_id,))
        count = int(cur.fetchone()[0])
        mysql_conn.commit()
        return count

    assert (rows("old"), rows("kept")) == (2, 2)
    code, out, _ = run(capsys, "purge")  # retired a moment ago: within change_history_days
    assert (code, out.strip(), rows("old")) == (0, "purged 0 segments retired over 90 days ago", 2)
    code, out, _ = run(capsys, "purge", "--days", "0")
    assert (code, out.strip()) == (0, "purged 1 segments retired over 0 days ago: old")
    assert (rows("old"), rows("kept")) == (0, 2)
    cur = mysql_conn.cursor()  # its version numbers stay taken: a restore never hands them out again
    cur.execute("SELECT DISTINCT state FROM funnel_segment_versions WHERE segment_id = 'old'")
    assert cur.fetchall() == (("dropped",),)
    mysql_conn.commit()
    assert redis_client.exists(layout.members_key("old"), layout.meta_key("old")) == 0
    assert redis_client.exists(layout.members_key("kept")) == 1
    assert [r["change"] for r in history(capsys, "old")] == ["created", "retired", "restored", "retired"]


def test_add_previews_first_unless_told_not_to(mysql_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "add", "ten", "--name", "Ten", "--kind", "dynamic", "--query", QUERY)
    assert code == 0
    assert out.splitlines()[0].startswith("preview: 10 users in ")
    assert out.splitlines()[0].endswith("s; sample: 0, 1, 2, 3, 4")
    broken = ["--name", "Broken", "--kind", "dynamic", "--query", "SELECT user_id FROM no_such_table"]
    before = mysql_fingerprint(mysql_conn)
    code, _, err = run(capsys, "add", "broken", *broken)
    assert (code, "refused: segment 'broken': Hive query failed: [TABLE_OR_VIEW_NOT_FOUND]" in err) == (1, True)
    assert mysql_fingerprint(mysql_conn) == before
    code, out, _ = run(capsys, "add", "broken", *broken, "--no-preview")
    assert (code, out.strip()) == (0, "segment broken: revision 1 (created: segment_id, name, kind, query, enabled)")
