"""The MySQL store against a real MySQL: member spans, versions, the live pointer, forward-only
swaps, undoing a failed attempt, and pruning that costs the changes, not the size."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from helpers import mysql_live_members

from funnel.core.errors import StoreError
from funnel.core.run_info import RunInfo
from funnel.storage import layout
from funnel.storage.mysql.segment_versions import MySqlSegmentStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def run_for(day: int, hour: int = 9) -> RunInfo:
    logical_date = dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC)
    return RunInfo("funnel_dynamic_segments", f"scheduled__{day}T{hour}", logical_date)


def first(store: MySqlSegmentStore, segment_id: str, run: RunInfo, ids: list[str]) -> int:
    """Stage a first version (no live version yet: everyone enters, nothing logged)."""
    version = store.begin_version(segment_id, run, NOW, logged=False)
    store.add_entered(segment_id, version, ids, logged=False)
    return version


def live_first(store: MySqlSegmentStore, segment_id: str, run: RunInfo, ids: list[str]) -> int:
    version = first(store, segment_id, run, ids)
    assert store.promote(segment_id, version, run, len(set(ids)), NOW)[0]
    return version


def diff(store: MySqlSegmentStore, run: RunInfo, entered: list[str], exited: list[str]) -> int:
    version = store.begin_version("s", run, NOW)
    store.add_entered("s", version, entered, logged=True)
    store.add_exited("s", version, exited)
    assert store.close_exited("s", version) == len(set(exited))
    return version


def rows(conn: Any, sql: str) -> tuple[tuple[Any, ...], ...]:
    cur = conn.cursor()
    cur.execute(sql)
    found = cur.fetchall()
    conn.commit()
    return found


def spans(conn: Any) -> tuple[tuple[Any, ...], ...]:
    return rows(conn, f"SELECT user_id, entered, exited FROM {layout.MEMBERSHIPS_TABLE} ORDER BY user_id, entered")


def versions(conn: Any) -> tuple[tuple[int, str], ...]:
    return rows(conn, f"SELECT version, state FROM {layout.VERSIONS_TABLE} WHERE segment_id = 's' ORDER BY version")


def test_a_staged_version_is_invisible_until_promoted(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    version = first(store, "s", run_for(20), ["1", "2", "2", "3"])
    assert store.count_members("s", version) == 3
    assert mysql_live_members(mysql_conn, "s") == set()
    promoted, live = store.promote("s", version, run_for(20), 3, NOW)
    assert promoted
    assert live.version == version
    assert mysql_live_members(mysql_conn, "s") == {"1", "2", "3"}


def test_a_refresh_writes_only_who_entered_and_exited(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    live_first(store, "s", run_for(20), ["1", "2", "3"])
    version = diff(store, run_for(21), entered=["4"], exited=["1"])
    assert mysql_live_members(mysql_conn, "s") == {"1", "2", "3"}  # readers see the live version meanwhile
    assert spans(mysql_conn) == (("1", 1, 2), ("2", 1, None), ("3", 1, None), ("4", 2, None))
    store.promote("s", version, run_for(21), 3, NOW)
    assert mysql_live_members(mysql_conn, "s") == {"2", "3", "4"}
    assert {m for page in store.iter_members("s", 1, 10) for m in page} == {"1", "2", "3"}  # still kept
    logged = rows(mysql_conn, f"SELECT version, change_type, user_id FROM {layout.CHANGES_TABLE} ORDER BY 1, 2, 3")
    assert logged == ((2, "entered", "4"), (2, "exited", "1"))
    assert store.page_changes("s", 1, "entered", "", 10) == ["1", "2", "3"]  # a first version: its members
    assert store.page_changes("s", 2, "exited", "", 10) == ["1"]


def test_a_user_who_leaves_and_comes_back_has_two_spans(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    live_first(store, "s", run_for(20), ["1", "2"])
    store.promote("s", diff(store, run_for(21), entered=[], exited=["1"]), run_for(21), 1, NOW)
    store.promote("s", diff(store, run_for(22), entered=["1"], exited=[]), run_for(22), 2, NOW)
    assert spans(mysql_conn) == (("1", 1, 2), ("1", 3, None), ("2", 1, None))
    assert store.members_among("s", 2, ["1", "2"]) == {"2"}
    assert store.members_among("s", 3, ["1", "2"]) == {"1", "2"}


def test_versions_number_up_per_segment(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    assert [store.begin_version("a", run_for(20), NOW) for _ in range(3)] == [1, 2, 3]
    assert store.begin_version("b", run_for(20), NOW) == 1


def test_promote_never_rolls_back_to_an_earlier_logical_date(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    newer = live_first(store, "s", run_for(25), ["new"])
    backfill = diff(store, run_for(18), entered=["old"], exited=["new"])
    promoted, live = store.promote("s", backfill, run_for(18), 1, NOW)
    assert not promoted
    assert live.version == newer
    assert mysql_live_members(mysql_conn, "s") == {"new"}


def test_same_logical_date_rerun_replaces(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    live_first(store, "s", run_for(25), ["a"])
    second = diff(store, run_for(25), entered=["b"], exited=["a"])
    assert store.promote("s", second, run_for(25), 1, NOW)[0]
    assert mysql_live_members(mysql_conn, "s") == {"b"}


def test_a_failed_attempt_is_undone_exactly(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    live_first(store, "s", run_for(20), ["1", "2"])
    before = spans(mysql_conn)
    diff(store, run_for(21), entered=["3", "4"], exited=["1"])  # then the attempt dies
    assert store.clear_staged("s") == 1
    assert spans(mysql_conn) == before
    assert rows(mysql_conn, f"SELECT COUNT(*) FROM {layout.CHANGES_TABLE}") == ((0,),)
    assert mysql_live_members(mysql_conn, "s") == {"1", "2"}


def test_a_failed_first_attempt_is_undone(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    first(store, "s", run_for(20), ["1", "2"])
    assert store.clear_staged("s") == 1
    assert spans(mysql_conn) == ()


def test_a_cleaned_version_number_is_never_handed_out_again_nor_written(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    zombie = first(store, "s", run_for(20), ["1"])
    store.clear_staged("s")  # a retry took over
    # The earlier try, somehow still alive, can write nothing more, nor promote...
    with pytest.raises(StoreError, match=f"version {zombie} is no longer staged"):
        store.add_entered("s", zombie, ["zombie"], logged=False)
    retry = first(store, "s", run_for(20), ["2"])
    assert retry == zombie + 1
    with pytest.raises(StoreError, match=f"version {zombie} is no longer staged"):
        store.promote("s", zombie, run_for(20), 1, NOW)
    assert store.promote("s", retry, run_for(20), 1, NOW)[0]
    assert mysql_live_members(mysql_conn, "s") == {"2"}
    assert versions(mysql_conn) == ((1, "dropped"), (2, "live"))
    store.prune("s", keep=3)  # tombstones below the live version are pruned
    assert versions(mysql_conn) == ((2, "live"),)


def test_pruning_removes_only_spans_that_ended_before_the_oldest_kept_version(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    many = [str(i) for i in range(1000, 3000)]  # stayers: never touched by a prune
    live_first(store, "s", run_for(10), [*many, "a"])
    for day, (entered, exited) in enumerate([(["b"], ["a"]), (["c"], ["b"]), (["d"], ["c"]), (["e"], ["d"])], 11):
        version = diff(store, run_for(day), entered, exited)
        store.promote("s", version, run_for(day), len(many) + 1, NOW)
        store.prune("s", keep=3)
    assert versions(mysql_conn) == ((3, "retired"), (4, "retired"), (5, "live"))
    # a left at 2 and b at 3 are gone; c (3..4), d (4..5) and e (5..) still matter to a kept version.
    assert [s for s in spans(mysql_conn) if s[0].isalpha()] == [("c", 3, 4), ("d", 4, 5), ("e", 5, None)]
    assert rows(mysql_conn, f"SELECT DISTINCT version FROM {layout.CHANGES_TABLE} ORDER BY 1") == ((3,), (4,), (5,))
    for version, extra in ((3, "c"), (4, "d"), (5, "e")):
        assert store.members_among("s", version, ["a", "b", "c", "d", "e"]) == {extra}
        assert store.count_members("s", version) == len(many) + 1


def age(conn: Any, versions_: tuple[int, ...], days: int) -> None:
    """Make versions look promoted ``days`` days before ``NOW``."""
    cur = conn.cursor()
    marks = ", ".join(["%s"] * len(versions_))
    cur.execute(
        f"UPDATE {layout.VERSIONS_TABLE} SET promoted_at = %s WHERE segment_id = 's' AND version IN ({marks})",
        (NOW.replace(tzinfo=None) - dt.timedelta(days=days), *versions_),
    )
    conn.commit()


def handler_reads(conn: Any) -> int:
    """Rows this session's statements have read so far (every Handler_read_* counter)."""
    return sum(int(value) for name, value in rows(conn, "SHOW SESSION STATUS LIKE 'Handler_read%'"))


def five_versions(store: MySqlSegmentStore, many: list[str], **prune: Any) -> None:
    """Versions 1..5 of 's': a..e each stay one version; ``many`` stay throughout."""
    live_first(store, "s", run_for(10), [*many, "a"])
    for day, (entered, exited) in enumerate([(["b"], ["a"]), (["c"], ["b"]), (["d"], ["c"]), (["e"], ["d"])], 11):
        version = diff(store, run_for(day), entered, exited)
        store.promote("s", version, run_for(day), len(many) + 1, NOW)
        store.prune("s", keep=3, **prune)


def test_versions_within_the_history_keep_their_spans_and_changes_beyond_keep_versions(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    many = [str(i) for i in range(1000, 1100)]
    five_versions(store, many, history_days=90, now=NOW)
    # beyond the 3 pageable versions, 1 and 2 are archived: not pageable, their history kept
    assert versions(mysql_conn) == ((1, "archived"), (2, "archived"), (3, "retired"), (4, "retired"), (5, "live"))
    assert not store.has_version("s", 2)
    assert [s for s in spans(mysql_conn) if s[0].isalpha()] == [
        ("a", 1, 2),
        ("b", 2, 3),
        ("c", 3, 4),
        ("d", 4, 5),
        ("e", 5, None),
    ]
    assert rows(mysql_conn, f"SELECT DISTINCT version FROM {layout.CHANGES_TABLE} ORDER BY 1") == tuple(
        (v,) for v in (2, 3, 4, 5)
    )
    assert store.members_among("s", 1, ["a", "b"]) == {"a"}  # what version 1 held, still answerable


def test_versions_older_than_the_history_go_with_only_their_changes_spans_and_log(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    many = [str(i) for i in range(1000, 3000)]  # stayers: a prune must never read them
    five_versions(store, many, history_days=90, now=NOW)
    age(mysql_conn, (1, 2), days=120)
    age(mysql_conn, (3,), days=95)  # live at the horizon (NOW - 90 days): the history starts there
    spans_before = rows(mysql_conn, f"SELECT COUNT(*) FROM {layout.MEMBERSHIPS_TABLE}")[0][0]
    changes_before = rows(mysql_conn, f"SELECT COUNT(*) FROM {layout.CHANGES_TABLE}")[0][0]
    reads_before = handler_reads(mysql_conn)
    assert store.prune("s", keep=3, history_days=90, now=NOW) == [2, 1]
    reads = handler_reads(mysql_conn) - reads_before
    assert versions(mysql_conn) == ((3, "retired"), (4, "retired"), (5, "live"))
    # a (1..2) and b (2..3) ended at or before version 3: the only spans deleted; the log of 2 goes
    assert [s for s in spans(mysql_conn) if s[0].isalpha()] == [("c", 3, 4), ("d", 4, 5), ("e", 5, None)]
    assert spans_before - rows(mysql_conn, f"SELECT COUNT(*) FROM {layout.MEMBERSHIPS_TABLE}")[0][0] == 2
    assert changes_before - rows(mysql_conn, f"SELECT COUNT(*) FROM {layout.CHANGES_TABLE}")[0][0] == 2
    # the cost is the changes: a few dozen index reads, not the 2,000 stayers' spans
    assert reads < 100, reads


def test_a_version_ages_out_of_the_history_only_past_keep_versions(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    five_versions(store, ["1000"], history_days=90, now=NOW)
    age(mysql_conn, (1, 2, 3, 4, 5), days=200)  # every version is old: the newest 3 stay pageable anyway
    assert store.prune("s", keep=3, history_days=90, now=NOW) == [2, 1]
    assert versions(mysql_conn) == ((3, "retired"), (4, "retired"), (5, "live"))


def test_no_history_days_prunes_as_keep_versions_alone(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    five_versions(store, ["1000"], history_days=0, now=NOW)
    assert versions(mysql_conn) == ((3, "retired"), (4, "retired"), (5, "live"))


def test_iter_live_members_streams_every_member_once(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    ids = [str(i) for i in range(2500)]
    live_first(store, "s", run_for(20), ids)
    batches = list(store.iter_live_members("s", batch_size=1000))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert sorted(i for b in batches for i in b) == sorted(ids)


AWKWARD_IDS = ["1", 'q"uote', "c\\d", "\\N", "in ner", "i\\nj", "dup", "dup", "x" * 64]


@pytest.mark.parametrize("bulk", [False, True], ids=["inserts", "load_data"])
def test_both_staging_paths_store_the_same_ids_byte_for_byte(mysql_conn: Any, bulk_conn: Any, bulk: bool) -> None:
    store = MySqlSegmentStore(bulk_conn if bulk else mysql_conn, bulk_load=bulk)
    version = store.begin_version("s", run_for(20), NOW, logged=False)
    assert store.add_entered("s", version, AWKWARD_IDS[:5], logged=False) == 5
    assert store.add_entered("s", version, AWKWARD_IDS[4:], logged=False) == 3  # "in ner" and one "dup" repeat
    assert store.bulk_load is bulk
    store.promote("s", version, run_for(20), 8, NOW)
    assert mysql_live_members(mysql_conn, "s") == set(AWKWARD_IDS)


def test_a_server_that_refuses_load_data_falls_back_to_inserts(bulk_conn: Any, caplog: Any) -> None:
    cur = bulk_conn.cursor()
    cur.execute("SELECT @@GLOBAL.local_infile")
    (before,) = cur.fetchone()
    cur.execute("SET GLOBAL local_infile = 0")  # the server now refuses LOAD DATA LOCAL
    try:
        store = MySqlSegmentStore(bulk_conn, bulk_load=True)
        version = store.begin_version("s", run_for(20), NOW, logged=False)
        assert store.add_entered("s", version, ["1", "2"], logged=False) == 2
    finally:
        cur.execute(f"SET GLOBAL local_infile = {int(before)}")
    assert store.bulk_load is False
    assert "refused LOAD DATA LOCAL INFILE" in caplog.text
    assert store.count_members("s", version) == 2
