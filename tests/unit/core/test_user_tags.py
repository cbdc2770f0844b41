"""Tag query rows as values: the same user id rule as a refresh, times in UTC, counts whole."""

from __future__ import annotations

import datetime as dt

import pytest

from funnel.core.errors import TagRowError
from funnel.core.user_tags import TagRow, normalize_tag_rows
from funnel.core.utc_time import epoch_seconds

MIDNIGHT = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def test_rows_become_tags_and_null_ids_are_counted_not_kept() -> None:
    rows = [
        (42, "2026-11-29 00:00:00", 3),
        (7.0, dt.date(2026, 11, 29), "2"),
        ("u 1", None, None),
        (None, "2026-11-29", 1),
        ("", "2026-11-29", 1),
    ]
    tags, skipped = normalize_tag_rows(rows)
    assert tags == [TagRow("42", MIDNIGHT, 3), TagRow("7", MIDNIGHT, 2), TagRow("u 1", None, 0)]
    assert skipped == 2
    assert tags[0].first_seen_score == epoch_seconds(MIDNIGHT)
    assert tags[2].first_seen_score is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((1.5, None, 0), "user id '1.5', which is a fraction"),
        (("tab\there", None, 0), "not printable ASCII"),
        (("u1", "yesterday", 0), "first_seen 'yesterday' for user 'u1', not a time"),
        (("u1", None, -1), "order_count -1 for user 'u1', not a whole number >= 0"),
        (("u1", None, 2.5), "order_count 2.5 for user 'u1', not a whole number >= 0"),
        (("u1", None), "returned 2 column(s), not 3"),
    ],
)
def test_a_row_the_stores_cannot_hold_is_refused_naming_it(row: tuple[object, ...], message: str) -> None:
    with pytest.raises(TagRowError) as refused:
        normalize_tag_rows([row])
    assert message in str(refused.value)
    assert "Fix: make the tag query return user_id" in str(refused.value)
