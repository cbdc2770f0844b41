"""The MySQL store against a real MySQL: versions, the live pointer, forward-only swaps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import mysql_live_members

from funnel import layout
from funnel.errors import StoreError
from funnel.hooks import FunnelMySqlHook
from funnel.stores.mysql_store import MySqlSegmentStore
from funnel.stores.run_info import RunInfo

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def run_for(day: int, hour: int = 9) -> RunInfo:
    logical_date = dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC)
    return RunInfo("funnel_dynamic_segments", f"scheduled__{day}T{hour}", logical_date)


def stage(store: MySqlSegmentStore, segment_id: str, run: RunInfo, ids: list[str]) -> int:
    version = store.begin_version(segment_id, run, NOW)
    store.add_members(segment_id, version, ids)
    return version


def test_staged_version_is_invisible_until_promoted(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    version = stage(store, "s", run_for(20), ["1", "2", "2", "3"])
    assert store.count_members("s", version) == 3
    assert mysql_live_members(mysql_conn, "s") == set()
    promoted, live = store.promote("s", version, run_for(20), 3, NOW)
    assert promoted
    assert live.version == version
    assert mysql_live_members(mysql_conn, "s") == {"1", "2", "3"}


def test_versions_number_up_per_segment(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    assert [stage(store, "a", run_for(20), ["1"]) for _ in range(3)] == [1, 2, 3]
    assert stage(store, "b", run_for(20), ["1"]) == 1


def test_promote_never_rolls_back_to_an_earlier_logical_date(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    newer = stage(store, "s", run_for(25), ["new"])
    store.promote("s", newer, run_for(25), 1, NOW)
    backfill = stage(store, "s", run_for(18), ["old"])
    promoted, live = store.promote("s", backfill, run_for(18), 1, NOW)
    assert not promoted
    assert live.version == newer
    assert mysql_live_members(mysql_conn, "s") == {"new"}


def test_same_logical_date_rerun_replaces(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    first = stage(store, "s", run_for(25), ["a"])
    store.promote("s", first, run_for(25), 1, NOW)
    second = stage(store, "s", run_for(25), ["b"])
    assert store.promote("s", second, run_for(25), 1, NOW)[0]
    assert mysql_live_members(mysql_conn, "s") == {"b"}


def versions(conn: Any) -> tuple[tuple[int, str], ...]:
    cur = conn.cursor()
    cur.execute(f"SELECT version, state FROM {layout.VERSIONS_TABLE} WHERE segment_id = 's' ORDER BY version")
    rows = cur.fetchall()
    conn.commit()
    return rows


def test_clear_staged_removes_failed_attempts_only(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    live = stage(store, "s", run_for(20), ["1", "2"])
    store.promote("s", live, run_for(20), 2, NOW)
    abandoned = stage(store, "s", run_for(21), ["9"] * 1)
    assert store.clear_staged("s") == 1
    assert store.count_members("s", abandoned) == 0
    assert mysql_live_members(mysql_conn, "s") == {"1", "2"}


def test_a_cleaned_version_number_is_never_handed_out_again(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    first = stage(store, "s", run_for(20), ["1"])
    store.clear_staged("s")
    # An earlier try that is somehow still alive keeps writing to its own number...
    store.add_members("s", first, ["zombie"])
    retry = stage(store, "s", run_for(20), ["2"])
    assert retry == first + 1
    # ...and can no longer promote it; the retry's rows are its own.
    with pytest.raises(StoreError, match=f"version {first} is no longer staged"):
        store.promote("s", first, run_for(20), 1, NOW)
    assert store.promote("s", retry, run_for(20), 1, NOW)[0]
    assert mysql_live_members(mysql_conn, "s") == {"2"}
    assert versions(mysql_conn) == ((1, "dropped"), (2, "live"))
    store.prune("s", keep=3)  # tombstones below the live version go, with any stray rows
    assert versions(mysql_conn) == ((2, "live"),)
    assert store.count_members("s", first) == 0


def test_iter_live_members_streams_every_member_once(mysql_conn: Any) -> None:
    store = MySqlSegmentStore(mysql_conn)
    ids = [str(i) for i in range(2500)]
    version = stage(store, "s", run_for(20), ids)
    store.promote("s", version, run_for(20), len(ids), NOW)
    batches = list(store.iter_live_members("s", batch_size=1000))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert sorted(i for b in batches for i in b) == sorted(ids)


AWKWARD_IDS = ["1", "a\tb", "c\\d", "e\nf", "g\rh", "i\\nj", "dup", "dup", "x" * 64]


@pytest.fixture
def bulk_conn(mysql_conn: Any) -> Iterator[Any]:
    """A second connection to the emptied test database that allows LOAD DATA LOCAL INFILE."""
    conn = FunnelMySqlHook(local_infile=True).get_conn()
    yield conn
    conn.close()


@pytest.mark.parametrize("bulk", [False, True], ids=["inserts", "load_data"])
def test_both_staging_paths_store_the_same_ids_byte_for_byte(mysql_conn: Any, bulk_conn: Any, bulk: bool) -> None:
    store = MySqlSegmentStore(bulk_conn if bulk else mysql_conn, bulk_load=bulk)
    version = store.begin_version("s", run_for(20), NOW)
    assert store.add_members("s", version, AWKWARD_IDS[:5]) == 5
    assert store.add_members("s", version, AWKWARD_IDS[4:]) == 3  # "g\rh" and one "dup" repeat
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
        version = store.begin_version("s", run_for(20), NOW)
        assert store.add_members("s", version, ["1", "2"]) == 2
    finally:
        cur.execute(f"SET GLOBAL local_infile = {int(before)}")
    assert store.bulk_load is False
    assert "refused LOAD DATA LOCAL INFILE" in caplog.text
    assert store.count_members("s", version) == 2
