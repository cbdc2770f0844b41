"""Preview a segment before it goes live: what its next refresh would hold, and change.

``python -m funnel.cli preview`` and ``POST /v1/preview`` both call ``Previewer.preview``
(built by ``funnel.wiring.previewer``). What is previewed is an existing segment (by id), a
query (static or dynamic), or a proxy rule; a query or rule may carry the id of an existing
segment, to see what that segment's next refresh would do with it. The preview:

1. validates exactly as the catalog does (``segment_from_row`` on a row made of what was
   sent, then ``check_query``), so a bad query or rule gets the catalog's message word for
   word; a query is then rendered with the dates of a run now, and its rendered text checked
   again, as the refresh operator does;
2. computes the members: a query runs on HiveServer2 through ``HiveQuery`` (as a refresh
   does) with a time limit (``preview_timeout_seconds``: then it is cancelled on the server)
   and a row cap (``preview_max_rows`` distinct ids: then it is cancelled too and the answer
   says ``capped``); ids are normalized by the refresh's own rule. A proxy rule is evaluated
   over the live tags in MySQL, streamed up to the cap, its size counted exactly;
3. counts the overlap with every stored segment's live Redis set (``SSCAN`` of the smaller
   live sets, ``SMISMEMBER`` of the preview's ids against the larger ones) and with every
   proxy segment (the preview's ids' tags, ``ZMSCORE``, evaluated by each rule);
4. for an existing static or dynamic segment: who would enter and exit, and whether the
   guards (``funnel.core.refresh_guards.guard_violation``) would refuse the result.

Nothing is written anywhere: no Redis key, no MySQL row (not even the run history). Memory
is bounded by the cap: the preview's ids are one set of at most ``preview_max_rows``.

A composite rule (top-level ``union``, ``intersect`` or ``minus``), or an existing composite
segment, is checked against the whole catalog as the catalog checks it (operands known, valid,
stored and enabled; no cycle), then computed as its refresh computes it: from the operands'
live versions in MySQL (``funnel.storage.mysql.composite_source``), streamed up to the cap, with no Hive.

Here: the validation and the whole preview. Step 2 is ``funnel.services.preview_members``, steps 3
and 4 ``funnel.services.preview_comparison``; the request, limits and answer are
``funnel.services.preview_values``.
"""

from __future__ import annotations

import contextlib
import heapq
import json
from collections.abc import Callable
from typing import Any

from funnel.core.composite_graph import check_composites
from funnel.core.errors import PreviewError, UnknownSegment
from funnel.core.query_check import check_query
from funnel.core.segment import Kind, Segment, segment_from_row
from funnel.core.utc_time import utc_now
from funnel.services.catalog import Catalog
from funnel.services.preview_comparison import LiveComparison
from funnel.services.preview_members import MemberReader
from funnel.services.preview_values import Preview, PreviewLimits, PreviewRequest
from funnel.storage.mysql.composite_source import CompositeSource
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.tag_versions import MySqlTagStore
from funnel.storage.redis.segment_sets import RedisSegmentStore
from funnel.storage.redis.tag_sets import RedisTagStore

#: The segment id a query or rule previewed without one is validated and logged under.
PLACEHOLDER_ID = "preview"
#: A rule whose top-level key is one of these is a composite segment's.
COMPOSITE_OPERATORS = ("union", "intersect", "minus")


class Previewer:
    """Previews over the stores (read-only) and HiveServer2. One per preview: ``stop()`` (any
    thread) cancels the query it runs."""

    def __init__(
        self,
        *,
        redis: RedisSegmentStore,
        redis_tags: RedisTagStore,
        mysql: MySqlSegmentStore,
        mysql_tags: MySqlTagStore,
        read_catalog: Callable[[], Catalog],
        hive_connect: Callable[[], Any],
        limits: PreviewLimits,
        composite_source: Callable[[], contextlib.AbstractContextManager[CompositeSource]],
    ) -> None:
        self.mysql = mysql
        self.read_catalog = read_catalog
        self.limits = limits
        self.members = MemberReader(
            mysql_tags=mysql_tags, hive_connect=hive_connect, composite_source=composite_source, limits=limits
        )
        self.comparison = LiveComparison(redis=redis, redis_tags=redis_tags, mysql_tags=mysql_tags, limits=limits)

    # ------------------------------------------------------------------ the whole preview

    def preview(self, request: PreviewRequest, now: Any = None) -> Preview:
        """Validate, compute the members, compare them with the live segments. Writes nothing.

        Raises ``SegmentError`` / ``UserIdError`` (the catalog's and the refresh's messages),
        ``PreviewError``, ``UnknownSegment``, ``PreviewTimeout``, ``HiveQueryError`` (Hive's
        message) or ``HiveUnavailable``.
        """
        now = now or utc_now()
        catalog = self.read_catalog()
        segment, existing = self._segment(request, catalog, now)
        members = self.members.read(segment, now)
        lives = self.mysql.live_versions()
        overlap = self.comparison.overlaps(members, catalog.segments, lives, now)
        against = self.comparison.against_live(segment, existing, members, overlap, lives)
        sample = heapq.nsmallest(self.limits.sample_size, members.ids, key=_id_order)
        return Preview(
            segment_id=request.segment_id,
            kind=segment.kind.value,
            size=members.size,
            capped=members.capped,
            rows_read=members.rows_read,
            null_ids=members.null_ids,
            sample=sample,
            query_seconds=round(members.seconds, 3),
            overlap=overlap,
            against_live=against,
        )

    def stop(self) -> None:
        """Cancel the running query, on HiveServer2 too (from any thread; never raises)."""
        self.members.stop()

    # ------------------------------------------------------------------ 1. validation

    def _segment(self, request: PreviewRequest, catalog: Catalog, now: Any) -> tuple[Segment, Segment | None]:
        """The segment to preview, validated as the catalog validates rows, and the existing
        segment of that id (None: a new one)."""
        known = {segment.segment_id: segment for segment in catalog.segments}
        existing = known.get(request.segment_id) if request.segment_id is not None else None
        if request.query is None and request.rule is None:
            if request.segment_id is None:
                raise PreviewError(
                    "nothing to preview. Fix: give the id of a segment, a query (HiveQL SELECT) or a proxy rule"
                )
            if existing is None:
                for error in catalog.errors:  # its row is invalid: the catalog's own message
                    if error.segment_id == request.segment_id:
                        raise error
                raise UnknownSegment(
                    f"segment {request.segment_id[:80]!r} is not in the catalog. Fix: check the id (the catalog "
                    "is the MySQL table funnel_segments and the Airflow Variable funnel_segments), or preview a "
                    "query or a rule instead"
                )
            if existing.query is not None:
                self._check(existing.segment_id, existing.query)
            return existing, existing
        if request.query is not None and request.rule is not None:
            raise PreviewError("both a query and a rule were given. Fix: preview one of them at a time")
        row: dict[str, Any] = {
            "segment_id": request.segment_id if request.segment_id is not None else PLACEHOLDER_ID,
            "name": existing.name if existing is not None else "preview",
        }
        if request.query is not None:
            replaced = existing if existing is not None and existing.kind in (Kind.STATIC, Kind.DYNAMIC) else None
            row["kind"] = request.kind or (replaced.kind.value if replaced is not None else Kind.DYNAMIC.value)
            row["query"] = request.query
            if row["kind"] == Kind.STATIC.value:
                row["run_at"] = now
            if replaced is not None and replaced.max_shrink_pct is not None:
                row["max_shrink_pct"] = replaced.max_shrink_pct
        else:
            composite = request.kind == Kind.COMPOSITE.value or _composite_rule(request.rule)
            row["kind"] = request.kind or (Kind.COMPOSITE.value if composite else Kind.PROXY.value)
            row["rule"] = request.rule
            if row["kind"] == Kind.COMPOSITE.value and existing is not None and existing.kind is Kind.COMPOSITE:
                row["max_shrink_pct"] = existing.max_shrink_pct
        segment = segment_from_row(row, source="preview")
        if segment.query is not None:
            self._check(segment.segment_id, segment.query)
        if segment.kind is Kind.COMPOSITE:  # against the whole catalog, as the catalog checks it
            others = [s for s in catalog.segments if s.segment_id != segment.segment_id]
            _, refused = check_composites([*others, segment], [e.segment_id for e in catalog.errors])
            for error in refused:
                if error.segment_id == segment.segment_id:
                    raise error
        return segment, existing

    def _check(self, segment_id: str, query: str) -> None:
        check_query(segment_id, query, extra_allowed=self.limits.allowed_functions)


def _composite_rule(raw: object) -> bool:
    """Whether a rule (a dict or JSON text) is a composite segment's: a top-level set operator."""
    if isinstance(raw, str | bytes | bytearray):
        try:
            raw = json.loads(raw)
        except ValueError:
            return False
    return isinstance(raw, dict) and any(key in raw for key in COMPOSITE_OPERATORS)


def _id_order(user_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then the others in text order."""
    if user_id.isdigit():
        return (0, int(user_id), user_id)
    return (1, 0, user_id)
