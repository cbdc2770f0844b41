"""Time as funnel keeps it: aware datetimes in UTC. Pure; the one parser of ISO-8601 text.

Every time funnel reads (a catalog row's ``run_at``, an event's ``at``, an API ``?at=``, a
command-line time, a tag's ``first_seen``, a callback's context) goes through ``parse_utc``;
what differs between them is only the policy for a time written without an offset
(``Naive``). MySQL DATETIME columns hold UTC without a zone (``to_naive_utc`` /
``from_naive_utc``).
"""

from __future__ import annotations

import datetime as dt
import enum
import re

from funnel.core.errors import TimeRefused

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: How a time is written, for error messages' fixes.
ISO_EXAMPLE = "2026-11-29T09:30:00Z"
#: A trailing ``+hh:mm`` offset whose ``+`` a URL's query string turned into a space.
_SPACED_OFFSET = re.compile(r" (\d\d:?\d\d)$")


class Naive(enum.Enum):
    """What a time written without an offset means."""

    UTC = "utc"  # it is UTC (the catalog, the command line, Hive values)
    REFUSE = "refuse"  # it is refused: an API caller must say which zone it means


def utc_now() -> dt.datetime:
    """The current time in UTC (at run time only, never while building DAGs)."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime, naive: Naive = Naive.UTC) -> dt.datetime:
    """``value`` as an aware UTC datetime; a naive one is UTC, or refused (``TimeRefused``)."""
    if value.tzinfo is None:
        if naive is Naive.REFUSE:
            raise TimeRefused("has no time zone")
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_utc(raw: str | dt.datetime | dt.date, naive: Naive = Naive.UTC, *, query_string: bool = False) -> dt.datetime:
    """ISO-8601 text (``Z`` or an offset; a date alone is its midnight), a datetime or a date, as
    an aware UTC datetime. ``query_string``: also read ``+hh:mm`` that a URL turned into
    `` hh:mm``. Raises ``TimeRefused`` whose ``problem`` says what was wrong."""
    if isinstance(raw, dt.datetime):
        return as_utc(raw, naive)
    if isinstance(raw, dt.date):
        return dt.datetime(raw.year, raw.month, raw.day, tzinfo=dt.UTC)
    text = raw.strip()
    if query_string:
        text = _SPACED_OFFSET.sub(r"+\1", text)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise TimeRefused("is not an ISO-8601 time") from None
    return as_utc(value, naive)


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    """MySQL DATETIME columns hold UTC without a zone."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def from_naive_utc(value: dt.datetime) -> dt.datetime:
    """Read a MySQL DATETIME (UTC without a zone) back as an aware datetime."""
    return value.replace(tzinfo=dt.UTC)


def epoch_seconds(moment: dt.datetime) -> float:
    """Epoch seconds of an aware datetime (a Redis score), exact to the microsecond as a float allows."""
    delta = moment - EPOCH
    return delta.days * 86_400 + delta.seconds + delta.microseconds / 1_000_000


def epoch_microseconds(moment: dt.datetime) -> int:
    """Integer microseconds since the epoch of an aware datetime (exact)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch(seconds: float) -> dt.datetime:
    """Epoch seconds (a Redis score) as an aware UTC datetime."""
    return EPOCH + dt.timedelta(seconds=seconds)
