"""The catalog's last-good copy on disk: atomic, unchanged catalogs cost no write, bad files ignored."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

from funnel.storage import catalog_snapshot


def test_round_trip_and_no_rewrite_when_unchanged(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "catalog.json")
    saved = catalog_snapshot.Snapshot([{"segment_id": "a", "run_at": "2026-12-01 09:00:00"}], frozenset({"d1"}))
    assert catalog_snapshot.save(path, saved)
    assert catalog_snapshot.load(path) == saved
    mtime = Path(path).stat().st_mtime_ns
    assert not catalog_snapshot.save(path, saved)
    assert Path(path).stat().st_mtime_ns == mtime
    assert [p.name for p in Path(path).parent.iterdir()] == ["catalog.json"]  # no temp files left


def test_unreadable_or_foreign_files_are_ignored(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert catalog_snapshot.load(str(broken)) is None
    other = tmp_path / "other.json"
    other.write_text('{"format": 99, "rows": []}')
    assert catalog_snapshot.load(str(other)) is None
    assert catalog_snapshot.load(str(tmp_path / "missing.json")) is None


def test_rows_become_json_values() -> None:
    rows = [{"run_at": dt.datetime(2026, 12, 1, 9), "rule": b'{"a":1}', "max_shrink_pct": decimal.Decimal("12.50")}]
    assert catalog_snapshot.json_safe_rows(rows) == [
        {"run_at": "2026-12-01 09:00:00", "rule": '{"a":1}', "max_shrink_pct": 12.5}
    ]
