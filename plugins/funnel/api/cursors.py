"""The listings' cursors: opaque to clients, they carry the segment, the last user id given out
and, for stored segments, the version the listing started on, so paging never mixes versions.
A cursor whose version is no longer kept gets 410 (``kept_page``)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from funnel import settings
from funnel.core.errors import BadInput, Gone


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def read_cursor(raw: str | None, segment_id: str, versioned: bool) -> tuple[int | None, str]:
    """(pinned version, last user id) of a cursor this API gave out for this segment's listing."""
    if not raw:
        return None, ""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        data = None
    version = data.get("v") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("s") != segment_id
        or not isinstance(data.get("a"), str)
        or (versioned and type(version) is not int)
    ):
        raise BadInput("cursor is not one this API gave out for this listing; start again without a cursor")
    return version, data["a"]


def next_cursor(page: list[str], limit: int, segment_id: str, version: int | None) -> str | None:
    """The cursor of the page after ``page``; None when ``page`` is the last."""
    if len(page) < limit:
        return None
    data: dict[str, Any] = {"s": segment_id, "a": page[-1]}
    if version is not None:
        data["v"] = version
    return _encode(data)


def kept_page(page: list[str] | None, segment_id: str, version: int) -> list[str]:
    """A page, or 410 when the cursor's version is no longer kept."""
    if page is None:
        raise Gone(
            f"version {version} of segment {segment_id!r} is no longer kept (MySQL keeps the last "
            f"{settings.KEEP_VERSIONS}); start again without a cursor to page the live version"
        )
    return page
