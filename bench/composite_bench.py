"""A composite segment's refresh, side by side with a query segment's refresh of the same result.

Two operand segments of N members each (``a`` = 0..N-1, ``b`` = N/2..3N/2-1) are made live with
funnel's real Refresher, fed from memory. Then, for ``union``, ``intersect`` and ``minus``:

- **composite**: the refresh a ``CompositeRefreshOperator`` runs: the operands' live versions
  pinned, each read from ``funnel_memberships`` in user id order, the sorted streams merged
  (``funnel.core.sorted_merge``) and streamed through the same staging, diff and swap;
- **peer**: the same Refresher fed the same ids from memory: a query segment whose Hive fetch
  cost nothing. The difference is what computing the set in MySQL costs.

Each is run twice: the first version, and a second one after 1% of ``a`` changed (a diff).
The composite needs no Hive, so the fair comparison for a data engineer is the peer *plus*
the Hive query they would otherwise write (bench/refresh measures that: its "a" column).

Usage: bench/composite [--rows 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MYSQL_DB = "funnel_bench_composite"
REDIS_DB = int(os.environ.get("BENCH_COMPOSITE_REDIS_DB", "7"))
os.environ["AIRFLOW_CONN_FUNNEL_MYSQL"] = f"mysql://root@127.0.0.1:3306/{MYSQL_DB}"
os.environ["AIRFLOW_CONN_FUNNEL_REDIS"] = f"redis://127.0.0.1:6379?db={REDIS_DB}"
os.environ["AIRFLOW__FUNNEL__KEEP_VERSIONS"] = "3"
sys.path.insert(0, str(ROOT / "plugins"))

BATCH = 10_000


def ids(start: int, stop: int) -> Iterator[list[str]]:
    for low in range(start, stop, BATCH):
        yield [str(i) for i in range(low, min(low + BATCH, stop))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="members per operand (default 1,000,000)")
    n = parser.parse_args().rows
    logging.basicConfig(level=logging.WARNING)

    from funnel import wiring
    from funnel.core.composite_expr import parse_expression
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.services.composite_input import composite_batches
    from funnel.services.refresh import RefreshRequest
    from funnel.storage import migrations
    from funnel.storage.hooks import FunnelMySqlHook

    logging.getLogger("funnel").setLevel(logging.WARNING)
    migrations.migrate(FunnelMySqlHook())
    redis = wiring.redis_client()
    redis.flushdb()
    with wiring.mysql_connection() as conn:
        cur = conn.cursor()
        for table in (
            "funnel_memberships",
            "funnel_segment_changes",
            "funnel_segment_versions",
            "funnel_live_versions",
            "funnel_segment_runs",
        ):
            cur.execute(f"DELETE FROM {table}")
        conn.commit()
    slot = iter(range(1_000))
    log = logging.getLogger("bench")

    def refresh(segment_id: str, kind: Kind, batches: object) -> float:
        run = RunInfo("bench", f"bench__{next(slot)}", dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        run = RunInfo(run.dag_id, run.run_id, run.logical_date + dt.timedelta(hours=int(run.run_id[7:])))
        began = time.monotonic()
        with wiring.refresher(redis_client=redis) as refresher, wiring.composite_source() as source:
            lock = wiring.segment_lock(redis, segment_id, {"run_id": run.run_id})
            if callable(batches):
                feed = batches
            else:
                expr = parse_expression(segment_id, batches)
                feed = composite_batches(segment_id, expr, source, run, refresher.note_inputs, BATCH, log)
            refresher.refresh(RefreshRequest(segment_id, kind, run, force=True), feed, lock)
        return time.monotonic() - began

    half, shift = n // 2, n // 100
    print(f"operands a and b: {n:,} members each, overlapping by {n - half:,}", file=sys.stderr)
    refresh("a", Kind.DYNAMIC, lambda: ids(0, n))
    refresh("b", Kind.DYNAMIC, lambda: ids(half, half + n))
    cases = {
        "union": ('{"union": ["a", "b"]}', lambda s: ids(s, half + n)),
        "intersect": ('{"intersect": ["a", "b"]}', lambda s: ids(half, n + s)),
        "minus": ('{"minus": ["a", "b"]}', lambda s: ids(s, half)),
    }
    rows = []
    for name, (rule, result) in cases.items():
        timings = []
        for step, a_from in (("first", 0), ("diff", shift)):
            if step == "diff":
                refresh("a", Kind.DYNAMIC, lambda a_from=a_from: ids(a_from, n + a_from))
            composite = refresh(f"c_{name}", Kind.COMPOSITE, rule)
            peer = refresh(f"p_{name}", Kind.DYNAMIC, lambda a_from=a_from, result=result: result(a_from))
            timings.append((step, composite, peer))
        refresh("a", Kind.DYNAMIC, lambda: ids(0, n))  # back to the start for the next case
        size = int(redis.hget(f"funnel:{{c_{name}}}:meta", "size"))
        peer_size = int(redis.hget(f"funnel:{{p_{name}}}:meta", "size"))
        assert size == peer_size, (name, size, peer_size)
        rows.extend((name, size, *timing) for timing in timings)
    print(f"\ncomposite refresh vs the same refresh fed from memory (a query segment with a free fetch), N = {n:,}")
    print(f"{'expression':<10} {'refresh':<6} {'members':>10} {'composite s':>12} {'peer s':>8} {'ratio':>6}")
    for name, size, step, composite, peer in rows:
        print(f"{name:<10} {step:<6} {size:>10,} {composite:>12.2f} {peer:>8.2f} {composite / peer:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
