"""A refresh's user ids: the one rule (``funnel.core.ids``), as a refresh reports what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from funnel.core.errors import UserIdError
from funnel.services.refresh import normalize_user_ids


def test_unusable_user_id_names_segment_and_fix() -> None:
    with pytest.raises(UserIdError, match=r"segment 'seg'.*Fix: make the query's first column the user id"):
        normalize_user_ids("seg", ["x" * 65])
    with pytest.raises(UserIdError, match="a fraction"):
        normalize_user_ids("seg", [1.5])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("x" * 65, "is 65 characters long (at most 64)"),
        ("tab\there", "not printable ASCII"),
        ("new\nline", "not printable ASCII"),
        ("cr\rhere", "not printable ASCII"),
        ("nul\0here", "not printable ASCII"),
        ("caf\u00e9", "not printable ASCII"),
        ("trail ", "has leading or trailing whitespace"),
        (" lead", "has leading or trailing whitespace"),
        ("   ", "has leading or trailing whitespace"),
        (b"\xff\xfe", "not printable ASCII"),
    ],
)
def test_ids_the_stores_must_not_hold_fail_the_refresh_naming_the_id(value: Any, problem: str) -> None:
    with pytest.raises(UserIdError) as caught:
        normalize_user_ids("seg", ["ok", value])
    assert problem in str(caught.value)
    assert "nothing was swapped" in str(caught.value)


def test_ids_are_kept_exactly_as_returned() -> None:
    odd = ['quote"s', "apo'strophe", "back\\slash", "\\N", "in ner", "x" * 64, "~!@#$%^&*()"]
    assert normalize_user_ids("seg", [*odd, 42, 7.0, True and 1]) == ([*odd, "42", "7", "1"], 0)
