"""A preview's members compared with what is live now: the overlap with every segment, and, for an
existing stored segment, who would enter and exit and whether the guards would refuse the result.

The overlap with a stored segment is counted against its live Redis set (``SSCAN`` of the smaller
live sets, ``SMISMEMBER`` of the preview's ids against the larger ones); with a proxy segment, over
the preview's ids' tags (``ZMSCORE``), evaluated by each rule. Only reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from funnel.core.proxy_matching import Tags, is_leaf, leaf_ranges, matches
from funnel.core.proxy_rule import Rule, parse_rule
from funnel.core.refresh_guards import guard_violation
from funnel.core.segment import Kind, Segment
from funnel.services.preview_members import Members
from funnel.services.preview_values import AgainstLive, Overlap, PreviewLimits
from funnel.services.restore import redis_serves
from funnel.storage.mysql.segment_version_reader import LiveVersion
from funnel.storage.mysql.tag_versions import MySqlTagStore
from funnel.storage.redis.segment_sets import RedisSegmentStore
from funnel.storage.redis.tag_sets import RedisTagStore

#: Ids per SSCAN step when a live set smaller than the preview is walked.
SCAN_COUNT = 1_000


class LiveComparison:
    """Compares a preview's members with the live segments (Redis, and MySQL for a proxy rule's size)."""

    def __init__(
        self,
        *,
        redis: RedisSegmentStore,
        redis_tags: RedisTagStore,
        mysql_tags: MySqlTagStore,
        limits: PreviewLimits,
    ) -> None:
        self.redis = redis
        self.redis_tags = redis_tags
        self.mysql_tags = mysql_tags
        self.limits = limits

    def overlaps(
        self, members: Members, segments: Sequence[Segment], lives: dict[str, LiveVersion], now: Any
    ) -> list[Overlap]:
        """The overlap with every segment of the catalog, in segment order (the proxy segments last)."""
        exact = not members.capped
        lower_bound = None if exact else f"a lower bound: counted over the {len(members.ids):,} ids read before the cap"
        found: list[Overlap] = []
        proxies: list[Segment] = []
        listed: list[str] | None = None
        for segment in sorted(segments):
            if segment.kind is Kind.PROXY:
                proxies.append(segment)
                continue
            segment_id, kind = segment.segment_id, segment.kind.value
            live = lives.get(segment_id)
            if live is None:
                found.append(Overlap(segment_id, kind, None, None, exact, "not computed yet: no live version"))
                continue
            serving = self.redis.serving(segment_id)
            if not redis_serves(live, serving):
                reason = (
                    f"Redis does not serve its live version {live.version} in full; not compared. Fix: "
                    f"python -m funnel.cli rebuild-redis {segment_id}"
                )
                found.append(Overlap(segment_id, kind, None, live.size, exact, reason))
                continue
            if live.size < len(members.ids):  # walk the smaller live set
                common: set[str] = set()
                for chunk in self.redis.scan_members(segment_id, SCAN_COUNT):
                    common.update(members.ids.intersection(chunk))
                count = len(common)
            else:  # ask the larger live set about the preview's ids
                listed = listed if listed is not None else list(members.ids)
                step = self.limits.batch_size
                count = sum(
                    self.redis.count_live_among(segment_id, listed[start : start + step])
                    for start in range(0, len(listed), step)
                )
            if self.redis.serving(segment_id) != serving:
                reason = "a refresh swapped in a new version while the preview compared; preview again"
                found.append(Overlap(segment_id, kind, None, live.size, exact, reason))
                continue
            found.append(Overlap(segment_id, kind, count, live.size, exact, lower_bound))
        found.extend(self._proxy_overlaps(members, proxies, now, lower_bound))
        return found

    def _proxy_overlaps(
        self, members: Members, proxies: Sequence[Segment], now: Any, lower_bound: str | None
    ) -> list[Overlap]:
        """Each proxy segment's overlap: the preview's ids' live tags (``ZMSCORE``), evaluated by its rule."""
        if not proxies:
            return []
        exact = lower_bound is None
        if not self.redis_tags.whole():
            reason = (
                "Redis does not hold the users' tags in full; not compared. Fix: python -m funnel.cli "
                "rebuild-redis --all"
            )
            return [Overlap(p.segment_id, p.kind.value, None, None, exact, reason) for p in proxies]
        rules = {p.segment_id: parse_rule(p.segment_id, p.rule, self.limits.new_user_days) for p in proxies}
        counts = dict.fromkeys(rules, 0)
        listed = list(members.ids)
        step = self.limits.batch_size
        for start in range(0, len(listed), step):
            for row in self.redis_tags.tags_of(listed[start : start + step]):
                if row is None:
                    continue  # no tags: in no proxy segment
                tags = Tags(row.first_seen, row.order_count)
                for segment_id, rule in rules.items():
                    counts[segment_id] += matches(rule, tags, now)
        found = []
        for proxy in proxies:
            segment_id, kind = proxy.segment_id, proxy.kind.value
            size = self._proxy_size(rules[segment_id], now)
            found.append(Overlap(segment_id, kind, counts[segment_id], size, exact, lower_bound))
        return found

    def _proxy_size(self, rule: Rule, now: Any) -> int:
        """As the API counts it: one tag in Redis (``ZCOUNT``), several in MySQL."""
        if is_leaf(rule):
            ranges = leaf_ranges(rule, now)  # type: ignore[arg-type]
            return sum(self.redis_tags.count_range(tag, low, high) for tag, low, high in ranges)
        return self.mysql_tags.count_matching(rule, now)

    def against_live(
        self,
        segment: Segment,
        existing: Segment | None,
        members: Members,
        overlap: Sequence[Overlap],
        lives: dict[str, LiveVersion],
    ) -> AgainstLive | None:
        """For an existing stored segment: entered, exited and the guards' verdict."""
        stored = (Kind.STATIC, Kind.DYNAMIC, Kind.COMPOSITE)
        if existing is None or existing.kind not in stored or segment.kind not in stored:
            return None
        segment_id = existing.segment_id
        live = lives.get(segment_id)
        live_size = live.size if live is not None else None
        pct = self.limits.max_shrink_pct if segment.max_shrink_pct is None else segment.max_shrink_pct
        guard = guard_violation(segment_id, members.size, live_size, pct, force=False, kind=segment.kind)
        reason = None
        if members.size_exact:
            would_refuse: bool | None = guard is not None
        elif guard is None:  # the true size is at least the cap: if the cap passes, so does it
            would_refuse = False
        else:
            would_refuse = None
            guard = None
        if live is None:
            if members.capped:
                reason = self._capped_reason(members)
                return AgainstLive(None, None, None, None, guard, would_refuse, reason)
            return AgainstLive(None, None, members.size, 0, guard, would_refuse)
        own = next(item for item in overlap if item.segment_id == segment_id)
        entered = exited = None
        if members.capped:
            reason = self._capped_reason(members)
        elif own.overlap is None:
            reason = own.reason
        else:
            entered, exited = members.size - own.overlap, live.size - own.overlap
        return AgainstLive(live.version, live.size, entered, exited, guard, would_refuse, reason)

    def _capped_reason(self, members: Members) -> str:
        cap = f"preview_max_rows ({self.limits.max_rows:,})"
        verdict = "" if members.size_exact else "; the guards' verdict is known only when the cap passes them"
        return (
            f"the preview stopped at {cap} ids, so who would enter and exit is not known{verdict}. Fix: raise "
            "[funnel] preview_max_rows to count them"
        )
