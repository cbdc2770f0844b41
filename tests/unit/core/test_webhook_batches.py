"""A version's batches, the JSON body and the backoff: pure."""

from __future__ import annotations

import json

import pytest

from funnel.core.webhook_batches import Cursor, VersionPlan, backoff_seconds, body


@pytest.mark.parametrize(
    ("entered", "exited", "batches", "entered_batches"),
    [(0, 0, 1, 0), (1000, 0, 1, 1), (1001, 0, 2, 2), (2500, 300, 4, 3), (0, 1000, 1, 0)],
)
def test_batches_hold_entered_first_then_exited_and_an_empty_version_still_gets_one(
    entered: int, exited: int, batches: int, entered_batches: int
) -> None:
    plan = VersionPlan("s", 7, entered, exited, 1000)
    assert plan.batches == batches
    assert plan.entered_batches == entered_batches


def test_the_body_names_segment_version_batch_and_delivery_id() -> None:
    plan = VersionPlan("big_spenders", 12, 3, 1, 2)
    assert json.loads(body(plan, 2, ["9"], [])) == {
        "segment_id": "big_spenders",
        "version": 12,
        "batch": 2,
        "batches": 3,
        "entered": ["9"],
        "exited": [],
        "delivery_id": "big_spenders:12:2",
    }


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_seconds(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_cursor_resumes_mid_version_only_at_the_batch_size_it_was_cut_with() -> None:
    assert Cursor(4, 3, 1000).resume_after(1000) == 3
    assert Cursor(4, 3, 1000).resume_after(500) == 0
    assert Cursor(4).resume_after(1000) == 0
