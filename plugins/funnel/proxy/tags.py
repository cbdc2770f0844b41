"""User tags as values: what a tag query row and an event become. Pure.

A user's tags are ``first_seen`` (sign-up time, UTC; None when unknown) and
``order_count``. The warehouse gives a baseline (the tag query: ``user_id, first_seen,
order_count``); real-time events move it on (``funnel.proxy.events``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from funnel import layout
from funnel.errors import FunnelError

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TagRowError(FunnelError, ValueError):
    """A tag query returned a row the stores cannot hold; the message names it and the fix."""


@dataclass(frozen=True)
class TagRow:
    """One user's tags as the stores hold them (``seq``: events applied since the load)."""

    user_id: str
    first_seen: dt.datetime | None
    order_count: int
    seq: int = 0

    @property
    def first_seen_score(self) -> float | None:
        """``first_seen`` as the score of the Redis sorted set: epoch seconds."""
        return None if self.first_seen is None else to_score(self.first_seen)


def to_score(moment: dt.datetime) -> float:
    """Epoch seconds of an aware datetime, exact to the microsecond as a float allows."""
    delta = moment - EPOCH
    return delta.days * 86_400 + delta.seconds + delta.microseconds / 1_000_000


def from_score(score: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=score)


_FIX = (
    "make the tag query return user_id (BIGINT or STRING), first_seen (TIMESTAMP or DATE, UTC; NULL when "
    "unknown) and order_count (a whole number, NULL for none), in that order"
)


def normalize_tag_rows(rows: Sequence[Sequence[object]]) -> tuple[list[TagRow], int]:
    """Tag query rows as ``TagRow``s; rows whose user id is NULL or empty are dropped and counted."""
    out: list[TagRow] = []
    skipped = 0
    for row in rows:
        if len(row) < 3:
            raise TagRowError(f"the tag query returned {len(row)} column(s), not 3. Fix: {_FIX}")
        raw_id, raw_first_seen, raw_count = row[0], row[1], row[2]
        if raw_id is None or raw_id == "":
            skipped += 1
            continue
        user_id = _user_id(raw_id)
        out.append(TagRow(user_id, parse_time(raw_first_seen, user_id), _count(raw_count, user_id)))
    return out, skipped


def _user_id(raw: object) -> str:
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    problem = layout.user_id_problem(text)
    if problem:
        raise TagRowError(f"the tag query returned user id {text[:80]!r}, which {problem}. Fix: {_FIX}")
    return text


def parse_time(raw: object, user_id: str = "?") -> dt.datetime | None:
    """A first-seen value from Hive (TIMESTAMP and DATE arrive as text) as an aware UTC datetime."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, dt.datetime):
        return raw.replace(tzinfo=dt.UTC) if raw.tzinfo is None else raw.astimezone(dt.UTC)
    if isinstance(raw, dt.date):
        return dt.datetime(raw.year, raw.month, raw.day, tzinfo=dt.UTC)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return from_score(float(raw))
    if isinstance(raw, str):
        try:
            value = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parse_time(value, user_id)
    raise TagRowError(f"the tag query returned first_seen {raw!r} for user {user_id!r}, not a time. Fix: {_FIX}")


def _count(raw: object, user_id: str) -> int:
    if raw is None:
        return 0
    value: object = raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        value = int(raw)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TagRowError(
        f"the tag query returned order_count {raw!r} for user {user_id!r}, not a whole number >= 0. Fix: {_FIX}"
    )
