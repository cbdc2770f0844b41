"""The user index: the segments each user is in, kept by every swap, so that a user's segments are
one read whatever the catalog's size (keys: ``funnel.storage.layout``, "The user index").

Each user's key is a SET of segment *numbers* (an intset: 2 bytes a membership). Every swap of a
segment's members (``RedisSegmentStore.promote``, a refresh or a restore, always under the
segment's lock) runs this protocol:

1. ``begin``: the segment joins ``updating``; says whether the index holds the live version in full.
2. the swap; it drops meta's ``indexed``.
3. ``follow``: when the index held the version before in full and the new version has its change
   log, its entered ids get the segment's number and its exited ids lose it; otherwise the segment
   gets a new number and every member gets that (the old number's entries are never read again).
   Then meta's ``indexed`` is set to the version.
4. ``finish``: ``gen`` goes up by one, the segment is written into ``done`` at that gen and leaves
   ``updating``, in one script (also when the swap or the update failed).

What a reader can trust (``funnel.api.membership_reads``): its copy (``snapshot``) reads epoch, gen,
``updating`` and the numbers at once, then each segment's meta; a segment is *indexed* in the copy
when it was not updating, its meta's ``indexed`` is its version and its members set is whole.
With each user's read it reads the state, ``updating`` and the ``done`` entries after the copy's
gen: a segment in those two may have swapped since the copy, so it is read from its own keys,
exactly as without an index; a new epoch means Redis lost the index, and every segment is read so.
The index is thus never trusted for a segment between a swap's start and a copy read after its
update ended; on a Redis Cluster the user's key and the index's state are read on two masters at
once, so a swap beginning in the microseconds between the two reads can show one user's new
membership under the previous version.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from funnel.storage import layout
from funnel.storage.layout import IndexField, MetaField
from funnel.storage.redis.packed_commands import send_spread
from funnel.storage.redis.replies import text

#: Users per buffer of index writes (one command each).
WRITE_IDS = 2_000

# KEYS: numbers, state. ARGV: segment id. A new number for the segment.
_NEW_NUMBER_LUA = """
local number = redis.call('HINCRBY', KEYS[2], 'next', 1)
redis.call('HSET', KEYS[1], ARGV[1], number)
return number
"""

# KEYS: state, updating. ARGV: segment id, an epoch for a state that has none.
_BEGIN_LUA = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: state, done, updating. ARGV: segment id, an epoch for a state that has none. The new gen.
_FINISH_LUA = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('ZADD', KEYS[2], gen, ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return gen
"""

# KEYS: meta. ARGV: version. Marks the version indexed if it is still the live one.
_INDEXED_LUA = """
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'indexed', ARGV[1])
return 1
"""

# KEYS: state, updating, numbers, done. ARGV: a gen. What a reader's copy starts from, read at
# once: epoch, gen, the segments updating, the numbers, the segments done after the gen.
_SNAPSHOT_LUA = """
return {redis.call('HGET', KEYS[1], 'epoch') or false, redis.call('HGET', KEYS[1], 'gen') or '0',
        redis.call('SMEMBERS', KEYS[2]), redis.call('HGETALL', KEYS[3]),
        redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[1], '+inf')}
"""


@dataclass(frozen=True)
class IndexedSegment:
    """A segment whose members the index held in full when the copy was read."""

    number: bytes  # as a user's SET answers it
    version: int
    refreshed_at: str


@dataclass(frozen=True)
class IndexSnapshot:
    """The index as a reader's copy sees it (``RedisUserIndex.snapshot``)."""

    epoch: bytes | None = None  # None: no index (nothing indexed)
    gen: int = 0
    segments: dict[str, IndexedSegment] = field(default_factory=dict)  # segment id -> its indexed version


class RedisUserIndex:
    """The user index over a redis-py client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.keys = layout.index_keys()
        self._new_number = client.register_script(_NEW_NUMBER_LUA)
        self._begin = client.register_script(_BEGIN_LUA)
        self._finish = client.register_script(_FINISH_LUA)
        self._indexed = client.register_script(_INDEXED_LUA)
        self._snapshot = client.register_script(_SNAPSHOT_LUA)

    # ------------------------------------------------------------------ writers (under the segment's lock)

    def begin(self, segment_id: str) -> bool:
        """Step 1: the segment is updating. Returns whether the index holds its live version in full."""
        version, indexed = self.client.hmget(layout.meta_key(segment_id), MetaField.VERSION, MetaField.INDEXED)
        self._begin(keys=[self.keys.state, self.keys.updating], args=[segment_id, _epoch()])
        return version is not None and version == indexed

    def follow(self, segment_id: str, version: int, by_changes: bool) -> int:
        """Step 3, after the swap to ``version``: by its entered and exited ids when ``by_changes``
        (``begin`` said the version before was held in full and the version has its change log),
        else every member under a new number. Returns how many user keys were written."""
        number = self.client.hget(self.keys.numbers, segment_id) if by_changes else None
        if number is None:
            number = self._new_number(keys=[self.keys.numbers, self.keys.state], args=[segment_id])
            writes = [("SADD", layout.members_key(segment_id))]
        else:
            writes = [("SADD", layout.entered_key(segment_id)), ("SREM", layout.exited_key(segment_id))]
        written = 0
        for command, source in writes:
            for users in _scanned(self.client, source):
                send_spread(self.client, [(command, _user_key(user), number) for user in users])
                written += len(users)
        self._indexed(keys=[layout.meta_key(segment_id)], args=[version])
        return written

    def finish(self, segment_id: str) -> None:
        """Step 4: the update is over (done or failed)."""
        self._finish(keys=[self.keys.state, self.keys.done, self.keys.updating], args=[segment_id, _epoch()])

    def forget(self, segment_id: str) -> None:
        """A purged segment: its number is dropped (its users' entries are never read again)."""
        self.client.hdel(self.keys.numbers, segment_id)
        self.client.zrem(self.keys.done, segment_id)
        self.client.srem(self.keys.updating, segment_id)

    # ------------------------------------------------------------------ readers

    def snapshot(self, segment_ids: Iterable[str], previous: IndexSnapshot | None = None) -> IndexSnapshot:
        """Which of ``segment_ids`` the index holds in full, with the state a reader checks per request.

        With ``previous`` (this reader's last snapshot, same epoch), a segment it held whose number
        is the same and that neither updated nor finished an update since is taken from it
        without reading its meta: every swap goes through ``begin`` and ``finish``."""
        ids = list(segment_ids)
        keys = [self.keys.state, self.keys.updating, self.keys.numbers, self.keys.done]
        since = previous.gen if previous is not None else 0
        epoch, gen, updating, pairs, done = self._snapshot(keys=keys, args=[since])
        if not epoch:
            return IndexSnapshot()
        busy = {text(s) for s in updating}
        numbers = {text(pairs[i]): _as_bytes(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        kept: dict[str, IndexedSegment] = {}
        if previous is not None and previous.epoch == _as_bytes(epoch):
            changed = busy | {text(s) for s in done}
            kept = {
                segment_id: held
                for segment_id, held in previous.segments.items()
                if segment_id not in changed and numbers.get(segment_id) == held.number
            }
        wanted = [s for s in ids if s not in busy and s in numbers and s not in kept]
        commands: list[tuple[object, ...]] = []
        for segment_id in wanted:
            commands.append(("HMGET", layout.meta_key(segment_id), *_SNAPSHOT_FIELDS))
            commands.append(("SCARD", layout.members_key(segment_id)))
        replies = send_spread(self.client, commands)
        segments = {}
        for index, segment_id in enumerate(wanted):
            (version, size, indexed, refreshed_at), card = replies[2 * index : 2 * index + 2]
            if version is not None and indexed == version and size is not None and int(size) == card and refreshed_at:
                segments[segment_id] = IndexedSegment(numbers[segment_id], int(version), text(refreshed_at))
        if kept:
            listed = set(ids)
            segments.update((s, held) for s, held in kept.items() if s in listed)
        return IndexSnapshot(_as_bytes(epoch), int(gen), segments)

    def segments_of(self, user_id: str) -> set[str]:
        """The segment numbers in a user's key (tests and tools; the API reads it with ``resp``)."""
        return {text(n) for n in self.client.smembers(layout.user_segments_key(user_id))}


_SNAPSHOT_FIELDS = (MetaField.VERSION, MetaField.SIZE, MetaField.INDEXED, MetaField.REFRESHED_AT)


def request_commands(user_id: str, gen: int) -> list[tuple[object, ...]]:
    """What a reader sends with each user's read, in this order: the user's numbers, then the
    state's epoch and gen, the segments updating and those done after ``gen`` (its copy's)."""
    keys = layout.index_keys()
    return [
        ("SMEMBERS", layout.user_segments_key(user_id)),
        ("HMGET", keys.state, IndexField.EPOCH, IndexField.GEN),
        ("SMEMBERS", keys.updating),
        ("ZRANGEBYSCORE", keys.done, f"({gen}", "+inf"),
    ]


def _scanned(client: Any, key: str) -> Iterator[list[bytes]]:
    cursor = 0
    while True:
        cursor, chunk = client.sscan(key, cursor, count=WRITE_IDS)
        if chunk:
            yield chunk
        if int(cursor) == 0:
            return


def _user_key(user: bytes | str) -> bytes:
    return _USER_PREFIX + (user if isinstance(user, bytes) else user.encode())


_USER_PREFIX = layout.user_segments_key("").encode()


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _epoch() -> str:
    """A random epoch (only the first writer's is kept): a Redis that lost the index gets a new one."""
    return os.urandom(8).hex()
