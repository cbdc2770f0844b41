"""The identifiers funnel keeps: segment ids, user ids, event ids. Pure.

Every front door (the catalog, a refresh, the tag load, the API, events) checks an id here,
so an id that one door accepts is never refused, or spelled differently, by another.
"""

from __future__ import annotations

import re

from funnel.core.errors import UserIdRefused

#: A segment id: a lower-case slug. The whole id must match (``fullmatch``: ``$`` alone would let a
#: trailing newline through).
SEGMENT_ID_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
#: A name of up to 64 lower-case letters, digits, '_', '-' and '.': a segment's label, a token's name.
NAME_SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
SEGMENT_ID_MAX_LENGTH = 64

#: Longest user id the MySQL store accepts (column width).
USER_ID_MAX_LENGTH = 64
#: The user id rule of ``user_id_problem`` as one pattern, for checking many ids fast.
USER_ID_PATTERN = re.compile(rf"[!-~](?:[ -~]{{0,{USER_ID_MAX_LENGTH - 2}}}[!-~])?")

#: The integers taken as user ids (as their decimal text): those every JSON client holds exactly
#: (IEEE doubles: 2**53 - 1). A larger id is sent as a string; what the API accepts is what its
#: OpenAPI document says.
USER_ID_INT_MAX = 2**53 - 1
USER_ID_INT_MIN = -USER_ID_INT_MAX

#: The highest version number a segment can reach (``INT UNSIGNED`` columns).
VERSION_MAX = 2**32 - 1

#: Longest event id ``POST /v1/events`` accepts (column width).
EVENT_ID_MAX_LENGTH = 128


def json_number_as_text(raw: object) -> object:
    """A JSON number sent as a user id, as its decimal text: an integer, or a float without a
    fraction (JSON Schema's ``integer`` admits ``7.0``), within ±``USER_ID_INT_MAX``. Anything
    else (a string, a boolean, a fraction, an integer out of that range) comes back as it was,
    for the caller's check to name."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and USER_ID_INT_MIN <= raw <= USER_ID_INT_MAX:
        return str(raw)
    return raw


def is_segment_id(value: str) -> bool:
    """``value`` is a well-formed segment id (a slug of at most ``SEGMENT_ID_MAX_LENGTH`` characters)."""
    return bool(SEGMENT_ID_PATTERN.fullmatch(value)) and len(value) <= SEGMENT_ID_MAX_LENGTH


def user_id_problem(user_id: str) -> str | None:
    """Why ``user_id`` cannot be stored or asked for, or None when it can.

    The one rule for every id funnel stores (a refresh, a tag load) or is asked about (the API,
    events): 1 to 64 printable ASCII characters, kept exactly as given (never trimmed, so ``'7 '``
    and ``'7'`` would be two users: an id with surrounding whitespace is refused instead).
    Control characters (tab, newline, CR, NUL) and non-ASCII text are refused; quotes,
    backslashes and inner spaces are ordinary characters.
    """
    if not user_id:
        return "is empty"
    if len(user_id) > USER_ID_MAX_LENGTH:
        return f"is {len(user_id)} characters long (at most {USER_ID_MAX_LENGTH})"
    if not (user_id.isascii() and user_id.isprintable()):
        return "holds a character that is not printable ASCII (a control character, tab, newline or non-ASCII)"
    if user_id != user_id.strip():
        return "has leading or trailing whitespace"
    return None


def user_id_from_hive(value: object) -> str | None:
    """The user id a Hive value stands for, as both stores hold it; None for NULL and ''.

    The one rule for a refresh's first column and the tag query's ``user_id`` (README, "Storage
    layout"): an integer (BIGINT) is its decimal text; a float is accepted only when it is
    integral (``7.0`` is ``'7'``: Hive's DOUBLE of an integer id) and refused when it is a fraction
    (``1.5`` names no user: neither ``'1.5'`` nor ``'1'``); a boolean is refused; bytes are read as
    latin-1 so any byte reaches the check; text is kept exactly as returned, never trimmed. The
    result must pass ``user_id_problem``. Raises ``UserIdRefused`` naming the value and why.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise UserIdRefused(str(value), "is a boolean, not an id")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise UserIdRefused(repr(value), "is a fraction")
        text = str(int(value))
    elif isinstance(value, bytes):
        text = value.decode("latin-1")
    else:
        text = str(value)
    problem = user_id_problem(text)
    if problem:
        raise UserIdRefused(text, problem)
    return text
