"""What the API answers, over the stores: Redis first, MySQL behind it. Routes and the hot
paths talk only to ``Service``; it holds the clients, the catalog copy and the executors.

Membership answers come from Redis in one round trip (``funnel.api.membership_reads``); a
segment whose Redis keys are not whole is answered from MySQL's live version and restored into
Redis once, in the background. Blocking work (MySQL, restores, previews) runs in worker threads
(``funnel.api.mysql_pool``, ``funnel.api.background_work``); the event loop only awaits Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from funnel import settings, wiring
from funnel.api.background_work import Previews, Restorer
from funnel.api.catalog_copy import CatalogCopy, CatalogView, Entry
from funnel.api.membership_reads import Answer, MembershipReads
from funnel.api.mysql_pool import MySqlPool
from funnel.api.segment_descriptions import SegmentDescriptions
from funnel.api.serving_metrics import (
    DEADLOCK_RETRIES,
    EVENT_BATCH_SECONDS,
    EVENTS,
    ScrapeFigures,
    SegmentFigures,
    exposition,
)
from funnel.core.errors import EventConflict, NotComputed
from funnel.core.proxy_matching import Tags
from funnel.core.segment_revisions import Revision
from funnel.core.user_events import Event
from funnel.core.utc_time import utc_now
from funnel.services.event_ingest import FeedSweeps, ingest
from funnel.services.segment_admin import moves_membership
from funnel.services.webhook_admin import subscribe
from funnel.storage import layout
from funnel.storage.mysql import membership_history, segment_timeline
from funnel.storage.mysql.event_ledger import EventsOutcome
from funnel.storage.mysql.membership_history import AtAnswer, UserHistory
from funnel.storage.mysql.segment_timeline import Attempt, KeptVersion
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.mysql.webhook_store import VersionDeliveries, Webhook

if TYPE_CHECKING:
    from funnel.services.preview_values import Preview, PreviewRequest
    from funnel.services.previewer import Previewer
    from funnel.services.segment_admin import Previewing, SegmentAdmin

T = TypeVar("T")


class Service:
    """The API's view of funnel: the catalog (cached briefly), Redis (async) and MySQL (threads)."""

    def __init__(self) -> None:
        self._redis = wiring.async_redis_client()
        self._resp = wiring.resp_pool()  # the hot paths: membership, tags, a user's segments
        self._mysql = MySqlPool(settings.API_MYSQL_CONNECTIONS)
        self.restorer = Restorer()
        self._previews = Previews(settings.PREVIEW_CONCURRENCY)
        self._catalog = CatalogCopy()
        self._sweeps = FeedSweeps()  # one proxy change log sweep at a time in this worker
        self._membership = MembershipReads(self._resp, self._mysql, self.restorer, self._catalog)
        self._descriptions = SegmentDescriptions(self._redis, self._mysql, self.restorer)
        self._sync_tags: Any = None
        self._sync_feed: Any = None
        self._pool_checked: tuple[float, str | None] | None = None  # (when, the missing pool in words)

    async def close(self) -> None:
        self._catalog.close()
        self.restorer.close()
        self._previews.close()
        self._mysql.close()
        await self._resp.close()
        await self._redis.aclose()

    # ------------------------------------------------------------------ the catalog

    async def catalog(self) -> dict[str, Entry]:
        """The served segments, from the catalog copy (``funnel.api.catalog_copy``)."""
        return (await self._catalog.view()).entries

    async def entry(self, segment_id: str) -> Entry:
        """The served segment, or ``UnknownSegment``."""
        return await self._catalog.entry(segment_id)

    async def describe(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Each segment as the listings show it (``funnel.api.segment_descriptions``)."""
        return await self._descriptions.describe(entries)

    # ------------------------------------------------------------------ membership (Redis first)

    async def check(self, entry: Entry, user_ids: Sequence[str]) -> Answer:
        """Membership of ``user_ids`` (validated, unique) in one segment, in one round trip."""
        return await self._membership.check(entry, user_ids)

    async def segments_of(self, user_id: str) -> dict[str, Any]:
        """Every enabled segment the user is in (``MembershipReads.segments_of``)."""
        return await self._membership.segments_of(user_id)

    # ------------------------------------------------------------------ listings (MySQL)

    async def live_version(self, segment_id: str) -> LiveVersion:
        live = await self._mysql.run(lambda conn: wiring.mysql_store(conn).live_version(segment_id))
        if live is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no members to list")
        return live

    async def page_members(
        self, segment_id: str, version: int, after: str, limit: int
    ) -> tuple[list[str] | None, str | None]:
        """A page of a kept version's members and when that version was made live; (None, None)
        when the version is no longer kept."""

        def read(conn: Any) -> tuple[list[str] | None, str | None]:
            store = wiring.mysql_store(conn)
            kept, refreshed_at = store.kept_refreshed_at(segment_id, version)
            if not kept:
                return None, None
            page = store.page_members(segment_id, version, after, limit)
            return page, refreshed_at.isoformat() if refreshed_at is not None else None

        return await self._mysql.run(read)

    async def page_proxy(self, entry: Entry, after: str, limit: int) -> list[str]:
        rule, now = entry.proxy_rule, utc_now()
        return await self._mysql.run(lambda conn: wiring.mysql_tag_store(conn).page_matching(rule, now, after, limit))

    async def page_changes(
        self, segment_id: str, version: int, change: str, after: str, limit: int
    ) -> list[str] | None:
        """A page of who entered or exited in a kept version; None when it is no longer kept."""

        def read(conn: Any) -> list[str] | None:
            store = wiring.mysql_store(conn)
            if not store.has_version(segment_id, version):
                return None
            return store.page_changes(segment_id, version, change, after, limit)

        return await self._mysql.run(read)

    # ------------------------------------------------------------------ history (MySQL)

    async def kept_versions(self, segment_id: str) -> list[KeptVersion]:
        """The segment's kept versions, oldest first (``segment_timeline.kept_versions``)."""
        return await self._mysql.run(lambda conn: segment_timeline.kept_versions(conn, segment_id))

    async def recent_attempts(self, segment_id: str, limit: int) -> list[Attempt]:
        """The segment's latest refresh attempts, newest first (``segment_timeline.recent_attempts``)."""
        return await self._mysql.run(lambda conn: segment_timeline.recent_attempts(conn, segment_id, limit))

    async def membership_at(self, entry: Entry, user_id: str, at: dt.datetime, now: dt.datetime) -> AtAnswer:
        """Membership as it was at ``at``, from the history (``funnel.storage.mysql.membership_history``)."""
        days, segment_id = settings.CHANGE_HISTORY_DAYS, entry.segment_id

        def read(conn: Any) -> AtAnswer | None:
            if not entry.is_proxy:  # a stored segment: its versions
                return membership_history.membership_at(conn, segment_id, user_id, at, now, days)
            row = wiring.mysql_tag_store(conn).tags_of([user_id]).get(user_id)
            current = None if row is None else Tags(row.first_seen, row.order_count)
            return membership_history.proxy_membership_at(
                conn, segment_id, entry.proxy_rule, user_id, at, now, days, current
            )

        answer = await self._mysql.run(read)
        if answer is None:
            raise NotComputed(f"segment {segment_id!r} is not computed yet; it has no history to answer from")
        return answer

    async def user_history(
        self,
        user_id: str,
        *,
        limit: int,
        segment_id: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> UserHistory:
        """When the user entered and left each segment, within ``change_history_days`` of now."""
        now, days = utc_now(), settings.CHANGE_HISTORY_DAYS
        return await self._mysql.run(
            lambda conn: membership_history.user_history(
                conn, user_id, now=now, days=days, limit=limit, segment_id=segment_id, since=since, until=until
            )
        )

    # ------------------------------------------------------------------ events

    async def ingest(self, events: Sequence[Event]) -> EventsOutcome:
        """Record and apply a batch of events (MySQL in a thread, then Redis); when Redis did not
        take them, the tags are restored into Redis in the background."""
        rules = {entry.segment_id: entry.proxy_rule for entry in (await self._catalog.view()).enabled_proxies}

        def run(conn: Any) -> tuple[EventsOutcome, bool]:
            return ingest(
                events, wiring.event_ledger(conn), self.sync_tags, utc_now(), rules, self.sync_feed, self._sweeps
            )

        began = time.perf_counter()
        try:
            outcome, in_redis = await self._mysql.run(run)  # PartialWrite: 503 naming what MySQL took
        except EventConflict:
            EVENTS.labels("conflicting").inc(len(events))
            raise
        EVENT_BATCH_SECONDS.observe(time.perf_counter() - began)
        if outcome.retries:
            DEADLOCK_RETRIES.inc(outcome.retries)
        for label, count in (
            ("accepted", outcome.accepted),
            ("duplicate", outcome.duplicates),
            ("before_baseline", outcome.before_baseline),
        ):
            if count:
                EVENTS.labels(label).inc(count)
        if not in_redis:
            self.restorer.schedule(layout.TAGS_ID)
        return outcome

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

    # ------------------------------------------------------------------ previews (Hive)

    async def preview(self, request: PreviewRequest) -> dict[str, Any]:
        """What a segment, a query or a rule would hold and change (``Previews``); nothing is written."""
        return await self._previews.run(request)

    # ------------------------------------------------------------------ webhooks (MySQL)

    async def subscribe_webhook(
        self, segment_id: object, url: object, secret: object, from_version: object
    ) -> tuple[Webhook, str]:
        """A new subscription and its signing secret (``funnel.services.webhook_admin.subscribe``
        checks every field)."""
        segments = {sid: entry.segment for sid, entry in (await self.catalog()).items()}
        refuse_private = settings.WEBHOOK_REFUSE_PRIVATE
        return await self._mysql.run(
            lambda conn: subscribe(
                wiring.webhook_store(conn),
                wiring.mysql_store(conn),
                segments,
                segment_id,
                url,
                secret,
                from_version,
                refuse_private=refuse_private,
            )
        )

    async def webhooks(self) -> list[Webhook]:
        return await self._mysql.run(lambda conn: wiring.webhook_store(conn).list())

    async def set_webhook_enabled(self, webhook_id: int, enabled: bool) -> Webhook:
        return await self._mysql.run(lambda conn: wiring.webhook_store(conn).set_enabled(webhook_id, enabled))

    async def remove_webhook(self, webhook_id: int) -> None:
        await self._mysql.run(lambda conn: wiring.webhook_store(conn).remove(webhook_id))

    async def webhook_deliveries(self, webhook_id: int, limit: int) -> tuple[Webhook, list[VersionDeliveries]]:
        """The subscription and how each version went, newest first."""

        def read(conn: Any) -> tuple[Webhook, list[VersionDeliveries]]:
            store = wiring.webhook_store(conn)
            return store.get(webhook_id), store.by_version(webhook_id, limit)

        return await self._mysql.run(read)

    # ------------------------------------------------------------------ definitions

    async def add_segment(
        self, fields: dict[str, Any], actor: str, comment: str | None, preview: bool, force: bool
    ) -> tuple[Revision, Preview | None]:
        """A new segment through the one write path (``funnel.services.segment_admin``), previewed
        first unless ``preview`` is False; its revision and the preview it ran."""
        saved = await self._definitions(
            lambda admin, previewing: admin.add(fields, actor, comment, preview=previewing, force=force), preview
        )
        self._catalog.expire()  # this worker answers with it at once; the others within their TTL
        return saved

    async def edit_segment(
        self,
        segment_id: str,
        changes: dict[str, Any],
        actor: str,
        expect_revision: int | None,
        comment: str | None,
        preview: bool = False,
        force: bool = False,
    ) -> tuple[Revision | None, Preview | None]:
        """The edit's revision (when nothing changed, the latest one; None: there is none) and the
        preview it ran (a change of the query, rule, run_at or enabling, unless ``preview`` is False)."""

        def write(admin: SegmentAdmin, previewing: Previewing | None) -> Revision | None:
            revision = admin.edit(segment_id, changes, actor, expect_revision, comment, preview=previewing, force=force)
            return revision if revision is not None else admin.show(segment_id)[1]

        previews = preview and moves_membership(changes)  # a rename holds no preview slot
        saved = await self._definitions(write, previews)
        self._catalog.expire()
        return saved

    async def _definitions(
        self, write: Callable[[SegmentAdmin, Previewing | None], T], preview: bool
    ) -> tuple[T, Preview | None]:
        """``write(admin, previewing)``: with a preview, in a preview slot on a MySQL connection of
        its own (the pool's are not held while Hive computes); else on the pool."""
        if not preview:
            return await self._mysql.run(lambda conn: write(wiring.segment_admin(conn), None)), None

        def previewed(previewer: Previewer) -> tuple[T, Preview | None]:
            with contextlib.closing(wiring.mysql_connection()) as conn:
                admin = wiring.segment_admin(conn)
                return write(admin, previewer.preview), admin.last_preview

        return await self._previews.call(previewed)

    async def retire_segment(self, segment_id: str, retire: bool, actor: str, comment: str | None) -> Revision:
        """Retire (``retire``) or restore the segment through the one write path."""

        def write(conn: Any) -> Revision:
            admin = wiring.segment_admin(conn)
            return (admin.retire if retire else admin.restore)(segment_id, actor, comment)

        revision = await self._mysql.run(write)
        self._catalog.expire()
        return revision

    async def segment_revisions(self, segment_id: str) -> list[Revision]:
        return await self._mysql.run(lambda conn: wiring.segment_admin(conn).history(segment_id))

    async def segment_dependents(self, segment_id: str) -> list[str]:
        return await self._mysql.run(lambda conn: wiring.segment_admin(conn).dependents(segment_id))

    # ------------------------------------------------------------------ health

    async def ready(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        try:
            await self._redis.ping()
        except Exception as exc:
            problems["redis"] = f"{type(exc).__name__}"
        try:
            await self._mysql.run(lambda conn: conn.ping())
        except Exception as exc:
            problems["mysql"] = f"{type(exc).__name__}"
        return problems

    async def metrics_text(self) -> bytes:
        """A metrics scrape's answer (``funnel.api.serving_metrics``): the counters, the catalog
        copy's figures, whether Redis and MySQL answer now, and the parked webhook batches. The
        exposition is built in a worker thread: at 10,000 segments it is 60,000 lines."""
        problems = await self.ready()
        parked: dict[int, int] = {}
        view = CatalogView()  # a store that does not answer: the scrape still says so
        with contextlib.suppress(Exception):
            parked = await self._mysql.run(lambda conn: wiring.webhook_store(conn).parked_counts())
            view = await self._catalog.view()
        return await asyncio.to_thread(lambda: exposition(scrape_figures(view, problems, parked, utc_now())))

    async def warnings(self) -> list[str]:
        """What keeps segments from being refreshed though the API itself is ready: a missing
        Hive pool (``wiring.hive_pool_problem``), looked at once per ``pool_check_seconds``."""
        now = time.monotonic()
        if self._pool_checked is None or now - self._pool_checked[0] > settings.POOL_CHECK_SECONDS:
            self._pool_checked = (now, await asyncio.to_thread(wiring.hive_pool_problem))
        problem = self._pool_checked[1]
        return [problem] if problem else []


def scrape_figures(
    view: CatalogView, problems: Mapping[str, str], parked: dict[int, int], now: dt.datetime
) -> ScrapeFigures:
    """What a scrape shows besides the counters, from a catalog copy and what the scrape read."""
    segments = []
    for entry in view.entries.values():
        live, summary = view.live.get(entry.segment_id), view.summaries.get(entry.segment_id)
        last = summary.last if summary is not None else None
        segments.append(
            SegmentFigures(
                entry.segment_id,
                entry.segment.kind.value,
                entry.segment.enabled,
                entry.stale,
                size=live.size if live is not None else None,
                live_version=live.version if live is not None else None,
                seconds_since_refresh=(now - live.refreshed_at).total_seconds() if live is not None else None,
                last_run_status=last.status.value if last is not None else None,
            )
        )
    tags = view.tags
    return ScrapeFigures(
        tuple(segments),
        tags_version=tags.version if tags is not None else None,
        tags_users=tags.size if tags is not None else None,
        tags_seconds_since_refresh=(now - tags.refreshed_at).total_seconds() if tags and tags.version else None,
        parked_batches=parked,
        stores_up={store: store not in problems for store in ("redis", "mysql")},
        catalog_invalid_rows=len(view.invalid),
    )
