"""Event batches at once through the serving API, this checkout side by side with a base revision.

Run it through ``bench/events`` (see bench/README.md, "bench/events"). The same load runs against
``python -m funnel.cli serve`` (two workers, a free loopback port) of this checkout and of
``--base REV`` (checked out with ``git worktree add --detach`` into ``bench/.work/events/``,
removed afterwards), at 1, 4 and 16 clients:

- 640 batches of 20 events (12,800 events) over 2,000 overlapping users: orders, sign-ups of
  users new to MySQL racing their orders in other batches, and cancellations (only of 100
  users given 10 orders each first, never more than that, so no count reaches the floor and the
  expected counts hold in any interleaving); a quarter of the batches is sent twice, the second
  time a few batches later, reversed: 800 requests. A proxy segment (``order_count >= 3``) is
  enabled, so every batch also logs its rule crossings, as in production.
- Each client is a thread with one keep-alive HTTP connection taking the next batch from a
  shared queue. A 503 is counted and the batch sent again after its ``Retry-After``, as
  ``funnel.client`` does; any other answer but 200 fails the run.
- Before each run, MySQL database ``funnel_bench_events`` is emptied of events and tags and
  Redis database ``BENCH_EVENTS_REDIS_DB`` (9) set to serve tag version 0 (the database is
  emptied only when it holds nothing or this bench's marker key). After each run every user's
  tags in MySQL and in Redis are compared with the expected ones, and every event must be
  recorded once.

Prints one table (clients | base ev/s | base 503s | this ev/s | this 503s) and the verdict:
no 503 at 16 clients and at least 1.5 x the base's events per second. Exit code 0 when met.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "bench" / ".work" / "events"
PYTHON = ROOT / ".venv" / "bin" / "python"
MYSQL_DB = "funnel_bench_events"
REDIS_DB = int(os.environ.get("BENCH_EVENTS_REDIS_DB", "9"))
REDIS_MARKER = "funnel_bench_events:owner"
MYSQL_URI = f"mysql://root@127.0.0.1:3306/{MYSQL_DB}"
REDIS_URI = f"redis://127.0.0.1:6379?db={REDIS_DB}"
TOKEN = "bench-events-token"
#: The commit before issue 19's defect 2 was fixed (event batches deadlocking each other).
DEFAULT_BASE = "23773c3"
CLIENTS = (1, 4, 16)
BATCHES, BATCH_SIZE, USERS = 640, 20, 2_000
LOYAL, LOYAL_ORDERS = 100, 10  # the users who may cancel, and their orders before each run
PROXY = "bench_three"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
Expected = dict[str, tuple[str | None, int]]


def log(message: str) -> None:
    print(f"[events {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# The load: the same batches for every run.
# ----------------------------------------------------------------------------------------------


def stamp(seconds_ago: int) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def load(seed: int = 19) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], Expected]:
    """The preload (the loyal users' orders), the posts in order (resends included), and each
    user's expected (first_seen, order_count)."""
    rnd = random.Random(seed)
    users = [f"u{n:05}" for n in range(USERS)]
    loyal = users[:LOYAL]
    preload = [
        {"event_id": f"pre-{u}-{k}", "type": "order", "user_id": u, "at": stamp(7200)}
        for u in loyal
        for k in range(LOYAL_ORDERS)
    ]
    expected: dict[str, tuple[dt.datetime | None, int]] = dict.fromkeys(loyal, (None, LOYAL_ORDERS))
    cancels_left = dict.fromkeys(loyal, LOYAL_ORDERS)
    posts: list[list[dict[str, Any]]] = []
    resend: dict[int, list[dict[str, Any]]] = {}
    for b in range(BATCHES):
        batch = []
        for k in range(BATCH_SIZE):
            user = rnd.choice(loyal) if rnd.random() < 0.3 else rnd.choice(users)
            kind = rnd.choice(("order", "order", "signup", "order_cancelled"))
            if kind == "order_cancelled" and not cancels_left.get(user):
                kind = "order"
            ago = rnd.randrange(1, 3600)
            first_seen, orders = expected.get(user, (None, 0))
            if kind == "signup":
                when = NOW - dt.timedelta(seconds=ago)
                first_seen = when if first_seen is None else min(first_seen, when)
            elif kind == "order":
                orders += 1
            else:
                orders -= 1
                cancels_left[user] -= 1
            expected[user] = (first_seen, orders)
            batch.append({"event_id": f"e{b}-{k}", "type": kind, "user_id": user, "at": stamp(ago)})
        posts.append(batch)
        if b in resend:
            posts.append(resend.pop(b))
        if rnd.random() < 0.25:
            resend[b + rnd.randrange(1, 8)] = list(reversed(batch))
    posts += resend.values()
    shown = {u: (None if f is None else f.isoformat(), n) for u, (f, n) in expected.items()}
    return preload, posts, shown


# ----------------------------------------------------------------------------------------------
# The stores: set up once, reset before each run, checked after it (this checkout's funnel).
# ----------------------------------------------------------------------------------------------


class Stores:
    def __init__(self) -> None:
        import MySQLdb

        server = MySQLdb.connect(host="127.0.0.1", port=3306, user="root")
        server.cursor().execute(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")
        server.cursor().execute(f"CREATE DATABASE `{MYSQL_DB}` CHARACTER SET utf8mb4")
        server.close()
        from funnel import wiring
        from funnel.storage import layout
        from funnel.storage.hooks import FunnelMySqlHook
        from funnel.storage.migrations import migrate

        migrate(FunnelMySqlHook())
        self.layout, self.wiring = layout, wiring
        self.redis = wiring.redis_client()
        keys = self.redis.dbsize()
        if keys and not self.redis.exists(REDIS_MARKER):
            raise SystemExit(
                f"Redis database {REDIS_DB} holds {keys} keys that this bench did not write; set "
                "BENCH_EVENTS_REDIS_DB to an unused database"
            )
        self.conn = wiring.mysql_connection()
        cur = self.conn.cursor()
        cur.execute(
            f"INSERT INTO {layout.SEGMENTS_TABLE} (segment_id, name, kind, query, rule) VALUES (%s, %s, %s, %s, %s)",
            (PROXY, "Bench: three orders or more", "proxy", None, '{"tag": "order_count", "op": ">=", "value": 3}'),
        )
        self.conn.commit()

    def reset(self) -> None:
        cur = self.conn.cursor()
        for table in (self.layout.EVENTS_TABLE, self.layout.USER_TAGS_TABLE, self.layout.PROXY_CHANGES_TABLE):
            cur.execute(f"DELETE FROM {table}")
        self.conn.commit()
        self.redis.flushdb()
        self.redis.set(REDIS_MARKER, "bench/events")
        live = self.wiring.mysql_tag_store(self.conn).live()
        self.wiring.redis_tag_store(self.redis).swap(live)  # Redis serves version 0, as a restore sets it up

    def check(self, expected: Expected, events: int) -> str | None:
        """What differs from the expected tags in MySQL or Redis, or events not recorded once; None: exact."""
        users = sorted(expected)
        mysql = self.wiring.mysql_tag_store(self.conn).tags_of(users)
        redis = self.wiring.redis_tag_store(self.redis).tags_of(users)
        for user, in_redis in zip(users, redis, strict=True):
            want = expected[user]
            row = mysql.get(user)
            got = None if row is None else (row.first_seen and row.first_seen.isoformat(), row.order_count)
            if got != want:
                return f"MySQL has {user} as {got}, expected {want}"
            got = (
                None
                if in_redis is None
                else (in_redis.first_seen and in_redis.first_seen.isoformat(), in_redis.order_count)
            )
            if got != want:
                return f"Redis has {user} as {got}, expected {want}"
        cur = self.conn.cursor()
        cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT event_id) FROM {self.layout.EVENTS_TABLE}")
        recorded = cur.fetchone()
        self.conn.commit()
        if tuple(recorded) != (events, events):
            return f"MySQL recorded {recorded[0]} events ({recorded[1]} distinct), expected {events} once each"
        return None


# ----------------------------------------------------------------------------------------------
# The servers: this checkout's and the base's, each its own process group, stopped on every exit.
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(plugins: Path, label: str) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FUNNEL_"))}
    env.update(
        {
            "PYTHONPATH": str(plugins),
            "AIRFLOW_HOME": str(STATE / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW_CONN_FUNNEL_MYSQL": MYSQL_URI,
            "AIRFLOW_CONN_FUNNEL_REDIS": REDIS_URI,
            "AIRFLOW__FUNNEL__API_TOKENS": f"write:{TOKEN}",
        }
    )
    log_path = STATE / f"server-{label}.log"
    argv = [str(PYTHON), "-m", "funnel.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the {label} server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the {label} server did not answer /healthz:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        log(f"{label}: funnel API with 2 workers, pid {proc.pid}, port {port}")
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this bench started: uvicorn and its workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def base_checkout(rev: str) -> Any:
    """``rev`` checked out with ``git worktree add --detach``; removed afterwards."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", rev], cwd=ROOT, capture_output=True, text=True, check=True)
    folder = STATE / f"base-{sha.stdout.strip()}"
    if folder.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), rev], cwd=ROOT, capture_output=True, check=True)
    try:
        yield folder, sha.stdout.strip()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)


# ----------------------------------------------------------------------------------------------
# The clients.
# ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    unavailable: int  # 503 answers (each batch then sent again)


def post(conn: http.client.HTTPConnection, batch: list[dict[str, Any]]) -> tuple[int, float]:
    body = json.dumps({"events": batch}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request("POST", "/v1/events", body=body, headers=headers)
    answer = conn.getresponse()
    text = answer.read()
    if answer.status not in (200, 503):
        raise SystemExit(f"POST /v1/events answered {answer.status}: {text[:300]!r}")
    return answer.status, float(answer.getheader("Retry-After") or 1)


def run(port: int, posts: list[list[dict[str, Any]]], clients: int) -> Run:
    todo: queue.SimpleQueue[list[dict[str, Any]]] = queue.SimpleQueue()
    for batch in posts:
        todo.put(batch)
    unavailable, dropped = [0] * clients, [0] * clients
    failures: list[BaseException] = []

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                try:
                    batch = todo.get_nowait()
                except queue.Empty:
                    return
                while True:
                    try:
                        status, wait = post(conn, batch)
                    except (ConnectionError, http.client.HTTPException):  # a closed keep-alive: send again
                        conn.close()
                        dropped[index] += 1
                        continue
                    if status == 200:
                        break
                    unavailable[index] += 1
                    time.sleep(wait)
        except BaseException as exc:
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if failures:
        raise SystemExit(f"a client failed: {failures[0]!r}")
    if sum(dropped):
        log(f"{sum(dropped)} request(s) sent again on a new connection (the server closed the old one)")
    return Run(seconds, sum(unavailable))


def measure(port: int, label: str, stores: Stores, clients: int) -> Run:
    """One run of the load at ``clients``, on emptied stores, checked exact afterwards."""
    preload, posts, expected = load()
    stores.reset()
    warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(4):  # both workers answer once before the clock starts: the preload, then duplicates
        if post(warm, preload)[0] != 200:
            raise SystemExit(f"{label}: the preload was refused")
    warm.close()
    result = run(port, posts, clients)
    problem = stores.check(expected, len(preload) + BATCHES * BATCH_SIZE)
    if problem:
        raise SystemExit(f"{label}, {clients} clients: counts not exact: {problem}")
    log(
        f"{label}, {clients:>2} clients: {BATCHES * BATCH_SIZE / result.seconds:,.0f} ev/s "
        f"({result.seconds:.2f} s), {result.unavailable} x 503; MySQL and Redis exact"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"the revision to compare with (default {DEFAULT_BASE})")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="concurrency levels (default 1,4,16)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side and level; the best counts (default 2)")
    args = parser.parse_args()
    levels = tuple(int(n) for n in args.clients.split(","))
    STATE.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(STATE / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_FUNNEL_MYSQL": MYSQL_URI,
            "AIRFLOW_CONN_FUNNEL_REDIS": REDIS_URI,
        }
    )
    sys.path.insert(0, str(ROOT / "plugins"))
    import logging

    logging.getLogger("funnel").setLevel(logging.WARNING)
    stores = Stores()
    this_sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "plugins"], cwd=ROOT, capture_output=True, text=True)
    this_label = f"this ({this_sha.stdout.strip()}{' + changes' if dirty.stdout.strip() else ''})"
    # Both servers run side by side and the runs alternate (base, this, base, this, ...), so a change
    # in the machine's other load touches both alike; each cell is the best of --repeats runs.
    base: dict[int, list[Run]] = {n: [] for n in levels}
    this: dict[int, list[Run]] = {n: [] for n in levels}
    with (
        base_checkout(args.base) as (folder, base_sha),
        server(folder / "plugins", f"base-{base_sha}") as base_port,
        server(ROOT / "plugins", "this") as this_port,
    ):
        for clients in levels:
            for _ in range(args.repeats):
                base[clients].append(measure(base_port, f"base ({base_sha})", stores, clients))
                this[clients].append(measure(this_port, this_label, stores, clients))

    def rate(runs: list[Run]) -> float:
        return BATCHES * BATCH_SIZE / min(r.seconds for r in runs)

    def unavailable(runs: list[Run]) -> int:
        return sum(r.unavailable for r in runs)

    print(
        f"bench/events: {BATCHES} batches of {BATCH_SIZE} events over {USERS:,} users, a quarter sent twice "
        f"({len(load()[1])} posts); base {base_sha}, {this_label}; ev/s: the best of {args.repeats} runs; "
        "503s: summed over them"
    )
    print(f"{'clients':>7} | {'base ev/s':>9} | {'base 503s':>9} | {'this ev/s':>9} | {'this 503s':>9} | ratio")
    print("-" * 64)
    for clients in levels:
        b, t = rate(base[clients]), rate(this[clients])
        print(
            f"{clients:>7} | {b:>9,.0f} | {unavailable(base[clients]):>9} | {t:>9,.0f} | "
            f"{unavailable(this[clients]):>9} | {t / b:.2f}x"
        )
    print("counts exact in MySQL and Redis after every run; every event recorded once")
    top = max(levels)
    ratio = rate(this[top]) / rate(base[top])
    ok = unavailable(this[top]) == 0 and ratio >= 1.5
    print(
        f"{'PASS' if ok else 'FAIL'}: at {top} clients {unavailable(this[top])} x 503 (target 0) and "
        f"{ratio:.2f}x the base's events per second (target >= 1.5x)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
