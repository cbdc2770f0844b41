"""The live users' tags in Redis: two sorted sets and their meta, swapped by a load in one script.

``first_seen`` (epoch seconds) and ``order_count`` are sorted sets, so one user's check is two
``ZSCORE``s and a tag's range is one ``ZCOUNT`` (keys: ``funnel.storage.layout.tag_keys``). Writes
carry absolute values read back from MySQL with the user's ``seq`` (events applied since the
load, ``funnel.storage.mysql.event_ledger``), so a late or repeated write never undoes a newer
one, and a retried batch brings Redis level with MySQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from funnel.core.user_tags import TagRow
from funnel.core.utc_time import from_epoch
from funnel.storage import layout
from funnel.storage.layout import TagsMetaField
from funnel.storage.redis.replies import int_or_none, text

# KEYS: first_seen, order_count, seq, meta. ARGV: version, then user, first_seen score
# ('' for none), order_count, seq per user. Writes a user only when Redis serves ``version``
# and the user's stored seq is not newer. Returns how many users were written.
_APPLY_LUA = """
if redis.call('HGET', KEYS[4], 'version') ~= ARGV[1] then return -1 end
local written = 0
for i = 2, #ARGV, 4 do
  local user, first_seen, orders, seq = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if seq >= tonumber(redis.call('HGET', KEYS[3], user) or '0') then
    if first_seen == '' then
      redis.call('HINCRBY', KEYS[4], 'with_first_seen', 0 - redis.call('ZREM', KEYS[1], user))
    else
      redis.call('HINCRBY', KEYS[4], 'with_first_seen', redis.call('ZADD', KEYS[1], first_seen, user))
    end
    redis.call('HINCRBY', KEYS[4], 'users', redis.call('ZADD', KEYS[2], orders, user))
    if seq > 0 then redis.call('HSET', KEYS[3], user, seq) end
    written = written + 1
  end
end
return written
"""

# KEYS: live first_seen, order_count, seq; staging ...; previous ...; meta.
# ARGV: meta field/value pairs. Live keys become previous, staging becomes live; the meta
# also counts the users (``users``, ``with_first_seen``) so readers can tell a whole set.
_SWAP_LUA = """
local users = redis.call('ZCARD', KEYS[5])
local with_first_seen = redis.call('ZCARD', KEYS[4])
for i = 1, 3 do
  redis.call('UNLINK', KEYS[6 + i])
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[6 + i]) end
  if redis.call('EXISTS', KEYS[3 + i]) == 1 then
    redis.call('RENAME', KEYS[3 + i], KEYS[i])
    redis.call('PERSIST', KEYS[i])
  end
end
local previous = redis.call('HGETALL', KEYS[10])
redis.call('DEL', KEYS[10])
redis.call('HSET', KEYS[10], 'users', users, 'with_first_seen', with_first_seen, unpack(ARGV))
return previous
"""

# KEYS as for the swap. ARGV: the previous meta's field/value pairs (none: delete meta).
_REVERT_LUA = """
for i = 1, 3 do
  redis.call('UNLINK', KEYS[i])
  if redis.call('EXISTS', KEYS[6 + i]) == 1 then redis.call('RENAME', KEYS[6 + i], KEYS[i]) end
end
redis.call('DEL', KEYS[10])
if #ARGV > 0 then redis.call('HSET', KEYS[10], unpack(ARGV)) end
return 1
"""


class RedisTagStore:
    """The live user tags in Redis, over a redis-py client."""

    def __init__(self, client: Any, staging_ttl_seconds: int) -> None:
        self.client = client
        self.staging_ttl_seconds = staging_ttl_seconds
        self.live_keys = layout.tag_keys("live")
        self.staging_keys = layout.tag_keys("staging")
        self.previous_keys = layout.tag_keys("previous")
        self._apply = client.register_script(_APPLY_LUA)
        self._swap = client.register_script(_SWAP_LUA)
        self._revert = client.register_script(_REVERT_LUA)

    def meta(self) -> dict[str, str]:
        return {text(k): text(v) for k, v in self.client.hgetall(layout.tags_meta_key()).items()}

    def whole(self) -> bool:
        """Whether the live sorted sets hold as many users as the meta counted (none lost)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(layout.tags_meta_key(), TagsMetaField.VERSION, TagsMetaField.USERS, TagsMetaField.WITH_FIRST_SEEN)
        pipe.zcard(self.live_keys.order_count)
        pipe.zcard(self.live_keys.first_seen)
        (version, users, with_first_seen), orders, first_seen = pipe.execute()
        return version is not None and int_or_none(users) == orders and int_or_none(with_first_seen) == first_seen

    def serving(self) -> tuple[int | None, int]:
        """The tag version Redis serves and how many users it holds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(layout.tags_meta_key(), TagsMetaField.VERSION)
        pipe.zcard(self.live_keys.order_count)
        version, size = pipe.execute()
        return (int(version) if version is not None else None), int(size)

    def tags_of(self, user_ids: Sequence[str]) -> list[TagRow | None]:
        """Each user's live tags (None: no tags), in one round trip."""
        if not user_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.zmscore(self.live_keys.first_seen, list(user_ids))
        pipe.zmscore(self.live_keys.order_count, list(user_ids))
        first_seen, orders = pipe.execute()
        return [
            None if count is None else TagRow(user, None if fs is None else from_epoch(fs), int(count))
            for user, fs, count in zip(user_ids, first_seen, orders, strict=True)
        ]

    def count_range(self, tag: str, low: float | str, high: float | str) -> int:
        """How many users have ``tag`` (``first_seen`` or ``order_count``) in [low, high]."""
        return int(self.client.zcount(getattr(self.live_keys, tag), low, high))

    # ------------------------------------------------------------------ writing

    def apply(self, version: int, rows: Iterable[TagRow]) -> int:
        """Write users' current tags if Redis serves ``version``; -1 when it serves another."""
        args: list[object] = [version]
        for row in rows:
            score = row.first_seen_score
            args += [row.user_id, "" if score is None else repr(score), row.order_count, row.seq]
        if len(args) == 1:
            return 0
        keys = [*self.live_keys, layout.tags_meta_key()]
        return int(self._apply(keys=keys, args=args))

    def clear_staged(self) -> None:
        self.client.unlink(*self.staging_keys)

    def add_staged(self, rows: Sequence[TagRow]) -> None:
        """Stage a batch of users' tags (baseline rows and replayed ones) in one round trip."""
        if not rows:
            return
        first_seen = {r.user_id: r.first_seen_score for r in rows if r.first_seen is not None}
        missing = [r.user_id for r in rows if r.first_seen is None]
        pipe = self.client.pipeline(transaction=False)
        if first_seen:
            pipe.zadd(self.staging_keys.first_seen, first_seen)
        if missing:
            pipe.zrem(self.staging_keys.first_seen, *missing)
        pipe.zadd(self.staging_keys.order_count, {r.user_id: r.order_count for r in rows})
        seqs = {r.user_id: r.seq for r in rows if r.seq}
        if seqs:
            pipe.hset(self.staging_keys.seq, mapping=seqs)
        for key in self.staging_keys:
            pipe.expire(key, self.staging_ttl_seconds)
        pipe.execute()

    def staged_size(self) -> int:
        return int(self.client.zcard(self.staging_keys.order_count))

    def swap(self, live: Any) -> dict[str, str]:
        """Staging becomes live (the old live keys are kept as ``previous``); return the old meta."""
        fields: list[object] = []
        for name, value in {
            TagsMetaField.VERSION: live.version,
            TagsMetaField.AS_OF: live.as_of.isoformat(),
            TagsMetaField.SIZE: live.size,
            TagsMetaField.REFRESHED_AT: live.refreshed_at.isoformat(),
        }.items():
            fields += [name, str(value)]
        keys = [*self.live_keys, *self.staging_keys, *self.previous_keys, layout.tags_meta_key()]
        previous = self._swap(keys=keys, args=fields)
        return {text(previous[i]): text(previous[i + 1]) for i in range(0, len(previous), 2)}

    def drop_previous(self) -> None:
        self.client.unlink(*self.previous_keys)

    def revert(self, previous_meta: dict[str, str]) -> None:
        """Undo ``swap`` (MySQL did not commit): the previous keys and meta come back."""
        keys = [*self.live_keys, *self.staging_keys, *self.previous_keys, layout.tags_meta_key()]
        args = [item for pair in previous_meta.items() for item in pair]
        self._revert(keys=keys, args=args)
