"""Time: one parser, a policy for a time without an offset."""

from __future__ import annotations

import datetime as dt

import pytest

from funnel.core.errors import TimeRefused
from funnel.core.utc_time import (
    EPOCH,
    Naive,
    as_utc,
    epoch_microseconds,
    epoch_seconds,
    from_epoch,
    from_naive_utc,
    parse_utc,
    to_naive_utc,
)

NINE = dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T09:30:00Z",
        "2026-11-29T09:30:00z",
        "2026-11-29 09:30:00+00:00",
        "2026-11-29T10:30:00+01:00",
        " 2026-11-29T09:30Z ",
    ],
)
def test_an_iso_time_with_its_offset_is_read_as_utc(text: str) -> None:
    assert parse_utc(text) == NINE
    assert parse_utc(text, Naive.REFUSE) == NINE
    assert parse_utc(text).tzinfo is dt.UTC


def test_a_time_without_an_offset_is_utc_or_refused_by_policy() -> None:
    assert parse_utc("2026-11-29 09:30:00") == NINE
    with pytest.raises(TimeRefused) as refused:
        parse_utc("2026-11-29 09:30:00", Naive.REFUSE)
    assert refused.value.problem == "has no time zone"
    assert as_utc(dt.datetime(2026, 11, 29, 9, 30)) == NINE
    with pytest.raises(TimeRefused):
        as_utc(dt.datetime(2026, 11, 29, 9, 30), Naive.REFUSE)


def test_a_date_alone_is_its_midnight() -> None:
    assert parse_utc("2026-11-29") == dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    assert parse_utc(dt.date(2026, 11, 29)) == dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def test_a_query_string_offset_whose_plus_became_a_space_is_read_only_when_asked() -> None:
    assert parse_utc("2026-11-29T10:30:00 01:00", Naive.REFUSE, query_string=True) == NINE
    with pytest.raises(TimeRefused):
        parse_utc("2026-11-29T10:30:00 01:00", Naive.REFUSE)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "29/11/2026 09:30"])
def test_text_that_is_no_time_is_refused_saying_so(text: str) -> None:
    with pytest.raises(TimeRefused) as refused:
        parse_utc(text)
    assert refused.value.problem == "is not an ISO-8601 time"


def test_mysql_datetimes_and_epochs_round_trip() -> None:
    assert from_naive_utc(to_naive_utc(NINE)) == NINE
    assert to_naive_utc(NINE).tzinfo is None
    moment = NINE + dt.timedelta(microseconds=7)
    assert from_epoch(epoch_seconds(moment)) == moment
    assert epoch_microseconds(moment) == (moment - EPOCH) // dt.timedelta(microseconds=1)
