"""User tags as values: what a tag query row and an event become. Pure.

A user's tags are ``first_seen`` (sign-up time, UTC; None when unknown) and
``order_count``. The warehouse gives a baseline (the tag query: ``user_id, first_seen,
order_count``); real-time events move it on (``funnel.core.user_events``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from funnel.core.errors import TagRowError, TimeRefused, UserIdRefused
from funnel.core.ids import user_id_from_hive
from funnel.core.utc_time import epoch_seconds, from_epoch, parse_utc


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
        return None if self.first_seen is None else epoch_seconds(self.first_seen)


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
        user_id = _user_id(raw_id)
        if user_id is None:
            skipped += 1
            continue
        out.append(TagRow(user_id, parse_time(raw_first_seen, user_id), _count(raw_count, user_id)))
    return out, skipped


def _user_id(raw: object) -> str | None:
    """The one rule of ``funnel.core.ids.user_id_from_hive``, as a refresh applies it; None: NULL or empty."""
    try:
        return user_id_from_hive(raw)
    except UserIdRefused as refused:
        raise TagRowError(f"the tag query returned {refused}. Fix: {_FIX}") from None


def parse_time(raw: object, user_id: str = "?") -> dt.datetime | None:
    """A first-seen value from Hive (TIMESTAMP and DATE arrive as text) as an aware UTC datetime."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return from_epoch(float(raw))
    if isinstance(raw, str | dt.date):
        with contextlib.suppress(TimeRefused):
            return parse_utc(raw)
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
