"""The write path for definitions under concurrency, on the real MySQL: a disable or retire
reads its dependents after its row's lock, and a composite being added holds its operands' rows,
so neither can slip past the other."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest

from funnel import wiring
from funnel.core.errors import SegmentInUse
from funnel.core.segment import segment_from_row
from funnel.storage.hooks import FunnelMySqlHook

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

QUERY = "SELECT id AS user_id FROM range(0, 10)"


@pytest.mark.parametrize("action", ["disable", "retire"])
def test_a_composite_added_meanwhile_stops_a_disable_or_retire_of_its_operand(mysql_conn: Any, action: str) -> None:
    admin = wiring.segment_admin(mysql_conn)
    for segment_id in ("a", "b"):
        admin.add({"segment_id": segment_id, "name": segment_id, "kind": "dynamic", "query": QUERY}, "cli:ann")
    with contextlib.closing(FunnelMySqlHook().get_conn()) as other:
        adding = wiring.segment_admin(other)  # a composite add half-way: operands locked, row written, not committed
        adding.store.lock_shared(["a", "b"])
        rule = '{"union": ["a", "b"]}'
        adding.store.insert(segment_from_row({"segment_id": "both", "name": "Both", "kind": "composite", "rule": rule}))
        outcome: list[BaseException | None] = []

        def act() -> None:
            with contextlib.closing(FunnelMySqlHook().get_conn()) as conn:
                mine = wiring.segment_admin(conn)
                try:
                    mine.retire("a", "cli:bob") if action == "retire" else mine.set_enabled("a", False, "cli:bob")
                    outcome.append(None)
                except BaseException as exc:  # handed to the test's thread
                    outcome.append(exc)

        racing = threading.Thread(target=act)
        racing.start()
        racing.join(timeout=1.0)
        assert racing.is_alive()  # it waits for the operand's row
        other.commit()  # the composite is in
        racing.join(timeout=30)
    assert outcome
    assert isinstance(outcome[0], SegmentInUse)
    assert "composite both depend on it" in str(outcome[0])
    assert admin.show("a")[0]["enabled"] is True
