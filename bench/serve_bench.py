"""The serving API under load, side by side with the Redis limits it wraps.

Run it through ``bench/serve`` (see bench/README.md). One run:

1. setup (a child process, ``--setup``): the MySQL database ``funnel_bench_serve`` is dropped,
   created and migrated by funnel's own migration; Redis database 4 (BENCH_SERVE_REDIS_DB) is emptied (only when it
   is empty or holds this bench's marker key). One dynamic segment ``big`` with 1,000,000
   members (the even ids 0..1,999,998), 99 small dynamic segments ``s001``..``s099`` and a
   proxy segment ``prx`` (``order_count >= 2``) are written to the catalog with SQL; the
   dynamic ones are made live in both stores by funnel's ``Refresher`` (wiring.refresher) from
   a Python source of ids, the user tags (200,000 users) by funnel's ``TagLoader``. Every
   segment is then checked to be served by Redis in full (MySQL's live version, every member).
2. the limits: a bare redis-py ``SISMEMBER`` loop (one connection, one command per round
   trip, hiredis) and pipelined ``SMISMEMBER`` of 10,000 ids per call, on the same set.
3. the API, ``python -m funnel.cli serve --workers 2`` on a free loopback port, with its own
   connections and token in its environment; the run waits for ``/healthz``, checks a few
   answers against what the setup wrote, warms every worker, then measures:
   - saturation with ``wrk`` (one thread, 16 keep-alive connections, random ids from a Lua
     ``request()``); ``wrk``'s own CPU is recorded to show it is not the limit;
   - a fixed 1,000 requests/s with an open-loop generator (below): latency from each
     request's scheduled send time, so a stall of the server is counted in full;
   - single checks at 1,000/s while the catalog table of the bench's MySQL database is
     write-locked for 6 s (a slow or hung MySQL).
4. peers, measured in the same run: funnel with one worker; a minimal FastAPI app and a plain
   ASGI app doing the same Redis work without funnel's code; funnel's own app with its two
   workers on SO_REUSEPORT sockets; and a what-if: funnel's own app with the changes this
   bench suggests applied at start-up (``MINIMAL_APP``: ``whatif_app``), plugins/ untouched.
5. every process the run started is stopped (also on an error or Ctrl-C); the table goes to
   stdout and ``bench/.work/serve.md``. CPU per process is read from /proc, so the table also
   says where the two cores went (server, its split over workers, Redis, client, others).

The open-loop generator: a sender thread sleeps until each request's scheduled time
(``time.sleep``, not an event loop timer, whose resolution is 1 ms) and writes the request on
an idle keep-alive connection; one reader thread per connection parses the answer (httptools)
and records ``done - scheduled``. When every connection is busy, the request waits in a
backlog and is sent by the first connection to free up, still timed from its schedule. The
generator reports its own lag (sent - scheduled for requests that found a free connection).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
STATE = WORK / "serve"
PYTHON = ROOT / ".venv" / "bin" / "python"

BENCH_DB = os.environ.get("BENCH_SERVE_MYSQL_DB", "funnel_bench_serve")
REDIS_DB = int(os.environ.get("BENCH_SERVE_REDIS_DB", "4"))
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
MYSQL_URI = f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{BENCH_DB}"
REDIS_URI = f"redis://{REDIS_HOST}:{REDIS_PORT}?db={REDIS_DB}"
#: A key only this bench writes: Redis database REDIS_DB is emptied only when it holds this
#: key or nothing at all, so the bench never wipes a database someone else uses.
REDIS_MARKER = "funnel_bench_serve:owner"
TOKEN = "bench-serve-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:24]

BIG = "big"
BIG_SIZE = 1_000_000  # members: the even ids 0 .. 2 * BIG_SIZE - 2
#: The stored segments besides ``big`` (``bench/scale`` sets BENCH_SERVE_SEGMENTS, the stored segments in all).
SMALL_COUNT = int(os.environ.get("BENCH_SERVE_SEGMENTS", "100")) - 1
SMALL = [f"s{k:03d}" for k in range(1, SMALL_COUNT + 1)]  # s{k}: ids below SMALL_SPAN divisible by k + 1
SMALL_SPAN = 20_000
PROXY = "prx"
PROXY_RULE = {"tag": "order_count", "op": ">=", "value": 2}
TAG_USERS = 200_000  # user i: order_count i % 5, first_seen 2025-01-01 + (i % 700) days
BATCH_IDS = 10_000  # ids per members:check (the API's max_check_ids default)

# Targets (the issue), on the 2-core machine.
TARGET_SINGLE_VS_BARE = 0.85
TARGET_P99_FIXED_MS = 2.0
TARGET_P99_SAT_MS = 10.0
TARGET_BATCH_IDS_S = 1_000_000
TARGET_PROXY_VS_DYNAMIC = 1.5
TARGET_USER_SEGMENTS_P99_MS = 5.0
FIXED_RATE = 1_000
FUNNEL_LOADS = ["single_sat", "proxy_sat", "batch_sat", "users_sat", "single_fixed", "proxy_fixed", "users_fixed"]
#: The loads ``--against REV`` measures on the other commit: the same ones in the same order (a
#: load leaves the server warmer or its heap bigger for the next), less the MySQL stall.
AGAINST_LOADS = list(FUNNEL_LOADS)
#: The MySQL stall: the catalog table locked from 2 s to 8 s of a 10 s run at FIXED_RATE (longer
#: than api_catalog_ttl_seconds, so every worker re-reads the catalog during it).
STALL_AFTER, STALL_HOLD, STALL_SECONDS = 2.0, 6.0, 10.0


def log(message: str) -> None:
    print(f"[serve {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def expected_segments(user: int) -> list[str]:
    """What ``users/{user}/segments`` must answer, from how the setup built the segments."""
    found = []
    if user % 2 == 0 and user < 2 * BIG_SIZE:
        found.append(BIG)
    if user < SMALL_SPAN:
        found += [sid for k, sid in enumerate(SMALL, start=1) if user % (k + 1) == 0]
    if user < TAG_USERS and user % 5 >= 2:
        found.append(PROXY)
    return sorted(found)


# ----------------------------------------------------------------------------------------------
# Setup: a child process (it imports Airflow and funnel with the bench's connections).
# ----------------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of every funnel process the bench starts (setup child, API servers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FUNNEL_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT / "plugins"),
            "AIRFLOW_HOME": str(STATE / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW_CONN_FUNNEL_MYSQL": MYSQL_URI,
            "AIRFLOW_CONN_FUNNEL_REDIS": REDIS_URI,
            "AIRFLOW__FUNNEL__API_TOKENS": f"read:{TOKEN}",
        }
    )
    return env


def setup_child(result_path: str) -> None:
    """Build the bench data in MySQL database BENCH_DB and Redis database REDIS_DB."""
    import logging

    import MySQLdb

    logging.getLogger("funnel").setLevel(logging.WARNING)
    steps: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        steps[name] = round(now - started, 2)
        started = now

    if BENCH_DB in ("funnel", "funnel_test"):
        raise SystemExit(f"refusing to use MySQL database {BENCH_DB!r}: it belongs to the demo or the tests")
    server = MySQLdb.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root")
    server.cursor().execute(f"DROP DATABASE IF EXISTS `{BENCH_DB}`")
    server.cursor().execute(f"CREATE DATABASE `{BENCH_DB}` CHARACTER SET utf8mb4")
    server.close()

    from funnel import wiring
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.services.refresh import RefreshRequest
    from funnel.services.restore import redis_serves
    from funnel.storage import layout
    from funnel.storage.hooks import FunnelMySqlHook
    from funnel.storage.migrations import migrate
    from funnel.storage.mysql.segment_versions import MySqlSegmentStore

    step("import")
    migrate(FunnelMySqlHook())
    step("migrate")

    client = wiring.redis_client()
    keys = client.dbsize()
    if keys and not client.exists(REDIS_MARKER):
        raise SystemExit(
            f"Redis database {REDIS_DB} holds {keys} keys that this bench did not write; set BENCH_SERVE_REDIS_DB "
            "to an unused database"
        )
    client.flushdb()
    client.set(REDIS_MARKER, f"bench/serve {SMALL_COUNT}")  # how many small segments (``reusable``)

    conn = wiring.mysql_connection()
    cur = conn.cursor()
    rows = [(BIG, "Bench: 1,000,000 members", "dynamic", "SELECT user_id FROM dw.users", None)]
    rows += [(sid, f"Bench: small {sid}", "dynamic", "SELECT user_id FROM dw.users", None) for sid in SMALL]
    rows.append((PROXY, "Bench: two orders or more", "proxy", None, json.dumps(PROXY_RULE)))
    cur.executemany(
        f"INSERT INTO {layout.SEGMENTS_TABLE} (segment_id, name, kind, query, rule) VALUES (%s, %s, %s, %s, %s)",
        rows,
    )
    conn.commit()
    step("catalog")

    run = RunInfo("bench_serve", "bench_serve", dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC))

    def refresh(refresher: Any, segment_id: str, ids: range) -> None:
        def batches() -> Any:
            for start in range(0, len(ids), 50_000):
                yield list(ids[start : start + 50_000])

        lock = wiring.segment_lock(client, segment_id, {"run_id": "bench_serve"})
        refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, run, force=True), batches, lock)

    with wiring.refresher(redis_client=client, batch_size=50_000) as refresher:
        refresh(refresher, BIG, range(0, 2 * BIG_SIZE, 2))
        step("refresh big")
        for k, sid in enumerate(SMALL, start=1):
            refresh(refresher, sid, range(0, SMALL_SPAN, k + 1))
        step(f"refresh {SMALL_COUNT} small")

    as_of = dt.datetime(2026, 11, 29, 6, tzinfo=dt.UTC)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    def tag_rows() -> Any:
        for start in range(0, TAG_USERS, 50_000):
            yield [(i, base + dt.timedelta(days=i % 700), i % 5) for i in range(start, min(start + 50_000, TAG_USERS))]

    tag_run = RunInfo("bench_serve_tags", "bench_serve", as_of)
    with wiring.tag_loader(redis_client=client, batch_size=50_000) as loader:
        lock = wiring.segment_lock(client, layout.TAGS_ID, {"run_id": "bench_serve"})
        loader.load(tag_run, as_of, tag_rows, lock, force=True)
    step("tags")

    store = MySqlSegmentStore(conn)
    sizes = {}
    for sid in [BIG, *SMALL]:
        live = store.live_version(sid)
        serving = wiring.redis_store(client).serving(sid)
        if live is None or not redis_serves(live, serving):
            raise SystemExit(f"setup: segment {sid} is not served whole by Redis (MySQL {live}, Redis {serving})")
        sizes[sid] = live.size
    tags_serving = wiring.redis_tag_store(client).serving()
    if tags_serving[1] != TAG_USERS:
        raise SystemExit(f"setup: Redis serves {tags_serving[1]} users' tags, not {TAG_USERS}")
    conn.close()
    step("verify")
    Path(result_path).write_text(
        json.dumps(
            {
                "steps": steps,
                "big": sizes[BIG],
                "small_total": sum(sizes[s] for s in SMALL),
                "tags": tags_serving[1],
                "redis_used_memory": client.info("memory")["used_memory_human"],
            }
        )
    )


def run_setup() -> dict[str, Any]:
    STATE.mkdir(parents=True, exist_ok=True)
    result = STATE / "setup.json"
    result.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(STATE / "setup.log", "w") as out:
        proc = subprocess.run(
            [str(PYTHON), str(Path(__file__).resolve()), "--setup", str(result)],
            env=child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300 + SMALL_COUNT // 10,  # about 20 ms a small segment's refresh
        )
    if proc.returncode != 0 or not result.exists():
        tail = (STATE / "setup.log").read_text().splitlines()[-20:]
        raise SystemExit("setup failed:\n" + "\n".join(tail))
    data = json.loads(result.read_text())
    data["seconds"] = round(time.perf_counter() - started, 1)
    return data


# ----------------------------------------------------------------------------------------------
# Processes the bench starts: tracked, and stopped on every exit path.
# ----------------------------------------------------------------------------------------------


class Processes:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the process group this bench created (uvicorn and its workers), then SIGKILL."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Workers left behind by a killed supervisor are still in its process group: end them too,
        # each by its id (the group's id is the supervisor's, which this bench started).
        for pid in group_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.started):
            self.stop(proc)


PROCS = Processes()


def group_members(pgid: int) -> list[int]:
    """The processes still in process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 60.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer,
        ):
            if answer.status == 200:
                return time.perf_counter() - started
        time.sleep(0.1)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def start_funnel(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log_path = STATE / f"funnel-{workers}w.log"
    argv = [str(PYTHON), "-m", "funnel.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = PROCS.start([*argv, "--workers", str(workers)], child_env(), log_path)
    seconds = wait_healthy(proc, port, log_path)
    log(f"funnel API, {workers} worker(s), pid {proc.pid}, port {port}: /healthz after {seconds:.1f} s")
    return proc, port


def start_funnel_at(rev: str, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """``funnel.cli serve`` of the commit ``rev`` (``--against``): its ``plugins/`` exported with
    ``git archive`` into the bench's state folder, run with the same Python, data and settings."""
    sha = subprocess.run(["git", "rev-parse", "--short=10", rev], cwd=ROOT, capture_output=True, text=True, check=True)
    folder = STATE / f"rev-{sha.stdout.strip()}"
    if not (folder / "plugins" / "funnel").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", rev, "plugins"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    port = free_port()
    log_path = STATE / f"funnel-at-{sha.stdout.strip()}-{workers}w.log"
    env = child_env()
    env["PYTHONPATH"] = env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(folder / "plugins")
    argv = [str(PYTHON), "-m", "funnel.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = PROCS.start([*argv, "--workers", str(workers)], env, log_path)
    seconds = wait_healthy(proc, port, log_path)
    log(f"funnel API at {rev}, {workers} worker(s), pid {proc.pid}, port {port}: /healthz after {seconds:.1f} s")
    return proc, port


MINIMAL_APP = r'''
"""Peers of the funnel API for bench/serve: the same Redis work without funnel's code (written by
bench/serve_bench.py; run with uvicorn like funnel.cli serve: uvloop, httptools, no access log).

- ``app`` (FastAPI):
  - ``GET /v1/segments/{sid}/members/{uid}``: the single check's pipeline (SISMEMBER, HMGET meta,
    SCARD) through redis-py, as funnel's ``Service.check``;
  - ``GET /one/segments/{sid}/members/{uid}``: one SISMEMBER, no pipeline (meta known in advance);
  - ``GET /v1/users/{uid}/segments``: funnel's ``segments_of`` pipeline (SISMEMBER, HMGET,
    SCARD per segment, then the tags) through redis-py;
  - ``GET /raw/users/{uid}/segments``: the same SISMEMBERs and tag reads written as one buffer on
    a plain asyncio connection and parsed with hiredis (segment meta trusted, as if cached).
- ``raw_app`` (plain ASGI, no framework): the single check's pipeline through redis-py.
"""
import asyncio
import gc
import hmac
import os
from contextlib import asynccontextmanager

import hiredis
import orjson
import redis.asyncio
from fastapi import FastAPI, Request
from fastapi.responses import Response

TOKEN = os.environ["BENCH_TOKEN"].encode()
HOST, PORT, DB = os.environ["BENCH_REDIS_HOST"], int(os.environ["BENCH_REDIS_PORT"]), int(os.environ["BENCH_REDIS_DB"])
SEGMENTS = os.environ["BENCH_SEGMENTS"].split(",")
PROXY_MIN_ORDERS = int(os.environ["BENCH_PROXY_MIN_ORDERS"])
TAGS = ("funnel:{_tags}:first_seen", "funnel:{_tags}:order_count", "funnel:{_tags}:meta")


def key(segment_id, suffix):
    return f"funnel:{{{segment_id}}}:{suffix}"


def authorized(header):
    return hmac.compare_digest((header or "")[7:].encode(), TOKEN)


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        arg = arg.encode() if isinstance(arg, str) else arg
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


class RawRedis:
    """Plain asyncio connections to Redis: one buffer out, replies parsed by hiredis."""

    def __init__(self):
        self.idle = []

    async def call(self, payload, replies):
        conn = self.idle.pop() if self.idle else await self.connect()
        reader, writer, parser = conn
        try:
            writer.write(payload)
            out = []
            while len(out) < replies:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    out.append(reply)
        except BaseException:
            writer.close()
            raise
        self.idle.append(conn)
        return out

    async def connect(self):
        reader, writer = await asyncio.open_connection(HOST, PORT)
        writer.write(resp("SELECT", str(DB)))
        await reader.readline()
        return reader, writer, hiredis.Reader()


@asynccontextmanager
async def lifespan(app):
    app.state.redis = redis.asyncio.Redis(host=HOST, port=PORT, db=DB)
    app.state.raw = RawRedis()
    gc.freeze()
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


async def single_pipeline(client, segment_id, user_id):
    members = key(segment_id, "members")
    pipe = client.pipeline(transaction=False)
    pipe.sismember(members, user_id)
    pipe.hmget(key(segment_id, "meta"), "version", "size", "refreshed_at")
    pipe.scard(members)
    found, (version, size, refreshed_at), card = await pipe.execute()
    return orjson.dumps({"segment_id": segment_id, "user_id": user_id, "member": bool(found),
                         "version": int(version), "refreshed_at": refreshed_at.decode(),
                         "source": "redis" if int(size) == card else "mysql"})


@app.get("/v1/segments/{segment_id}/members/{user_id}")
async def is_member(segment_id: str, user_id: str, request: Request) -> Response:
    if not authorized(request.headers.get("authorization")):
        return Response(status_code=401)
    body = await single_pipeline(request.app.state.redis, segment_id, user_id)
    return Response(body, media_type="application/json", headers={"X-Funnel-Source": "redis"})


@app.get("/one/segments/{segment_id}/members/{user_id}")
async def is_member_one(segment_id: str, user_id: str, request: Request) -> Response:
    if not authorized(request.headers.get("authorization")):
        return Response(status_code=401)
    found = await request.app.state.redis.sismember(key(segment_id, "members"), user_id)
    body = orjson.dumps({"segment_id": segment_id, "user_id": user_id, "member": bool(found), "source": "redis"})
    return Response(body, media_type="application/json", headers={"X-Funnel-Source": "redis"})


@app.get("/v1/users/{user_id}/segments")
async def user_segments(user_id: str, request: Request) -> Response:
    if not authorized(request.headers.get("authorization")):
        return Response(status_code=401)
    pipe = request.app.state.redis.pipeline(transaction=False)
    for segment_id in SEGMENTS:
        pipe.sismember(key(segment_id, "members"), user_id)
        pipe.hmget(key(segment_id, "meta"), "version", "size")
        pipe.scard(key(segment_id, "members"))
    pipe.zscore(TAGS[0], user_id)
    pipe.zscore(TAGS[1], user_id)
    pipe.hget(TAGS[2], "version")
    replies = await pipe.execute()
    found = [s for i, s in enumerate(SEGMENTS) if replies[3 * i] and int(replies[3 * i + 1][1]) == replies[3 * i + 2]]
    count = replies[-2]
    if count is not None and count >= PROXY_MIN_ORDERS:
        found.append("prx")
    body = orjson.dumps({"user_id": user_id, "segments": sorted(found), "source": "redis"})
    return Response(body, media_type="application/json", headers={"X-Funnel-Source": "redis"})


@app.get("/raw/users/{user_id}/segments")
async def user_segments_raw(user_id: str, request: Request) -> Response:
    """The same 305 reads as funnel's segments_of (membership, and whether each segment and the tags
    are whole in Redis), packed by hiredis into one buffer and parsed by hiredis."""
    if not authorized(request.headers.get("authorization")):
        return Response(status_code=401)
    commands = []
    for segment_id in SEGMENTS:
        members = key(segment_id, "members")
        commands += [("SISMEMBER", members, user_id), ("HMGET", key(segment_id, "meta"), "version", "size"),
                     ("SCARD", members)]
    commands += [("ZSCORE", TAGS[0], user_id), ("ZSCORE", TAGS[1], user_id),
                 ("HMGET", TAGS[2], "version", "users", "with_first_seen"), ("ZCARD", TAGS[1]), ("ZCARD", TAGS[0])]
    replies = await request.app.state.raw.call(b"".join(map(hiredis.pack_command, commands)), len(commands))
    found = []
    for index, segment_id in enumerate(SEGMENTS):
        member, (version, size), card = replies[3 * index : 3 * index + 3]
        if version is None or size is None or int(size) != card:
            return Response(status_code=503)  # funnel would read MySQL here; never happens in the bench
        if member:
            found.append(segment_id)
    count = replies[-4]
    if count is not None and float(count) >= PROXY_MIN_ORDERS:
        found.append("prx")
    body = orjson.dumps({"user_id": user_id, "segments": sorted(found), "source": "redis"})
    return Response(body, media_type="application/json", headers={"X-Funnel-Source": "redis"})


async def raw_app(scope, receive, send):
    """The single check as a plain ASGI callable: what the framework costs, by difference."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                raw_app.redis = redis.asyncio.Redis(host=HOST, port=PORT, db=DB)
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await raw_app.redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    parts = scope["path"].split("/")
    if not hmac.compare_digest(header[7:], TOKEN) or len(parts) != 6:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = await single_pipeline(raw_app.redis, parts[3], parts[5])
    headers = [(b"content-type", b"application/json"), (b"x-funnel-source", b"redis")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def whatif_app():
    """funnel's own ``create_app()`` with changes bench/serve suggests, for measuring them without
    editing plugins/ (BENCH_PATCH, comma-separated):

    - ``hiredis``: redis.asyncio connections pack commands with ``hiredis.pack_command`` (C) instead
      of redis-py's Python packer (a ``connection_class`` in wiring.async_redis_client);
    - ``ids``: ``user_ids_of`` checks all ids with one regex over the ids joined by newlines
      (api/request_inputs.py, as api/member_routes.py calls it);
    - ``catalog``: past ``api_catalog_ttl_seconds`` the catalog is re-read in the background while
      requests go on with the copy in hand (for a ``Service.catalog`` that makes every request
      of the worker wait for the re-read; api/catalog_copy.py re-reads in the background already);
    - ``fast``: ``GET /v1/segments/{id}/members/{user}`` answered by a plain ASGI function in front
      of FastAPI, with funnel's own auth, Service and member_answer; anything unusual (an error, a
      missing token) falls through to the FastAPI app, which answers it as before.
    """
    import re

    from funnel import settings
    from funnel.api import app as api
    from funnel.api import fast_paths, member_routes
    from funnel.api.auth import require, scope_of
    from funnel.api.error_answers import JSON
    from funnel.api.service import Service
    from funnel.core import ids

    import inspect

    patches = set(os.environ.get("BENCH_PATCH", "").split(",")) - {""}
    # Apply only what still fits the code under test, and say what was applied.
    if "fast" in patches and hasattr(fast_paths, "FastPaths"):
        patches.discard("fast")  # the API answers these paths before FastAPI already
    if "ids" in patches and not hasattr(member_routes, "user_ids_of"):
        patches.discard("ids")
    if "catalog" in patches and (
        not all(name in inspect.getsource(Service) for name in ("_catalog_at", "return self._catalog"))
        or "create_task" in inspect.getsource(Service.catalog)  # the API re-reads in the background already
    ):
        patches.discard("catalog")
    report = os.environ.get("BENCH_PATCH_REPORT")
    if report:
        with open(report, "w") as out:
            out.write(",".join(sorted(patches)))
    if "hiredis" in patches:
        from redis.asyncio.connection import Connection

        Connection.pack_command = lambda self, *args: [hiredis.pack_command(args)]
        Connection.pack_commands = lambda self, commands: [b"".join(hiredis.pack_command(tuple(c)) for c in commands)]
    if "ids" in patches:
        one = rf"[!-~](?:[ -~]{{0,{ids.USER_ID_MAX_LENGTH - 2}}}[!-~])?"
        every = re.compile(rf"(?:{one}\n)*{one}")
        original = member_routes.user_ids_of

        def ids_of(body):
            ids = body.get("user_ids") if isinstance(body, dict) else None
            if isinstance(ids, list) and ids and len(ids) <= settings.MAX_CHECK_IDS:
                try:
                    whole = every.fullmatch("\n".join(ids)) is not None
                except TypeError:
                    whole = False
                if whole:
                    return list(dict.fromkeys(ids))
            return original(body)

        member_routes.user_ids_of = ids_of
    if "catalog" in patches:
        import asyncio
        import time

        from funnel.api.service import Service

        reread = Service.catalog

        async def catalog(self):
            """Stale while revalidate: past the TTL, re-read in the background and answer from the
            copy in hand; only the very first read is awaited."""
            if self._catalog_at > 0 and time.monotonic() - self._catalog_at >= settings.API_CATALOG_TTL_SECONDS:
                task = getattr(self, "_bench_reread", None)
                if task is None or task.done():
                    self._bench_reread = asyncio.get_running_loop().create_task(reread(self))
                return self._catalog
            return await reread(self)

        Service.catalog = catalog
    inner = api.create_app()
    if "fast" not in patches:
        return inner

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            parts = scope["path"].split("/", 5)
            if len(parts) == 6 and parts[1] == "v1" and parts[2] == "segments" and parts[4] == "members":
                state = inner.state
                try:
                    header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
                    require("read", scope_of(header, state.tokens))
                    service = getattr(state, "service", None)
                    if service is None:
                        async with state.service_lock:
                            service = getattr(state, "service", None) or Service()
                            state.service = service
                    body, source = await member_routes.member_answer(service, parts[3], parts[5])
                    response = JSON(body, headers={"X-Funnel-Source": source})
                except Exception:
                    pass  # FastAPI answers it, errors included, as it does today
                else:
                    await response(scope, receive, send)
                    return
        await inner(scope, receive, send)

    return app


def serve_reuseport(target, port, workers, factory):
    """``workers`` uvicorn processes, each with its own listening socket on the same port
    (SO_REUSEPORT): the kernel spreads connections over the sockets by their address hash,
    instead of letting whichever worker wakes first accept them from one shared socket."""
    import socket
    import sys

    import uvicorn

    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(2048)
            config = uvicorn.Config(target, factory=factory, loop="uvloop", http="httptools", access_log=False,
                                    log_level="warning")
            uvicorn.Server(config).run(sockets=[sock])
            sys.exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    import sys

    serve_reuseport(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "factory")
'''


def start_peer(workers: int, target: str = "minimal_app:app") -> tuple[subprocess.Popen[bytes], int]:
    folder = STATE / "minimal"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "minimal_app.py").write_text(MINIMAL_APP)
    port = free_port()
    name = target.split(":")[1]
    log_path = STATE / f"peer-{name}-{workers}w.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FUNNEL_"))}
    env.update(
        {
            "BENCH_TOKEN": TOKEN,
            "BENCH_REDIS_HOST": REDIS_HOST,
            "BENCH_REDIS_PORT": str(REDIS_PORT),
            "BENCH_REDIS_DB": str(REDIS_DB),
            "BENCH_SEGMENTS": ",".join([BIG, *SMALL]),
            "BENCH_PROXY_MIN_ORDERS": str(PROXY_RULE["value"]),
        }
    )
    argv = [str(PYTHON), "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    proc = PROCS.start([*argv, "--log-level", "warning", "--app-dir", str(folder)], env, log_path)
    seconds = wait_healthy_path(proc, port, log_path)
    log(f"peer {target}, {workers} worker(s), pid {proc.pid}, port {port}: up after {seconds:.1f} s")
    return proc, port


def start_funnel_reuseport(workers: int, patch: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """funnel's own app (``create_app``), its workers on SO_REUSEPORT sockets (see MINIMAL_APP);
    with ``patch``, the app as ``whatif_app`` changes it."""
    folder = STATE / "minimal"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "minimal_app.py").write_text(MINIMAL_APP)
    port = free_port()
    log_path = STATE / f"funnel-reuseport{'-' + patch.replace(',', '-') if patch else ''}-{workers}w.log"
    env = child_env()
    env.update({"BENCH_TOKEN": TOKEN, "BENCH_REDIS_HOST": REDIS_HOST, "BENCH_REDIS_PORT": str(REDIS_PORT)})
    env.update({"BENCH_REDIS_DB": str(REDIS_DB), "BENCH_SEGMENTS": BIG, "BENCH_PROXY_MIN_ORDERS": "2"})
    env["BENCH_PATCH"] = patch
    env["BENCH_PATCH_REPORT"] = str(STATE / "whatif-applied.txt")
    (STATE / "whatif-applied.txt").unlink(missing_ok=True)
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{folder}"
    target = "minimal_app:whatif_app" if patch else "funnel.api.app:create_app"
    argv = [str(PYTHON), str(folder / "minimal_app.py"), target, str(port), str(workers)]
    proc = PROCS.start([*argv, "factory"], env, log_path)
    seconds = wait_healthy(proc, port, log_path)
    what = f" with {patch}" if patch else ""
    log(f"funnel API{what} on SO_REUSEPORT sockets, {workers} worker(s), pid {proc.pid}, port {port}: {seconds:.1f} s")
    return proc, port


def start_funnel_whatif(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    return start_funnel_reuseport(workers, "hiredis,ids,fast,catalog")


def start_minimal(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    return start_peer(workers, "minimal_app:app")


def start_raw(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    return start_peer(workers, "minimal_app:raw_app")


def wait_healthy_path(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < 30:
        if proc.poll() is not None:
            raise SystemExit(f"the minimal app exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return time.perf_counter() - started
        time.sleep(0.1)
    raise SystemExit(f"the minimal app did not listen within 30 s:\n{log_path.read_text()[-3000:]}")


# ----------------------------------------------------------------------------------------------
# CPU accounting: who used the two cores during a measurement.
# ----------------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn's supervisor and its workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def idle_seconds() -> float:
    """Idle (and iowait) seconds of all cores since boot. The kernel measures idle time exactly;
    its busy counters are sampled at each tick and miss short bursts, so busy = cores x wall - idle."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / TICK


@dataclass
class CpuMeter:
    """CPU seconds per wall second of the server, Redis, and the whole machine's busy time."""

    server_pid: int | None
    redis_pid: int
    started: float = 0.0
    server: float = 0.0
    redis: float = 0.0
    busy: float = 0.0  # idle seconds at the start
    own: float = 0.0

    def __enter__(self) -> CpuMeter:
        self.started = time.perf_counter()
        self.pids = tree(self.server_pid) if self.server_pid else []
        self.each = {p: cpu_seconds(p) for p in self.pids}
        self.server = sum(self.each.values())
        self.redis = cpu_seconds(self.redis_pid)
        self.busy = idle_seconds()
        times = os.times()
        self.own = times.user + times.system
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.started
        each = {p: cpu_seconds(p) - self.each[p] for p in self.pids}
        server = sum(self.each.values()) + sum(each.values())
        idle = idle_seconds() - self.busy
        self.result = {
            "server": (server - self.server) / wall,
            "redis": (cpu_seconds(self.redis_pid) - self.redis) / wall,
            "machine": CORES - idle / wall,
            "bench": (os.times().user + os.times().system - self.own) / wall,
        }
        # Cores used by each process of the server (its busiest ones first): uvicorn's workers
        # share one listening socket, so the split of keep-alive connections is up to the kernel.
        self.result["split"] = sorted((round(v / wall, 2) for v in each.values() if v / wall >= 0.01), reverse=True)


# ----------------------------------------------------------------------------------------------
# The limits: redis-py straight to Redis, no HTTP.
# ----------------------------------------------------------------------------------------------


def bare_limits(seconds: float, redis_pid: int) -> dict[str, Any]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    key = f"funnel:{{{BIG}}}:members"
    rng = random.Random(1)
    ids = [str(rng.randrange(2 * BIG_SIZE)) for _ in range(200_000)]
    truth = sum(1 for i in ids[:1000] if client.sismember(key, i))
    if not 400 < truth < 600:
        raise SystemExit(f"bare loop: {truth} of 1,000 random ids are members of {BIG}; expected about half")
    out: dict[str, Any] = {}

    # One SISMEMBER per round trip, one connection: what one Python process can ask of Redis.
    # On this VM the rate depends on where the scheduler puts the loop: on Redis's core the
    # round trip is a context switch (about 22k/s); on the other core each round trip wakes an
    # idle vCPU (about 9k/s). So the loop runs in 0.5 s slices, unpinned (the figure compared,
    # as the API's workers are not pinned either), then pinned to Redis's core (the best case).
    sismember = client.sismember
    for _ in range(2000):
        sismember(key, ids[0])  # warm-up

    def loop(duration: float, lat: list[float] | None = None) -> float:
        n, started = 0, time.perf_counter()
        deadline, now = started + duration, started
        while now < deadline:
            sismember(key, ids[n % len(ids)])
            later = time.perf_counter()
            if lat is not None:
                lat.append(later - now)
            now = later
            n += 1
        return n / (now - started)

    lat: list[float] = []
    with CpuMeter(None, redis_pid) as meter:
        slices = [loop(0.5, lat) for _ in range(max(1, int(seconds / 0.5)))]
    out["sismember"] = {
        "rate": statistics.median(slices),
        "slices": slices,
        "n": len(lat),
        "p99_ms": percentile(lat, 99) * 1e3,
        "cpu": meter.result,
    }
    mask = os.sched_getaffinity(0)
    redis_core = int(Path(f"/proc/{redis_pid}/stat").read_text().rsplit(")", 1)[1].split()[36])
    try:
        os.sched_setaffinity(0, {redis_core})
        loop(0.2)
        out["sismember_same_core"] = {"rate": loop(min(seconds, 2.0)), "core": redis_core}
    finally:
        os.sched_setaffinity(0, mask)

    # SMISMEMBER, 10,000 ids per call, pipelined two calls deep.
    batches = [ids[i : i + BATCH_IDS] for i in range(0, len(ids), BATCH_IDS)]
    for batch in batches[:3]:
        client.smismember(key, batch)
    with CpuMeter(None, redis_pid) as meter:
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            pipe = client.pipeline(transaction=False)
            pipe.smismember(key, batches[n % len(batches)])
            pipe.smismember(key, batches[(n + 1) % len(batches)])
            pipe.execute()
            n += 2
        elapsed = time.perf_counter() - started
    out["smismember"] = {"rate": n * BATCH_IDS / elapsed, "n": n, "cpu": meter.result}
    client.close()
    return out


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# ----------------------------------------------------------------------------------------------
# Saturation: wrk with a Lua script (auth header, random ids, POST bodies, a JSON summary).
# ----------------------------------------------------------------------------------------------

LUA_COMMON = r"""
local token = "%(token)s"
wrk.headers["Authorization"] = "Bearer " .. token
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\": %%d, \"duration_us\": %%d, \"bytes\": %%d, \"connect\": %%d, \"read\": %%d, " ..
    "\"write\": %%d, \"status\": %%d, \"timeout\": %%d, \"p50\": %%d, \"p90\": %%d, \"p99\": %%d, " ..
    "\"p999\": %%d, \"max\": %%d, \"mean\": %%f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""

LUA_GET = r"""
init = function(args)
  math.randomseed(1000 + (id or 0))
end
request = function()
  return wrk.format("GET", "%(prefix)s" .. math.random(%(low)d, %(high)d) .. "%(suffix)s")
end
"""

LUA_BATCH = r"""
local bodies = {}
init = function(args)
  math.randomseed(2000 + (id or 0))
  for b = 1, 8 do
    local ids = {}
    for i = 1, %(count)d do ids[i] = "\"" .. math.random(%(low)d, %(high)d) .. "\"" end
    bodies[b] = "{\"user_ids\": [" .. table.concat(ids, ",") .. "]}"
  end
end
local n = 0
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(token)s"}
request = function()
  n = n + 1
  -- wrk.format's headers replace wrk.headers: the token goes in again
  return wrk.format("POST", "%(path)s", headers, bodies[n %% 8 + 1])
end
"""


@dataclass
class Load:
    """One measured load: throughput, latency (ms), errors, CPU split."""

    name: str
    rate: float
    p50: float
    p99: float
    p999: float
    max: float
    errors: int
    requests: int
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def lua_get(prefix: str, low: int, high: int, suffix: str = "") -> str:
    common = LUA_COMMON % {"token": TOKEN}
    return common + LUA_GET % {"prefix": prefix, "low": low, "high": high, "suffix": suffix}


def lua_batch(path: str, count: int, low: int, high: int) -> str:
    return LUA_COMMON % {"token": TOKEN} + LUA_BATCH % {
        "path": path,
        "count": count,
        "low": low,
        "high": high,
        "token": TOKEN,
    }


def wrk(
    name: str,
    port: int,
    script: str,
    *,
    connections: int,
    seconds: float,
    server_pid: int,
    redis_pid: int,
    threads: int = 1,
    warmup: float = 1.0,
) -> Load:
    path = STATE / "lua" / f"{name.replace(' ', '_').replace('/', '_')}.lua"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    base = ["wrk", "-t", str(threads), "-c", str(connections), "-s", str(path), "--timeout", "5s"]
    url = f"http://127.0.0.1:{port}/"
    if warmup:
        subprocess.run(
            [*base, "-d", f"{max(1, round(warmup))}s", url], capture_output=True, timeout=warmup + 30, check=True
        )
    with CpuMeter(server_pid, redis_pid) as meter:
        proc = subprocess.Popen(
            [*base, "-d", f"{max(1, round(seconds))}s", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        PROCS.started.append(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            PROCS.started.remove(proc)
        out = proc.stdout.read().decode() if proc.stdout else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or "BENCHJSON" not in out:
        raise SystemExit(
            f"wrk {name} failed ({proc.returncode}):\n{out}\n{proc.stderr.read().decode() if proc.stderr else ''}"
        )
    data = json.loads(out.split("BENCHJSON", 1)[1].strip().splitlines()[0])
    wall = data["duration_us"] / 1e6
    cpu = dict(meter.result)
    cpu["client"] = (usage.ru_utime + usage.ru_stime) / wall
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        name,
        data["requests"] / wall,
        data["p50"] / 1e3,
        data["p99"] / 1e3,
        data["p999"] / 1e3,
        data["max"] / 1e3,
        errors,
        data["requests"],
        cpu,
        {"connections": connections, "seconds": seconds},
    )


# ----------------------------------------------------------------------------------------------
# A fixed rate: the open-loop generator (see the module doc).
# ----------------------------------------------------------------------------------------------


class _Conn:
    def __init__(self, port: int, gen: OpenLoop) -> None:
        import httptools

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.job: tuple[int, float] | None = None
        self.complete = False
        self.thread = threading.Thread(target=self.read, daemon=True)

    def on_message_complete(self) -> None:
        self.complete = True

    def send(self, index: int, scheduled: float) -> None:
        self.job = (index, scheduled)
        try:
            self.sock.sendall(self.gen.requests[index % len(self.gen.requests)])
        except OSError:
            self.gen.broken += 1

    def read(self) -> None:
        gen = self.gen
        recv, feed = self.sock.recv, self.parser.feed_data
        while True:
            try:
                data = recv(65536)
            except OSError:
                return
            if not data:
                return
            feed(data)
            if self.complete:
                self.complete = False
                done = time.perf_counter()
                index, scheduled = self.job  # type: ignore[misc]
                gen.latency[index] = done - scheduled
                gen.status[self.parser.get_status_code()] += 1
                gen.answered += 1
                gen.finished(self)


class OpenLoop:
    """Requests at a fixed rate whatever the server does; latency from the scheduled time."""

    def __init__(self, port: int, requests: list[bytes], rate: float, seconds: float, connections: int = 64) -> None:
        self.requests = requests
        self.rate = rate
        self.count = int(rate * seconds)
        self.latency: list[float | None] = [None] * self.count
        self.lag: list[float] = []
        self.status: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()
        self.idle: collections.deque[_Conn] = collections.deque()
        self.backlog: collections.deque[tuple[int, float]] = collections.deque()
        self.queued = 0
        self.answered = 0
        self.broken = 0
        self.closing = False
        self.conns = [_Conn(port, self) for _ in range(connections)]
        for conn in self.conns:
            conn.thread.start()
            self.idle.append(conn)

    def finished(self, conn: _Conn) -> None:
        with self.lock:
            if self.backlog and not self.closing:
                job = self.backlog.popleft()
            else:
                self.idle.append(conn)
                return
        conn.send(*job)

    def run(self) -> dict[str, Any]:
        """Send on schedule; stop early when the server falls more than 2 s of requests behind."""
        interval = 1.0 / self.rate
        start = time.perf_counter() + 0.05
        sleep, now_of = time.sleep, time.perf_counter
        lag = self.lag
        sent = 0
        overloaded = False
        for index in range(self.count):
            scheduled = start + index * interval
            delay = scheduled - now_of()
            if delay > 0:
                sleep(delay)
            with self.lock:
                conn = self.idle.popleft() if self.idle else None
                if conn is None:
                    self.backlog.append((index, scheduled))
                    self.queued += 1
                    overloaded = len(self.backlog) > 2 * self.rate
            sent += 1
            if conn is not None:
                lag.append(now_of() - scheduled)
                conn.send(index, scheduled)
            if overloaded:
                break
        sent_for = now_of() - start
        deadline = now_of() + (1 if overloaded else 5)
        while self.answered < sent and now_of() < deadline:
            time.sleep(0.01)
        with self.lock:
            self.closing = True
            closed = now_of()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            conn.sock.close()
        # An unanswered request waited at least until the connections closed: that lower bound
        # stays in the latencies, so an overload shows in p99 instead of vanishing from it.
        latency = [
            v if v is not None else closed - (start + index * interval) for index, v in enumerate(self.latency[:sent])
        ]
        return {
            "sent_rate": sent / sent_for,
            "sent": sent,
            "answered": self.answered,
            "lost": sent - self.answered,
            "overloaded": overloaded,
            "latency": latency,
            "lag_p50": percentile(lag, 50),
            "lag_p99": percentile(lag, 99),
            "lag_max": max(lag) if lag else float("nan"),
            "queued": self.queued,
            "status": dict(self.status),
        }


class CatalogStall:
    """MySQL slow for a while: the catalog table write-locked (in the bench's own database) from
    ``after`` seconds for ``hold`` seconds, as a long DDL or a hung server would hold it."""

    def __init__(self, after: float, hold: float) -> None:
        self.after, self.hold = after, hold
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.release = threading.Event()

    def run(self) -> None:
        import MySQLdb

        if self.release.wait(self.after):
            return
        conn = MySQLdb.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", db=BENCH_DB)
        try:
            conn.cursor().execute("LOCK TABLES funnel_segments WRITE")
            self.release.wait(self.hold)
            conn.cursor().execute("UNLOCK TABLES")
        finally:
            conn.close()

    def __enter__(self) -> CatalogStall:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(timeout=30)


def fixed_rate(
    name: str,
    port: int,
    paths: list[str],
    *,
    seconds: float,
    server_pid: int,
    redis_pid: int,
    stall: tuple[float, float] | None = None,
) -> Load:
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode() for p in paths
    ]
    # Warm-up: the same rate for a second, not measured.
    OpenLoop(port, requests, FIXED_RATE, 1.0, connections=16).run()
    gc.collect()
    gc.freeze()
    gc.disable()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        gen = OpenLoop(port, requests, FIXED_RATE, seconds)
        with CpuMeter(server_pid, redis_pid) as meter, CatalogStall(*stall) if stall else contextlib.nullcontext():
            result = gen.run()
    finally:
        sys.setswitchinterval(old_interval)
        gc.enable()
        gc.unfreeze()
    lat = result.pop("latency")
    meter.result["client"] = meter.result["bench"]
    errors = result["lost"] + sum(n for code, n in result["status"].items() if code != 200)
    return Load(
        name,
        result["answered"] / (result["sent"] / FIXED_RATE),
        percentile(lat, 50) * 1e3,
        percentile(lat, 99) * 1e3,
        percentile(lat, 99.9) * 1e3,
        max(lat) * 1e3 if lat else float("nan"),
        errors,
        len(lat),
        meter.result,
        dict(result),
    )


# ----------------------------------------------------------------------------------------------
# Answers: a few checked against what the setup wrote, before anything is measured.
# ----------------------------------------------------------------------------------------------


def get_json(port: int, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def check_answers(port: int) -> None:
    problems = []
    for user in (0, 1, 1_999_998, 2_000_000, 6, 7):
        status, body, _ = get_json(port, f"/v1/segments/{BIG}/members/{user}")
        want = user % 2 == 0 and user < 2 * BIG_SIZE
        if status != 200 or body.get("member") is not want or body.get("source") != "redis":
            problems.append(f"{BIG}/members/{user}: {status} {body}")
    for user in (2, 3, 4, 5, 199_999, 200_002):
        status, body, _ = get_json(port, f"/v1/segments/{PROXY}/members/{user}")
        want = user < TAG_USERS and user % 5 >= 2
        if status != 200 or body.get("member") is not want:
            problems.append(f"{PROXY}/members/{user}: {status} {body}")
    ids = [str(i) for i in range(0, 40)]
    status, body, _ = get_json(port, f"/v1/segments/{BIG}/members:check", json.dumps({"user_ids": ids}).encode())
    if status != 200 or body.get("members") != {i: int(i) % 2 == 0 for i in ids}:
        problems.append(f"{BIG}/members:check: {status} {str(body)[:300]}")
    for user in (0, 1, 12, 360, 7_777, 19_999, 150_003, 1_000_001):
        status, body, _ = get_json(port, f"/v1/users/{user}/segments")
        if status != 200 or body.get("segments") != expected_segments(user) or body.get("source") != "redis":
            problems.append(f"users/{user}/segments: {status} {str(body)[:300]} (want {expected_segments(user)})")
    status, body, _ = get_json(port, "/v1/segments")
    listed = len(body.get("segments", []))
    if status != 200 or listed != len(SMALL) + 2:
        problems.append(f"/v1/segments: {status}, {listed} segments (want {len(SMALL) + 2})")
    if problems:
        raise SystemExit("the API answered wrongly:\n  " + "\n  ".join(problems))


def check_peer_answers(port: int) -> None:
    """The minimal app's user segments must match funnel's answer (the setup's truth)."""
    problems = []
    for user in (0, 1, 12, 360, 7_777, 19_999, 150_003, 1_000_001):
        for path in (f"/v1/users/{user}/segments", f"/raw/users/{user}/segments"):
            status, body, _ = get_json(port, path)
            if status != 200 or body.get("segments") != expected_segments(user):
                problems.append(f"{path}: {status} {str(body)[:300]} (want {expected_segments(user)})")
    status, body, _ = get_json(port, f"/v1/segments/{BIG}/members/6")
    if status != 200 or body.get("member") is not True:
        problems.append(f"/v1/segments/{BIG}/members/6: {status} {body}")
    if problems:
        raise SystemExit("the minimal app answered wrongly:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------
# The run: every figure side by side, then the table.
# ----------------------------------------------------------------------------------------------


def random_paths(template: str, high: int, count: int = 20_000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [template.format(rng.randrange(high)) for _ in range(count)]


def idle_machine(seconds: float = 1.0) -> float:
    """Busy cores of the machine while the bench does nothing (other people's work)."""
    idle, started = idle_seconds(), time.perf_counter()
    time.sleep(seconds)
    return CORES - (idle_seconds() - idle) / (time.perf_counter() - started)


def scenario(key: str) -> tuple[str, Any]:
    """A load by name: ("sat", wrk Lua script) or ("fixed", paths for the open-loop generator)."""
    single = f"/v1/segments/{BIG}/members/"
    if key == "single_sat":
        return "sat", lua_get(single, 0, 2 * BIG_SIZE - 1)
    if key == "one_sat":  # peer only: one SISMEMBER per request
        return "sat", lua_get(f"/one/segments/{BIG}/members/", 0, 2 * BIG_SIZE - 1)
    if key == "proxy_sat":
        return "sat", lua_get(f"/v1/segments/{PROXY}/members/", 0, 2 * TAG_USERS - 1)
    if key == "batch_sat":
        return "batch", lua_batch(f"/v1/segments/{BIG}/members:check", BATCH_IDS, 0, 2 * BIG_SIZE - 1)
    if key == "users_sat":
        return "sat", lua_get("/v1/users/", 0, 2 * SMALL_SPAN - 1, "/segments")
    if key == "single_fixed":
        return "fixed", random_paths(single + "{}", 2 * BIG_SIZE)
    if key == "proxy_fixed":
        return "fixed", random_paths(f"/v1/segments/{PROXY}/members/{{}}", 2 * TAG_USERS)
    if key == "users_fixed":
        return "fixed", random_paths("/v1/users/{}/segments", 2 * SMALL_SPAN)
    if key == "stall_fixed":  # single checks while MySQL's catalog table is locked (CatalogStall)
        return "stall", random_paths(single + "{}", 2 * BIG_SIZE)
    if key == "rawusers_fixed":  # peer only: the same reads, one buffer, hiredis
        return "fixed", random_paths("/raw/users/{}/segments", 2 * SMALL_SPAN)
    raise ValueError(key)


def measure_api(
    label: str, start: Any, workers: int, keys: list[str], redis_pid: int, args: argparse.Namespace
) -> dict[str, Load]:
    """The named loads, one after the other, on one server started for them."""
    proc, port = start(workers)
    loads: dict[str, Load] = {}
    common = {"server_pid": proc.pid, "redis_pid": redis_pid}
    try:
        if start in (start_funnel, start_funnel_reuseport, start_funnel_whatif) or isinstance(start, functools.partial):
            check_answers(port)
        elif start is start_minimal:
            check_peer_answers(port)
        # Fresh connections (urllib closes each), so every worker, not only the one that happens
        # to accept wrk's connections, has made its clients and read the catalog before timing.
        for user in range(4 * workers * 10):
            get_json(port, f"/v1/segments/{BIG}/members/{user}")
        warm = "one_sat" if keys == ["one_sat"] else "single_sat"
        wrk(f"{label} warm-up", port, scenario(warm)[1], connections=args.connections, seconds=2, warmup=0, **common)
        for key in keys:
            kind, load = scenario(key)
            if kind == "fixed":
                loads[key] = fixed_rate(f"{label} {key}", port, load, seconds=args.fixed_seconds, **common)
            elif kind == "stall":
                stall = (STALL_AFTER, STALL_HOLD)
                loads[key] = fixed_rate(f"{label} {key}", port, load, seconds=STALL_SECONDS, stall=stall, **common)
            else:
                conns = 2 * workers if kind == "batch" else args.connections
                loads[key] = wrk(f"{label} {key}", port, load, connections=conns, seconds=args.seconds, **common)
            log(f"{label}: {key} {fmt_load(loads[key])}")
            if args.profile == key.removesuffix("_sat") and kind != "fixed" and start is start_funnel and workers == 2:
                profile(port, proc.pid, load, args, conns)
    finally:
        PROCS.stop(proc)
    return loads


def fmt_load(load: Load) -> str:
    text = f"{load.rate:,.0f}/s p50 {load.p50:.2f} ms p99 {load.p99:.2f} ms max {load.max:.1f} ms"
    if load.errors:
        text += f" ERRORS {load.errors}"
    return text


def profile(port: int, supervisor: int, script: str, args: argparse.Namespace, connections: int) -> None:
    """py-spy (installed into bench/.work/site) on every worker during one more saturation run."""
    spy = WORK / "site" / "bin" / "py-spy"
    if not spy.exists():
        pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--target", str(WORK / "site"), "py-spy"], check=True)
    workers = [p for p in tree(supervisor) if p != supervisor]
    outs, spies = [], []
    for pid in workers:
        out = STATE / f"py-spy-{args.profile}-{pid}.txt"
        argv = [str(spy), "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", "250"]
        argv += ["--format", "raw", "--output", str(out), "--nonblocking"]
        spies.append(PROCS.start(argv, dict(os.environ), STATE / f"py-spy-{pid}.log"))
        outs.append(out)
    time.sleep(0.5)
    wrk(
        "profile",
        port,
        script,
        connections=connections,
        seconds=args.seconds,
        warmup=0,
        server_pid=supervisor,
        redis_pid=redis_pid_of(),
    )
    for spy_proc in spies:
        spy_proc.wait(timeout=30)
        PROCS.stop(spy_proc)
    found = [str(o) for o in outs if o.exists() and o.stat().st_size]
    log(f"py-spy of {args.profile} at saturation: {' '.join(found)}")
    with contextlib.redirect_stdout(sys.stderr):
        top_frames(found)


def top_frames(paths: list[str], count: int = 25) -> None:
    """Own and inclusive sample share per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in Path(path).read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            weight = int(n)
            frames = [
                f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f
                for f in stack.split(";")
            ]
            total += weight
            own[frames[-1]] += weight
            for frame in set(frames):
                inclusive[frame] += weight
    print(f"{total:,} samples")
    print("own:")
    for frame, n in own.most_common(count):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("inclusive:")
    for frame, n in inclusive.most_common(count):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def redis_pid_of() -> int:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def api_sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "plugins" / "funnel").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short=10", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "plugins/funnel")
    return f"{head}{' + uncommitted changes in plugins/funnel' if dirty else ''}"


def row(figure: str, measured: str, limit: str, ratio: float | None, verdict: str) -> tuple[str, ...]:
    return (figure, measured, limit, "" if ratio is None else f"{ratio:.2f}", verdict)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict[str, Any], args: argparse.Namespace) -> tuple[str, bool]:
    bare, f2, f1 = results["bare"], results["funnel2"], results.get("funnel1", {})
    m2, m1 = results.get("minimal2", {}), results.get("minimal1", {})
    reuse = results.get("reuse2", {})
    loop = bare["sismember"]["rate"]
    smis = bare["smismember"]["rate"]
    rows: list[tuple[str, ...]] = []
    passes: list[bool] = []

    def target(figure: str, measured: str, limit: str, ratio: float, ok: bool) -> None:
        rows.append(row(figure, measured, limit, ratio, verdict(ok)))
        passes.append(ok)

    def info(figure: str, measured: str, limit: str = "", ratio: float | None = None, kind: str = "info") -> None:
        rows.append(row(figure, measured, limit, ratio, kind))

    c = args.connections
    sl = bare["sismember"]["slices"]
    info(
        "bare redis-py SISMEMBER loop (1 connection)",
        f"{loop:,.0f} checks/s",
        f"median of {len(sl)} slices, {min(sl):,.0f}..{max(sl):,.0f}",
        None,
        "limit",
    )
    same = bare.get("sismember_same_core")
    if same:
        info(
            "  the same loop pinned to Redis's core",
            f"{same['rate']:,.0f} checks/s",
            "best case",
            same["rate"] / loop,
            "info",
        )
    info("pipelined SMISMEMBER, 10,000 ids per call", f"{smis:,.0f} ids/s", "", None, "limit")
    s2 = f2["single_sat"]
    target(
        f"single check, 2 workers, saturation (wrk c={c})",
        f"{s2.rate:,.0f}/s",
        f">= 0.85 x bare loop = {0.85 * loop:,.0f}/s",
        s2.rate / loop,
        s2.rate >= TARGET_SINGLE_VS_BARE * loop and not s2.errors,
    )
    target(
        "  p99 at saturation",
        f"{s2.p99:.2f} ms",
        f"<= {TARGET_P99_SAT_MS:g} ms",
        s2.p99 / TARGET_P99_SAT_MS,
        s2.p99 <= TARGET_P99_SAT_MS,
    )
    sf = f2["single_fixed"]
    target(
        f"single check, 2 workers, {FIXED_RATE:,}/s: p99",
        f"{sf.p99:.2f} ms",
        f"<= {TARGET_P99_FIXED_MS:g} ms",
        sf.p99 / TARGET_P99_FIXED_MS,
        sf.p99 <= TARGET_P99_FIXED_MS and not sf.errors,
    )
    info("  p50 / p99.9 / max", f"{sf.p50:.2f} / {sf.p999:.2f} / {sf.max:.1f} ms")
    if f1:
        s1, sf1 = f1["single_sat"], f1["single_fixed"]
        info(f"single check, 1 worker, saturation (wrk c={c})", f"{s1.rate:,.0f}/s", "bare loop", s1.rate / loop)
        info("  p99 at saturation", f"{s1.p99:.2f} ms", f"<= {TARGET_P99_SAT_MS:g} ms", s1.p99 / TARGET_P99_SAT_MS)
        info(
            f"single check, 1 worker, {FIXED_RATE:,}/s: p99",
            f"{sf1.p99:.2f} ms",
            f"<= {TARGET_P99_FIXED_MS:g} ms",
            sf1.p99 / TARGET_P99_FIXED_MS,
        )
    raw = results.get("raw2", {})
    for label, res in (
        ("minimal FastAPI app, 2 workers", m2),
        ("minimal FastAPI app, 1 worker", m1),
        ("plain ASGI app, 2 workers", raw),
    ):
        if res:
            ms = res["single_sat"]
            info(
                f"{label}, same pipeline, saturation",
                f"{ms.rate:,.0f}/s",
                f"p99 {ms.p99:.2f} ms; bare loop",
                ms.rate / loop,
                "peer",
            )
    if reuse:
        rs, rf = reuse["single_sat"], reuse["single_fixed"]
        info(
            "funnel, 2 workers on SO_REUSEPORT sockets, saturation",
            f"{rs.rate:,.0f}/s",
            f"p99 {rs.p99:.2f} ms; bare loop",
            rs.rate / loop,
            "peer",
        )
        info(
            f"  the same, {FIXED_RATE:,}/s: p99",
            f"{rf.p99:.2f} ms",
            f"<= {TARGET_P99_FIXED_MS:g} ms",
            rf.p99 / TARGET_P99_FIXED_MS,
            "peer",
        )
    if m2 and "one_sat" in m2:
        ms = m2["one_sat"]
        info(
            "minimal FastAPI app, 2 workers, one SISMEMBER (no pipeline)",
            f"{ms.rate:,.0f}/s",
            f"p99 {ms.p99:.2f} ms; bare loop",
            ms.rate / loop,
            "peer",
        )
    whatif = results.get("whatif2", {})
    if whatif:
        ws, wf = whatif["single_sat"], whatif["single_fixed"]
        info(
            "what-if (*), 2 workers: single check, saturation",
            f"{ws.rate:,.0f}/s",
            f"p99 {ws.p99:.2f} ms; bare loop",
            ws.rate / loop,
            "what-if",
        )
        info(
            f"  the same, {FIXED_RATE:,}/s: p99",
            f"{wf.p99:.2f} ms",
            f"<= {TARGET_P99_FIXED_MS:g} ms",
            wf.p99 / TARGET_P99_FIXED_MS,
            "what-if",
        )
    b = f2["batch_sat"]
    ids = b.rate * BATCH_IDS
    target(
        f"batch check, {BATCH_IDS:,} ids per request, 2 workers",
        f"{ids:,.0f} ids/s",
        f">= {TARGET_BATCH_IDS_S:,} ids/s",
        ids / TARGET_BATCH_IDS_S,
        ids >= TARGET_BATCH_IDS_S and not b.errors,
    )
    info("  vs pipelined SMISMEMBER", f"{ids:,.0f} ids/s", f"{smis:,.0f} ids/s", ids / smis)
    info("  p50 / p99 per request", f"{b.p50:.1f} / {b.p99:.1f} ms")
    if whatif:
        wb = whatif["batch_sat"]
        info(
            "  what-if (*), the same",
            f"{wb.rate * BATCH_IDS:,.0f} ids/s",
            f">= {TARGET_BATCH_IDS_S:,} ids/s",
            wb.rate * BATCH_IDS / TARGET_BATCH_IDS_S,
            "what-if",
        )
    p = f2["proxy_sat"]
    # The time of a check: the server's CPU per request at saturation. Wall time per request
    # (1 / rate) is shown too, but it also depends on how the kernel happened to split wrk's
    # connections over the two workers in each run (the "server split" below).
    cpu_proxy, cpu_single = 1e6 * p.cpu["server"] / p.rate, 1e6 * s2.cpu["server"] / s2.rate
    target(
        "proxy check, 2 workers, saturation: server CPU per check",
        f"{cpu_proxy:.0f} us",
        f"<= 1.5 x dynamic = {1.5 * cpu_single:.0f} us",
        cpu_proxy / cpu_single,
        cpu_proxy <= TARGET_PROXY_VS_DYNAMIC * cpu_single and not p.errors,
    )
    per_proxy, per_single = 1e6 / p.rate, 1e6 / s2.rate
    info(
        "  wall time per check (1 / rate)",
        f"{per_proxy:.0f} us ({p.rate:,.0f}/s)",
        f"dynamic {per_single:.0f} us",
        per_proxy / per_single,
    )
    info("  p99 at saturation", f"{p.p99:.2f} ms", f"<= {TARGET_P99_SAT_MS:g} ms", p.p99 / TARGET_P99_SAT_MS)
    pf = f2["proxy_fixed"]
    info(
        f"proxy check, {FIXED_RATE:,}/s: p50 / p99",
        f"{pf.p50:.2f} / {pf.p99:.2f} ms",
        f"dynamic {sf.p50:.2f} / {sf.p99:.2f} ms",
        pf.p50 / sf.p50,
    )
    for label, res in (
        (f"single check, {FIXED_RATE:,}/s, MySQL catalog table locked {STALL_HOLD:g} s", f2),
        ("  what-if (*), the same", results.get("whatif2", {})),
    ):
        st = res.get("stall_fixed") if res else None
        if st:
            e = st.extra
            shown = f"{e['answered']:,} of {e['sent']:,} answered"
            if e.get("overloaded"):
                shown += ", stopped"
            info(
                label,
                shown,
                f"p99 {st.p99:.1f} ms, max {st.max:.0f} ms",
                None,
                "info" if res is f2 else "what-if",
            )
    uf = f2["users_fixed"]
    target(
        f"users/{{id}}/segments, 100 segments, {FIXED_RATE:,}/s: p99",
        f"{'> ' if uf.extra.get('overloaded') else ''}{uf.p99:.2f} ms",
        f"<= {TARGET_USER_SEGMENTS_P99_MS:g} ms",
        uf.p99 / TARGET_USER_SEGMENTS_P99_MS,
        uf.p99 <= TARGET_USER_SEGMENTS_P99_MS and not uf.errors,
    )
    info("  p50 / p99.9 / max", f"{uf.p50:.2f} / {uf.p999:.2f} / {uf.max:.1f} ms")
    us = f2["users_sat"]
    info(f"users/{{id}}/segments, 2 workers, saturation (wrk c={c})", f"{us.rate:,.0f}/s", f"p99 {us.p99:.2f} ms")
    for key, label in (
        ("users_fixed", "funnel's 305-command redis-py pipeline"),
        ("rawusers_fixed", "the same 305 reads in one hiredis buffer"),
    ):
        if m2 and key in m2:
            mu = m2[key]
            info(
                f"  minimal FastAPI app, {label}: p99",
                f"{mu.p99:.2f} ms",
                f"<= {TARGET_USER_SEGMENTS_P99_MS:g} ms",
                mu.p99 / TARGET_USER_SEGMENTS_P99_MS,
                "peer",
            )

    against = results.get("against2", {})
    if against:  # the targets' figures on the other commit, next to this code's
        rev = args.against
        for key, figure, unit in (
            ("single_sat", "single check, 2 workers, saturation", "rate"),
            ("batch_sat", f"batch check, {BATCH_IDS:,} ids per request", "ids"),
            ("proxy_sat", "proxy check, saturation", "rate"),
            ("single_fixed", f"single check, {FIXED_RATE:,}/s: p99", "p99"),
            ("users_fixed", f"users/{{id}}/segments, {FIXED_RATE:,}/s: p99", "p99"),
        ):
            now, then = f2[key], against[key]
            if unit == "p99":
                shown, other, ratio = f"{now.p99:.2f} ms", f"{then.p99:.2f} ms at {rev}", now.p99 / then.p99
            else:
                scale = BATCH_IDS if unit == "ids" else 1
                label = "ids/s" if unit == "ids" else "/s"
                shown = f"{now.rate * scale:,.0f} {label}"
                other, ratio = f"{then.rate * scale:,.0f} {label} at {rev}", now.rate / then.rate
            info(f"{figure}: this code vs {rev}", shown, other, ratio, "peer")

    widths = [
        max(len(r[i]) for r in [("figure", "measured", "limit or peer", "ratio", "verdict"), *rows]) for i in range(5)
    ]
    head = ("figure", "measured", "limit or peer", "ratio", "verdict")
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]

    if whatif:
        applied = set(results.get("whatif_applied", "").split(","))
        changes = {
            "catalog": "the catalog re-read in the background (Service.catalog)",
            "hiredis": "redis.asyncio packing commands with hiredis.pack_command (wiring.async_redis_client)",
            "ids": "_ids_of checking all ids with one regex",
            "fast": "GET .../members/{user} answered by a plain ASGI function in front of FastAPI",
        }
        lines.append("")
        lines.append(
            "(*) what-if: funnel's own create_app() in the same uvicorn (uvloop, httptools), two workers on\n"
            "    SO_REUSEPORT sockets, with the changes bench/serve suggests that the code under test does not\n"
            "    have yet (MINIMAL_APP.whatif_app in bench/serve_bench.py):"
        )
        lines += [f"    - {text}" for key, text in changes.items() if key in applied] or ["    - none"]
    lines.append("")
    lines.append("Where the two cores went (cores busy per wall second; server CPU per request):")
    lines.append(
        f"  {'load':<36} {'rate/s':>10} {'server':>7} {'redis':>6} {'client':>7} {'others':>7} {'machine':>8} "
        f"{'server us/req':>14}  server split"
    )

    def cpu_line(name: str, load: Load) -> None:
        cpu = load.cpu
        per = f"{1e6 * cpu['server'] / load.rate:.0f}" if load.rate and cpu.get("server") else "-"
        others = cpu.get("machine", 0) - cpu.get("server", 0) - cpu.get("redis", 0) - cpu.get("client", 0)
        line = (
            f"  {name:<36} {load.rate:>10,.0f} {cpu.get('server', 0):>7.2f} {cpu.get('redis', 0):>6.2f} "
            f"{cpu.get('client', 0):>7.2f} {others:>7.2f} {cpu.get('machine', 0):>8.2f} {per:>14}  "
            + "/".join(f"{v:.2f}" for v in cpu.get("split", []))
        )
        lines.append(line.rstrip())

    for key, name in (("sismember", "bare SISMEMBER loop"), ("smismember", "pipelined SMISMEMBER (ids/s)")):
        data = bare[key]
        load = Load(
            name,
            data["rate"],
            0,
            0,
            0,
            0,
            0,
            data["n"],
            {"client": data["cpu"]["bench"], "redis": data["cpu"]["redis"], "machine": data["cpu"]["machine"]},
        )
        cpu_line(name, load)
    for label, res in (
        ("funnel 2w", f2),
        ("funnel 1w", f1),
        ("minimal 2w", m2),
        ("minimal 1w", m1),
        ("ASGI 2w", raw),
        ("funnel SO_REUSEPORT 2w", reuse),
        ("funnel what-if 2w", results.get("whatif2", {})),
    ):
        for key, load in res.items():
            cpu_line(f"{label} {key}", load)
    lines.append(f"  (background: {results['idle']:.2f} cores busy while the bench was idle, before it started)")
    lines.append("")
    lines.append(
        f"Open-loop generator at {FIXED_RATE:,}/s (its own lag: sent - scheduled, for requests that found a free "
        "connection):"
    )
    for label, res in (
        ("funnel 2w", f2),
        ("funnel 1w", f1),
        ("minimal 2w", m2),
        ("funnel SO_REUSEPORT 2w", reuse),
        ("funnel what-if 2w", results.get("whatif2", {})),
    ):
        for key, load in res.items():
            if key.endswith("_fixed"):
                e = load.extra
                lines.append(
                    f"  {label} {key:<14} sent {e['sent']:,} at {e['sent_rate']:,.1f}/s, "
                    f"lag p50 {e['lag_p50'] * 1e3:.3f} ms, "
                    f"p99 {e['lag_p99'] * 1e3:.3f} ms, max {e['lag_max'] * 1e3:.2f} ms; waited for a connection: "
                    f"{e['queued']:,}; answers {e['status']}; unanswered {e['lost']:,}"
                    + ("; OVERLOADED: stopped when 2 s of requests were waiting" if e.get("overloaded") else "")
                )
    all_ok = all(passes)
    lines.append("")
    lines.append(f"{'PASS' if all_ok else 'FAIL'}: {sum(passes)} of {len(passes)} targets met")
    return "\n".join(lines), all_ok


def run(args: argparse.Namespace) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: bench/serve installs it (apt-get install wrk)")
    wall = time.perf_counter()
    digest = api_sources_digest()
    results: dict[str, Any] = {"idle": idle_machine()}
    log(f"background load: {results['idle']:.2f} cores busy before the bench started")
    if args.reuse and reusable():
        log("setup: reusing the data already in place (--reuse)")
        results["setup"] = {"seconds": 0, "reused": True}
    else:
        what = f"1,000,000-member segment, {SMALL_COUNT} small, a proxy, tags"
        log(f"setup: MySQL {BENCH_DB}, Redis db {REDIS_DB}: {what}")
        results["setup"] = run_setup()
        log(f"setup: {results['setup']['seconds']} s {results['setup']['steps']}")
    redis_pid = redis_pid_of()
    if args.users_only:  # bench/scale: a user's segments alone, at this catalog size
        results["funnel2"] = measure_api("funnel 2w", start_funnel, 2, ["users_fixed", "users_sat"], redis_pid, args)
        (STATE / "results.json").write_text(json.dumps(results, default=lambda o: o.__dict__, indent=1))
        return 0
    log(f"bare limits, {args.bare_seconds:g} s each")
    results["bare"] = bare_limits(args.bare_seconds, redis_pid)
    bare = results["bare"]
    log(f"bare SISMEMBER loop {bare['sismember']['rate']:,.0f}/s, SMISMEMBER {bare['smismember']['rate']:,.0f} ids/s")
    plans = [
        ("funnel2", "funnel 2w", start_funnel, 2, [*FUNNEL_LOADS, "stall_fixed"]),
        ("funnel1", "funnel 1w", start_funnel, 1, ["single_sat", "single_fixed"]),
        ("minimal2", "minimal 2w", start_minimal, 2, ["single_sat", "one_sat", "users_fixed", "rawusers_fixed"]),
        ("minimal1", "minimal 1w", start_minimal, 1, ["single_sat"]),
        ("raw2", "raw ASGI 2w", start_raw, 2, ["single_sat"]),
        ("reuse2", "funnel reuseport 2w", start_funnel_reuseport, 2, ["single_sat", "single_fixed"]),
        (
            "whatif2",
            "funnel what-if 2w",
            start_funnel_whatif,
            2,
            ["single_sat", "batch_sat", "single_fixed", "stall_fixed"],
        ),
    ]
    if "SO_REUSEPORT" in (ROOT / "plugins" / "funnel" / "cli" / "serve_command.py").read_text():
        plans = [plan for plan in plans if plan[0] != "reuse2"]  # serve itself has a socket per worker
    plans = plans[: 1 if args.quick else None]
    if args.against:  # the same loads on the commit to compare with, right after this code's
        at = functools.partial(start_funnel_at, args.against)
        plans.insert(1, ("against2", f"funnel at {args.against} 2w", at, 2, AGAINST_LOADS))
    for key, label, start, workers, loads in plans:
        results[key] = measure_api(label, start, workers, loads, redis_pid, args)
    applied = STATE / "whatif-applied.txt"
    if "whatif2" in results and applied.exists():
        results["whatif_applied"] = applied.read_text()
    table, ok = report(results, args)
    seconds = time.perf_counter() - wall
    if api_sources_digest() != digest:
        log("WARNING: plugins/funnel changed while the bench ran; the rows may mix two versions of the code")
    header = (
        f"bench/serve at git {git_state()}, {os.cpu_count()} cores, {seconds:.0f} s "
        f"(setup {results['setup']['seconds']} s); wrk -t1 -c{args.connections} -d{args.seconds:g}s per saturation "
        f"row, {args.fixed_seconds:g} s per {FIXED_RATE:,}/s row"
    )
    text = f"{header}\n\n{table}\n"
    print(text)
    (WORK / "serve.md").write_text(f"```\n{text}```\n")
    (STATE / "results.json").write_text(json.dumps(results, default=lambda o: o.__dict__, indent=1))
    return 0 if ok else 1


def reusable() -> bool:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        marker = client.get(REDIS_MARKER)
        return marker == f"bench/serve {SMALL_COUNT}".encode() and client.scard(f"funnel:{{{BIG}}}:members") == BIG_SIZE
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", metavar="RESULT_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--top", nargs="+", metavar="FILE", help="sum py-spy collapsed stacks and exit")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per saturation measurement (default 8)")
    parser.add_argument(
        "--fixed-seconds", type=float, default=10.0, help=f"seconds per {FIXED_RATE:,}/s measurement (default 10)"
    )
    parser.add_argument("--bare-seconds", type=float, default=3.0, help="seconds per bare Redis limit (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections at saturation (default 16)")
    parser.add_argument("--quick", action="store_true", help="two workers only: no 1-worker and minimal-app rows")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also measure the API of git commit REV (e.g. HEAD~1) on the same data, side by side",
    )
    parser.add_argument("--reuse", action="store_true", help="keep the data of the last run instead of rebuilding it")
    parser.add_argument("--users-only", action="store_true", help=argparse.SUPPRESS)  # bench/scale's runs
    parser.add_argument(
        "--profile",
        choices=["single", "proxy", "batch", "users"],
        help="also py-spy funnel's two workers during one more saturation run of this load",
    )
    args = parser.parse_args()
    if args.setup:
        setup_child(args.setup)
        return 0
    if args.top:
        top_frames(args.top)
        return 0

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        PROCS.stop_all()


if __name__ == "__main__":
    sys.exit(main())
