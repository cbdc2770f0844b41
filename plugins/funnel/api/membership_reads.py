"""Membership, the hot paths: is a user in a segment, which users of a list are, and every
segment a user is in, each read from Redis in one pipelined round trip.

When a segment's Redis keys are not whole (Redis restarted empty, or keys were deleted), the
answer comes from MySQL's live version instead (``source: mysql``) and the segment is restored
into Redis once, in the background (``Restorer``). The same holds for the users' tags behind
proxy segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from funnel import wiring
from funnel.api.background_work import Restorer
from funnel.api.catalog_copy import CatalogCopy, Entry
from funnel.api.mysql_pool import MySqlPool
from funnel.api.tag_reads import tags_commands, tags_from_scores, tags_whole
from funnel.core.errors import NotComputed
from funnel.core.proxy_matching import Tags, matches
from funnel.core.utc_time import utc_now
from funnel.storage import layout
from funnel.storage.layout import MetaField
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.redis.replies import text
from funnel.storage.redis.user_index import state_commands, swapped_since, user_command

#: The meta fields a user's segments read with each membership (plain text: the hot path encodes them per request).
_VERSION_AND_SIZE = (MetaField.VERSION.value, MetaField.SIZE.value)


@dataclass(frozen=True)
class Answer:
    """Membership of one or more users, and where it was read."""

    members: dict[str, bool]
    version: int
    refreshed_at: str | None
    source: str  # "redis" or "mysql"
    stale: bool = False  # the segment is past its freshness objective


class MembershipReads:
    """Membership over Redis (async, one round trip) with MySQL's live versions behind it."""

    def __init__(self, resp: Any, mysql: MySqlPool, restorer: Restorer, catalog: CatalogCopy) -> None:
        self._resp = resp
        self._mysql = mysql
        self._restorer = restorer
        self._catalog = catalog
        self._as_of: dict[str, tuple[bytes, str, dict[bool, dict[str, Any]]]] = {}  # see ``_versions``

    async def check(self, entry: Entry, user_ids: Sequence[str]) -> Answer:
        """Membership of ``user_ids`` (validated, unique) in one segment, in one round trip."""
        if entry.is_proxy:
            return await self._check_proxy(entry, user_ids)
        segment_id = entry.segment_id
        members_key, meta_key = entry.keys
        if len(user_ids) == 1:
            ask: tuple[Any, ...] = ("SISMEMBER", members_key, user_ids[0])
        else:
            ask = ("SMISMEMBER", members_key, *user_ids)
        found, (version, size, refreshed_at), card = await self._resp.pipeline(
            (
                ask,
                ("HMGET", meta_key, MetaField.VERSION, MetaField.SIZE, MetaField.REFRESHED_AT),
                ("SCARD", members_key),
            )
        )
        if version is not None and size is not None and int(size) == card:
            flags = (found,) if len(user_ids) == 1 else found
            return Answer(
                dict(zip(user_ids, map(bool, flags), strict=True)),
                int(version),
                refreshed_at.decode(),
                "redis",
                entry.stale,
            )
        if not entry.computed and version is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no members to check")
        return await self._check_in_mysql(segment_id, user_ids, entry.stale)

    async def _check_in_mysql(self, segment_id: str, user_ids: Sequence[str], stale: bool) -> Answer:
        def read(conn: Any) -> tuple[LiveVersion | None, set[str]]:
            store = wiring.mysql_store(conn)
            live = store.live_version(segment_id)
            return live, (store.members_among(segment_id, live.version, list(user_ids)) if live else set())

        live, members = await self._mysql.run(read)
        if live is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no members to check")
        self._restorer.schedule(segment_id)
        members_of = {u: u in members for u in user_ids}
        return Answer(members_of, live.version, live.refreshed_at.isoformat(), "mysql", stale)

    async def tags(self, user_ids: Sequence[str]) -> tuple[list[Tags | None], int, str | None, str]:
        """The users' tags (None: no tags), the tag version, its refresh time, and the source."""
        replies = await self._resp.pipeline(tags_commands(user_ids))
        first_seen, orders, meta, orders_card, dated_card = replies
        if tags_whole(meta, orders_card, dated_card):
            tags = [tags_from_scores(fs, count) for fs, count in zip(first_seen, orders, strict=True)]
            return tags, int(meta[0]), text(meta[1]), "redis"
        return await self._tags_in_mysql(user_ids)

    async def _tags_in_mysql(self, user_ids: Sequence[str]) -> tuple[list[Tags | None], int, str | None, str]:
        def read(conn: Any) -> tuple[Any, dict[str, Any]]:
            store = wiring.mysql_tag_store(conn)
            live = store.live()
            return live, store.tags_of(list(user_ids), live.version)

        live, rows = await self._mysql.run(read)
        self._restorer.schedule(layout.TAGS_ID)
        tags = [Tags(rows[u].first_seen, rows[u].order_count) if u in rows else None for u in user_ids]
        return tags, live.version, live.refreshed_at.isoformat(), "mysql"

    async def _check_proxy(self, entry: Entry, user_ids: Sequence[str]) -> Answer:
        tags, version, refreshed_at, source = await self.tags(user_ids)
        now = utc_now()
        members = {u: matches(entry.proxy_rule, t, now) for u, t in zip(user_ids, tags, strict=True)}
        return Answer(members, version, refreshed_at, source, entry.stale)

    async def segments_of(self, user_id: str, again: bool = True, use_index: bool = True) -> dict[str, Any]:
        """Every enabled segment the user is in, read in one pipelined round trip: ``segments``
        (sorted ids), ``versions`` (each of those: version, refreshed_at, stale), ``stale`` (every
        enabled segment past its freshness objective, member or not) and ``not_computed`` (the
        stored segments with no live version yet: nobody is a member of them *yet*).

        The segments the user index holds in full (the catalog copy says which) cost one read in
        all, the user's key; the others three commands each. A segment that began or finished a
        swap since the copy was read is read from its own keys, in a second round trip, and so is
        every segment when Redis lost the index (``funnel.storage.redis.user_index``)."""
        catalog = await self._catalog.view()
        indexed = use_index and catalog.index_epoch is not None and bool(catalog.indexed)
        exact = list(catalog.unindexed if indexed else catalog.enabled_stored)
        head: list[tuple[Any, ...]] = []
        numbers: list[bytes] = []
        if indexed:
            if self._resp.spans_masters:  # the user's key read first: the state read after sees any later swap
                (numbers,) = await self._resp.pipeline([user_command(user_id)])
            else:  # one Redis runs a pipeline in order
                head.append(user_command(user_id))
            head += state_commands(catalog.index_gen)
        replies = await self._resp.pipeline([*head, *_member_commands(exact, user_id), *tags_commands([user_id])])
        member_replies = replies[len(head) : len(head) + 3 * len(exact)]
        versions: dict[str, dict[str, Any]] = {}
        if indexed:
            if not self._resp.spans_masters:
                numbers = replies[0]
            (epoch, gen), updating, done = replies[len(head) - 3 : len(head)]
            if epoch != catalog.index_epoch or gen is None or int(gen) < catalog.index_gen:
                return await self.segments_of(user_id, again, use_index=False)  # Redis lost the index
            changed = swapped_since(updating, done) & catalog.indexed_ids
            for number in numbers:
                hit = catalog.indexed.get(number)
                if hit is not None and hit[0] not in changed:
                    versions[hit[0]] = hit[1]
            if changed:  # swapped since the copy: each from its own keys
                more = [catalog.entries[segment_id] for segment_id in sorted(changed)]
                member_replies = [*member_replies, *await self._resp.pipeline(_member_commands(more, user_id))]
                exact += more
        found: list[tuple[Entry, bytes]] = []
        not_whole: list[str] = []
        not_computed: list[str] = []
        for index, entry in enumerate(exact):
            member, (version, size), card = member_replies[3 * index : 3 * index + 3]
            if version is None and not entry.computed:
                not_computed.append(entry.segment_id)  # never refreshed: nobody is a member yet
            elif version is None or size is None or int(size) != card:
                not_whole.append(entry.segment_id)
            elif member:
                found.append((entry, version))
        read = self._versions(found)
        if read is None:  # a version not seen yet: its refreshed_at, in a second round trip
            await self._learn_versions(found)
            read = self._versions(found)
            if read is None:  # a swap came between the two reads: answer from the new version
                if again:
                    return await self.segments_of(user_id, again=False, use_index=use_index)
                read = {e.segment_id: {"version": int(v), "refreshed_at": None, "stale": e.stale} for e, v in found}
        versions.update(read)
        (first_seen,), (count,), meta, orders_card, dated_card = replies[-5:]
        proxies = catalog.enabled_proxies
        sources = {"redis"}
        if not_whole:
            for segment_id, live in (await self._members_in_mysql(user_id, not_whole)).items():
                versions[segment_id] = {
                    "version": live.version,
                    "refreshed_at": live.refreshed_at.isoformat(),
                    "stale": catalog.entries[segment_id].stale,
                }
            sources.add("mysql")
        if proxies:
            if tags_whole(meta, orders_card, dated_card):
                tags, tags_version, tags_at = tags_from_scores(first_seen, count), int(meta[0]), text(meta[1])
            else:
                (tags,), tags_version, tags_at, _ = await self._tags_in_mysql([user_id])
                sources.add("mysql")
            now = utc_now()
            for entry in proxies:
                if entry.is_proxy and matches(entry.proxy_rule, tags, now):
                    versions[entry.segment_id] = {"version": tags_version, "refreshed_at": tags_at, "stale": False}
        ordered = dict(sorted(versions.items()))
        return {
            "user_id": user_id,
            "segments": list(ordered),
            "versions": ordered,
            "stale": catalog.stale_ids,
            "not_computed": not_computed,
            "source": "mysql" if "mysql" in sources else "redis",
        }

    def _versions(self, found: Sequence[tuple[Entry, bytes]]) -> dict[str, dict[str, Any]] | None:
        """``versions`` of the stored segments a user is in: each one's version (as read with its
        membership), ``refreshed_at`` and ``stale``; None when a version's ``refreshed_at`` is not
        known yet. It is read once per worker and version (``_learn_versions``), then remembered,
        so the user's segments cost one more field per segment only after a swap."""
        known = self._as_of
        versions: dict[str, dict[str, Any]] = {}
        for entry, version in found:
            k = known.get(entry.segment_id)
            if k is None or k[0] != version:
                return None
            answer = k[2].get(entry.stale)  # one dict per (version, stale), reused by every answer
            if answer is None:
                answer = k[2][entry.stale] = {"version": int(version), "refreshed_at": k[1], "stale": entry.stale}
            versions[entry.segment_id] = answer
        return versions

    async def _learn_versions(self, found: Sequence[tuple[Entry, bytes]]) -> None:
        """Read the live version and its ``refreshed_at`` of the segments whose version is new here."""
        known = self._as_of
        missing = [e for e, v in found if (k := known.get(e.segment_id)) is None or k[0] != v]
        replies = await self._resp.pipeline(
            [("HMGET", e.keys[1], MetaField.VERSION, MetaField.REFRESHED_AT) for e in missing]
        )
        for entry, (version, refreshed_at) in zip(missing, replies, strict=True):
            if version is not None and refreshed_at is not None:
                known[entry.segment_id] = (version, refreshed_at.decode(), {})

    async def _members_in_mysql(self, user_id: str, segment_ids: Sequence[str]) -> dict[str, LiveVersion]:
        """The segments among ``segment_ids`` the user is in, by MySQL's live versions (and those)."""

        def read(conn: Any) -> dict[str, LiveVersion]:
            store = wiring.mysql_store(conn)
            found = {}
            for segment_id in segment_ids:
                live = store.live_version(segment_id)
                if live is not None and store.members_among(segment_id, live.version, [user_id]):
                    found[segment_id] = live
            return found

        found = await self._mysql.run(read)
        for segment_id in segment_ids:
            self._restorer.schedule(segment_id)
        return found


def _member_commands(entries: Sequence[Entry], user_id: str) -> list[tuple[Any, ...]]:
    """A user's membership of each segment read from its own keys: three commands a segment."""
    commands: list[tuple[Any, ...]] = []
    for entry in entries:
        members_key, meta_key = entry.keys
        commands += [
            ("SISMEMBER", members_key, user_id),
            ("HMGET", meta_key, *_VERSION_AND_SIZE),
            ("SCARD", members_key),
        ]
    return commands
