"""The change feed's cost: publishing a 1,000,000-member first version and a 10,000-change diff.

Run it through ``bench/feed`` (see bench/README.md, "bench/feed"). MySQL database
``funnel_bench_feed`` is dropped, created and migrated by funnel's own migration; Redis database
``BENCH_FEED_REDIS_DB`` (13) is emptied, only when it holds nothing or this bench's marker key.
Two refreshes through funnel's ``Refresher`` (``wiring.refresher``, the settings' batch sizes)
from a Python source of ids, without the feed; after each, ``refresh.publish_feed`` (what a
refresh runs after its swap) is timed alone, and the stream's ``MEMORY USAGE`` read. The
segment's read path (``SISMEMBER`` on the members key) is probed every millisecond meanwhile.
Prints one table; no targets.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MYSQL_DB = "funnel_bench_feed"
REDIS_DB = int(os.environ.get("BENCH_FEED_REDIS_DB", "13"))
REDIS_MARKER = "funnel_bench_feed:owner"
SEGMENT = "bench_feed"
SIZE = 1_000_000
CHANGES = 10_000  # half enter, half exit


def main() -> int:
    os.environ.update(
        {
            "AIRFLOW_HOME": str(ROOT / "bench" / ".work" / "feed" / "airflow"),
            "AIRFLOW_CONN_FUNNEL_MYSQL": f"mysql://root@127.0.0.1:3306/{MYSQL_DB}",
            "AIRFLOW_CONN_FUNNEL_REDIS": f"redis://127.0.0.1:6379?db={REDIS_DB}",
        }
    )
    sys.path.insert(0, str(ROOT / "plugins"))
    import logging

    import MySQLdb
    import redis

    logging.getLogger("funnel").setLevel(logging.WARNING)
    server = MySQLdb.connect(host="127.0.0.1", port=3306, user="root")
    server.cursor().execute(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")
    server.cursor().execute(f"CREATE DATABASE `{MYSQL_DB}` CHARACTER SET utf8mb4")
    server.close()

    from funnel import settings, wiring
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.services.refresh import RefreshRequest
    from funnel.services.restore import publish_feed
    from funnel.storage import layout
    from funnel.storage.hooks import FunnelMySqlHook
    from funnel.storage.migrations import migrate

    migrate(FunnelMySqlHook())
    client = wiring.redis_client()
    if client.dbsize() and not client.exists(REDIS_MARKER):
        raise SystemExit(f"Redis database {REDIS_DB} holds keys this bench did not write; set BENCH_FEED_REDIS_DB")
    client.flushdb()
    client.set(REDIS_MARKER, "bench/feed")
    probe = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    feed = wiring.segment_feed(client)
    rows = []
    with wiring.refresher(redis_client=client, batch_size=50_000) as refresher:
        refresher.feed = None  # the refresh alone; its publish is timed below
        for day, ids, label in (
            (1, range(0, 2 * SIZE, 2), f"first version, {SIZE:,} entered"),
            (2, _shifted(SIZE, CHANGES // 2), f"diff, {CHANGES // 2:,} entered + {CHANGES // 2:,} exited"),
        ):
            run = RunInfo("bench_feed", f"bench_feed_{day}", dt.datetime(2030, 1, day, 9, tzinfo=dt.UTC))
            lock = wiring.segment_lock(client, SEGMENT, {"run_id": run.run_id})
            began = time.perf_counter()
            refresher.refresh(RefreshRequest(SEGMENT, Kind.DYNAMIC, run, force=True), _batches(ids), lock)
            refresh_seconds = time.perf_counter() - began
            worst = _Probe(probe, layout.members_key(SEGMENT))
            before = client.xlen(layout.feed_key(SEGMENT))
            began = time.perf_counter()
            publish_feed(SEGMENT, refresher.mysql, feed, settings.BATCH_SIZE)
            seconds = time.perf_counter() - began
            worst.stop()
            entries = client.xlen(layout.feed_key(SEGMENT)) - before
            memory = client.memory_usage(layout.feed_key(SEGMENT), samples=0) or 0
            rows.append((label, refresh_seconds, seconds, entries, memory / 1e6, worst.longest * 1000))
    print(
        f"\nfeed_batch_ids {settings.FEED_BATCH_IDS}, feed_max_len {settings.FEED_MAX_LEN}, "
        f"batch_size {settings.BATCH_SIZE} (MySQL page)\n"
    )
    print("| version | refresh s (no feed) | publish s | entries | stream MB (MEMORY USAGE) | longest SISMEMBER ms |")
    print("|---|---|---|---|---|---|")
    for label, refresh_seconds, seconds, entries, mb, longest in rows:
        print(f"| {label} | {refresh_seconds:.2f} | {seconds:.2f} | {entries:,} | {mb:.1f} | {longest:.1f} |")
    return 0


def _shifted(size: int, moved: int) -> list[int]:
    """The first version's ids (even numbers) with ``moved`` left out and ``moved`` new (odd) ones."""
    return [*range(2 * moved, 2 * size, 2), *range(1, 2 * moved, 2)]


def _batches(ids: range | list[int]):  # type: ignore[no-untyped-def]
    def batches():  # type: ignore[no-untyped-def]
        for start in range(0, len(ids), 50_000):
            yield list(ids[start : start + 50_000])

    return batches


class _Probe:
    """``SISMEMBER`` on the segment's members about every millisecond; the longest answer."""

    def __init__(self, client, key: str) -> None:  # type: ignore[no-untyped-def]
        self.client, self.key, self.longest = client, key, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            self.client.sismember(self.key, "2")
            self.longest = max(self.longest, time.perf_counter() - began)
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


if __name__ == "__main__":
    sys.exit(main())
