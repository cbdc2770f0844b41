"""Segments described for the listings (``GET /v1/segments`` and ``/v1/segments/{id}``): kind,
size, version, refreshed_at, enabled, entered and exited, freshness and the last attempt.

Stored segments are described from their Redis meta (MySQL's live version when Redis lost it,
and a restore is scheduled); proxy segments from the live tags, their size counted now.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from funnel import settings, wiring
from funnel.api.background_work import Restorer
from funnel.api.catalog_copy import Entry
from funnel.api.mysql_pool import MySqlPool
from funnel.core.freshness import RunSummary, assess
from funnel.core.proxy_matching import is_leaf, leaf_ranges
from funnel.core.proxy_rule import to_dict
from funnel.core.utc_time import utc_now
from funnel.storage import layout
from funnel.storage.layout import MetaField, TagsMetaField
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.redis.replies import int_or_none, text


class SegmentDescriptions:
    """Describes segments over Redis (async) and MySQL (in threads); proxy sizes cached briefly."""

    def __init__(self, redis: Any, mysql: MySqlPool, restorer: Restorer) -> None:
        self._redis = redis
        self._mysql = mysql
        self._restorer = restorer
        self._proxy_sizes: dict[str, tuple[float, int]] = {}

    async def describe(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Kind, size, version, refreshed_at, enabled (and entered/exited), freshness and the last
        attempt of each segment."""
        stored = [e for e in entries if not e.is_proxy]
        pipe = self._redis.pipeline(transaction=False)
        for entry in stored:
            pipe.hgetall(layout.meta_key(entry.segment_id))
        metas = dict(zip((e.segment_id for e in stored), await pipe.execute(), strict=True))
        missing = [sid for sid, meta in metas.items() if not meta]
        lives: dict[str, LiveVersion | None] = {}
        if missing:

            def read(conn: Any) -> dict[str, LiveVersion | None]:
                store = wiring.mysql_store(conn)
                return {segment_id: store.live_version(segment_id) for segment_id in missing}

            lives = await self._mysql.run(read)
        tags_meta = await self._redis.hgetall(layout.tags_meta_key()) if len(stored) < len(entries) else {}
        freshness = await self.freshness(entries)
        described = []
        for entry in entries:
            segment = entry.segment
            item: dict[str, Any] = {
                "segment_id": segment.segment_id,
                "name": segment.name,
                "kind": segment.kind.value,
                "enabled": segment.enabled,
                "owner": segment.owner,
                "labels": list(segment.labels),
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
                    self._restorer.schedule(segment.segment_id)
            item.update(freshness[segment.segment_id])
            described.append(item)
        return described

    async def freshness(self, entries: Sequence[Entry]) -> dict[str, dict[str, Any]]:
        """Each segment's ``freshness`` (fresh / stale / failing), ``freshness_reason`` and
        ``last_run`` (its latest attempt), from one read of the run history."""
        summaries: dict[str, RunSummary] = {}
        if any(not e.is_proxy for e in entries):
            only = entries[0].segment_id if len(entries) == 1 else None
            summaries = await self._mysql.run(lambda conn: wiring.history_on(conn).summaries(only))
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
            live = await self._mysql.run(lambda conn: wiring.mysql_tag_store(conn).live())
            version, refreshed_at = live.version, live.refreshed_at.isoformat()
            self._restorer.schedule(layout.TAGS_ID)
        return {
            "size": await self.proxy_size(entry),
            "version": version,
            "refreshed_at": refreshed_at,
            "rule": to_dict(entry.proxy_rule),
        }

    async def proxy_size(self, entry: Entry) -> int:
        """One tag: counted in Redis now (``ZCOUNT``). Several: counted in MySQL, cached briefly."""
        now, rule = utc_now(), entry.proxy_rule
        if is_leaf(rule) and (await self._redis.exists(layout.tags_meta_key())):
            pipe = self._redis.pipeline(transaction=False)
            for tag, low, high in leaf_ranges(rule, now):  # type: ignore[arg-type]
                pipe.zcount(getattr(layout.tag_keys(), tag), low, high)
            return sum(int(n) for n in await pipe.execute())
        cached = self._proxy_sizes.get(entry.segment_id)
        if cached and time.monotonic() - cached[0] < settings.PROXY_SIZE_CACHE_SECONDS:
            return cached[1]
        size = await self._mysql.run(lambda conn: wiring.mysql_tag_store(conn).count_matching(rule, now))
        self._proxy_sizes[entry.segment_id] = (time.monotonic(), size)
        return size
