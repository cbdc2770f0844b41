"""Ids: one rule for a segment id, and one for a user id however it arrives."""

from __future__ import annotations

import pytest

from funnel.core.errors import UserIdRefused
from funnel.core.ids import SEGMENT_ID_MAX_LENGTH, is_segment_id, user_id_from_hive


def test_segment_ids_are_lower_case_slugs_of_bounded_length() -> None:
    assert is_segment_id("high_value_users")
    assert is_segment_id("a" * SEGMENT_ID_MAX_LENGTH)
    for bad in ("", "High", "9lives", "a-b", "a\n", "_tags", "a" * (SEGMENT_ID_MAX_LENGTH + 1)):
        assert not is_segment_id(bad), bad


@pytest.mark.parametrize(
    ("value", "stored"),
    [(42, "42"), (7.0, "7"), (-3, "-3"), ("u 1", "u 1"), (b"abc", "abc"), ("\\N", "\\N"), (None, None), ("", None)],
)
def test_a_hive_value_becomes_the_user_id_both_stores_hold(value: object, stored: str | None) -> None:
    assert user_id_from_hive(value) == stored


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1.5, "is a fraction"),
        (True, "is a boolean, not an id"),
        ("x" * 65, "is 65 characters long (at most 64)"),
        ("trail ", "has leading or trailing whitespace"),
        ("tab\there", "not printable ASCII"),
        (b"\xff", "not printable ASCII"),
    ],
)
def test_a_value_that_names_no_user_is_refused_saying_why(value: object, problem: str) -> None:
    with pytest.raises(UserIdRefused) as refused:
        user_id_from_hive(value)
    assert problem in refused.value.problem
    assert problem in str(refused.value)


def test_a_json_number_becomes_a_user_ids_text_only_when_exact() -> None:
    from funnel.core.ids import USER_ID_INT_MAX, json_number_as_text

    assert [json_number_as_text(v) for v in (7, 7.0, -3, USER_ID_INT_MAX)] == ["7", "7", "-3", str(USER_ID_INT_MAX)]
    for kept in ("7", True, 1.5, USER_ID_INT_MAX + 1, None):
        assert json_number_as_text(kept) is kept
