"""funnel at catalog sizes: a user's segments at 100, 1,000 and 10,000 stored segments.

Run it through ``bench/scale`` (see bench/README.md). For each size, ``bench/serve`` builds its
data with that many stored segments (``big``, 1,000,000 members, and N - 1 small ones, each made
live by funnel's own ``Refresher``, so the user index is written by the swaps as in production),
starts ``serve --workers 2`` and measures ``GET /v1/users/{id}/segments`` at a fixed 1,000
requests/s (open loop, latency from each request's scheduled time) and at saturation. One table
prints every size side by side with the limit (issue 21: p99 at most 5 ms at 10,000 segments).

Not measured here yet (issue 21's other rows): DAG parse and serialization per DAG, the
scheduler's time per slot, worker slots held with deferrable refreshes (see bench/parse for the
parse of 10,000 segments).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / ".work" / "serve" / "results.json"
OUT = ROOT / "bench" / ".work" / "scale.md"
LIMIT_MS = 5.0


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(size: int, fixed_seconds: float) -> dict[str, object]:
    """One ``bench/serve --users-only`` run at ``size`` stored segments; its figures."""
    log(f"{size:,} segments: setup and measure (bench/serve --users-only)")
    env = {**os.environ, "BENCH_SERVE_SEGMENTS": str(size)}
    RESULTS.unlink(missing_ok=True)
    args = [str(ROOT / "bench" / "serve"), "--users-only", "--fixed-seconds", str(fixed_seconds)]
    proc = subprocess.run(args, env=env, check=False)
    if proc.returncode != 0 or not RESULTS.exists():
        raise SystemExit(f"bench/serve at {size:,} segments failed (exit {proc.returncode})")
    results = json.loads(RESULTS.read_text())
    fixed, sat = results["funnel2"]["users_fixed"], results["funnel2"]["users_sat"]
    return {
        "size": size,
        "setup_s": results["setup"]["seconds"],
        "redis_memory": results["setup"].get("redis_used_memory", "?"),
        "p50": fixed["p50"],
        "p99": fixed["p99"],
        "max": fixed["max"],
        "errors": fixed["errors"],
        "overloaded": bool(fixed.get("extra", {}).get("overloaded")),
        "sat": sat["rate"],
        "sat_p99": sat["p99"],
    }


def table(rows: list[dict[str, object]]) -> tuple[str, bool]:
    head = (
        f"{'stored segments':>15} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | {'limit':>7} | "
        f"{'verdict':>7} | {'saturation /s':>13} | {'its p99 ms':>10} | {'setup s':>7} | redis memory"
    )
    lines = [head, "-" * len(head)]
    ok_all = True
    for r in rows:
        ok = float(r["p99"]) <= LIMIT_MS and not r["errors"] and not r["overloaded"]  # type: ignore[arg-type]
        ok_all &= ok
        lines.append(
            f"{r['size']:>15,} | {r['p50']:>7.2f} | {r['p99']:>7.2f} | {r['max']:>7.1f} | {'<= 5 ms':>7} | "
            f"{'PASS' if ok else 'FAIL':>7} | {r['sat']:>13,.0f} | {r['sat_p99']:>10.2f} | {r['setup_s']:>7} | "
            f"{r['redis_memory']}"
        )
    return "\n".join(lines), ok_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="stored segments per run (default 100,1000,10000)")
    parser.add_argument("--fixed-seconds", type=float, default=10.0, help="seconds at 1,000/s per size (default 10)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    began = time.perf_counter()
    rows = [measure(size, args.fixed_seconds) for size in sizes]
    text, ok = table(rows)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True)
    header = (
        f"bench/scale at git {commit.stdout.strip()}, {os.cpu_count()} cores, {time.perf_counter() - began:.0f} s: "
        f"GET /v1/users/{{id}}/segments, serve --workers 2, 1,000 requests/s for {args.fixed_seconds:g} s per size"
    )
    out = f"{header}\n\n{text}\n\n{'PASS' if ok else 'FAIL'}: p99 <= {LIMIT_MS:g} ms at every size\n"
    print(out)
    OUT.write_text(f"```\n{out}```\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
