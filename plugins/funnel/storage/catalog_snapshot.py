"""The catalog's last-good copy on local disk (the DAG processor's, and each worker's).

Written after every successful MySQL read whose rows changed, read when MySQL cannot be
reached, so an outage never makes segment DAGs vanish. It also remembers which query
texts already passed the SQL check, so a parse re-checks only new or edited queries.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from funnel.core.segment_revisions import json_digest

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Snapshot:
    """MySQL catalog rows as JSON values, and the digests of queries known to be valid."""

    rows: list[dict[str, Any]]
    checked_queries: frozenset[str]
    #: ``sources_digest`` of the catalog last compared with the revisions (``""``: none yet), so a
    #: parse looks for changes made by hand only when the catalog's sources moved.
    recorded: str = ""


def sources_digest(mysql_rows: list[dict[str, Any]], variable_rows: list[dict[str, Any]]) -> str:
    """The catalog's sources' identity: both lists of rows as JSON values."""
    return json_digest([mysql_rows, variable_rows])


def query_digest(query: str, rules: str = "") -> str:
    """A query's identity for "already checked": its text and the rules it passed under."""
    return hashlib.sha256(f"{rules}\0{query}".encode()).hexdigest()


def json_safe_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with datetimes as ISO text and bytes as text, as JSON can hold them."""
    safe = []
    for row in rows:
        item = {}
        for key, value in row.items():
            if isinstance(value, dt.datetime):
                value = value.isoformat(sep=" ")
            elif isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, decimal.Decimal):
                value = float(value)
            item[key] = value
        safe.append(item)
    return safe


def load(path: str) -> Snapshot | None:
    """The snapshot at ``path``, or None when there is none (or it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("funnel: ignoring unreadable catalog snapshot %s (%s)", path, exc)
        return None
    if data.get("format") != FORMAT_VERSION:
        return None
    return Snapshot(
        rows=list(data["rows"]),
        checked_queries=frozenset(data.get("checked_queries", ())),
        recorded=str(data.get("recorded", "")),
    )


def save(path: str, snapshot: Snapshot) -> bool:
    """Write ``snapshot`` atomically unless the file already holds the same; return whether written."""
    body = json.dumps(
        {
            "format": FORMAT_VERSION,
            "rows": snapshot.rows,
            "checked_queries": sorted(snapshot.checked_queries),
            "recorded": snapshot.recorded,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return _write(path, body)


def _write(path: str, body: str) -> bool:
    """Write ``body`` atomically unless the file already holds it; return whether written."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == body:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalog-", suffix=".json", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("funnel: could not write snapshot %s (%s); parsing goes on without it", path, exc)
        return False
    return True


def subscribed_path(catalog_path: str) -> str:
    """The last-good list of segments with webhook subscriptions, beside the catalog's snapshot."""
    return os.path.join(os.path.dirname(catalog_path) or ".", "webhook_segments.json")


def load_subscribed(path: str) -> list[str] | None:
    """The last-good list of subscribed segments, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    segments = data.get("segments") if isinstance(data, dict) else None
    return [str(s) for s in segments] if isinstance(segments, list) else None


def save_subscribed(path: str, segment_ids: list[str]) -> bool:
    return _write(path, json.dumps({"format": FORMAT_VERSION, "segments": sorted(segment_ids)}))
