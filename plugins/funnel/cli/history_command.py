"""``history USER_ID``: when the user entered and left each segment, within ``change_history_days``
(the API's ``/v1/users/{user_id}/history``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from funnel import settings, wiring
from funnel.core import ids
from funnel.core.states import ChangeType


def history(
    user_id: str,
    segment_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    as_json: bool = False,
) -> None:
    """Print a user's membership history (``membership_history.user_history``, as the API answers)."""
    import orjson

    from funnel.core.utc_time import utc_now
    from funnel.storage.mysql.membership_history import user_history

    problem = ids.user_id_problem(user_id)
    if problem:
        raise SystemExit(f"user id {user_id!r} {problem}")
    conn = wiring.mysql_connection()
    try:
        found = user_history(
            conn,
            user_id,
            now=utc_now(),
            days=settings.CHANGE_HISTORY_DAYS,
            limit=settings.PAGE_LIMIT_DEFAULT,
            segment_id=segment_id,
            since=since,
            until=until,
        )
    finally:
        conn.close()
    if as_json:
        print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"user {user_id}: membership history since {_shown_time(found.horizon)} UTC "
        f"(change_history_days {found.change_history_days})"
    )
    rows = [
        (
            stay.segment_id,
            _shown_time(stay.entered_at) if stay.entered_at else "(before the horizon)",
            _shown_time(stay.exited_at) if stay.exited_at else "-",
            f"version {stay.entered_version} -> {stay.exited_version}"
            if stay.exited_version is not None
            else f"version {stay.entered_version} -> (member now)",
        )
        for stay in found.stays
    ]
    rows += _proxy_rows(found.proxy_changes)
    if not rows:
        print("no stays or changes recorded in that time")
        return
    width = max(len("segment"), *(len(row[0]) for row in rows))
    print(f"{'segment':<{width}}  {'entered (UTC)':<20}  {'left (UTC)':<20}  by")
    for segment, entered, left, by in sorted(rows, key=lambda row: row[0]):
        print(f"{segment:<{width}}  {entered:<20}  {left:<20}  {by}")
    if found.truncated:
        print(f"(only the first {found.limit} stays and proxy changes: narrow with --segment, --since, --until)")


def _proxy_rows(changes: Sequence[Any]) -> list[tuple[str, str, str, str]]:
    """A proxy segment's changes paired into stays (entered ... exited), in time order."""
    rows: list[tuple[str, str, str, str]] = []
    open_stays: dict[str, Any] = {}
    for change in changes:
        label = f"{change.segment_id} (proxy)"
        if change.change == ChangeType.ENTERED:
            open_stays[change.segment_id] = change
            continue
        began = open_stays.pop(change.segment_id, None)
        entered = _shown_time(began.at) if began else "(before the log)"
        by = f"event {began.event_id} -> {change.event_id}" if began else f"event ... -> {change.event_id}"
        rows.append((label, entered, _shown_time(change.at), by))
    for segment_id, began in open_stays.items():
        rows.append((f"{segment_id} (proxy)", _shown_time(began.at), "-", f"event {began.event_id} -> (member now)"))
    return rows


def _shown_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
