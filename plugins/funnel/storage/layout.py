"""Where a segment lives in Redis and MySQL: the storage spec, in one pure module.

The operators, the readers and the tests all build names here; README.md ("Storage
layout") documents the same layout for the services that read it.

Redis (first level, serves membership requests). Every key of a segment carries the
hash tag ``{<segment_id>}``, so all of them share one cluster slot and the atomic swap
(a Lua script touching several keys) also works on Redis Cluster:

- ``funnel:{<segment_id>}:members`` SET of user ids (strings): the live members.
- ``funnel:{<segment_id>}:meta`` HASH (fields: ``MetaField``): ``size``, ``version``,
  ``refreshed_at`` (ISO-8601 UTC), ``logical_date`` (ISO-8601 UTC), ``logical_ts_us``, ``run_id``,
  ``dag_id``, ``entered`` and ``exited`` (the live version's counts; empty for a first version's
  exited and for a version rebuilt without its change log), ``feed_version``, ``indexed`` and
  ``index_number`` (the live version and its number, once the user index below holds it in
  full; a swap drops them).
- ``funnel:{<segment_id>}:staging`` SET: the version being written; never read by clients.
- ``funnel:{<segment_id>}:entered`` / ``:exited`` SETs: who entered / left in the latest
  refresh; they expire after ``change_ttl_seconds``.
- ``funnel:{<segment_id>}:staging:entered`` / ``:staging:exited``: the same, being written.
- ``funnel:{<segment_id>}:lock`` STRING: the refresh lock (holder as JSON; a short lease, renewed while held).
- ``funnel:{<segment_id>}:feed`` STREAM: the change feed, each live version's entered and exited
  ids (fields ``version``, ``change``, ``batch``, ``ids``; then ``change=end`` with ``entered``,
  ``exited``), capped near ``feed_max_len`` entries. ``meta``'s ``feed_version`` is the last
  version published in full. A proxy segment's feed has each event's rule crossings (``event``
  instead of ``version``; no closing entry).

The user index (``funnel.storage.redis.user_index``): which segments each user is in, so a
user's segments are one read whatever the catalog's size. Its shared keys have the hash tag
``{_index}``; each user's key lies in the slot of its own name:

- ``funnel:user:<user_id>`` SET of segment numbers (small integers, stored as an intset: 2 bytes
  a membership): the segments whose live members hold the user, under each one's
  ``index_number`` (in its meta, with ``indexed``). A segment whose index is rebuilt whole gets
  a new number, so the entries of its old one are never read again.
- ``funnel:{_index}:state`` HASH (fields: ``IndexField``): ``epoch`` (random, set once: a Redis
  that lost the index has a new one), ``gen`` (counts finished updates), ``next`` (the last number given).
- ``funnel:{_index}:updating`` SET: ``"<segment_id> <token>"``, one per writer between a swap's
  start and its index update's end.
- ``funnel:{_index}:done`` ZSET segment id -> the ``gen`` its last update finished at.

User tags (the input of proxy segments) share one hash tag, ``{_tags}`` (no segment id
starts with ``_``), so a tag load swaps all of them in one script:

- ``funnel:{_tags}:first_seen`` ZSET user id -> sign-up time, epoch seconds (UTC).
- ``funnel:{_tags}:order_count`` ZSET user id -> order count. Every user with tags has an
  entry here (a user whose sign-up time is unknown has none in ``first_seen``).
- ``funnel:{_tags}:seq`` HASH user id -> how many events changed the user's tags since the
  live load (absent: none); a write carrying an older count is dropped.
- ``funnel:{_tags}:meta`` HASH (fields: ``TagsMetaField``): ``version``, ``as_of`` (ISO-8601
  UTC), ``size``, ``refreshed_at``, and the users the live sets hold, ``users`` and
  ``with_first_seen`` (kept by every write, so a reader can tell the sets are whole).
- ``funnel:{_tags}:staging:<first_seen|order_count|seq>``: a load being written;
  ``funnel:{_tags}:previous:<...>``: the version a swap replaced, until MySQL commits.
- ``funnel:{_tags}:lock`` STRING: the tag load's lock (as a segment's).

MySQL (second level, durable; Redis can always be rebuilt from it):

- ``funnel_segments``: the catalog (one row per segment; the user-facing contract).
- ``funnel_segment_versions``: one row per computed version and its state (``archived``: beyond
  ``keep_versions`` but within ``change_history_days``, kept for the membership history).
- ``funnel_memberships``: each stay of a user in a segment, as the span of versions from the one
  it entered to the one it exited (NULL: still a member); a version's members are the spans
  that cover it. Index ``user_idx (user_id, segment_id, entered)``: a user's stays.
- ``funnel_live_versions``: the live pointer, one row per segment; the swap moves it.
- ``funnel_current_members``: a view of each segment's live members (segment_id, user_id).
- ``funnel_segment_runs``: one row per refresh attempt, failed and skipped ones included;
  a composite's attempt names the version of each operand it used (``inputs``, JSON).
- ``funnel_segment_changes``: who entered and exited, per kept (live, retired, archived) version.
- ``funnel_tag_versions``: one row per tag load (a version of every user's tags) and its state.
- ``funnel_user_tags``: every user's tags, per kept tag version.
- ``funnel_tag_live``: the live tag version (one row); events and loads serialize on it.
- ``funnel_user_events``: the real-time events (sign-ups, orders), unique by ``event_id``.
- ``funnel_proxy_changes``: an event that moved a user across a proxy segment's rule (entered or
  exited, at the event's time, naming it; ``published`` once its entry is in the segment's
  change feed); kept ``change_history_days`` days.
- ``funnel_webhooks``: webhook subscriptions (segment, URL, secret, enabled) and each one's
  delivery cursor: the last version delivered in full, and how many batches of the next one.
- ``funnel_webhook_deliveries``: one row per (webhook, segment, version, batch) tried: its
  status (pending, delivered, parked), attempts and last error.

User ids are the same text in every key and table: one function, ``funnel.core.ids.user_id_from_hive``,
turns a refresh's first column and the tag query's ``user_id`` into it (a BIGINT is its decimal
text; a DOUBLE only when integral, ``7.0`` is ``'7'``; a fraction such as ``1.5`` names no user and
fails the refresh or the load), and ``funnel.core.ids.user_id_problem`` says which ids are stored:
1 to 64 printable ASCII characters, kept exactly, never trimmed.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

KEY_PREFIX = "funnel"

SEGMENTS_TABLE = "funnel_segments"
VERSIONS_TABLE = "funnel_segment_versions"
MEMBERSHIPS_TABLE = "funnel_memberships"
LIVE_TABLE = "funnel_live_versions"
CURRENT_MEMBERS_VIEW = "funnel_current_members"
RUNS_TABLE = "funnel_segment_runs"
CHANGES_TABLE = "funnel_segment_changes"
TAG_VERSIONS_TABLE = "funnel_tag_versions"
USER_TAGS_TABLE = "funnel_user_tags"
TAG_LIVE_TABLE = "funnel_tag_live"
EVENTS_TABLE = "funnel_user_events"
PROXY_CHANGES_TABLE = "funnel_proxy_changes"
WEBHOOKS_TABLE = "funnel_webhooks"
WEBHOOK_DELIVERIES_TABLE = "funnel_webhook_deliveries"
REVISIONS_TABLE = "funnel_segment_revisions"

#: The pseudo segment id of the user tags: their keys' hash tag, their lock, their runs.
TAGS_ID = "_tags"


class MetaField(enum.StrEnum):
    """The fields of a segment's ``meta`` HASH (``meta_key``)."""

    SIZE = "size"
    VERSION = "version"
    REFRESHED_AT = "refreshed_at"
    LOGICAL_DATE = "logical_date"
    LOGICAL_TS_US = "logical_ts_us"
    RUN_ID = "run_id"
    DAG_ID = "dag_id"
    ENTERED = "entered"
    EXITED = "exited"
    FEED_VERSION = "feed_version"
    INDEXED = "indexed"
    INDEX_NUMBER = "index_number"


class TagsMetaField(enum.StrEnum):
    """The fields of the user tags' ``meta`` HASH (``tags_meta_key``)."""

    VERSION = "version"
    AS_OF = "as_of"
    SIZE = "size"
    REFRESHED_AT = "refreshed_at"
    USERS = "users"
    WITH_FIRST_SEEN = "with_first_seen"


def _segment_key(segment_id: str, suffix: str) -> str:
    return f"{KEY_PREFIX}:{{{segment_id}}}:{suffix}"


def members_key(segment_id: str) -> str:
    """The live member SET of a segment."""
    return _segment_key(segment_id, "members")


def meta_key(segment_id: str) -> str:
    """The HASH describing the live version of a segment."""
    return _segment_key(segment_id, "meta")


def staging_key(segment_id: str) -> str:
    """The SET a refresh writes before the swap; one writer per segment at a time."""
    return _segment_key(segment_id, "staging")


def entered_key(segment_id: str) -> str:
    """The user ids that entered the segment in its latest refresh (expires)."""
    return _segment_key(segment_id, "entered")


def exited_key(segment_id: str) -> str:
    """The user ids that left the segment in its latest refresh (expires)."""
    return _segment_key(segment_id, "exited")


def staging_entered_key(segment_id: str) -> str:
    return _segment_key(segment_id, "staging:entered")


def staging_exited_key(segment_id: str) -> str:
    return _segment_key(segment_id, "staging:exited")


def feed_key(segment_id: str) -> str:
    """The change feed STREAM: each live version's entered and exited ids (README, "Change feed")."""
    return _segment_key(segment_id, "feed")


def lock_key(segment_id: str) -> str:
    """The refresh lock: one writer per segment, expires if its holder dies."""
    return _segment_key(segment_id, "lock")


class TagKeys(NamedTuple):
    """The Redis keys of one stage of the user tags."""

    first_seen: str
    order_count: str
    seq: str


def tag_keys(stage: str = "live") -> TagKeys:
    """The tag keys of ``stage``: ``live`` (what readers use), ``staging`` or ``previous``."""
    prefix = "" if stage == "live" else f"{stage}:"
    return TagKeys(*(_segment_key(TAGS_ID, f"{prefix}{name}") for name in TagKeys._fields))


def tags_meta_key() -> str:
    """The HASH describing the live tag version."""
    return _segment_key(TAGS_ID, "meta")


#: The pseudo segment id of the user index's shared keys (their hash tag).
INDEX_ID = "_index"


class IndexField(enum.StrEnum):
    """The fields of the user index's ``state`` HASH (``index_keys().state``)."""

    EPOCH = "epoch"
    GEN = "gen"
    NEXT = "next"


class IndexKeys(NamedTuple):
    """The user index's shared keys (one hash slot)."""

    state: str
    updating: str
    done: str


def index_keys() -> IndexKeys:
    """The user index's shared keys."""
    return IndexKeys(*(_segment_key(INDEX_ID, name) for name in IndexKeys._fields))


def user_segments_key(user_id: str) -> str:
    """The SET of the numbers of the segments a user is in (the user index)."""
    return f"{KEY_PREFIX}:user:{user_id}"


def asset_uri(segment_id: str) -> str:
    """The Airflow Asset a successful refresh of the segment updates."""
    return f"funnel://segment/{segment_id}"
