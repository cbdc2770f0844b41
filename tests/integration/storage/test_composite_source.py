"""A composite's members from MySQL: each operand at its pinned version, streamed in id order, nothing written."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from funnel import wiring
from funnel.core.composite_expr import parse_expression
from funnel.storage import layout
from funnel.storage.mysql.composite_source import CompositeSource

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

# (segment, user, entered, exited): spans as refreshes leave them.
SPANS = [
    *[("a", str(u), 1, None) for u in range(1, 11)],
    ("a", "3", 1, 2),  # left a at version 2 (replaces the open span below)
    ("a", "11", 2, None),
    *[("b", str(u), 1, None) for u in range(5, 16)],
    *[("c", str(u), 4, None) for u in (2, 4, 6, 8, 10)],
]


@pytest.fixture
def spans(mysql_conn: Any) -> Any:
    rows = {(s, u, e): x for s, u, e, x in SPANS}  # a's user 3: the span closed at 2
    cur = mysql_conn.cursor()
    cur.executemany(
        f"INSERT INTO {layout.MEMBERSHIPS_TABLE} (segment_id, user_id, entered, exited) VALUES (%s, %s, %s, %s)",
        [(s, u, e, x) for (s, u, e), x in rows.items()],
    )
    mysql_conn.commit()
    return mysql_conn


def members(rule: object, versions: dict[str, int], batch_size: int = 3) -> list[str]:
    with wiring.composite_source() as source:
        batches = list(source.stream(parse_expression("combo", rule), versions, batch_size))
    assert all(0 < len(batch) <= batch_size for batch in batches)
    found = [user for batch in batches for user in batch]
    assert len(found) == len(set(found)), "each member once"
    return sorted(found, key=int)


def checksum(conn: Any) -> int:
    cur = conn.cursor()
    cur.execute(f"CHECKSUM TABLE {layout.MEMBERSHIPS_TABLE}, {layout.RUNS_TABLE}, {layout.VERSIONS_TABLE}")
    total = sum(int(row[1] or 0) for row in cur.fetchall())
    conn.commit()
    return total


def test_each_operand_is_read_at_its_pinned_version(spans: Any) -> None:
    before = checksum(spans)
    a1 = [str(u) for u in range(1, 11)]
    a2 = [str(u) for u in (1, 2, 4, 5, 6, 7, 8, 9, 10, 11)]
    assert members({"union": ["a", "c"]}, {"a": 1, "c": 4}) == a1
    assert members({"union": ["a", "c"]}, {"a": 2, "c": 4}) == a2
    assert members({"intersect": ["a", "b"]}, {"a": 2, "b": 1}) == [str(u) for u in range(5, 12)]
    assert members({"minus": ["b", ["a", "c"]]}, {"a": 2, "b": 1, "c": 4}) == [str(u) for u in range(12, 16)]
    assert members({"minus": [{"union": ["a", "b"]}, [{"intersect": ["b", "c"]}]]}, {"a": 1, "b": 1, "c": 4}) == [
        str(u) for u in (1, 2, 3, 4, 5, 7, 9, 11, 12, 13, 14, 15)
    ]
    assert members({"intersect": ["a", "c"]}, {"a": 1, "c": 3}) == []  # c had no members at version 3
    assert checksum(spans) == before


def test_a_stream_left_early_leaves_its_connection_usable(spans: Any) -> None:
    with wiring.composite_source() as source:
        stream = source.stream(parse_expression("combo", {"union": ["a", "b"]}), {"a": 1, "b": 1}, 2)
        assert next(stream) == ["1", "10"]  # user id order (text order, as MySQL's ascii_bin)
        stream.close()
        with contextlib.closing(source.conn.cursor()) as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)


def test_live_versions_name_the_operands_never_computed(mysql_conn: Any) -> None:
    with wiring.composite_source() as source:
        assert CompositeSource(source.conn).live_versions(["a", "zz"]) == {"a": None, "zz": None}
