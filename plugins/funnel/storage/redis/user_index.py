"""The user index: the segments each user is in, kept by every swap, so that a user's segments are
one read whatever the catalog's size (keys: ``funnel.storage.layout``, "The user index").

Each user's key is a SET of segment *numbers* (an intset: 2 bytes a membership). Every swap of a
segment's members (``RedisSegmentStore.promote``, a refresh or a restore, always under the
segment's lock) runs this protocol:

1. ``begin``: the writer's marker joins ``updating`` (replacing the markers of the segment's
   earlier writers, who died or lost the lock); it notes the number the index holds the live
   version under, if it holds it in full (meta's ``indexed`` is the version).
2. the swap; it drops meta's ``indexed`` and ``index_number``.
3. ``follow``: with that number and the new version's change log, its entered ids get the number
   and its exited ids lose it; otherwise a new number and every member gets it (the old number's
   entries are never read again). Then one script marks meta (``indexed``, ``index_number``) only
   if the writer still holds the segment's lock, the version is still live and the change sets
   still hold what the swap counted: a writer that lost its lock, or change sets that expired,
   never mark, and the next swap rebuilds the segment whole.
4. ``finish``: ``gen`` goes up by one, the segment is written into ``done`` at that gen and the
   writer's own marker leaves ``updating``, in one script (also when the swap or the update failed).

What a reader can trust (``funnel.api.membership_reads``): its copy (``snapshot``) reads epoch, gen
and ``updating`` at once, then each segment's meta; a segment is *indexed* in the copy when it was
not updating, its meta's ``indexed`` is its version, its members set is whole and no other
segment has its number. With each user's read it reads the state, ``updating`` and the ``done``
entries after the copy's gen: a segment in those two may have swapped since the copy, so it is
read from its own keys, exactly as without an index; a new epoch or a lower gen means Redis lost
(part of) the index, and every segment is read so. The index keys carry no TTL: Redis must not
evict them (``noeviction`` or a ``volatile-*`` policy).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from funnel.storage import layout
from funnel.storage.layout import IndexField, MetaField
from funnel.storage.redis.packed_commands import send_spread
from funnel.storage.redis.replies import text

#: Users per buffer of index writes (one command each).
WRITE_IDS = 2_000

# KEYS: state, updating. ARGV: the writer's marker, an epoch for a state that has none, the
# segment's marker prefix. The markers of the segment's earlier writers go: this writer holds its
# lock, so they died or lost it (and can no longer mark a version).
_BEGIN_LUA = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
for _, marker in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.sub(marker, 1, #ARGV[3]) == ARGV[3] then redis.call('SREM', KEYS[2], marker) end
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: state, done, updating. ARGV: segment id, the writer's marker, an epoch for a state that
# has none. The new gen.
_FINISH_LUA = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[3])
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('ZADD', KEYS[2], gen, ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
return gen
"""

# KEYS: meta, lock, entered, exited. ARGV: version, lock value, number, entered and exited
# counts (-1: unchecked). Marks the version indexed under the number if the writer still holds
# the lock, the version is still live and the change sets still hold the counts.
_INDEXED_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
if tonumber(ARGV[4]) >= 0 and redis.call('SCARD', KEYS[3]) ~= tonumber(ARGV[4]) then return 0 end
if tonumber(ARGV[5]) >= 0 and redis.call('SCARD', KEYS[4]) ~= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], 'indexed', ARGV[1], 'index_number', ARGV[3])
return 1
"""

# KEYS: state, updating, done. ARGV: a gen. What a reader's copy starts from, read at once:
# epoch, gen, the writers updating, the segments done after the gen.
_SNAPSHOT_LUA = """
return {redis.call('HGET', KEYS[1], 'epoch') or false, redis.call('HGET', KEYS[1], 'gen') or '0',
        redis.call('SMEMBERS', KEYS[2]), redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf')}
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


class Begun(NamedTuple):
    """What ``begin`` found: the number the index holds the live version under in full (None: it
    does not), and this writer's marker in ``updating``."""

    number: bytes | None
    marker: str


class RedisUserIndex:
    """The user index over a redis-py client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.keys = layout.index_keys()
        self._begin = client.register_script(_BEGIN_LUA)
        self._finish = client.register_script(_FINISH_LUA)
        self._indexed = client.register_script(_INDEXED_LUA)
        self._snapshot = client.register_script(_SNAPSHOT_LUA)

    # ------------------------------------------------------------------ writers (under the segment's lock)

    def begin(self, segment_id: str) -> Begun:
        """Step 1: this writer is updating the segment."""
        version, indexed, number = self.client.hmget(
            layout.meta_key(segment_id), MetaField.VERSION, MetaField.INDEXED, MetaField.INDEX_NUMBER
        )
        marker = f"{segment_id} {os.urandom(6).hex()}"
        self._begin(keys=[self.keys.state, self.keys.updating], args=[marker, _epoch(), f"{segment_id} "])
        held = version is not None and version == indexed and number is not None
        return Begun(_as_bytes(number) if held else None, marker)

    def follow(
        self, segment_id: str, version: int, lock_value: str, number: bytes | None, changes: tuple[int, int] | None
    ) -> bool:
        """Step 3, after the swap to ``version``: by its entered and exited ids (``changes``: how
        many, as the swap counted them) under ``number`` when both are given, else every member
        under a new number. Returns whether the version was marked indexed (step 3's script)."""
        if number is None or changes is None:
            number = str(self.client.hincrby(self.keys.state, IndexField.NEXT, 1)).encode()
            writes = [("SADD", layout.members_key(segment_id))]
            counts = (-1, -1)
        else:
            writes = [("SADD", layout.entered_key(segment_id)), ("SREM", layout.exited_key(segment_id))]
            counts = changes
        for command, source in writes:
            for users in _scanned(self.client, source):
                send_spread(self.client, [(command, _user_key(user), number) for user in users])
        keys = [
            layout.meta_key(segment_id),
            layout.lock_key(segment_id),
            layout.entered_key(segment_id),
            layout.exited_key(segment_id),
        ]
        return bool(self._indexed(keys=keys, args=[version, lock_value, number, *counts]))

    def finish(self, segment_id: str, marker: str) -> None:
        """Step 4: this writer's update is over (done or failed)."""
        self._finish(keys=[self.keys.state, self.keys.done, self.keys.updating], args=[segment_id, marker, _epoch()])

    def forget(self, segment_id: str) -> None:
        """A purged segment (its meta is gone with its number: its users' entries are never read again)."""
        self.client.zrem(self.keys.done, segment_id)
        stale = [m for m in self.client.smembers(self.keys.updating) if _segment_of(m) == segment_id]
        if stale:
            self.client.srem(self.keys.updating, *stale)

    # ------------------------------------------------------------------ readers

    def snapshot(self, segment_ids: Iterable[str], previous: IndexSnapshot | None = None) -> IndexSnapshot:
        """Which of ``segment_ids`` the index holds in full, with the state a reader checks per request.

        With ``previous`` (this reader's last snapshot, same epoch, gen not lower), a segment it
        held that neither updated nor finished an update since is taken from it without reading
        its meta: every swap goes through ``begin`` and ``finish``."""
        ids = list(segment_ids)
        since = previous.gen if previous is not None else 0
        keys = [self.keys.state, self.keys.updating, self.keys.done]
        epoch, gen, updating, done = self._snapshot(keys=keys, args=[since])
        if not epoch:
            return IndexSnapshot()
        busy = {_segment_of(m) for m in updating}
        kept: dict[str, IndexedSegment] = {}
        if previous is not None and previous.epoch == _as_bytes(epoch) and int(gen) >= previous.gen:
            changed = busy | {text(s) for s in done}
            kept = {s: held for s, held in previous.segments.items() if s not in changed}
        wanted = [s for s in ids if s not in busy and s not in kept]
        commands: list[tuple[object, ...]] = []
        for segment_id in wanted:
            commands.append(("HMGET", layout.meta_key(segment_id), *_SNAPSHOT_FIELDS))
            commands.append(("SCARD", layout.members_key(segment_id)))
        replies = send_spread(self.client, commands)
        segments = {}
        for index, segment_id in enumerate(wanted):
            (version, size, indexed, refreshed_at, number), card = replies[2 * index : 2 * index + 2]
            whole = size is not None and int(size) == card
            if version is not None and indexed == version and whole and refreshed_at and number:
                segments[segment_id] = IndexedSegment(_as_bytes(number), int(version), text(refreshed_at))
        listed = set(ids)
        segments.update((s, held) for s, held in kept.items() if s in listed)
        return IndexSnapshot(_as_bytes(epoch), int(gen), _unshared(segments))


def _unshared(segments: dict[str, IndexedSegment]) -> dict[str, IndexedSegment]:
    """The segments whose number no other holds (two can share one only when Redis lost ``state``
    but not the metas: those are read from their own keys until their next swap)."""
    owners: dict[bytes, int] = {}
    for held in segments.values():
        owners[held.number] = owners.get(held.number, 0) + 1
    return {s: held for s, held in segments.items() if owners[held.number] == 1}


def _segment_of(marker: bytes | str) -> str:
    """The segment id of a writer's marker in ``updating`` (``"<segment_id> <token>"``)."""
    return text(marker).partition(" ")[0]


_SNAPSHOT_FIELDS = (
    MetaField.VERSION,
    MetaField.SIZE,
    MetaField.INDEXED,
    MetaField.REFRESHED_AT,
    MetaField.INDEX_NUMBER,
)


def user_command(user_id: str) -> tuple[object, ...]:
    """A reader's read of a user's numbers (sent before ``state_commands``, or with them on one Redis)."""
    return ("SMEMBERS", layout.user_segments_key(user_id))


def state_commands(gen: int) -> list[tuple[object, ...]]:
    """What a reader reads after the user's numbers: the state's epoch and gen, the writers
    updating and the segments done after ``gen`` (its copy's); ``swapped_since`` reads the last two."""
    keys = layout.index_keys()
    return [
        ("HMGET", keys.state, IndexField.EPOCH, IndexField.GEN),
        ("SMEMBERS", keys.updating),
        ("ZRANGEBYSCORE", keys.done, f"({gen}", "+inf"),
    ]


def swapped_since(updating: Iterable[bytes], done: Iterable[bytes]) -> set[str]:
    """The segments a reader must not take from the index: updating now, or done since its copy."""
    return {_segment_of(m) for m in updating} | {text(s) for s in done}


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
