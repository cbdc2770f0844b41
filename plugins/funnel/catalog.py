"""Read the segment catalog: rows from MySQL's ``funnel_segments``, validated one by one.

A bad row never hides the good ones: each is validated alone and its error is returned
beside the valid segments, for the factory to report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from funnel import layout
from funnel.errors import SegmentError
from funnel.hooks import FunnelMySqlHook
from funnel.segments import Segment, segment_from_row

log = logging.getLogger(__name__)

CATALOG_COLUMNS = ("segment_id", "name", "kind", "query", "run_at", "rule", "enabled")


@dataclass
class Catalog:
    """Valid segments (sorted by id) and the errors of the rows that were not."""

    segments: list[Segment] = field(default_factory=list)
    errors: list[SegmentError] = field(default_factory=list)


def parse_rows(rows: Iterable[Mapping[str, Any]], source: str) -> Catalog:
    catalog = Catalog()
    for row in rows:
        try:
            catalog.segments.append(segment_from_row(row, source))
        except SegmentError as exc:
            catalog.errors.append(exc)
    catalog.segments.sort()
    return catalog


def read_mysql_rows(hook: FunnelMySqlHook) -> list[dict[str, Any]]:
    """All catalog rows, in segment_id order (the catalog is small: metadata, not members)."""
    started = time.monotonic()
    conn = hook.get_conn()
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT {', '.join(CATALOG_COLUMNS)} FROM {layout.SEGMENTS_TABLE} ORDER BY segment_id")
        rows = [dict(zip(CATALOG_COLUMNS, row, strict=False)) for row in cur.fetchall()]
    finally:
        conn.close()
    log.info("funnel: read %d catalog rows from MySQL in %.3fs", len(rows), time.monotonic() - started)
    return rows
