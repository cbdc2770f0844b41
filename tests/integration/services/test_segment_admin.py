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


def test_a_composite_added_while_its_operand_is_being_disabled_sees_the_disable(mysql_conn: Any) -> None:
    admin = wiring.segment_admin(mysql_conn)
    for segment_id in ("a", "b"):
        admin.add({"segment_id": segment_id, "name": segment_id, "kind": "dynamic", "query": QUERY}, "cli:ann")
    with contextlib.closing(FunnelMySqlHook().get_conn()) as other:
        disabling = wiring.segment_admin(other)  # a disable half-way: the operand's row locked and changed
        row = disabling.store.row("a", lock=True)
        disabling.store.update(segment_from_row({**row, "enabled": False}))
        outcome: list[BaseException | None] = []

        def add_composite() -> None:
            with contextlib.closing(FunnelMySqlHook().get_conn()) as conn:
                both = {"segment_id": "both", "name": "Both", "kind": "composite", "rule": {"union": ["a", "b"]}}
                try:
                    wiring.segment_admin(conn).add(both, "cli:bob")
                    outcome.append(None)
                except BaseException as exc:  # handed to the test's thread
                    outcome.append(exc)

        racing = threading.Thread(target=add_composite)
        racing.start()
        racing.join(timeout=1.0)
        assert racing.is_alive()  # it waits for its operands' rows
        other.commit()  # the disable is in
        racing.join(timeout=30)
    assert outcome
    assert "field 'rule' uses segment 'a', which is disabled" in str(outcome[0])
    with pytest.raises(Exception, match="is not in funnel_segments"):
        admin.show("both")


def test_a_parse_never_records_its_older_copy_of_rows_the_write_path_changed_since(mysql_conn: Any) -> None:
    import datetime as dt

    from funnel.core.segment_revisions import segment_definition
    from funnel.storage.mysql.segment_definitions import catalog_rows, record_catalog_changes

    admin = wiring.segment_admin(mysql_conn)
    for segment_id in ("edited", "retired", "same"):
        admin.add({"segment_id": segment_id, "name": segment_id, "kind": "dynamic", "query": QUERY}, "cli:ann")
    parsed = {row["segment_id"]: segment_definition(segment_from_row(row)) for row in catalog_rows(mysql_conn)}
    admin.edit("edited", {"name": "Edited after the parse read"}, "cli:ann")
    admin.retire("retired", "cli:ann")
    admin.add({"segment_id": "added", "name": "Added", "kind": "dynamic", "query": QUERY}, "cli:ann")
    before = {s: [r.change.value for r in admin.history(s)] for s in ("edited", "retired", "same", "added")}

    added = record_catalog_changes(mysql_conn, parsed, set(), set(parsed), dt.datetime.now(dt.UTC))

    assert added == []  # not a revert of the edit, a re-add of the retired, nor a retire of the new one
    assert {s: [r.change.value for r in admin.history(s)] for s in before} == before


def test_a_segment_the_variable_defines_too_is_not_retired(mysql_conn: Any) -> None:
    from funnel.core.errors import SegmentError
    from funnel.services.segment_admin import SegmentAdmin
    from funnel.storage.mysql.segment_definitions import DefinitionStore
    from funnel.storage.mysql.webhook_store import WebhookStore

    also = {"segment_id": "a", "name": "A", "kind": "dynamic", "query": QUERY}
    admin = SegmentAdmin(DefinitionStore(mysql_conn), WebhookStore(mysql_conn), lambda: [also])
    admin.add(also, "cli:ann")
    with pytest.raises(SegmentError, match="is also defined in the Airflow Variable funnel_segments"):
        admin.retire("a", "cli:ann")
    assert admin.show("a")[0]["segment_id"] == "a"
