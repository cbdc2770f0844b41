"""One segment refresh on the real HiveServer2, MariaDB and Redis, side by side with its floors.

Run it through ``bench/refresh`` (see bench/README.md). One run:

1. Hive: the tables ``funnel_bench.users_1k``, ``users_1m`` (and ``users_10m`` with
   ``--rows 10000000``) are built inside Hive from ``range(N)``, stored as Parquet, and kept for
   the next run (rebuilt when their row count is wrong or with ``--rebuild-hive``). Every query
   returns about 60% of the table (``user_id % 100 < 60``, flipped inside a window of 10,000 ids
   that moves by its width from one refresh to the next): 10,000 ids enter and 10,000 exit per
   refresh (1% at 1M), the same at 10M, so the diff and the prune do the same work at both sizes
   and only the segment's size changes (1k: 100 ids).
2. Per size and repeat, a *round* on empty stores (the MySQL database ``funnel_bench_refresh``
   dropped, created and migrated by funnel's own migration; Redis database 11 emptied), with
   a, b and c interleaved, each measured in a fresh subprocess:

       c first (v1), a, c diff (v2), b bulk, c diff (v3), a, c prune (v4), b bulk, c prune (v5),
       b default (sizes up to 1M only)

   - a, the fetch floor: the same client funnel uses (``FunnelHiveHook`` + ``HiveQuery``,
     ``fetchmany`` of ``batch_size`` rows), rows dropped;
   - b, the stock operator: the apache-hive provider's ``HiveToMySqlOperator`` into a plain
     MySQL table (``user_id`` as funnel stores it, primary key), ``bulk_load=True`` (Hive ->
     TSV file -> ``LOAD DATA LOCAL INFILE``) and its default mode (``get_records`` then
     ``insert_rows``), ``mysql_preoperator`` truncating the table;
   - c, funnel: ``SegmentRefreshOperator(...).execute(context)`` with a minimal context (as
     tests/integration/test_faults.py builds it), a unique run id and increasing future logical dates.
     v1 is a first refresh, v2 and v3 diff against the live version, v4 and v5 also prune
     (``keep_versions`` is 3): the steady state.
3. Around every measured subprocess: a probe process issuing ``SISMEMBER`` on the segment's
   live members key about every millisecond (the longest wait and when it happened), Redis's
   SLOWLOG (``slowlog-log-slower-than`` 1000 us for the run, restored at the end), the CPU
   of the machine, the servers and everyone else (/proc), and the child's peak RSS (wait4).
4. After the last round of each size: memory per member (Redis ``MEMORY USAGE`` of the live
   set / its size; MySQL data+index bytes of funnel's member tables, found through
   ``funnel.storage.layout``, / (members x kept versions)).

Funnel is driven only through its public operator, and its timings are read from its own log
lines (the child's output), so the bench keeps working when funnel's internals change.
Progress goes to stderr; the tables to stdout and ``bench/.work/refresh.md``, the chart to
``bench/.work/refresh.png``. Exit code 0 when every target measured passes, 1 when not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
OUT = WORK / "refresh"
PYTHON = ROOT / ".venv" / "bin" / "python"
#: funnel's plugins/ as measured: this checkout's working tree, or a copy of a commit (--funnel-rev).
FUNNEL_SRC = ROOT
FUNNEL_REV: str | None = None

MYSQL_HOST, MYSQL_PORT, MYSQL_USER = "127.0.0.1", 3306, "root"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
HIVE_HOST, HIVE_PORT = "127.0.0.1", 10000
MYSQL_DB = "funnel_bench_refresh"
REDIS_DB = int(os.environ.get("BENCH_REFRESH_REDIS_DB", "11"))
HIVE_DB = "funnel_bench"
REDIS_MARKER = "funnel_bench_refresh:marker"
STOCK_TABLE = "bench_stock_members"
STOCK_CONN_HIVE, STOCK_CONN_MYSQL = "bench_stock_hive", "bench_stock_mysql"
DAG_ID = "funnel_bench_refresh"
#: Future logical dates (the overshoot rule and "live data only moves forward" stay out of the way).
FIRST_SLOT = dt.datetime(2040, 1, 1, 9, tzinfo=dt.UTC)
SHARE_PCT = 60

TARGET_X_FLOOR = 2.0
TARGET_PROBE_MS = 10.0
TARGET_RSS_MB = 20.0
#: "The same" prune cost: within 0.1 s (its spread at 1M is 0.06 to 0.12 s) or 50%, whichever is larger.
PRUNE_SAME_ABS_S, PRUNE_SAME_REL = 0.1, 0.5
SLOWLOG_US = 1000
SLOWLOG_LEN = 4096

KINDS = {
    "a": "a  fetch floor: HiveQuery, rows dropped",
    "b_bulk": "b  HiveToMySqlOperator, bulk_load=True",
    "b_default": "b  HiveToMySqlOperator, default mode",
    "c_first": "c  funnel: first refresh (v1)",
    "c_diff": "c  funnel: diff refresh (v2, v3)",
    "c_prune": "c  funnel: diff + prune refresh (v4, v5)",
}
SHORT = {
    "a": "a floor",
    "b_bulk": "b bulk_load",
    "b_default": "b default",
    "c_first": "c first",
    "c_diff": "c diff",
    "c_prune": "c prune",
}


def log(message: str) -> None:
    print(f"[refresh {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def label(n: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if n % unit == 0 and n >= unit:
            return f"{n // unit}{name}"
    return f"{n:,}"


def hive_table(n: int) -> str:
    return f"{HIVE_DB}.users_{label(n).lower().replace(',', '_')}"


def segment_id(n: int) -> str:
    return f"bench_{label(n).lower().replace(',', '_')}"


def churn(n: int) -> int:
    """Ids that enter (and as many that exit) per refresh: 10,000 at every size from 1M on (1% at
    1M), so the diff and the prune do the same work at 1M and 10M and only the segment's size
    changes; 1% (at least 100) below."""
    return 10_000 if n >= 1_000_000 else max(100, n // 100 // 100 * 100)


def query(n: int, shift: int) -> str:
    """60% of the table (``user_id % 100 < 60``), flipped inside a window of ``churn(n)`` ids that
    moves by its own width per refresh: from one shift to the next, ``churn(n)`` ids enter and as
    many exit, whatever ``n``."""
    w = churn(n)
    return (
        f"SELECT user_id FROM {hive_table(n)} WHERE (user_id % 100 < {SHARE_PCT}) <> "
        f"(user_id >= {shift * w} AND user_id < {(shift + 1) * w})"
    )


def members_expected(n: int) -> int:
    """Members of every query (n and the window are multiples of 100): 60% of n, less the
    window's 60%, plus its 40%."""
    return n // 100 * SHARE_PCT - churn(n) // 100 * (2 * SHARE_PCT - 100)


# ----------------------------------------------------------------------------------------------
# Children: each measured run is one fresh process.
# ----------------------------------------------------------------------------------------------


def child(mode: str, spec_path: str, result_path: str) -> None:
    """One measured run. Drivers are imported before the clock starts; the clock covers the work."""
    spec = json.loads(Path(spec_path).read_text())
    import MySQLdb  # noqa: F401  (the drivers every side uses, imported before the clock)
    import pyhive.hive  # noqa: F401
    import redis  # noqa: F401
    import thrift_sasl  # noqa: F401

    result: dict[str, Any] = {"mode": mode}
    if mode == "a":
        from airflow.providers.apache.hive.hooks.hive import get_context_from_env_var

        from funnel import settings
        from funnel.storage.hive.hive_query import HiveQuery

        try:
            from funnel.wiring import hive_hook

            hook = hive_hook(settings.HIVE_CONN_ID)
        except ImportError:  # the wiring moved: the same hook, with the same settings
            from funnel.storage.hooks import FunnelHiveHook

            hook = FunnelHiveHook(
                hiveserver2_conn_id=settings.HIVE_CONN_ID,
                connect_timeout=settings.HIVE_CONNECT_TIMEOUT_SECONDS,
                read_timeout=settings.HIVE_READ_TIMEOUT_SECONDS,
            )
        started, t0 = time.time(), time.perf_counter()
        rows = 0
        with contextlib.closing(hook.get_conn()) as conn:
            # the same session settings funnel's operator sends (Airflow's context variables)
            hive_query = HiveQuery(
                conn, spec["query"], batch_size=settings.BATCH_SIZE, hive_conf=get_context_from_env_var()
            )
            for batch in hive_query.batches():
                rows += len(batch)  # dropped
        result.update(wall=time.perf_counter() - t0, started=started, rows=rows, batch_size=settings.BATCH_SIZE)
    elif mode in ("b_bulk", "b_default"):
        from airflow.providers.apache.hive.transfers.hive_to_mysql import HiveToMySqlOperator

        operator = HiveToMySqlOperator(
            task_id="stock",
            sql=spec["query"],
            mysql_table=STOCK_TABLE,  # unqualified: MySqlHook.bulk_load quotes `db.table` as one name
            hiveserver2_conn_id=STOCK_CONN_HIVE,
            mysql_conn_id=STOCK_CONN_MYSQL,
            mysql_preoperator=f"TRUNCATE TABLE {STOCK_TABLE}",
            bulk_load=mode == "b_bulk",
        )
        started, t0 = time.time(), time.perf_counter()
        operator.execute({})
        result.update(wall=time.perf_counter() - t0, started=started)
    elif mode == "c":
        from collections import defaultdict
        from types import SimpleNamespace

        from funnel.airflow.refresh_operators import SegmentRefreshOperator

        logical_date = dt.datetime.fromisoformat(spec["logical_date"])
        dag_run = SimpleNamespace(
            dag_id=DAG_ID, run_id=spec["run_id"], logical_date=logical_date, run_after=logical_date, conf={}
        )
        context = {
            "dag_run": dag_run,
            "ti": SimpleNamespace(try_number=1),
            "outlet_events": defaultdict(SimpleNamespace),
        }
        operator = SegmentRefreshOperator(
            task_id=spec["segment_id"], segment_id=spec["segment_id"], query=spec["query"]
        )
        started, t0 = time.time(), time.perf_counter()
        summary = operator.execute(context)
        result.update(wall=time.perf_counter() - t0, started=started, summary=summary, rows=summary.get("size"))
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    result["maxrss_self_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(result_path).write_text(json.dumps(result, default=str))


def probe(key: str, db: int) -> None:
    """A reader next to the refresh: SISMEMBER on the live set about every millisecond, until a
    line arrives on stdin; then one JSON line: every probe as [epoch at send, latency in ms]."""
    import redis

    # Real-time priority when allowed (root): the probe stands for a reader on another machine,
    # so its own wait for a CPU of this 2-core box should not count as a wait for Redis. It sleeps
    # about 1 ms between probes, so it never holds a core.
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        realtime = True
    except (OSError, AttributeError):
        realtime = False
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=30)
    client.ping()
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    print("ready", flush=True)
    member = b"123457"
    samples: list[tuple[float, float]] = []
    perf, now, sismember, pause = time.perf_counter, time.time, client.sismember, time.sleep
    while not stop.is_set():
        at = now()
        t0 = perf()
        sismember(key, member)
        samples.append((at, perf() - t0))
        pause(0.001)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {
        "samples": [(round(at, 4), round(latency * 1000, 3)) for at, latency in samples],
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "realtime": realtime,
    }
    print(json.dumps(payload), flush=True)


def probe_stats(
    raw: dict[str, Any], start: float, end: float, foreign: list[dict[str, Any]], own: list[dict[str, Any]]
) -> dict[str, Any]:
    """The probes sent while the measured work ran (``start``..``end``), and the rest's maximum
    (the child's imports and exit: funnel does not touch Redis then, so that is the machine's noise).

    ``foreign`` and ``own``: SLOWLOG entries of other clients (other tests on the same Redis) and
    of funnel. A reader waits behind one command at most once (it sends every ~1 ms), and then
    for about that command's time, so a wait is put down to another client's command when one
    started (SLOWLOG's clock has whole seconds) in the second before the wait or during it and
    lasted the wait within -3..+2 ms, each command explaining one wait; when a command of funnel
    fits as well, the wait stays funnel's.
    """
    inside = [(at, ms) for at, ms in raw["samples"] if start <= at <= end]
    outside = [(at, ms) for at, ms in raw["samples"] if not start <= at <= end]
    outside_top = max(outside, key=lambda x: x[1], default=(start, 0.0))

    def fits(entry: dict[str, Any], at: float, ms: float) -> bool:
        lasted = entry["us"] / 1000
        return int(at) - 1 <= entry["at"] <= at + ms / 1000 and lasted - 2 <= ms <= lasted + 3

    used: set[int] = set()
    explained: list[tuple[float, str, float]] = []
    kept: list[tuple[float, float]] = []
    for at, ms in sorted(inside, key=lambda s: -s[1]):
        cause = None
        if ms > 1 and not any(fits(e, at, ms) for e in own):
            cause = next((i for i, e in enumerate(foreign) if i not in used and fits(e, at, ms)), None)
        if cause is None:
            kept.append((at, ms))
        else:
            used.add(cause)
            explained.append((ms, describe_command(foreign[cause]["command"]), foreign[cause]["us"] / 1000))
    latencies = sorted(ms for _, ms in inside)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    top = sorted(inside, key=lambda s: -s[1])[:5]
    own_top = max(kept, key=lambda s: s[1], default=(start, 0.0))
    return {
        "count": len(latencies),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": top[0][1] if top else 0.0,
        "max_at": top[0][0] if top else start,
        "own_max_ms": own_top[1],
        "own_max_at": own_top[0],
        "explained": sorted(explained, reverse=True)[:5],
        "top": top,
        "over_1ms": sum(1 for ms in latencies if ms > 1),
        "over_10ms": sum(1 for ms in latencies if ms > TARGET_PROBE_MS),
        "own_over_10ms": sum(1 for _, ms in kept if ms > TARGET_PROBE_MS),
        "outside_count": len(outside),
        "outside_max_ms": outside_top[1],
        # where: seconds before the work started (negative) or after it ended (positive)
        "outside_max_when": outside_top[0] - start if outside_top[0] < start else outside_top[0] - end,
        "cpu_s": raw["cpu_s"],
        "realtime": raw.get("realtime", False),
    }


def describe_command(command: str) -> str:
    """A SLOWLOG entry, short: the command, and for a script the funnel keys it touched."""
    words = command.split(" ")
    name = words[0].upper()
    keys = [w.split("}:", 1)[1] for w in words[1:] if "}:" in w]
    if name in ("EVALSHA", "EVAL", "FCALL"):
        return f"{name} [{', '.join(keys)}]"
    return f"{name} {keys[0]}" if keys else name


# ----------------------------------------------------------------------------------------------
# The parent: services, setup, one measured run, the rounds.
# ----------------------------------------------------------------------------------------------


def mysql_connect(database: str | None = None):
    import MySQLdb

    kwargs: dict[str, Any] = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": MYSQL_USER, "charset": "utf8mb4"}
    if database:
        kwargs["db"] = database
    return MySQLdb.connect(**kwargs)


def mysql_rows(sql: str, params: tuple = (), database: str | None = MYSQL_DB) -> list[tuple]:
    conn = mysql_connect(database)
    try:
        cur = conn.cursor()
        cur.execute(sql, params)
        rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def redis_client():
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=120)


def hive_connect():
    from pyhive import hive

    return hive.connect(host=HIVE_HOST, port=HIVE_PORT, username="funnel", auth="NONE")


def funnel_layout():
    """funnel's storage spec (a pure module) from the measured source."""
    sys.path.insert(0, str(FUNNEL_SRC / "plugins"))
    try:
        from funnel.storage import layout
    finally:
        sys.path.pop(0)
    return layout


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__FUNNEL__", "AIRFLOW_CONN_", "AIRFLOW_CTX_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        PYTHONPATH=str(FUNNEL_SRC / "plugins"),
        AIRFLOW_HOME=str(OUT / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(OUT / "no-dags"),
        AIRFLOW_CONN_FUNNEL_HIVE=f"hiveserver2://funnel@{HIVE_HOST}:{HIVE_PORT}/default?auth_mechanism=NONE",
        AIRFLOW_CONN_FUNNEL_MYSQL=f"mysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{MYSQL_DB}",
        AIRFLOW_CONN_FUNNEL_REDIS=f"redis://{REDIS_HOST}:{REDIS_PORT}?db={REDIS_DB}",
        AIRFLOW_CONN_BENCH_STOCK_HIVE=f"hiveserver2://funnel@{HIVE_HOST}:{HIVE_PORT}/default?auth_mechanism=NONE",
        AIRFLOW_CONN_BENCH_STOCK_MYSQL=f"mysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{MYSQL_DB}",
        TMPDIR=str(OUT / "tmp"),
    )
    return env


def build_hive_tables(sizes: list[int], rebuild: bool) -> None:
    conn = hive_connect()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {HIVE_DB}")
        for n in sizes:
            table = hive_table(n)
            count = None
            if not rebuild:
                cur.execute(f"SHOW TABLES IN {HIVE_DB} LIKE '{table.split('.')[1]}'")
                if cur.fetchall():
                    cur.execute(f"SELECT COUNT(*) FROM {table}")
                    count = cur.fetchall()[0][0]
            if count == n:
                log(f"hive: {table} has {n:,} rows (kept from an earlier run)")
                continue
            started = time.perf_counter()
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(
                f"CREATE TABLE {table} STORED AS PARQUET AS "
                "SELECT id AS user_id, "
                "element_at(array('DE', 'FR', 'IN', 'US', 'BR'), CAST(id % 5 AS INT) + 1) AS country, "
                f"CAST(id % 400 AS INT) AS signup_days_ago FROM range({n})"
            )
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            built = cur.fetchall()[0][0]
            if built != n:
                raise SystemExit(f"hive: {table} has {built:,} rows, expected {n:,}")
            log(f"hive: built {table} ({n:,} rows, Parquet) in {time.perf_counter() - started:.1f} s")
    finally:
        conn.close()


def check_redis_db() -> None:
    client = redis_client()
    if client.dbsize() and not client.exists(REDIS_MARKER):
        raise SystemExit(
            f"Redis database {REDIS_DB} holds keys that are not this bench's (no {REDIS_MARKER}); "
            "set BENCH_REFRESH_REDIS_DB to an unused database"
        )
    client.set(REDIS_MARKER, "bench/refresh")


def reset_stores() -> None:
    """Empty stores for a round: the bench database dropped and migrated, Redis db emptied."""
    client = redis_client()
    client.flushdb(asynchronous=True)
    client.set(REDIS_MARKER, "bench/refresh")
    deadline = time.monotonic() + 120
    while int(client.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the old sets are freed before the next measurement
    conn = mysql_connect()
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")
    finally:
        conn.close()
    proc = subprocess.run(
        [str(PYTHON), "-m", "funnel.cli", "migrate"], env=child_env(), capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"funnel's migration failed (python -m funnel.cli migrate, from {FUNNEL_SRC / 'plugins'}):\n"
            f"{(proc.stdout + proc.stderr)[-3000:]}\nIf plugins/ is being edited, measure a commit: --funnel-rev HEAD"
        )
    conn = mysql_connect(MYSQL_DB)
    try:
        conn.cursor().execute(
            f"CREATE TABLE {STOCK_TABLE} (user_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL "
            "PRIMARY KEY) ENGINE=InnoDB"
        )
        conn.commit()
    finally:
        conn.close()


# ---- CPU accounting from /proc -----------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def server_pids() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"redis": [], "mysql": [], "hive": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm == "redis-server":
                found["redis"].append(int(entry.name))
            elif comm in ("mariadbd", "mysqld"):
                found["mysql"].append(int(entry.name))
            elif comm == "java" and b"HiveThriftServer2" in (entry / "cmdline").read_bytes():
                found["hive"].append(int(entry.name))
        except OSError:
            continue
    return found


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4] + values[7]  # idle, iowait, steal
    snap = {"t": time.monotonic(), "busy_s": (sum(values) - idle) / HZ}
    for name, group in pids.items():
        snap[name] = sum(proc_cpu_s(pid) for pid in group)
    return snap


# ---- log lines ---------------------------------------------------------------------------------

_STRUCTLOG = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?) \[(\w+)\s*\] (.*?) \[([\w.]+)\](?: loc=\S+)?\s*$"
)


def parse_log(path: Path) -> list[dict[str, Any]]:
    """Airflow's log lines (structlog's console format) of a child: time, level, logger, message."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = _STRUCTLOG.match(raw)
        if not match:
            continue
        stamp, level, message, logger = match.groups()
        at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        lines.append({"at": at.timestamp(), "level": level, "message": message.strip(), "logger": logger})
    return lines


def funnel_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """funnel's own lines, and the moment its query was sent to Hive (pyhive logs each statement)."""
    keep = []
    for line in lines:
        logger, message = line["logger"], line["message"]
        if logger.startswith("funnel") or ".funnel." in logger:
            if "cannot be called outside of the Task Runner" in message:
                continue
            keep.append(line)
        elif logger == "pyhive.hive" and message.upper().startswith(("SELECT", "WITH")):
            keep.append({**line, "message": "(pyhive) query sent: " + message[:80]})
    return keep


_STAGE = re.compile(r"\b([a-z][a-z_/+-]*(?: [a-z_/+-]+)?)[ =:]+(\d+(?:\.\d+)?) ?s\b", re.IGNORECASE)


def stage_timings(lines: list[dict[str, Any]]) -> list[tuple[str, float, str | None]]:
    """Stage timings from funnel's log lines, as (stage, seconds, the stage it is part of or None).

    Every ``<stage> <seconds>s`` (or ``=``, ``:``) pair of a line holding at least two of them,
    or of a line that says it reports timings; pairs inside parentheses belong to the pair
    before the parentheses (``stage 2.1s (fetch 0.9s, redis 0.8s)``). Nothing here knows
    funnel's stage names: the bench reads whatever funnel logs.
    """
    stages: list[tuple[str, float, str | None]] = []
    for line in lines:
        message = line["message"]
        matches = list(_STAGE.finditer(message))
        pairs = [(m.group(1).strip(), float(m.group(2))) for m in matches]
        if len(pairs) < 2 and not (pairs and re.search(r"timing|stage|took", message, re.IGNORECASE)):
            continue
        parent = None
        for m, (name, seconds) in zip(matches, pairs, strict=True):
            name = re.sub(r"^(?:timings?|in|and)\s+", "", name, flags=re.IGNORECASE)
            depth = message[: m.start()].count("(") - message[: m.start()].count(")")
            if depth > 0:
                stages.append((name, seconds, parent))
            else:
                stages.append((name, seconds, None))
                parent = name
    return stages


# ---- one measured run --------------------------------------------------------------------------


class Probe:
    def __init__(self, key: str) -> None:
        self.proc = subprocess.Popen(
            [str(PYTHON), str(Path(__file__)), "--probe", key, str(REDIS_DB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        ready = self.proc.stdout.readline()
        if ready.strip() != b"ready":
            raise SystemExit(f"the Redis probe did not start ({ready!r})")

    def stop(self) -> dict[str, Any]:
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.read()
        self.proc.wait(10)
        return json.loads(out)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            self.proc.wait(5)


class SlowlogPoller:
    """Reads and resets SLOWLOG (one MULTI) every 0.25 s while a run lasts, so a run that logs
    thousands of slow commands loses none to ``slowlog-max-len`` (entry ids tell if some were)."""

    def __init__(self) -> None:
        self.client = redis_client()
        self.client.slowlog_reset()
        self.entries: dict[int, dict[str, Any]] = {}
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowlog-poller", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pipe = self.client.pipeline(transaction=True)  # read and reset at once: each read is short
        pipe.slowlog_get(SLOWLOG_LEN)
        pipe.slowlog_reset()
        batch = pipe.execute()[0]
        if not batch:
            return
        newest_seen = max(self.entries, default=None)
        ids = [entry["id"] for entry in batch]
        if newest_seen is not None and min(ids) > newest_seen + 1:
            self.lost += min(ids) - newest_seen - 1
        for entry in batch:
            self.entries.setdefault(entry["id"], entry)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._read()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join()
        self._read()
        return list(self.entries.values())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.layout = funnel_layout()
        self.runs: list[dict[str, Any]] = []
        self.memory: dict[int, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.serial = 0
        self.slot = 0
        self.pids = server_pids()
        self.live_probe: Probe | None = None
        self.live_child: subprocess.Popen | None = None

    # one fresh subprocess, with the probe, the SLOWLOG and the CPU around it
    def measure(self, kind: str, n: int, shift: int, repeat: int, version: int | None = None) -> dict[str, Any]:
        self.serial += 1
        tag = f"{self.serial:03d}-{label(n)}-{kind}" + (f"-v{version}" if version else "")
        spec: dict[str, Any] = {"query": query(n, shift)}
        if kind.startswith("c"):
            self.slot += 1
            spec.update(
                segment_id=segment_id(n),
                run_id=f"bench_{os.getpid()}_{self.serial:03d}_{label(n)}_v{version}",
                logical_date=(FIRST_SLOT + dt.timedelta(hours=12 * self.slot)).isoformat(),
            )
        spec_path, result_path, log_path = (
            OUT / "runs" / f"{tag}{suffix}" for suffix in (".spec.json", ".json", ".log")
        )
        spec_path.write_text(json.dumps(spec))
        result_path.unlink(missing_ok=True)
        mode = "c" if kind.startswith("c") else kind
        slowlog_poller = SlowlogPoller()
        self.live_probe = Probe(self.layout.members_key(segment_id(n)))
        before = cpu_snapshot(self.pids)
        with open(log_path, "wb") as output:
            self.live_child = subprocess.Popen(
                [str(PYTHON), str(Path(__file__)), "--child", mode, str(spec_path), str(result_path)],
                env=child_env(),
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            _, status, usage = os.wait4(self.live_child.pid, 0)
            self.live_child.returncode = os.waitstatus_to_exitcode(status)
        after = cpu_snapshot(self.pids)
        probe_raw = self.live_probe.stop()
        self.live_probe, child_proc, self.live_child = None, self.live_child, None
        slowlog = slowlog_poller.stop()
        if child_proc.returncode != 0 or not result_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            raise SystemExit(
                f"run {tag} failed (exit {child_proc.returncode}); {log_path.relative_to(ROOT)} ends with:\n{tail}\n"
                "If plugins/ is being edited right now, rerun, or measure a commit with --funnel-rev HEAD"
            )
        result = json.loads(result_path.read_text())
        lines = parse_log(log_path)
        wall_process = after["t"] - before["t"]
        child_cpu = usage.ru_utime + usage.ru_stime
        servers = {name: after[name] - before[name] for name in self.pids}
        hashtag = f"{{{segment_id(n)}}}".encode()
        ours, theirs = [], []
        for entry in slowlog:
            command = entry["command"] if isinstance(entry["command"], bytes) else str(entry["command"]).encode()
            (ours if hashtag in command else theirs).append(
                {"us": entry["duration"], "at": entry["start_time"], "command": command[:300].decode(errors="replace")}
            )
        stats = probe_stats(probe_raw, result["started"], result["started"] + result["wall"], theirs, ours)
        others = (after["busy_s"] - before["busy_s"]) - child_cpu - stats["cpu_s"] - sum(servers.values())
        run = {
            "tag": tag,
            "kind": kind,
            "n": n,
            "repeat": repeat,
            "version": version,
            "shift": shift,
            "wall": result["wall"],
            "started": result["started"],
            "rows": result.get("rows"),
            "summary": result.get("summary"),
            "maxrss_mb": usage.ru_maxrss / 1024,
            "child_cpu_s": child_cpu,
            "process_s": wall_process,
            "servers_cpu_s": servers,
            "others_cores": max(others, 0.0) / wall_process,
            "probe": stats,
            "slowlog_ours": sorted(ours, key=lambda e: -e["us"])[:10],
            "slowlog_ours_count": len(ours),
            "slowlog_lost": slowlog_poller.lost,
            # the swap: funnel's script that rewrites the live meta hash (under 1 ms: not in SLOWLOG)
            "swap_us": max(
                (
                    e["us"]
                    for e in ours
                    if e["command"].upper().startswith(("EVAL", "FCALL"))
                    and self.layout.meta_key(segment_id(n)) in e["command"]
                ),
                default=0,
            ),
            "slowlog_ours_over_10ms": sum(1 for e in ours if e["us"] > TARGET_PROBE_MS * 1000),
            "slowlog_others": sorted(theirs, key=lambda e: -e["us"])[:3],
            "lines": funnel_lines(lines),
            "log": str(log_path.relative_to(ROOT)),
        }
        if kind == "b_bulk" or kind == "b_default":
            run["rows"] = mysql_rows(f"SELECT COUNT(*) FROM {STOCK_TABLE}")[0][0]
        self.check(run)
        self.runs.append(run)
        top = stats["max_ms"]
        log(
            f"  {tag}: {run['wall']:.2f} s, {run['rows'] or 0:,} rows, peak RSS {run['maxrss_mb']:.0f} MB, "
            f"probe max {top:.1f} ms, others {run['others_cores']:.2f} cores"
        )
        return run

    def check(self, run: dict[str, Any]) -> None:
        """Every run must have done its job: a fast wrong answer is not a result."""
        n, expected = run["n"], members_expected(run["n"])
        if run["rows"] != expected:
            self.problems.append(f"{run['tag']}: {run['rows']} rows, expected {expected:,}")
        summary = run.get("summary")
        if summary is None:
            return
        want = (expected, 0) if run["version"] == 1 else (churn(n), churn(n))
        got = (summary.get("entered"), summary.get("exited"))
        if tuple(got) != want:
            self.problems.append(f"{run['tag']}: entered/exited {got}, expected {want}")
        client = redis_client()
        size = client.scard(self.layout.members_key(segment_id(n)))
        if size != expected:
            self.problems.append(f"{run['tag']}: Redis serves {size:,} members, expected {expected:,}")

    def check_mysql_live(self, n: int) -> None:
        (count,) = mysql_rows(
            f"SELECT COUNT(*) FROM {self.layout.CURRENT_MEMBERS_VIEW} WHERE segment_id = %s", (segment_id(n),)
        )[0]
        if count != members_expected(n):
            self.problems.append(
                f"{label(n)}: MySQL's live members view has {count:,}, expected {members_expected(n):,}"
            )

    def round(self, n: int, repeat: int, last: bool) -> None:
        log(f"round {repeat + 1} at {label(n)} ({n:,} rows, {members_expected(n):,} members): fresh stores")
        reset_stores()
        self.measure("c_first", n, 1, repeat, version=1)
        self.measure("a", n, 1, repeat)
        self.measure("c_diff", n, 2, repeat, version=2)
        self.measure("b_bulk", n, 2, repeat)
        self.measure("c_diff", n, 3, repeat, version=3)
        self.measure("a", n, 3, repeat)
        self.measure("c_prune", n, 4, repeat, version=4)
        self.measure("b_bulk", n, 4, repeat)
        self.measure("c_prune", n, 5, repeat, version=5)
        if n <= 1_000_000 and not self.args.skip_default:
            self.measure("b_default", n, 5, repeat)
        self.check_mysql_live(n)
        if last:
            self.memory[n] = self.memory_per_member(n)

    def memory_per_member(self, n: int) -> dict[str, Any]:
        client = redis_client()
        key = self.layout.members_key(segment_id(n))
        size = client.scard(key)
        redis_bytes = client.memory_usage(key, samples=0)
        names = vars(self.layout)
        member_tables = sorted({v for k, v in names.items() if k.endswith("_TABLE") and "member" in str(v).lower()})
        change_tables = sorted({v for k, v in names.items() if k.endswith("_TABLE") and "change" in str(v).lower()})
        existing = {r[0] for r in mysql_rows("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")}
        member_tables = [t for t in member_tables if t in existing]
        change_tables = [t for t in change_tables if t in existing]
        conn = mysql_connect(MYSQL_DB)
        try:
            cur = conn.cursor()
            for table in member_tables + change_tables:
                cur.execute(f"ANALYZE TABLE `{table}`")
                cur.fetchall()
            cur.execute(
                "SELECT table_name, data_length, index_length, table_rows FROM information_schema.TABLES "
                "WHERE table_schema = %s",
                (MYSQL_DB,),
            )
            sizes = {r[0]: (int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in cur.fetchall()}
            try:
                cur.execute(
                    f"SELECT COUNT(*) FROM {self.layout.VERSIONS_TABLE} WHERE segment_id = %s "
                    "AND state IN ('live', 'retired')",
                    (segment_id(n),),
                )
                kept = int(cur.fetchone()[0])
                kept_how = f"{self.layout.VERSIONS_TABLE} rows in state live or retired"
            except Exception:
                kept, kept_how = 3, "keep_versions (the versions table could not be read)"
        finally:
            conn.close()
        member_bytes = sum(sizes[t][0] + sizes[t][1] for t in member_tables)
        change_bytes = sum(sizes[t][0] + sizes[t][1] for t in change_tables)
        return {
            "members": size,
            "redis_bytes": redis_bytes,
            "redis_per_member": redis_bytes / size if size else 0.0,
            "member_tables": {t: sizes[t] for t in member_tables},
            "change_tables": {t: sizes[t] for t in change_tables},
            "kept": kept,
            "kept_how": kept_how,
            "mysql_member_bytes": member_bytes,
            "mysql_change_bytes": change_bytes,
            "mysql_per_member_version": member_bytes / (size * kept) if size and kept else 0.0,
            "mysql_with_changes_per_member_version": (member_bytes + change_bytes) / (size * kept)
            if size and kept
            else 0.0,
        }

    def stop_children(self) -> None:
        if self.live_child is not None and self.live_child.returncode is None:
            with contextlib.suppress(Exception):
                self.live_child.kill()
                self.live_child.wait(5)
        if self.live_probe is not None:
            self.live_probe.kill()


# ----------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------


def best(runs: list[dict[str, Any]], n: int, kind: str) -> dict[str, Any] | None:
    mine = [r for r in runs if r["n"] == n and r["kind"] == kind]
    return min(mine, key=lambda r: r["wall"]) if mine else None


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


STEADY = ("c_diff", "c_prune")
FUNNEL_KINDS = ("c_first", "c_diff", "c_prune")


def report(
    bench: Bench, sizes: list[int], revision: str, elapsed: float, when: str | None = None
) -> tuple[list[str], bool, dict]:
    """The tables (stdout and refresh.md), whether every target measured passed, the chart's data."""
    runs = bench.runs
    out: list[str] = []
    verdicts: list[bool] = []
    chart: dict[str, Any] = {"sizes": sizes, "walls": {}, "rss": {}}
    judged = [n for n in sizes if n >= 1_000_000]  # the targets are for 1M and 10M
    shown = judged or [max(sizes)]
    when = when or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out.append(f"bench/refresh: {revision}; {when}, {elapsed:.0f} s")
    out.append(
        f"Hive tables {HIVE_DB}.users_<N> (Parquet, from range(N)); every query returns about {SHARE_PCT}% of the "
        "table; from one refresh to the next 10,000 ids enter and 10,000 exit (1% at 1M; the same at 10M)."
    )
    out.append(
        "Each row: the fastest run (each a fresh subprocess; the clock covers the work, not the imports). "
        "rows/s = rows the query returns / wall."
    )
    out.append(
        "peak RSS: the run's process, max RSS (wait4), the largest of its runs. probe max: the longest SISMEMBER "
        "of a concurrent reader while the work ran."
    )
    out.append("")
    head = (
        f"{'size':>4} | {'run':<40} | {'runs':>4} | {'wall':>8} | {'rows/s':>10} | {'peak RSS':>8} | "
        f"{'x a':>6} | {'x b bulk':>8} | {'probe max':>9} | {'others':>6}"
    )
    out.append(head)
    out.append("-" * len(head))
    for n in sizes:
        a, b = best(runs, n, "a"), best(runs, n, "b_bulk")
        for kind, title in KINDS.items():
            mine = [r for r in runs if r["n"] == n and r["kind"] == kind]
            if not mine:
                continue
            r = min(mine, key=lambda x: x["wall"])
            rss = max(x["maxrss_mb"] for x in mine)
            probe_max = max(x["probe"]["max_ms"] for x in mine)
            rate = (r["rows"] or 0) / r["wall"]
            xa = f"{r['wall'] / a['wall']:.2f}" if a else "-"
            xb = f"{r['wall'] / b['wall']:.2f}" if b else "-"
            others = max(x["others_cores"] for x in mine)
            out.append(
                f"{label(n):>4} | {title:<40} | {len(mine):>4} | {fmt_s(r['wall']):>8} | {rate:>10,.0f} | "
                f"{rss:>5.0f} MB | {xa:>6} | {xb:>8} | {probe_max:>6.1f} ms | {others:>6.2f}"
            )
            chart["walls"].setdefault(n, {})[kind] = r["wall"]
            chart["rss"].setdefault(kind, {})[n] = rss
        out.append("")
    out.append(
        "x a, x b bulk: wall / the fetch floor's, / the stock bulk_load's. others: the most CPU (in cores) that "
        "processes other than the run, the probe, Redis, MariaDB and HiveServer2 used while one of the runs "
        "lasted (other work on the machine; quiet: about 0)."
    )
    out.append("Every run (wall s):")
    for n in sizes:
        parts = []
        for kind in KINDS:
            mine = [r for r in runs if r["n"] == n and r["kind"] == kind]
            if mine:
                parts.append(f"{SHORT[kind]} " + "/".join(f"{r['wall']:.2f}" for r in mine))
        out.append(f"  {label(n)}: " + "; ".join(parts))

    # ---- the targets
    out.append("")
    head = f"{'figure':<56} | {'measured':<44} | {'target':<26} | {'ratio':>6} | verdict"
    out.append(head)
    out.append("-" * len(head))

    def row(figure: str, measured: str, target: str, ratio: float | None, verdict: str | bool) -> None:
        if isinstance(verdict, bool):
            verdicts.append(verdict)
            verdict = "PASS" if verdict else "FAIL"
        ratio_text = f"{ratio:.2f}" if ratio is not None else ""
        out.append(f"{figure:<56} | {measured:<44} | {target:<26} | {ratio_text:>6} | {verdict}")

    names = {"c_first": "first refresh", "c_diff": "diff refresh", "c_prune": "diff + prune refresh"}
    for n in shown:
        a, b = best(runs, n, "a"), best(runs, n, "b_bulk")
        for kind in FUNNEL_KINDS:
            c = best(runs, n, kind)
            if not (c and a and b):
                continue
            judge = kind in STEADY and n in judged
            limit = TARGET_X_FLOOR * a["wall"]
            row(
                f"{label(n)}: funnel {names[kind]} vs 2 x fetch floor",
                fmt_s(c["wall"]),
                f"<= 2 x a = {fmt_s(limit)}",
                c["wall"] / limit,
                (c["wall"] <= limit) if judge else "info",
            )
            row(
                f"{label(n)}: funnel {names[kind]} vs stock bulk_load",
                fmt_s(c["wall"]),
                f"< b bulk_load = {fmt_s(b['wall'])}",
                c["wall"] / b["wall"],
                (c["wall"] < b["wall"]) if judge else "info",
            )
    # prune cost: funnel's logged prune stage when it logs one, else prune refresh - diff refresh
    costs: dict[int, tuple[float, str]] = {}
    for n in shown:
        logged = []
        for r in runs:
            if r["n"] == n and r["kind"] == "c_prune":
                prune = [s for name, s, _parent in stage_timings(r["lines"]) if re.search("prun|retir", name, re.I)]
                if prune:
                    logged.append(sum(prune))
        diff, prune_run = best(runs, n, "c_diff"), best(runs, n, "c_prune")
        if logged:
            costs[n] = (min(logged), f"funnel's log, fastest of {len(logged)}")
        elif diff and prune_run:
            costs[n] = (max(prune_run["wall"] - diff["wall"], 0.0), "estimate: prune refresh - diff refresh")
    for n, (cost, how) in costs.items():
        row(f"{label(n)}: prune cost ({how})", f"{cost:.3f} s", "", None, "info")
    if 1_000_000 in costs and 10_000_000 in costs:
        one, ten = costs[1_000_000][0], costs[10_000_000][0]
        allowed = max(PRUNE_SAME_ABS_S, PRUNE_SAME_REL * one)
        row(
            "prune cost, 10M vs 1M",
            f"{ten:.3f} s vs {one:.3f} s",
            f"same: within {allowed:.2f} s",
            ten / one if one > 0 else None,
            abs(ten - one) <= allowed,
        )
    else:
        row("prune cost, 10M vs 1M", "not measured", "needs --rows 10000000", None, "not run")
    # the Redis probe during funnel's runs, and funnel's own commands in SLOWLOG
    for n in shown:
        c_runs = [r for r in runs if r["n"] == n and r["kind"] in FUNNEL_KINDS]
        if not c_runs:
            continue
        worst = max(c_runs, key=lambda r: r["probe"]["own_max_ms"])
        p = worst["probe"]
        raw = max(c_runs, key=lambda r: r["probe"]["max_ms"])
        row(
            f"{label(n)}: longest Redis wait of a reader (probe)",
            f"{p['own_max_ms']:.1f} ms ({SHORT[worst['kind']]} v{worst['version']}"
            f" {p['own_max_at'] - worst['started']:+.2f} s)",
            f"<= {TARGET_PROBE_MS:.0f} ms",
            p["own_max_ms"] / TARGET_PROBE_MS,
            (p["own_max_ms"] <= TARGET_PROBE_MS) if n in judged else "info",
        )
        if raw["probe"]["max_ms"] > p["own_max_ms"]:
            cause = raw["probe"]["explained"][0] if raw["probe"]["explained"] else (0.0, "?", 0.0)
            row(
                "  longer waits behind other clients' commands, left out",
                f"{raw['probe']['max_ms']:.1f} ms ({cause[1]} {cause[2]:.0f} ms)"[:40],
                "",
                None,
                "info",
            )
        noise = [
            (r["probe"]["max_ms"], f"during {SHORT[r['kind']]}")
            for r in runs
            if r["n"] == n and r["kind"] not in FUNNEL_KINDS
        ]
        for r in c_runs:
            when = r["probe"].get("outside_max_when")
            where = "" if when is None else f", {abs(when):.1f} s {'before' if when < 0 else 'after'} the work"
            noise.append((r["probe"]["outside_max_ms"], f"{SHORT[r['kind']]} v{r['version']}{where}"))
        loud = max(noise, default=(0.0, ""))
        row(
            "  the same probe while funnel is not running (noise)",
            f"{loud[0]:.1f} ms ({loud[1]})"[:44],
            "",
            None,
            "info",
        )
        slow = [(e["us"], e["command"]) for r in c_runs for e in r["slowlog_ours"]]
        over = sum(r["slowlog_ours_over_10ms"] for r in c_runs)
        if slow:
            us, command = max(slow)
            row(
                f"{label(n)}: funnel's longest Redis command (SLOWLOG)",
                f"{us / 1000:.1f} ms {describe_command(command)}"[:40],
                f"<= {TARGET_PROBE_MS:.0f} ms",
                us / 1000 / TARGET_PROBE_MS,
                (us / 1000 <= TARGET_PROBE_MS) if n in judged else "info",
            )
            row(f"  funnel's commands over {TARGET_PROBE_MS:.0f} ms, all runs", f"{over:,}", "", None, "info")
            swap = max(r.get("swap_us", 0) for r in c_runs)
            row(
                "  the swap itself (the script rewriting meta), longest",
                f"{swap / 1000:.1f} ms" if swap else f"under {SLOWLOG_US / 1000:.0f} ms (never in SLOWLOG)",
                "",
                None,
                "info",
            )
        else:
            row(f"{label(n)}: funnel's longest Redis command (SLOWLOG)", f"none over {SLOWLOG_US} us", "", None, True)
    # peak RSS flat in N
    small, large = min(sizes), max(sizes)
    deltas = []
    for kind in FUNNEL_KINDS:
        lo = [r["maxrss_mb"] for r in runs if r["n"] == small and r["kind"] == kind]
        hi = [r["maxrss_mb"] for r in runs if r["n"] == large and r["kind"] == kind]
        if lo and hi and small < large:
            deltas.append((max(hi) - max(lo), kind, max(lo), max(hi)))
    if deltas:
        delta, kind, lo, hi = max(deltas)
        row(
            f"funnel peak RSS, {label(small)} -> {label(large)} rows (worst: {SHORT[kind]})",
            f"{lo:.0f} -> {hi:.0f} MB ({delta:+.0f} MB)",
            f"<= +{TARGET_RSS_MB:.0f} MB" + ("" if large >= 10_000_000 else " (to 10M)"),
            delta / TARGET_RSS_MB,
            (delta <= TARGET_RSS_MB) if large >= 1_000_000 else "info",
        )
    # memory per member (no target: reported)
    for n, mem in sorted(bench.memory.items()):
        if n not in shown:
            continue
        row(f"{label(n)}: Redis bytes per member (live set)", f"{mem['redis_per_member']:.1f} B", "", None, "info")
        row(
            f"{label(n)}: MySQL bytes per member per kept version",
            f"{mem['mysql_per_member_version']:.1f} B",
            "",
            None,
            "info",
        )
        if mem["change_tables"]:
            row(
                "  the same, the change log included",
                f"{mem['mysql_with_changes_per_member_version']:.1f} B",
                "",
                None,
                "info",
            )
    if bench.problems:
        verdicts.append(False)
    passed = all(verdicts)
    out.append("")
    if not judged:
        out.append("no verdict: the targets are for 1M and 10M rows (this run's largest table is smaller)")
    out.append(
        f"{'PASS' if passed else 'FAIL'}: {sum(verdicts)} of {len(verdicts)} targets met"
        + (f"; {len(bench.problems)} wrong results" if bench.problems else "")
    )
    out.extend(f"  WRONG RESULT: {problem}" for problem in bench.problems)

    # ---- where funnel's time goes, from its own log lines
    out.append("")
    out.append("Where funnel's time goes, from its own timing log lines (the fastest run of each kind, seconds):")
    table: list[tuple[int, str, dict[str, Any], list[tuple[str, float, str | None]]]] = []
    columns: list[str] = []
    for n in sizes:
        for kind in FUNNEL_KINDS:
            r = best(runs, n, kind)
            if r is None:
                continue
            stages = stage_timings(r["lines"])
            table.append((n, kind, r, stages))
            columns += [name for name, _s, parent in stages if parent is None and name not in columns]
    if columns:
        cells = []
        for n, kind, r, stages in table:
            top = {name: s for name, s, parent in stages if parent is None}
            subs = {p: [(name, s) for name, s, parent in stages if parent == p] for p in top}
            texts = []
            for name in columns:
                if name not in top:
                    texts.append("-")
                    continue
                inner = " / ".join(f"{s:.2f}" for _n, s in subs[name])
                texts.append(f"{top[name]:.2f}" + (f" ({inner})" if inner else ""))
            rest = r["wall"] - sum(top.values())
            cells.append((f"{label(n):>4} {SHORT[kind]:<8}", f"{r['wall']:.2f}", texts, f"{rest:.2f}"))
        titles = []
        for name in columns:
            sub_names: list[str] = []
            for _n, _k, _r, stages in table:
                sub_names += [x for x, _s, parent in stages if parent == name and x not in sub_names]
            titles.append(name + (f" ({' / '.join(sub_names)})" if sub_names else ""))
        widths = [max(len(t), *(len(c[2][i]) for c in cells)) for i, t in enumerate(titles)]
        header = f"  {'':<13} | {'wall':>6} | " + " | ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True))
        out.append(header + " | rest")
        for first, wall, texts, rest in cells:
            body = " | ".join(t.rjust(w) for t, w in zip(texts, widths, strict=True))
            out.append(f"  {first:<13} | {wall:>6} | {body} | {rest:>4}")
        out.append(
            "  (parenthesized: the parts funnel reports inside a stage; rest = wall - the top-level stages: "
            "connections, lock, run history, query submission, checks)"
        )
    else:
        out.append("  funnel logs no stage timings; only the lines below")
    largest = max(sizes)
    for kind in FUNNEL_KINDS:
        r = best(runs, largest, kind)
        if r is None:
            continue
        out.append(f"  {label(largest)} {SHORT[kind]}: funnel's log lines, seconds from execute() ({r['log']}):")
        out.extend(f"    {x['at'] - r['started']:+7.2f} s  {x['message'][:160]}" for x in r["lines"][:12])
        if len(r["lines"]) > 12:
            out.append(f"    ... {len(r['lines']) - 12} more lines")

    # ---- the probe and SLOWLOG, run by run
    out.append("")
    out.append(
        "Redis probe (SISMEMBER on the live set about every ms, its own process; the run's work only) and "
        f"SLOWLOG (slowlog-log-slower-than {SLOWLOG_US} us during the runs), funnel's runs:"
    )
    for r in runs:
        if r["kind"] not in FUNNEL_KINDS or r["n"] not in shown:
            continue
        p = r["probe"]
        before = [line for line in r["lines"] if line["at"] <= p["max_at"]]
        near = before[-1]["message"][:60] if before else "before funnel's first log line"
        ours = r["slowlog_ours"]
        slow_text = f"max {ours[0]['us'] / 1000:.1f} ms {describe_command(ours[0]['command'])}" if ours else "none"
        others = r["slowlog_others"]
        other_text = (
            f"; others' max {others[0]['us'] / 1000:.1f} ms {describe_command(others[0]['command'])}" if others else ""
        )
        out.append(
            f"  {r['tag']}: {p['count']:,} probes, p50 {p['p50_ms']:.2f} / p99 {p['p99_ms']:.2f} / max "
            f"{p['max_ms']:.1f} ms at {p['max_at'] - r['started']:+.2f} s (last line before: {near}); "
            f">10 ms: {p['over_10ms']}"
            + (f", {p['over_10ms'] - p['own_over_10ms']} of them behind others' commands" if p["explained"] else "")
            + f"; SLOWLOG: {r['slowlog_ours_count']} funnel commands >= 1 ms, {slow_text}"
            + (f" ({r['slowlog_lost']} entries lost to slowlog-max-len)" if r.get("slowlog_lost") else "")
            + other_text
        )

    # ---- memory per member: how
    for n, mem in sorted(bench.memory.items()):
        if n not in shown and n != min(sizes):
            continue
        out.append("")
        out.append(f"Memory per member at {label(n)} (after v5; {mem['members']:,} live members):")
        out.append(
            f"  Redis: MEMORY USAGE {bench.layout.members_key(segment_id(n))} SAMPLES 0 = {mem['redis_bytes']:,} B "
            f"/ SCARD {mem['members']:,} = {mem['redis_per_member']:.1f} B per member"
        )
        tables = ", ".join(
            f"{t} data {d:,} + index {i:,} B (~{rows:,} rows)" for t, (d, i, rows) in mem["member_tables"].items()
        )
        out.append(
            f"  MySQL: funnel's member tables (funnel.storage.layout *_TABLE names with 'member'): {tables or 'none'}; "
            "information_schema.TABLES after ANALYZE TABLE:"
        )
        out.append(
            f"    {mem['mysql_member_bytes']:,} B / ({mem['members']:,} members x {mem['kept']} kept versions "
            f"[{mem['kept_how']}]) = {mem['mysql_per_member_version']:.1f} B per member per kept version"
        )
        if mem["change_tables"]:
            changes = ", ".join(f"{t} {d + i:,} B" for t, (d, i, _rows) in mem["change_tables"].items())
            out.append(
                f"    with the change log ({changes}): {mem['mysql_with_changes_per_member_version']:.1f} B "
                "per member per kept version"
            )
    return out, passed, chart


def draw_chart(chart: dict[str, Any], path: Path, revision: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: matplotlib is not importable ({exc})"
    sizes = [n for n in chart["sizes"] if n >= 1_000_000] or [max(chart["sizes"])]
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(5.4 * (len(sizes) + 1), 4.4))
    colors = {
        "a": "#4c72b0",
        "b_bulk": "#8c8c8c",
        "b_default": "#c8c8c8",
        "c_first": "#dd8452",
        "c_diff": "#55a868",
        "c_prune": "#8172b3",
    }
    for ax, n in zip(axes, sizes, strict=False):
        walls = chart["walls"].get(n, {})
        kinds = [k for k in KINDS if k in walls]
        values = [walls[k] for k in kinds]
        limit = TARGET_X_FLOOR * walls.get("a", 0)
        # the stock default mode would dwarf the rest: the axis ends near the others, its bar is cut
        right = 1.35 * max([limit, *(v for k, v in zip(kinds, values, strict=True) if k != "b_default")])
        bars = ax.barh([SHORT[k] for k in kinds], [min(v, right) for v in values])
        for bar, kind, value in zip(bars, kinds, values, strict=True):
            bar.set_color(colors[kind])
            if kind.startswith("c") and limit:
                bar.set_edgecolor("#2ca02c" if value <= limit else "#d62728")
                bar.set_linewidth(2)
            text = f" {value:.2f} s" + (" (cut)" if value > right else "")
            ax.text(min(value, right), bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
        if limit:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1)
            ax.text(limit, -0.6, " 2 x a (target)", fontsize=8, va="bottom")
        ax.invert_yaxis()
        ax.set_xlabel("wall seconds, fastest run (edge: green within 2 x a, red not)")
        ax.set_title(f"{label(n)} rows ({members_expected(n):,} members)", pad=14)
        ax.set_xlim(0, right * 1.15)
    ax = axes[-1]
    for kind, by_n in chart["rss"].items():
        xs = sorted(by_n)
        ax.plot(xs, [by_n[x] for x in xs], marker="o", label=SHORT[kind], color=colors[kind])
    first = chart["rss"].get("c_first", {})
    if first:
        base = first[min(first)]
        ax.axhline(base + TARGET_RSS_MB, color="black", linestyle="--", linewidth=1)
        ax.text(min(first), base + TARGET_RSS_MB, " funnel at 1k + 20 MB", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("rows in the table")
    ax.set_ylabel("peak RSS of the run's process (MB)")
    ax.set_title("peak RSS")
    ax.legend(fontsize=7)
    fig.suptitle(f"bench/refresh: funnel vs the fetch floor (a) and HiveToMySqlOperator (b); {revision}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path.relative_to(ROOT)}"


# ----------------------------------------------------------------------------------------------
# Revision bookkeeping (as bench/parse).
# ----------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def use_revision(rev: str) -> None:
    """Measure plugins/ as committed in ``rev``: a copy under bench/.work/ (git archive)."""
    global FUNNEL_SRC, FUNNEL_REV
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"bench/refresh: {rev!r} is not a commit of {ROOT}")
    target = WORK / f"src-{commit[:12]}"
    if not (target / "plugins" / "funnel" / "__init__.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "dags", "plugins"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    FUNNEL_SRC, FUNNEL_REV = target, commit


def funnel_code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(FUNNEL_SRC.glob("plugins/**/*.py")):
        digest.update(str(path.relative_to(FUNNEL_SRC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def funnel_revision() -> str:
    if FUNNEL_REV:
        return f"funnel = git {FUNNEL_REV[:10]} as committed"
    commit = git("rev-parse", "--short=10", "HEAD")
    if not commit:
        return "funnel = working tree, not a git checkout"
    dirty = git("status", "--porcelain", "--", "plugins")
    return f"funnel = working tree at git {commit}{', with uncommitted changes in plugins/' if dirty else ''}"


# ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    rows = int(str(args.rows).replace("_", "").replace(",", ""))
    if rows < 1_000 or rows % 1_000:
        raise SystemExit("bench/refresh: --rows must be a multiple of 1,000 (every shift then keeps 60%)")
    sizes = sorted({1_000, rows} | ({1_000_000} if rows > 1_000_000 else set()))
    for sub in ("runs", "airflow", "tmp", "no-dags"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    for old in (OUT / "runs").iterdir():
        old.unlink()
    revision = funnel_revision()
    digest = funnel_code_digest()
    log(f"{revision}; sizes {[label(n) for n in sizes]}; progress here, the tables on stdout and in bench/.work/")
    check_redis_db()
    build_hive_tables(sizes, args.rebuild_hive)
    bench = Bench(args)
    client = redis_client()
    old_config = {name: client.config_get(name)[name] for name in ("slowlog-log-slower-than", "slowlog-max-len")}

    def interrupted(signum: int, _frame: Any) -> None:
        raise SystemExit(f"bench/refresh: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        client.config_set("slowlog-log-slower-than", SLOWLOG_US)
        client.config_set("slowlog-max-len", SLOWLOG_LEN)
        log("warm-up (not measured): a fetch of every table, one funnel refresh at 1k")
        reset_stores()
        for n in sizes:
            bench.measure("a", n, 0, -1)
        bench.measure("c_first", min(sizes), 0, -1, version=1)
        bench.runs.clear()
        bench.problems.clear()
        for repeat in range(max(args.repeats, args.large_repeats)):
            for n in sizes:
                wanted = args.large_repeats if n > 1_000_000 else args.repeats
                if repeat < wanted:
                    bench.round(n, repeat, last=repeat == wanted - 1)
    finally:
        bench.stop_children()
        for name, value in old_config.items():
            with contextlib.suppress(Exception):
                client.config_set(name, value)
        log(f"Redis {', '.join(f'{k} {v}' for k, v in old_config.items())} restored")
        if not args.keep:
            with contextlib.suppress(Exception):
                client.flushdb(asynchronous=True)
                client.set(REDIS_MARKER, "bench/refresh")
            with contextlib.suppress(Exception):
                mysql_rows(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`", database=None)
            log(f"removed the bench's data (Redis db {REDIS_DB}, MySQL {MYSQL_DB}); --keep keeps it")
    changed = funnel_code_digest() != digest
    elapsed = time.perf_counter() - started
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "sizes": sizes,
                "runs": bench.runs,
                "memory": bench.memory,
                "problems": bench.problems,
                "revision": revision,
                "elapsed": elapsed,
                "changed": changed,
                "command": "bench/refresh " + " ".join(sys.argv[1:]),
                "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            },
            default=str,
        )
    )
    lines, passed, chart = report(bench, sizes, revision, elapsed)
    if changed:
        lines.insert(1, "WARNING: funnel's plugins/ changed during this run: the rows may mix two versions. Rerun.")
    command = "bench/refresh " + " ".join(sys.argv[1:])
    print("\n".join(lines))
    chart_note = draw_chart(chart, WORK / "refresh.png", revision)
    write_markdown(lines, command)
    log(f"wrote bench/.work/refresh.md, {chart_note}, raw numbers in {(OUT / 'results.json').relative_to(ROOT)}")
    return 0 if passed and not changed else 1


def report_again() -> int:
    """The tables and the chart again, from the last run's results.json."""
    saved = json.loads((OUT / "results.json").read_text())
    bench = Bench.__new__(Bench)
    bench.layout = funnel_layout()
    bench.runs, bench.problems = saved["runs"], saved.get("problems", [])
    bench.memory = {int(n): mem for n, mem in saved["memory"].items()}
    lines, passed, chart = report(
        bench, saved["sizes"], saved["revision"], saved.get("elapsed", 0.0), saved.get("when")
    )
    if saved.get("changed"):
        lines.insert(1, "WARNING: funnel's plugins/ changed during this run: the rows may mix two versions. Rerun.")
    print("\n".join(lines))
    write_markdown(lines, saved.get("command", "bench/refresh"))
    log(draw_chart(chart, WORK / "refresh.png", saved["revision"]))
    return 0 if passed else 1


def write_markdown(lines: list[str], command: str) -> None:
    (WORK / "refresh.md").write_text(
        f"# bench/refresh\n\n`{command.strip()}`\n\n```\n"
        + "\n".join(lines)
        + "\n```\n\n![bench/refresh](refresh.png)\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SPEC", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", nargs=2, metavar=("KEY", "DB"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--rows", default="1000000", help="rows of the largest Hive table (default 1000000; 10000000 adds 10M)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds at 1k and 1M (default 3)")
    parser.add_argument("--large-repeats", type=int, default=1, help="rounds above 1M (default 1)")
    parser.add_argument("--skip-default", action="store_true", help="leave out the stock operator's default mode")
    parser.add_argument("--rebuild-hive", action="store_true", help="rebuild the Hive tables even if they look right")
    parser.add_argument("--keep", action="store_true", help="keep the bench's MySQL database and Redis db at the end")
    parser.add_argument("--funnel-rev", help="measure plugins/ as of this git commit (default: the working tree)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the last run again (no run)")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.probe:
        probe(args.probe[0], int(args.probe[1]))
        return 0
    if args.funnel_rev:
        use_revision(args.funnel_rev)
    if args.report_only:
        return report_again()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
