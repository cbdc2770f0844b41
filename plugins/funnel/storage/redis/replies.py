"""Redis replies as Python values: redis-py and the lean client answer bytes (or str when a
client decodes); funnel's readers want text and numbers."""

from __future__ import annotations

from typing import overload


@overload
def text(value: bytes | str) -> str: ...
@overload
def text(value: bytes | str | None) -> str | None: ...
def text(value: bytes | str | None) -> str | None:
    """A reply as text (None stays None)."""
    return value.decode() if isinstance(value, bytes) else value


def int_or_none(value: bytes | str | int | None) -> int | None:
    """A numeric reply as an int; None and an empty field (a count not known) are None."""
    return None if value is None or value in ("", b"") else int(value)
