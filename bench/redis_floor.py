"""bench/redis_floor: Redis's own CPU per member for the commands a diff refresh must send.

A diff refresh writes the new version as a new SET (readers keep SISMEMBER on the live one
until the swap), checks every staged id against the live set (who entered), and walks the
live set against the staged one (who exited). Redis runs each command on one thread, so the
sum of these commands' server time per member, times the members, is a floor no client
change can go under. This measures that floor on this machine's Redis (the CPU of its main
thread, from INFO cpu, and the time inside each command, from INFO commandstats) with
funnel's own command sizes and exit-walk script, and sets it beside the fetch floor of the
last ``bench/refresh`` run.

Usage: bench/redis_floor [--members 600000] [--db 14]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins"))

import redis  # noqa: E402

from funnel.services.refresh import EXITED_SCAN  # noqa: E402
from funnel.storage.redis.segment_sets import COMMAND_IDS, RedisSegmentStore  # noqa: E402

SEGMENT = "bench_redis_floor"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=600_000, help="live members (default 600,000: 1M rows at 60%%)")
    default_db = int(os.environ.get("BENCH_REDIS_FLOOR_DB", "14"))
    parser.add_argument(
        "--db", type=int, default=default_db, help=f"Redis database for the scratch keys ({default_db})"
    )
    args = parser.parse_args()
    client = redis.Redis(host="127.0.0.1", port=6379, db=args.db)
    store = RedisSegmentStore(client, staging_ttl_seconds=3600)
    live, staging = f"funnel:{{{SEGMENT}}}:members", f"funnel:{{{SEGMENT}}}:staging"
    exited = f"funnel:{{{SEGMENT}}}:staging:exited"
    client.delete(live, staging, exited)
    n = args.members
    ids = [str(i) for i in range(n)]
    for start in range(0, n, 50_000):  # the live set (not measured)
        client.sadd(live, *ids[start : start + 50_000])
    leaving = set(range(0, n, 100))  # 1% exit and 1% enter, as in bench/refresh
    staged_ids = [str(i) for i in range(n) if i not in leaving] + [str(n + i) for i in range(len(leaving))]

    client.config_resetstat()
    cpu0, started = _main_thread_cpu(client), time.perf_counter()
    for start in range(0, len(staged_ids), 10_000):  # staging as funnel sends it: SADD + SMISMEMBER per 2,000 ids
        store.stage_diff(SEGMENT, staged_ids[start : start + 10_000], against_live=True)
    cpu1, staged_wall = _main_thread_cpu(client), time.perf_counter() - started
    found = sum(len(step) for step in store.staged_exited(SEGMENT, EXITED_SCAN))
    cpu2, walk_wall = _main_thread_cpu(client), time.perf_counter() - started - staged_wall
    stats = client.info("commandstats")
    client.delete(live, staging, exited, f"funnel:{{{SEGMENT}}}:staging:entered")

    def usec(command: str) -> float:
        return float(stats.get(f"cmdstat_{command}", {}).get("usec", 0))

    staged_us, walk_us = (cpu1 - cpu0) * 1e6 / n, (cpu2 - cpu1) * 1e6 / n
    total = staged_us + walk_us
    print(
        f"bench/redis_floor: {n:,} live members, {len(staged_ids):,} staged, {found:,} exited "
        f"(staging {staged_wall:.2f} s, walk {walk_wall:.2f} s wall)"
    )
    print(f"{'Redis main thread CPU per live member':<66} | {'us':>5} | inside the commands (commandstats)")
    label = f"staging: SADD to the new set + SMISMEMBER live, {COMMAND_IDS:,} ids each"
    print(f"{label:<66} | {staged_us:5.2f} | SADD {usec('sadd') / n:.2f} + SMISMEMBER {usec('smismember') / n:.2f}")
    label = f"exit walk: SSCAN {EXITED_SCAN:,} + SMISMEMBER staged, one script a step"
    print(f"{label:<66} | {walk_us:5.2f} | script {usec('evalsha') / n:.2f}")
    print(f"{'sum: the floor of one diff refresh on the one Redis thread':<66} | {total:5.2f} |")
    print()
    results = ROOT / "bench" / ".work" / "refresh" / "results.json"
    measured = _last_refresh(results)
    header = f"{'rows':>5} | {'members':>9} | {'Redis floor':>11} | {'2 x a':>7} | floor / (2 x a)"
    print(f"{header} | {'funnel diff':>11} | Redis CPU in it")
    for rows, members in ((1_000_000, 600_000), (10_000_000, 6_000_000)):
        floor = total * members / 1e6
        a, diff, redis_cpu = measured.get(rows, (None, None, None))
        line = f"{rows:>5.0e} | {members:>9,} | {floor:9.2f} s | "
        if a and diff:
            line += f"{2 * a:5.2f} s | {floor / (2 * a):15.2f} | {diff:9.2f} s | {redis_cpu:.2f} s"
        print(line + ("" if a and diff else "not measured"))
    print(
        f"(2 x a, funnel diff and the Redis process's CPU during it: the fastest runs of the last bench/refresh,\n"
        f" {results.relative_to(ROOT)}; the floor assumes Redis does nothing else and every other stage overlaps)"
    )


def _main_thread_cpu(client: redis.Redis) -> float:
    """CPU seconds (user + system) of Redis's main thread, where every command runs."""
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def _last_refresh(path: Path) -> dict[int, tuple[float, float, float]]:
    """Per table size in a bench/refresh results file: the fastest fetch floor, the fastest
    diff refresh, and the Redis process's CPU seconds during that refresh."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[int, tuple[float, float, float]] = {}
    for rows in data.get("sizes", []):
        floors = [run["wall"] for run in data["runs"] if run["n"] == rows and run["kind"] == "a"]
        diffs = [run for run in data["runs"] if run["n"] == rows and run["kind"] == "c_diff"]
        if floors and diffs:
            best = min(diffs, key=lambda run: run["wall"])
            found[rows] = (min(floors), best["wall"], float(best.get("servers_cpu_s", {}).get("redis", 0.0)))
    return found


if __name__ == "__main__":
    main()
