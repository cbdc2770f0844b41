"""The serving member store in Redis.

A refresh fills ``funnel:{id}:staging``, then one Lua script swaps it in: it checks that
the refresh still holds the segment's lock and that the staged sets hold exactly the ids
MySQL counted, compares the live version's (logical date, version) with the new one,
RENAMEs staging over ``members`` (the old set is UNLINKed, freed in the background) and
rewrites ``meta``, all atomically. A reader sees the old set or the new one, never a gap
or a mix; a version for an earlier logical date never replaces a later one.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from funnel.core.errors import LockLost, StoreError
from funnel.core.run_info import RunInfo
from funnel.storage import layout
from funnel.storage.layout import MetaField
from funnel.storage.redis.packed_commands import send_to_slot
from funnel.storage.redis.replies import text
from funnel.storage.redis.user_index import RedisUserIndex

# KEYS: staging, members, meta, staging:entered, entered, staging:exited, exited, lock.
# ARGV: logical_ts_us, version, change_ttl_ms, lock value, expected size, entered, exited
# (-1: unchecked), then meta field/value pairs.
# Returns 1 when swapped, 0 when the live version is for a later (logical date, version),
# -1 when the caller no longer holds the segment's lock, -2 when a staged set does not hold
# exactly the expected number of ids (something else wrote to it): nothing changes then.
# meta's ``feed_version`` (the last version published to the change feed) is carried over.
_PROMOTE_LUA = """
if redis.call('GET', KEYS[8]) ~= ARGV[4] then return -1 end
local live_ts = tonumber(redis.call('HGET', KEYS[3], 'logical_ts_us') or '-1')
local live_version = tonumber(redis.call('HGET', KEYS[3], 'version') or '-1')
local new_ts = tonumber(ARGV[1])
local new_version = tonumber(ARGV[2])
if live_ts > new_ts or (live_ts == new_ts and live_version > new_version) then
  redis.call('UNLINK', KEYS[1], KEYS[4], KEYS[6])
  return 0
end
local expected = {{KEYS[1], ARGV[5]}, {KEYS[4], ARGV[6]}, {KEYS[6], ARGV[7]}}
for _, pair in ipairs(expected) do
  local want = tonumber(pair[2])
  if want >= 0 and redis.call('SCARD', pair[1]) ~= want then return -2 end
end
local function swap(staged, live, ttl_ms)
  redis.call('UNLINK', live)
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, live)
    if ttl_ms then redis.call('PEXPIRE', live, ttl_ms) else redis.call('PERSIST', live) end
  end
end
swap(KEYS[1], KEYS[2], nil)
swap(KEYS[4], KEYS[5], ARGV[3])
swap(KEYS[6], KEYS[7], ARGV[3])
local feed_version = redis.call('HGET', KEYS[3], 'feed_version')
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 8))
if feed_version then redis.call('HSET', KEYS[3], 'feed_version', feed_version) end
return 1
"""

# One step of the walk that finds who exited. KEYS: members, staging, staging:exited.
# ARGV: cursor, count, staging ttl. Returns {next cursor, the scanned ids not staged}; those
# are added to staging:exited. Ids go to SMISMEMBER/SADD in slices (Lua's unpack limit).
_EXIT_STEP_LUA = """
local scan = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local chunk, gone = scan[2], {}
for first = 1, #chunk, 1000 do
  local last = math.min(first + 999, #chunk)
  local flags = redis.call('SMISMEMBER', KEYS[2], unpack(chunk, first, last))
  for i = 1, #flags do
    if flags[i] == 0 then gone[#gone + 1] = chunk[first + i - 1] end
  end
end
for first = 1, #gone, 1000 do
  redis.call('SADD', KEYS[3], unpack(gone, first, math.min(first + 999, #gone)))
end
if #gone > 0 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
return {scan[1], gone}
"""

log = logging.getLogger(__name__)

#: Ids per command when staging: each command holds Redis well under a millisecond.
COMMAND_IDS = 2_000


class RedisSegmentStore:
    """Live member sets and their metadata in Redis, over a redis-py client."""

    def __init__(self, client: Any, staging_ttl_seconds: int, change_ttl_seconds: int = 7 * 86_400) -> None:
        self.client = client
        self.staging_ttl_seconds = staging_ttl_seconds
        self.change_ttl_seconds = change_ttl_seconds
        self._promote = client.register_script(_PROMOTE_LUA)
        self.user_index = RedisUserIndex(client)  # part of the layout: every swap keeps it
        self._exit_step = client.register_script(_EXIT_STEP_LUA)

    def live_meta(self, segment_id: str) -> dict[str, str]:
        raw = self.client.hgetall(layout.meta_key(segment_id))
        return {text(k): text(v) for k, v in raw.items()}

    def live_version(self, segment_id: str) -> int | None:
        version = self.live_meta(segment_id).get(MetaField.VERSION)
        return int(version) if version is not None else None

    def clear_staged(self, segment_id: str) -> None:
        self.client.unlink(
            layout.staging_key(segment_id),
            layout.staging_entered_key(segment_id),
            layout.staging_exited_key(segment_id),
        )

    def forget(self, segment_id: str) -> None:
        """Remove every key of the segment (a purged retired segment). ``UNLINK`` frees a big set
        in Redis's background thread; the keys share a hash slot, so it is one command in a cluster."""
        self.client.unlink(
            layout.members_key(segment_id),
            layout.meta_key(segment_id),
            layout.entered_key(segment_id),
            layout.exited_key(segment_id),
            layout.feed_key(segment_id),
        )
        self.clear_staged(segment_id)
        self.user_index.forget(segment_id)

    def add_members(self, segment_id: str, user_ids: Sequence[str]) -> None:
        """Stage a batch in one round trip; the key expires if the refresh is abandoned."""
        self._stage(layout.staging_key(segment_id), user_ids)

    def add_changes(self, segment_id: str, change: str, user_ids: Sequence[str]) -> None:
        """Stage a batch of the ids that ``entered`` or ``exited``."""
        key = layout.staging_entered_key(segment_id) if change == "entered" else layout.staging_exited_key(segment_id)
        self._stage(key, user_ids)

    def _stage(self, key: str, user_ids: Sequence[str]) -> None:
        if not user_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(key, *user_ids)
        pipe.expire(key, self.staging_ttl_seconds)
        pipe.execute()

    def stage_diff(self, segment_id: str, user_ids: Sequence[str], against_live: bool) -> list[str]:
        """Stage a batch and return the ids that are not live members (they entered).

        One round trip: the batch goes into the staging set and is checked against the live
        set; the entered ids are staged in a second. Without a live version to compare with, everyone entered
        (the staged set says who). Commands are packed by hiredis in one buffer: a batch of
        10,000 ids costs the client about a millisecond, a third of redis-py's own packing.
        """
        if not user_ids:
            return []
        staging, ttl = layout.staging_key(segment_id), str(self.staging_ttl_seconds)
        members = layout.members_key(segment_id)
        commands: list[tuple[object, ...]] = []
        for start in range(0, len(user_ids), COMMAND_IDS):  # short commands: readers never wait long
            part = user_ids[start : start + COMMAND_IDS]
            commands.append(("SADD", staging, *part))
            if against_live:
                commands.append(("SMISMEMBER", members, *part))
        replies = self._raw([*commands, ("EXPIRE", staging, ttl)])
        if not against_live:
            return list(user_ids)
        flags = [flag for reply in replies[1 : len(commands) : 2] for flag in reply]
        entered = [user for user, live in zip(user_ids, flags, strict=True) if not live]
        if entered:
            entered_key = layout.staging_entered_key(segment_id)
            self._raw([("SADD", entered_key, *entered), ("EXPIRE", entered_key, ttl)])
        return entered

    def staged_exited(self, segment_id: str, count: int, expected: int | None = None) -> Iterator[list[str]]:
        """After staging, walk the live members in ``SSCAN`` steps of ``count``; yield (and
        stage) those not staged: they exited. Each step is one short script inside Redis (scan,
        check against the staged set, stage the exits), so only the exits cross the network and
        no command holds Redis more than a few milliseconds. With ``expected`` (how many exited,
        from the counts) the walk stops as soon as it has found them all."""
        keys = (layout.members_key(segment_id), layout.staging_key(segment_id), layout.staging_exited_key(segment_id))
        cursor, found = b"0", 0
        while True:
            cursor, gone = self._exit_step(keys=keys, args=(cursor, count, self.staging_ttl_seconds))
            if gone:
                found += len(gone)
                yield [text(user) for user in gone]
            if int(cursor) == 0 or (expected is not None and found >= expected):
                return

    def _raw(self, commands: Sequence[tuple[object, ...]]) -> list[Any]:
        """Send commands in one buffer packed by hiredis; their replies. Every command's key (its
        first argument) carries the segment's ``{segment_id}`` tag: one slot, one master."""
        return send_to_slot(self.client, commands)

    def _follow(
        self,
        segment_id: str,
        version: int,
        lock_value: str,
        number: bytes | None,
        expected: tuple[int, int | None, int | None],
    ) -> None:
        """Bring the user index level with the version just swapped in. A failure here fails no
        refresh (the version is live in both stores): the version stays unmarked, readers read the
        segment from its own keys, and its next swap rebuilds its index whole."""
        _, entered, exited = expected
        changes = (entered, exited) if entered is not None and exited is not None else None
        try:
            if not self.user_index.follow(segment_id, version, lock_value, number, changes):
                log.warning(
                    "segment %s: the user index was not marked for version %s (the lock or the change sets "
                    "changed meanwhile); readers read the segment's own keys until its next swap",
                    segment_id,
                    version,
                )
        except Exception as exc:
            log.warning(
                "segment %s: the user index update for version %s failed (%s); readers read the segment's "
                "own keys until its next swap, which rebuilds its index",
                segment_id,
                version,
                exc,
            )

    def staged_counts(self, segment_id: str) -> tuple[int, int, int]:
        """How many ids are staged: members, entered, exited."""
        pipe = self.client.pipeline(transaction=False)
        pipe.scard(layout.staging_key(segment_id))
        pipe.scard(layout.staging_entered_key(segment_id))
        pipe.scard(layout.staging_exited_key(segment_id))
        size, entered, exited = pipe.execute()
        return int(size), int(entered), int(exited)

    def staged_size(self, segment_id: str) -> int:
        return int(self.client.scard(layout.staging_key(segment_id)))

    def serving(self, segment_id: str) -> tuple[int | None, int]:
        """The version Redis serves (from ``meta``) and how many members it actually holds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(layout.meta_key(segment_id), MetaField.VERSION)
        pipe.scard(layout.members_key(segment_id))
        version, size = pipe.execute()
        return (int(version) if version is not None else None), int(size)

    # ------------------------------------------------------------------ read-only (previews)

    def scan_members(self, segment_id: str, count: int = 1_000) -> Iterator[list[str]]:
        """The live members, in ``SSCAN`` steps of about ``count``: read-only, and no step holds
        Redis long. An id may come twice (SSCAN's guarantee), so callers count distinct ids."""
        key, cursor = layout.members_key(segment_id), 0
        while True:
            cursor, chunk = self.client.sscan(key, cursor, count=count)
            if chunk:
                yield [text(user) for user in chunk]
            if int(cursor) == 0:
                return

    def count_live_among(self, segment_id: str, user_ids: Sequence[str]) -> int:
        """How many of ``user_ids`` (distinct) are live members: ``SMISMEMBER`` in short commands,
        sent in one buffer to the segment's slot (one round trip). Read-only."""
        if not user_ids:
            return 0
        members = layout.members_key(segment_id)
        commands = [
            ("SMISMEMBER", members, *user_ids[start : start + COMMAND_IDS])
            for start in range(0, len(user_ids), COMMAND_IDS)
        ]
        return sum(int(flag) for reply in self._raw(commands) for flag in reply)

    def promote(
        self,
        segment_id: str,
        logical_ts_us: int,
        version: int,
        meta: Mapping[str, object],
        lock_value: str,
        expected: tuple[int, int | None, int | None],
    ) -> bool:
        """Swap the staged sets in, unless Redis already serves a later version, and bring the
        user index level with it (``funnel.storage.redis.user_index``: begin, swap, follow, finish).

        ``expected`` is (size, entered, exited) as MySQL counted them (None: unchecked); the
        swap happens only while ``lock_value`` still holds the segment's lock and every
        staged set holds exactly that many ids, all in one atomic script.
        """
        fields: list[object] = []
        for name, value in {**meta, MetaField.LOGICAL_TS_US: logical_ts_us, MetaField.VERSION: version}.items():
            fields.extend((name, str(value)))
        keys = [
            layout.staging_key(segment_id),
            layout.members_key(segment_id),
            layout.meta_key(segment_id),
            layout.staging_entered_key(segment_id),
            layout.entered_key(segment_id),
            layout.staging_exited_key(segment_id),
            layout.exited_key(segment_id),
            layout.lock_key(segment_id),
        ]
        counts = [-1 if count is None else count for count in expected]
        args = [logical_ts_us, version, self.change_ttl_seconds * 1000, lock_value, *counts, *fields]
        begun = self.user_index.begin(segment_id)
        try:
            outcome = int(self._promote(keys=keys, args=args))
            if outcome == 1:
                self._follow(segment_id, version, lock_value, begun.number, expected)
        finally:
            self.user_index.finish(segment_id, begun.marker)
        if outcome == -1:
            raise LockLost(
                f"segment {segment_id!r}: the refresh lock was lost before the Redis swap; Redis still serves "
                "the previous version. Fix: none needed; the next refresh brings Redis level with MySQL"
            )
        if outcome == -2:
            raise StoreError(
                f"segment {segment_id!r}: a Redis staging set does not hold the {expected[0]:,} ids MySQL staged "
                "(another writer?); nothing was swapped in Redis. Fix: retry; the next refresh rebuilds Redis "
                "from MySQL"
            )
        return outcome == 1


def segment_meta(
    size: int, refreshed_at: dt.datetime, run: RunInfo, entered: int | None, exited: int | None
) -> dict[str, object]:
    """A live version's ``meta`` fields (``layout.MetaField``) but the two ``promote`` adds."""
    return {
        MetaField.SIZE: size,
        MetaField.REFRESHED_AT: refreshed_at.isoformat(),
        MetaField.LOGICAL_DATE: run.logical_date.isoformat(),
        MetaField.RUN_ID: run.run_id,
        MetaField.DAG_ID: run.dag_id,
        MetaField.ENTERED: "" if entered is None else entered,
        MetaField.EXITED: "" if exited is None else exited,
    }
