"""What the API answers, over the stores: Redis first, MySQL behind it.

Membership answers come from Redis in one round trip. When a segment's Redis keys are not
whole (Redis restarted empty, or keys were deleted), the answer comes from MySQL's live
version instead (``source: mysql``) and the segment is restored into Redis once, in the
background, under its lock. The same holds for the users' tags behind proxy segments.

Blocking work (MySQL, restores) runs in worker threads; the event loop only awaits Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from funnel import settings, wiring
from funnel.core.composite_graph import composite_operands
from funnel.core.errors import Busy, NotComputed, UnknownSegment
from funnel.core.freshness import RunSummary, assess, past_objective
from funnel.core.proxy_matching import Tags, is_leaf, leaf_ranges, matches
from funnel.core.proxy_rule import Rule, parse_rule, to_dict
from funnel.core.segment import Kind, Segment
from funnel.core.user_events import Event
from funnel.core.utc_time import from_epoch, utc_now
from funnel.services.catalog import serving_catalog
from funnel.services.event_ingest import ingest
from funnel.services.restore import restore_into_redis
from funnel.storage import layout
from funnel.storage.hooks import FunnelMySqlHook
from funnel.storage.layout import MetaField, TagsMetaField
from funnel.storage.mysql import membership_history
from funnel.storage.mysql.membership_history import AtAnswer
from funnel.storage.mysql.run_history import RunHistory
from funnel.storage.mysql.segment_versions import LiveVersion, MySqlSegmentStore
from funnel.storage.redis.replies import int_or_none, text
from funnel.storage.tag_store import EventsOutcome, MySqlTagStore

if TYPE_CHECKING:
    from funnel.services.preview import PreviewRequest

log = logging.getLogger(__name__)

#: The meta fields a membership answer reads (plain text: the hot path encodes them per request).
_SERVED_FIELDS = (MetaField.VERSION.value, MetaField.SIZE.value, MetaField.REFRESHED_AT.value)
_AS_OF_FIELDS = (MetaField.VERSION.value, MetaField.REFRESHED_AT.value)

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A segment as the API serves it."""

    segment: Segment
    rule: Rule | None = None  # proxy segments: the parsed rule
    computed: bool = True  # static and dynamic: MySQL had a live version when the catalog was read
    operands: tuple[str, ...] = ()  # composite segments: the segments its expression names
    stale: bool = False  # past its freshness objective when the catalog was read (``past_objective``)

    @property
    def segment_id(self) -> str:
        return self.segment.segment_id

    @property
    def is_proxy(self) -> bool:
        """Answered at request time from the users' tags (no versions)."""
        return self.segment.kind is Kind.PROXY

    @property
    def proxy_rule(self) -> Rule:
        """The parsed rule of a proxy segment."""
        if self.rule is None:
            raise NotComputed(f"segment {self.segment_id!r} is a {self.segment.kind} segment: it has no proxy rule")
        return self.rule

    @functools.cached_property
    def keys(self) -> tuple[str, str]:
        """The segment's members and meta keys (built once per catalog copy)."""
        return layout.members_key(self.segment_id), layout.meta_key(self.segment_id)


@dataclass(frozen=True)
class Answer:
    """Membership of one or more users, and where it was read."""

    members: dict[str, bool]
    version: int
    refreshed_at: str | None
    source: str  # "redis" or "mysql"
    stale: bool = False  # the segment is past its freshness objective


class MySqlPool:
    """A few MySQL connections shared by the API's worker threads (one per call at a time)."""

    def __init__(self, size: int = 4) -> None:
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._size = size
        self._made = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._take()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            with self._lock:
                self._made -= 1
            raise
        self._idle.put(conn)

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < self._size:
                self._made += 1
                try:
                    return wiring.mysql_connection()
                except BaseException:
                    self._made -= 1
                    raise
        return self._idle.get(timeout=settings.MYSQL_CONNECT_TIMEOUT_SECONDS)

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()


class Restorer:
    """Restores a segment (or the tags) into Redis once, in the background, under its lock."""

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funnel-restore")

    def schedule(self, segment_id: str) -> None:
        with self._lock:
            if segment_id in self._pending:
                return
            self._pending.add(segment_id)
        self._pool.submit(self._restore, segment_id)

    def _restore(self, segment_id: str) -> None:
        try:
            restore_into_redis(segment_id, wiring, wait_seconds=0, by="funnel.api")
        except Exception as exc:
            log.warning(
                "funnel API: restoring %s into Redis failed (%s); the next request tries again", segment_id, exc
            )
        finally:
            with self._lock:
                self._pending.discard(segment_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Previews:
    """Previews (``funnel.services.preview``) in threads of their own, at most ``slots`` at once: the Hive
    work never blocks the event loop and never takes the threads other requests use."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._running = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="funnel-preview")
        self._redis: Any = None
        self._redis_lock = threading.Lock()  # not the slots' lock: the event loop never waits on a connect

    async def run(self, request: PreviewRequest) -> dict[str, Any]:
        """The preview's answer (``Preview.to_dict()``); ``Busy`` when ``slots`` previews are running."""
        with self._lock:
            if self._running >= self.slots:
                raise Busy(
                    f"{self._running} previews are running, as many as preview_concurrency ({self.slots}) allows; "
                    "try again when one has finished, or raise [funnel] preview_concurrency"
                )
            self._running += 1
        try:
            future = self._pool.submit(self._preview, request)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: object) -> None:
        with self._lock:
            self._running -= 1

    def _preview(self, request: PreviewRequest) -> dict[str, Any]:
        with self._redis_lock:
            if self._redis is None:
                self._redis = wiring.redis_client()
            client = self._redis
        with wiring.previewer(redis=client) as previewer:
            return previewer.preview(request).to_dict()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()


class Service:
    """The API's view of funnel: the catalog (cached briefly), Redis (async) and MySQL (threads)."""

    def __init__(self) -> None:
        self.redis = wiring.async_redis_client()
        self.resp = wiring.resp_pool()  # the hot paths: membership, tags, a user's segments
        self.mysql = MySqlPool()
        self.restorer = Restorer()
        self.previews = Previews(settings.PREVIEW_CONCURRENCY)
        self._catalog: dict[str, Entry] = {}
        self._invalid: dict[str, str] = {}
        self._catalog_at = -1.0
        self._rereading: asyncio.Task[None] | None = None
        self._catalog_lock = asyncio.Lock()
        self._proxy_sizes: dict[str, tuple[float, int]] = {}
        self._sync_tags: Any = None
        self._sync_feed: Any = None
        self._split: tuple[list[Entry], list[Entry]] = ([], [])
        self._split_for: dict[str, Entry] | None = None
        self._stale: list[str] = []
        self._as_of: dict[str, tuple[bytes, str, dict[bool, dict[str, Any]]]] = {}  # see ``_versions``
        self._stale_for: dict[str, Entry] | None = None

    async def close(self) -> None:
        self.restorer.close()
        self.previews.close()
        self.mysql.close()
        await self.resp.close()
        await self.redis.aclose()

    async def in_thread(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(work, *args)

    def with_mysql(self, work: Callable[[Any], T]) -> Callable[[], T]:
        def run() -> T:
            with self.mysql.connection() as conn:
                return work(conn)

        return run

    # ------------------------------------------------------------------ the catalog

    async def catalog(self) -> dict[str, Entry]:
        """The served segments. The first call reads them; later, once ``api_catalog_ttl_seconds``
        have passed, a re-read runs in the background while requests go on with the copy they
        have, so a slow or unreachable MySQL never holds up an answer Redis can give."""
        if self._catalog_at < 0:
            async with self._catalog_lock:
                if self._catalog_at < 0:
                    self._catalog, self._invalid = await self.in_thread(_read_catalog)
                    self._catalog_at = time.monotonic()
        elif time.monotonic() - self._catalog_at >= settings.API_CATALOG_TTL_SECONDS and self._rereading is None:
            self._rereading = asyncio.create_task(self._reread_catalog())
        return self._catalog

    async def _reread_catalog(self) -> None:
        try:
            self._catalog, self._invalid = await self.in_thread(_read_catalog)
        except Exception as exc:
            log.warning("funnel API: cannot re-read the catalog (%s); serving the last copy", exc)
        finally:
            self._catalog_at = time.monotonic()  # the next try waits a TTL too
            self._rereading = None

    async def entry(self, segment_id: str) -> Entry:
        entry = (await self.catalog()).get(segment_id)
        if entry is None:
            shown = repr(segment_id[:80])
            if segment_id in self._invalid:
                raise UnknownSegment(
                    f"segment {shown} is not served: its catalog row is invalid ({self._invalid[segment_id]})"
                )
            raise UnknownSegment(f"segment {shown} does not exist")
        return entry

    # ------------------------------------------------------------------ membership

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
        found, (version, size, refreshed_at), card = await self.resp.pipeline(
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
            store = MySqlSegmentStore(conn)
            live = store.live_version(segment_id)
            return live, (store.members_among(segment_id, live.version, list(user_ids)) if live else set())

        live, members = await self.in_thread(self.with_mysql(read))
        if live is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no members to check")
        self.restorer.schedule(segment_id)
        members_of = {u: u in members for u in user_ids}
        return Answer(members_of, live.version, live.refreshed_at.isoformat(), "mysql", stale)

    async def tags(self, user_ids: Sequence[str]) -> tuple[list[Tags | None], int, str | None, str]:
        """The users' tags (None: no tags), the tag version, its refresh time, and the source."""
        replies = await self.resp.pipeline(_tags_commands(user_ids))
        first_seen, orders, meta, orders_card, dated_card = replies
        if _tags_whole(meta, orders_card, dated_card):
            tags = [_tags(fs, count) for fs, count in zip(first_seen, orders, strict=True)]
            return tags, int(meta[0]), text(meta[1]), "redis"
        return await self._tags_in_mysql(user_ids)

    async def _tags_in_mysql(self, user_ids: Sequence[str]) -> tuple[list[Tags | None], int, str | None, str]:
        def read(conn: Any) -> tuple[Any, dict[str, Any]]:
            store = MySqlTagStore(conn)
            live = store.live()
            return live, store.tags_of(list(user_ids), live.version)

        live, rows = await self.in_thread(self.with_mysql(read))
        self.restorer.schedule(layout.TAGS_ID)
        tags = [Tags(rows[u].first_seen, rows[u].order_count) if u in rows else None for u in user_ids]
        return tags, live.version, live.refreshed_at.isoformat(), "mysql"

    async def _check_proxy(self, entry: Entry, user_ids: Sequence[str]) -> Answer:
        tags, version, refreshed_at, source = await self.tags(user_ids)
        now = utc_now()
        members = {u: matches(entry.proxy_rule, t, now) for u, t in zip(user_ids, tags, strict=True)}
        return Answer(members, version, refreshed_at, source, entry.stale)

    async def segments_of(self, user_id: str, again: bool = True) -> dict[str, Any]:
        """Every enabled segment the user is in, read in one pipelined round trip: ``segments``
        (sorted ids), ``versions`` (each of those: version, refreshed_at, stale), ``stale`` (every
        enabled segment past its freshness objective, member or not) and ``not_computed`` (the
        stored segments with no live version yet: nobody is a member of them *yet*)."""
        catalog = await self.catalog()
        stored, proxies = self._enabled_by_kind(catalog)
        commands: list[tuple[Any, ...]] = []
        for entry in stored:
            members_key, meta_key = entry.keys
            commands += [
                ("SISMEMBER", members_key, user_id),
                ("HMGET", meta_key, *_SERVED_FIELDS[:2]),
                ("SCARD", members_key),
            ]
        commands += _tags_commands([user_id])
        replies = await self.resp.pipeline(commands)
        found: list[tuple[Entry, bytes]] = []
        not_whole: list[str] = []
        not_computed: list[str] = []
        for index, entry in enumerate(stored):
            member, (version, size), card = replies[3 * index : 3 * index + 3]
            if version is None and not entry.computed:
                not_computed.append(entry.segment_id)  # never refreshed: nobody is a member yet
            elif version is None or size is None or int(size) != card:
                not_whole.append(entry.segment_id)
            elif member:
                found.append((entry, version))
        versions = self._versions(found)
        if versions is None:  # a version not seen yet: its refreshed_at, in a second round trip
            await self._learn_versions(found)
            versions = self._versions(found)
            if versions is None:  # a swap came between the two reads: answer from the new version
                if again:
                    return await self.segments_of(user_id, again=False)
                versions = {e.segment_id: {"version": int(v), "refreshed_at": None, "stale": e.stale} for e, v in found}
        (first_seen,), (count,), meta, orders_card, dated_card = replies[-5:]
        sources = {"redis"}
        if not_whole:
            for segment_id, live in (await self._members_in_mysql(user_id, not_whole)).items():
                versions[segment_id] = {
                    "version": live.version,
                    "refreshed_at": live.refreshed_at.isoformat(),
                    "stale": catalog[segment_id].stale,
                }
            sources.add("mysql")
        if proxies:
            if _tags_whole(meta, orders_card, dated_card):
                tags, tags_version, tags_at = _tags(first_seen, count), int(meta[0]), text(meta[1])
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
            "stale": self._stale_ids(catalog),
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
        replies = await self.resp.pipeline(
            [("HMGET", e.keys[1], MetaField.VERSION, MetaField.REFRESHED_AT) for e in missing]
        )
        for entry, (version, refreshed_at) in zip(missing, replies, strict=True):
            if version is not None and refreshed_at is not None:
                known[entry.segment_id] = (version, refreshed_at.decode(), {})

    def _stale_ids(self, catalog: dict[str, Entry]) -> list[str]:
        """The enabled segments past their freshness objective, computed once per catalog copy."""
        if self._stale_for is not catalog:
            self._stale = sorted(e.segment_id for e in catalog.values() if e.segment.enabled and e.stale)
            self._stale_for = catalog
        return self._stale

    def _enabled_by_kind(self, catalog: dict[str, Entry]) -> tuple[list[Entry], list[Entry]]:
        """The enabled stored and proxy segments, computed once per catalog copy."""
        if self._split_for is not catalog:
            enabled = [e for e in catalog.values() if e.segment.enabled]
            self._split = ([e for e in enabled if not e.is_proxy], [e for e in enabled if e.is_proxy])
            self._split_for = catalog
        return self._split

    async def _members_in_mysql(self, user_id: str, segment_ids: Sequence[str]) -> dict[str, LiveVersion]:
        """The segments among ``segment_ids`` the user is in, by MySQL's live versions (and those)."""

        def read(conn: Any) -> dict[str, LiveVersion]:
            store = MySqlSegmentStore(conn)
            found = {}
            for segment_id in segment_ids:
                live = store.live_version(segment_id)
                if live is not None and store.members_among(segment_id, live.version, [user_id]):
                    found[segment_id] = live
            return found

        found = await self.in_thread(self.with_mysql(read))
        for segment_id in segment_ids:
            self.restorer.schedule(segment_id)
        return found

    # ------------------------------------------------------------------ describing segments

    async def describe(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Kind, size, version, refreshed_at, enabled (and entered/exited), freshness and the last
        attempt of each segment."""
        stored = [e for e in entries if not e.is_proxy]
        pipe = self.redis.pipeline(transaction=False)
        for entry in stored:
            pipe.hgetall(layout.meta_key(entry.segment_id))
        metas = dict(zip((e.segment_id for e in stored), await pipe.execute(), strict=True))
        missing = [sid for sid, meta in metas.items() if not meta]
        lives: dict[str, LiveVersion | None] = {}
        if missing:

            def read(conn: Any) -> dict[str, LiveVersion | None]:
                store = MySqlSegmentStore(conn)
                return {segment_id: store.live_version(segment_id) for segment_id in missing}

            lives = await self.in_thread(self.with_mysql(read))
        tags_meta = await self.redis.hgetall(layout.tags_meta_key()) if len(stored) < len(entries) else {}
        freshness = await self.freshness(entries)
        described = []
        for entry in entries:
            segment = entry.segment
            item: dict[str, Any] = {
                "segment_id": segment.segment_id,
                "name": segment.name,
                "kind": segment.kind.value,
                "enabled": segment.enabled,
            }
            if entry.operands:
                item["operands"] = list(entry.operands)
            if entry.is_proxy:
                item.update(await self._describe_proxy(entry, tags_meta))
            elif metas.get(segment.segment_id):
                meta = {text(k): text(v) for k, v in metas[segment.segment_id].items()}
                item.update(
                    size=int(meta[MetaField.SIZE]),
                    version=int(meta[MetaField.VERSION]),
                    refreshed_at=meta.get(MetaField.REFRESHED_AT),
                    entered=int_or_none(meta.get(MetaField.ENTERED)),
                    exited=int_or_none(meta.get(MetaField.EXITED)),
                )
            else:
                live = lives.get(segment.segment_id)
                item.update(
                    size=live.size if live else None,
                    version=live.version if live else None,
                    refreshed_at=live.refreshed_at.isoformat() if live else None,
                    entered=live.entered if live else None,
                    exited=live.exited if live else None,
                )
                if live is not None:
                    self.restorer.schedule(segment.segment_id)
            item.update(freshness[segment.segment_id])
            described.append(item)
        return described

    async def freshness(self, entries: Sequence[Entry]) -> dict[str, dict[str, Any]]:
        """Each segment's ``freshness`` (fresh / stale / failing), ``freshness_reason`` and
        ``last_run`` (its latest attempt), from one read of the run history."""
        summaries: dict[str, RunSummary] = {}
        if any(not e.is_proxy for e in entries):
            only = entries[0].segment_id if len(entries) == 1 else None
            summaries = await self.in_thread(self.with_mysql(lambda conn: RunHistory(conn).summaries(only)))
        now, objectives = utc_now(), wiring.freshness_objectives()
        verdicts: dict[str, dict[str, Any]] = {}
        for entry in entries:
            summary = summaries.get(entry.segment_id)
            verdict = assess(entry.segment, summary, now, objectives)
            last = summary.last if summary is not None and not entry.is_proxy else None
            verdicts[entry.segment_id] = {
                "freshness": verdict.state.value,
                "freshness_reason": verdict.reason,
                "last_run": last.as_dict() if last is not None else None,
            }
        return verdicts

    async def _describe_proxy(self, entry: Entry, tags_meta: dict[Any, Any]) -> dict[str, Any]:
        meta = {text(k): text(v) for k, v in tags_meta.items()}
        version, refreshed_at = int_or_none(meta.get(TagsMetaField.VERSION)), meta.get(TagsMetaField.REFRESHED_AT)
        if version is None:  # Redis has no tags: MySQL's live tag version, as membership answers
            live = await self.in_thread(self.with_mysql(lambda conn: MySqlTagStore(conn).live()))
            version, refreshed_at = live.version, live.refreshed_at.isoformat()
            self.restorer.schedule(layout.TAGS_ID)
        return {
            "size": await self.proxy_size(entry),
            "version": version,
            "refreshed_at": refreshed_at,
            "rule": to_dict(entry.rule),
        }

    async def proxy_size(self, entry: Entry) -> int:
        """One tag: counted in Redis now (``ZCOUNT``). Several: counted in MySQL, cached briefly."""
        now = utc_now()
        if is_leaf(entry.rule) and (await self.redis.exists(layout.tags_meta_key())):
            pipe = self.redis.pipeline(transaction=False)
            for tag, low, high in leaf_ranges(entry.rule, now):  # type: ignore[arg-type]
                pipe.zcount(getattr(layout.tag_keys(), tag), low, high)
            return sum(int(n) for n in await pipe.execute())
        cached = self._proxy_sizes.get(entry.segment_id)
        if cached and time.monotonic() - cached[0] < settings.PROXY_SIZE_CACHE_SECONDS:
            return cached[1]
        rule = entry.rule
        size = await self.in_thread(self.with_mysql(lambda conn: MySqlTagStore(conn).count_matching(rule, now)))
        self._proxy_sizes[entry.segment_id] = (time.monotonic(), size)
        return size

    # ------------------------------------------------------------------ listings (MySQL)

    async def live_version(self, segment_id: str) -> LiveVersion:
        live = await self.in_thread(self.with_mysql(lambda conn: MySqlSegmentStore(conn).live_version(segment_id)))
        if live is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no members to list")
        return live

    async def page_members(
        self, segment_id: str, version: int, after: str, limit: int
    ) -> tuple[list[str] | None, str | None]:
        """A page of a kept version's members and when that version was made live; (None, None)
        when the version is no longer kept."""

        def read(conn: Any) -> tuple[list[str] | None, str | None]:
            store = MySqlSegmentStore(conn)
            kept, refreshed_at = store.kept_refreshed_at(segment_id, version)
            if not kept:
                return None, None
            page = store.page_members(segment_id, version, after, limit)
            return page, refreshed_at.isoformat() if refreshed_at is not None else None

        return await self.in_thread(self.with_mysql(read))

    async def page_proxy(self, entry: Entry, after: str, limit: int) -> list[str]:
        rule, now = entry.proxy_rule, utc_now()
        return await self.in_thread(
            self.with_mysql(lambda conn: MySqlTagStore(conn).page_matching(rule, now, after, limit))
        )

    async def page_changes(
        self, segment_id: str, version: int, change: str, after: str, limit: int
    ) -> list[str] | None:
        """A page of who entered or exited in a kept version; None when it is no longer kept."""

        def read(conn: Any) -> list[str] | None:
            store = MySqlSegmentStore(conn)
            if not store.has_version(segment_id, version):
                return None
            return store.page_changes(segment_id, version, change, after, limit)

        return await self.in_thread(self.with_mysql(read))

    # ------------------------------------------------------------------ history (MySQL)

    async def membership_at(self, entry: Entry, user_id: str, at: dt.datetime, now: dt.datetime) -> AtAnswer:
        """Membership as it was at ``at``, from the history (``funnel.storage.mysql.membership_history``)."""
        days, rule, segment_id = settings.CHANGE_HISTORY_DAYS, entry.rule, entry.segment_id

        def read(conn: Any) -> AtAnswer | None:
            if rule is None:  # a stored segment (``entry.is_proxy`` is False)
                return membership_history.membership_at(conn, segment_id, user_id, at, now, days)
            row = MySqlTagStore(conn).tags_of([user_id]).get(user_id)
            current = None if row is None else Tags(row.first_seen, row.order_count)
            return membership_history.proxy_membership_at(conn, segment_id, rule, user_id, at, now, days, current)

        answer = await self.in_thread(self.with_mysql(read))
        if answer is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no history to answer from")
        return answer

    # ------------------------------------------------------------------ events

    async def ingest(self, events: Sequence[Event]) -> tuple[EventsOutcome, bool]:
        """Record and apply a batch of events (MySQL in a thread, then Redis)."""

        _, proxies = self._enabled_by_kind(await self.catalog())
        rules = {entry.segment_id: entry.proxy_rule for entry in proxies}

        def run(conn: Any) -> tuple[EventsOutcome, bool]:
            return ingest(events, wiring.mysql_tag_store(conn), self.sync_tags, utc_now(), rules, self.sync_feed)

        return await self.in_thread(self.with_mysql(run))

    @property
    def sync_feed(self) -> Any:
        """The segments' change feeds over a blocking client, for work done in threads."""
        if self._sync_feed is None:
            self._sync_feed = wiring.segment_feed(wiring.redis_client())
        return self._sync_feed

    @property
    def sync_tags(self) -> Any:
        """The tags' Redis store over a blocking client, for work done in threads."""
        if self._sync_tags is None:
            self._sync_tags = wiring.redis_tag_store(wiring.redis_client())
        return self._sync_tags

    # ------------------------------------------------------------------ health

    async def ready(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        try:
            await self.redis.ping()
        except Exception as exc:
            problems["redis"] = f"{type(exc).__name__}"
        try:
            await self.in_thread(self.with_mysql(lambda conn: conn.ping()))
        except Exception as exc:
            problems["mysql"] = f"{type(exc).__name__}"
        return problems


def _read_catalog() -> tuple[dict[str, Entry], dict[str, str]]:
    """The served segments (with whether each has a live version and is past its freshness
    objective, from the run history), and the invalid rows' errors. Read in the background
    every ``api_catalog_ttl_seconds``, so the hot paths only look the flags up."""
    hook = FunnelMySqlHook(  # the catalog's own short timeouts: a hung MySQL never holds a worker thread long
        connect_timeout=settings.CATALOG_CONNECT_TIMEOUT_SECONDS, read_timeout=settings.CATALOG_READ_TIMEOUT_SECONDS
    )
    catalog = serving_catalog(hook)
    with contextlib.closing(hook.get_conn()) as conn:
        computed = MySqlSegmentStore(conn).segments_with_live_versions()
        summaries = RunHistory(conn).summaries()
    now, objectives = utc_now(), wiring.freshness_objectives()
    entries = {}
    for segment in catalog.segments:
        rule = None
        if segment.kind is Kind.PROXY:
            rule = parse_rule(segment.segment_id, segment.rule, settings.NEW_USER_DAYS)
        operands = composite_operands(segment) if segment.kind is Kind.COMPOSITE else ()
        stale = past_objective(segment, summaries.get(segment.segment_id), now, objectives)
        entries[segment.segment_id] = Entry(
            segment, rule, computed=segment.segment_id in computed, operands=operands, stale=stale
        )
    invalid = {error.segment_id: f"field {error.field!r} {error.problem}" for error in catalog.errors}
    return entries, invalid


def _tags_commands(user_ids: Sequence[str]) -> list[tuple[Any, ...]]:
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


def _tags_whole(meta: Sequence[Any], orders_card: int, dated_card: int) -> bool:
    """Redis serves a tag version and its sets hold as many users as its meta counted."""
    version, _refreshed_at, users, dated = meta
    return version is not None and int_or_none(users) == orders_card and int_or_none(dated) == dated_card


def _tags(first_seen: bytes | None, count: bytes | None) -> Tags | None:
    if count is None:
        return None
    return Tags(None if first_seen is None else from_epoch(float(first_seen)), int(float(count)))
