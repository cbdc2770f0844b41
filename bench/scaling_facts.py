"""The per-member facts docs/scaling.md multiplies: Redis bytes per member, bytes on the wire.

    .venv/bin/python bench/scaling_facts.py [--members 1000000] [--redis-db 3]

- **Redis memory**: a real SET of ``--members`` user ids in three shapes (the bench's small
  decimal ids, 10-digit ids, 36-character UUIDs), built with funnel's own staging commands
  (``SADD`` of 2,000 ids), then ``MEMORY USAGE <key> SAMPLES 0`` (the whole set) and the
  server's ``used_memory`` before and after; the key is deleted at the end.
- **Worker <-> Redis bytes**: the exact RESP bytes of a diff refresh's staging round trips as
  ``RedisStore.stage_diff`` sends them (hiredis-packed ``SADD`` + ``SMISMEMBER`` per 2,000 ids
  and their replies), per member.
- **HiveServer2 -> worker bytes**: bytes received on pyhive's socket
  while pyhive fetches ``--members`` rows of one column (BIGINT, then STRING) in batches of
  10,000, as funnel does.

Needs Redis on 127.0.0.1:6379 and HiveServer2 on 127.0.0.1:10000 (``scripts/services up``).
It writes only the one key ``funnel:{_scaling_facts}:members`` in ``--redis-db``.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import hiredis
import redis
from pyhive import hive

KEY = "funnel:{_scaling_facts}:members"
COMMAND_IDS = 2_000  # funnel.storage.redis.segment_sets.COMMAND_IDS


def shapes(n: int) -> dict[str, Iterator[str]]:
    return {
        "decimal 0..n-1 (bench ids)": (str(i) for i in range(n)),
        "10-digit ids": (str(4_000_000_000 + 7 * i) for i in range(n)),
        "UUID strings (36 chars)": (str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128))) for i in range(n)),
    }


def batches(ids: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for user in ids:
        batch.append(user)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def redis_memory(client: redis.Redis, n: int) -> None:
    print(f"Redis {client.info('server')['redis_version']}: a SET of {n:,} members, built by SADD of {COMMAND_IDS:,}")
    print(
        f"{'ids':30} | {'MEMORY USAGE':>13} | {'B/member':>8} | {'used_memory delta':>17} | B/member"
        " | stage_diff wire B/member"
    )
    for name, ids in shapes(n).items():
        client.delete(KEY)
        time.sleep(0.2)
        before = client.info("memory")["used_memory"]
        sent = received = 0
        for batch in batches(ids, COMMAND_IDS):
            pipe = client.pipeline(transaction=False)
            pipe.sadd(KEY, *batch)
            pipe.execute()
            # What a diff refresh sends for the same batch (stage_diff: SADD staging + SMISMEMBER
            # live) and what comes back (an integer, then one 0/1 flag per id).
            sent += len(hiredis.pack_command(("SADD", "funnel:{segment_id}:staging", *batch)))
            sent += len(hiredis.pack_command(("SMISMEMBER", "funnel:{segment_id}:members", *batch)))
            received += len(f":{len(batch)}\r\n") + len(f"*{len(batch)}\r\n") + 4 * len(batch)
        assert client.scard(KEY) == n
        usage = client.memory_usage(KEY, samples=0)
        delta = client.info("memory")["used_memory"] - before
        print(
            f"{name:30} | {usage:>13,} | {usage / n:8.1f} | {delta:>17,} | {delta / n:8.1f} | "
            f"{sent / n:.1f} sent + {received / n:.1f} received"
        )
    client.delete(KEY)


class CountingSocket(socket.socket):
    """Counts the bytes received (Thrift's ``TSocket.read`` calls ``recv``)."""

    received = 0

    def recv(self, *args: Any) -> bytes:
        data = super().recv(*args)
        CountingSocket.received += len(data)
        return data


def hive_bytes(n: int) -> None:
    socket.socket = CountingSocket  # type: ignore[misc]  # Thrift makes its socket after this
    conn = hive.connect(host="127.0.0.1", port=10000, username="funnel", auth="NONE")
    print(f"HiveServer2 -> client, {n:,} rows of one column, fetchmany(10,000) (pyhive, Thrift binary over SASL)")
    for name, expr in (("BIGINT", "id + 4000000000"), ("STRING (10 digits)", "CAST(id + 4000000000 AS STRING)")):
        cursor = conn.cursor(arraysize=10_000)
        cursor.execute(f"SELECT {expr} AS user_id FROM range({n})")
        start, rows, began = CountingSocket.received, 0, time.monotonic()
        while batch := cursor.fetchmany(10_000):
            rows += len(batch)
        read, took = CountingSocket.received - start, time.monotonic() - began
        assert rows == n
        print(
            f"  {name:20} {read:>12,} B read = {read / n:5.1f} B/row, fetched in {took:.2f} s ({n / took:,.0f} rows/s)"
        )
        cursor.close()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("BENCH_SCALING_REDIS_DB", "3")))
    args = parser.parse_args()
    client = redis.Redis(host="127.0.0.1", port=6379, db=args.redis_db)
    try:
        redis_memory(client, args.members)
    finally:
        client.delete(KEY)
        client.close()
    hive_bytes(args.members)


if __name__ == "__main__":
    main()
