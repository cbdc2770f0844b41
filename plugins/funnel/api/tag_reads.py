"""The users' tags as the API reads them from Redis, in the same round trip as the rest of an
answer: the commands to pipeline (``tags_commands``), whether Redis holds a whole tag version
(``tags_whole``), and one user's ``Tags`` from the two scores (``tags_from_scores``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from funnel.core.proxy_matching import Tags
from funnel.core.utc_time import from_epoch
from funnel.storage import layout
from funnel.storage.layout import TagsMetaField
from funnel.storage.redis.replies import int_or_none


def tags_commands(user_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """Five commands: the users' sign-up times and order counts, the tags' meta, and the two sets' sizes."""
    keys = layout.tag_keys()
    return [
        ("ZMSCORE", keys.first_seen, *user_ids),
        ("ZMSCORE", keys.order_count, *user_ids),
        (
            "HMGET",
            layout.tags_meta_key(),
            TagsMetaField.VERSION,
            TagsMetaField.REFRESHED_AT,
            TagsMetaField.USERS,
            TagsMetaField.WITH_FIRST_SEEN,
        ),
        ("ZCARD", keys.order_count),
        ("ZCARD", keys.first_seen),
    ]


def tags_whole(meta: Sequence[Any], orders_card: int, dated_card: int) -> bool:
    """Redis serves a tag version and its sets hold as many users as its meta counted."""
    version, _refreshed_at, users, dated = meta
    return version is not None and int_or_none(users) == orders_card and int_or_none(dated) == dated_card


def tags_from_scores(first_seen: bytes | None, count: bytes | None) -> Tags | None:
    """One user's tags from the two ``ZMSCORE`` replies; None: the user has no tags."""
    if count is None:
        return None
    return Tags(None if first_seen is None else from_epoch(float(first_seen)), int(float(count)))
