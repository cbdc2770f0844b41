"""A user's segments (SISMEMBER, HMGET meta, SCARD for each of N segments, as the API sends
them) through ``RespPool`` on a single ``redis-server`` and through ``RespCluster`` on a local
three-master Redis Cluster. Both servers are private (free loopback ports, no persistence,
stopped at the end), so the shared Redis on 6379 is never touched. Prints the wall time and
the client's CPU time per request, the median of ``--repeats`` runs of ``--rounds`` requests."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]

import redis  # noqa: E402
from redis_cluster import LocalRedisCluster, free_ports  # noqa: E402

from funnel.storage import layout  # noqa: E402
from funnel.storage.redis.resp_client import RespCluster, RespPool  # noqa: E402


def commands(segments: int, user: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for number in range(segments):
        segment_id = f"bench_{number}"
        members, meta = layout.members_key(segment_id), layout.meta_key(segment_id)
        out += [("SISMEMBER", members, user), ("HMGET", meta, "version", "size"), ("SCARD", members)]
    return out


def fill(client: Any, segments: int) -> None:
    for number in range(segments):
        segment_id = f"bench_{number}"
        client.sadd(layout.members_key(segment_id), *(f"u{j}" for j in range(100)))
        client.hset(layout.meta_key(segment_id), mapping={"version": 1, "size": 100})


async def measure(make: Any, batch: list[tuple[Any, ...]], rounds: int) -> tuple[float, float]:
    client = make()
    try:
        for _ in range(100):
            await client.pipeline(batch)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            await client.pipeline(batch)
        return (time.perf_counter() - wall) / rounds * 1e3, (time.process_time() - cpu) / rounds * 1e3
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    port = free_ports(1)[0]
    workdir = tempfile.mkdtemp(prefix="funnel-bench-redis-")
    single = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    cluster = LocalRedisCluster().start()
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        fill(client, args.segments)
        fill(redis.RedisCluster(host=cluster.host, port=cluster.ports[0]), args.segments)
        batch = commands(args.segments, "u1")
        cases = {
            "single Redis, RespPool": lambda: RespPool("127.0.0.1", port),
            "3-master cluster, RespCluster": lambda: RespCluster([(cluster.host, cluster.ports[0])]),
        }
        print(f"a user's segments: {args.segments} segments, {len(batch)} commands per request")
        for label, make in cases.items():
            runs = [asyncio.run(measure(make, batch, args.rounds)) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"  {label:32s} {wall:6.3f} ms wall  {cpu:6.3f} ms client CPU per request")
    finally:
        cluster.stop()
        single.terminate()
        single.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
