"""DAG parse time: funnel's factory vs astronomer's dag-factory, building the same tasks.

Run it through ``bench/parse`` (see bench/README.md). One run prints a side-by-side table for
catalogs of 100, 1,000 and 10,000 dynamic segments.

Every measurement is one fresh Python subprocess (``--child``): it imports Airflow first (what
the DAG processor already has in memory when it forks a parse), then starts the clock and does
what the processor does for one file: fill a ``DagBag`` from the file (the file's import) and
``DagSerialization.to_dict`` every DAG. Each measurement is repeated and the median reported.

funnel side: N rows in the MySQL database ``funnel_bench`` (created by funnel's own migration),
parsed from the real ``dags/funnel_segments.py``. Three funnel cases, because the factory
keeps a last-good snapshot (with the digests of queries already checked) under AIRFLOW_HOME:

- cold: every query text is new and the state folder (the child's AIRFLOW_HOME, so the
  snapshot, TMPDIR and working directory) is empty: a first deploy or a new DAG processor;
- edit: the first parse after one segment's query was edited, snapshot present;
- warm: the catalog is unchanged since the last parse (after one unmeasured warm-up parse).

dag-factory side: one YAML config holding the same DAG and the same N
``funnel.airflow.refresh_operators.SegmentRefreshOperator`` tasks (written from the DAG funnel built: same
task_id, segment_id, query, doc_md; same schedule, start_date, catchup, max_active_runs,
tags, description, DAG doc), loaded by dag-factory's documented loader file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
PYTHON = ROOT / ".venv" / "bin" / "python"
#: Where funnel's dags/ and plugins/ are taken from: this checkout's working tree, or with
#: --funnel-rev REV a copy of that commit's dags/ and plugins/ under bench/.work/ (to compare
#: two versions of the factory, or to measure a committed state while the tree is being edited).
FUNNEL_SRC = ROOT
FUNNEL_REV: str | None = None
FUNNEL_DAG_FILE = FUNNEL_SRC / "dags" / "funnel_segments.py"

DAG_ID = "funnel_dynamic_segments"
SCHEDULE = "0 9,18 * * *"
OPERATOR = "funnel.airflow.refresh_operators.SegmentRefreshOperator"
BENCH_DB = "funnel_bench"
MYSQL_URI = os.environ.get("BENCH_FUNNEL_MYSQL", f"mysql://root@127.0.0.1:3306/{BENCH_DB}")
DAG_FIELDS = ("timetable", "start_date", "catchup", "max_active_runs", "tags", "description", "doc_md")
TARGET_SECONDS = 1.5
TARGET_SIZE = 10_000

# ----------------------------------------------------------------------------------------------
# The catalog and the dag-factory config: the same segments on both sides.
# ----------------------------------------------------------------------------------------------


def segment_rows(n: int, lookback_days: int = 30) -> list[tuple[str, str, str, str]]:
    """(segment_id, name, kind, query) rows; the queried table varies per segment."""
    rows = []
    for i in range(1, n + 1):
        sid = f"seg_{i:05d}"
        query = (
            f"SELECT user_id FROM dw.events_{i:05d} "
            f"WHERE event_date >= date_sub('{{{{ ds }}}}', {lookback_days}) "
            "GROUP BY user_id HAVING COUNT(*) > 2"
        )
        rows.append((sid, f"Bench segment {i:05d}", "dynamic", query))
    return rows


def mysql_connect(database: str | None):
    import MySQLdb  # mysqlclient, installed with the MySQL provider

    url = urlsplit(MYSQL_URI)
    kwargs = {"host": url.hostname or "127.0.0.1", "port": url.port or 3306, "user": url.username or "root"}
    if url.password:
        kwargs["passwd"] = url.password
    if database:
        kwargs["db"] = database
    return MySQLdb.connect(charset="utf8mb4", **kwargs)


def load_catalog(rows: list[tuple[str, str, str, str]]) -> float:
    """Replace the bench catalog with ``rows`` (one executemany); return the seconds it took."""
    started = time.perf_counter()
    conn = mysql_connect(BENCH_DB)
    try:
        cur = conn.cursor()
        cur.execute("DELETE FROM funnel_segments")
        for start in range(0, len(rows), 5000):
            cur.executemany(
                "INSERT INTO funnel_segments (segment_id, name, kind, query) VALUES (%s, %s, %s, %s)",
                rows[start : start + 5000],
            )
        conn.commit()
        cur.execute("SELECT COUNT(*) FROM funnel_segments")
        (count,) = cur.fetchone()
    finally:
        conn.close()
    if count != len(rows):
        raise SystemExit(f"catalog load: expected {len(rows)} rows in {BENCH_DB}.funnel_segments, found {count}")
    return time.perf_counter() - started


def write_dagfactory_folder(n: int, spec: dict) -> Path:
    """A dags folder with one YAML config (one DAG, N tasks) and dag-factory's loader file.

    ``spec`` is the DAG funnel built from the same catalog (dumped by a child), so both sides
    construct the same operator with the same arguments.
    """
    import yaml

    folder = WORK / "dagfactory" / f"n{n}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    dag = spec["dag"]
    config = {
        DAG_ID: {
            "schedule": dag["schedule"],
            "start_date": dag["start_date"],
            "catchup": dag["catchup"],
            "max_active_runs": dag["max_active_runs"],
            "tags": dag["tags"],
            "description": dag["description"],
            "doc_md": dag["doc_md"],
            "tasks": [{"task_id": t["task_id"], "operator": OPERATOR, **t["kwargs"]} for t in spec["tasks"]],
        }
    }
    config_path = folder / "funnel_dynamic_segments.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False, width=10_000))
    loader = folder / "funnel_dagfactory.py"
    loader.write_text(
        '"""dag-factory loader (an Airflow DAG file): builds the DAGs of one YAML config."""\n'
        "from pathlib import Path\n\n"
        "from dagfactory import load_yaml_dags\n\n"
        "load_yaml_dags(\n"
        "    globals_dict=globals(),\n"
        '    config_filepath=str(Path(__file__).with_name("funnel_dynamic_segments.yml")),\n'
        ")\n"
    )
    return loader


# ----------------------------------------------------------------------------------------------
# Environments of the two sides.
# ----------------------------------------------------------------------------------------------

FUNNEL_STATE = WORK / "funnel-state"
DAGFACTORY_STATE = WORK / "dagfactory-state"


def base_env(state: Path, dags_folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Drop a caller's Airflow pointers that would send the child elsewhere.
    # PYTHONDONTWRITEBYTECODE (set in some shells and agents) would make every child compile
    # every module it imports from source, as no DAG processor does: drop it, and prime() once.
    dropped = ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    for key in list(env):
        if key in dropped or key.startswith("AIRFLOW_CONN_"):
            env.pop(key)
    env.update(
        {
            "AIRFLOW_HOME": str(state / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(FUNNEL_SRC / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # scripts/env.sh's conventions: plugins/ on the path, the three connections,
            # MySQL pointing at the bench database.
            "PYTHONPATH": str(FUNNEL_SRC / "plugins"),
            "AIRFLOW_CONN_FUNNEL_MYSQL": MYSQL_URI,
            "AIRFLOW_CONN_FUNNEL_HIVE": "hiveserver2://funnel@127.0.0.1:10000/default?auth_mechanism=NONE",
            "AIRFLOW_CONN_FUNNEL_REDIS": "redis://127.0.0.1:6379?db=0",
            "TMPDIR": str(state / "tmp"),
        }
    )
    return env


def funnel_env(check_everything: bool = False) -> dict[str, str]:
    env = base_env(FUNNEL_STATE, FUNNEL_DAG_FILE.parent)
    if check_everything:
        env["AIRFLOW__FUNNEL__QUERY_CHECK_BUDGET_SECONDS"] = "1000000"
    # The factory's last-good snapshot (its default place, made explicit): inside the state folder.
    env["AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH"] = str(FUNNEL_STATE / "airflow-home" / "funnel" / "catalog.json")
    return env


def dagfactory_env(loader: Path) -> dict[str, str]:
    env = base_env(DAGFACTORY_STATE, loader.parent)
    # dag-factory lives in bench/.work/site (see bench/parse), on the path of its children only.
    site = os.environ.get("FUNNEL_BENCH_SITE", str(WORK / "site"))
    env["PYTHONPATH"] = os.pathsep.join([site, env["PYTHONPATH"]])
    # dag-factory's telemetry (sent by its listener plugin at run time): off; no network here anyway.
    env.update({"AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY": "False", "DO_NOT_TRACK": "1", "SCARF_NO_ANALYTICS": "1"})
    return env


def fresh_state(state: Path) -> None:
    if state.exists():
        shutil.rmtree(state)
    (state / "airflow-home").mkdir(parents=True)
    (state / "tmp").mkdir()


def state_files(state: Path) -> dict[str, int]:
    return {str(p.relative_to(state)): p.stat().st_mtime_ns for p in state.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------------
# One measurement: a fresh subprocess.
# ----------------------------------------------------------------------------------------------


def measure(
    dag_file: Path, env: dict[str, str], state: Path, profile_to: Path | None = None, dump_spec: Path | None = None
) -> dict:
    result_path = WORK / f"result-{time.monotonic_ns()}.json"
    cmd = [str(PYTHON), str(Path(__file__).resolve()), "--child", str(dag_file), str(result_path)]
    if profile_to:
        cmd += ["--profile-to", str(profile_to)]
    if dump_spec:
        cmd += ["--dump-spec", str(dump_spec)]
    before = state_files(state)
    proc = subprocess.run(cmd, env=env, cwd=state, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not result_path.exists():
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"parse of {dag_file} failed (exit {proc.returncode})")
    try:
        result = json.loads(result_path.read_text())
    finally:
        result_path.unlink()
    if result["import_errors"]:
        raise SystemExit(f"parse of {dag_file}: import errors: {json.dumps(result['import_errors'])[:3000]}")
    # The one expected note: on a cold parse, the query-check budget leaves some queries for later.
    budget_notes = [m for m in result["funnel_problems"] if "new queries not checked yet" in m]
    result["unchecked"] = int(budget_notes[0].split("funnel: ")[-1].split()[0]) if budget_notes else 0
    problems = [m for m in result["funnel_problems"] if m not in budget_notes]
    if problems:
        raise SystemExit(f"parse of {dag_file}: funnel logged problems: {problems[:5]}")
    after = state_files(state)
    result["wrote"] = sorted(
        k for k, v in after.items() if before.get(k) != v and k != "airflow-home/airflow.cfg" and "/logs/" not in k
    )
    return result


def child(dag_file: str, result_path: str, profile_to: str | None, dump_spec: str | None) -> None:
    """Inside the fresh subprocess: Airflow imports first, then the clock."""
    import logging

    import airflow
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}"[:2000])

    # funnel's warnings and errors (a catalog read that fell back to the snapshot, invalid
    # segments): the parent refuses to report a time measured on such a parse.
    funnel_problems = Keep()
    logging.getLogger("funnel").addHandler(funnel_problems)

    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    bag = DagBag(
        dag_folder=dag_file,
        bundle_path=Path(dag_file).parent,
        bundle_name="bench",
        load_op_links=False,  # as the DAG processor's parse does
    )
    t1 = time.perf_counter()
    serialized = {dag_id: DagSerialization.to_dict(dag) for dag_id, dag in bag.dags.items()}
    t2 = time.perf_counter()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_to)

    dags = {}
    for dag_id, dag in bag.dags.items():
        data = serialized[dag_id]["dag"]
        tasks = data["tasks"]
        dags[dag_id] = {
            "tasks": len(dag.tasks),
            "serialized_tasks": len(tasks),
            "serialized_bytes": len(json.dumps(serialized[dag_id], default=str)),
            "first_task": tasks[0]["__var"] if tasks else {},
            "dag_fields": {k: data.get(k) for k in DAG_FIELDS},
        }
    Path(result_path).write_text(
        json.dumps(
            {
                "fill_s": t1 - t0,
                "fill_serialize_s": t2 - t0,
                "dags": dags,
                "import_errors": bag.import_errors,
                "funnel_problems": funnel_problems.messages,
            },
            default=str,
        )
    )
    if dump_spec and DAG_ID in bag.dags:
        dag = bag.dags[DAG_ID]
        spec = {
            "dag": {
                "schedule": serialized[DAG_ID]["dag"]["timetable"]["__var"]["expression"],
                "start_date": dag.start_date.isoformat(),
                "catchup": dag.catchup,
                "max_active_runs": dag.max_active_runs,
                "tags": sorted(dag.tags),
                "description": dag.description,
                "doc_md": dag.doc_md,
            },
            "tasks": [
                {
                    "task_id": t.task_id,
                    "kwargs": {"segment_id": t.segment_id, "query": t.query, "doc_md": t.doc_md},
                }
                for t in dag.tasks
            ],
        }
        Path(dump_spec).write_text(json.dumps(spec))


# ----------------------------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------------------------


def migrate_bench_db() -> None:
    """The bench database and funnel's schema in it, by funnel's own migration."""
    fresh_state(FUNNEL_STATE)
    proc = subprocess.run(
        [str(PYTHON), "-m", "funnel.cli", "migrate"],
        env=funnel_env(),
        cwd=FUNNEL_STATE,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("funnel migration of the bench database failed")


def edit_query(segment_id: str, query: str) -> None:
    conn = mysql_connect(BENCH_DB)
    try:
        conn.cursor().execute("UPDATE funnel_segments SET query = %s WHERE segment_id = %s", (query, segment_id))
        conn.commit()
    finally:
        conn.close()


def dag_differences(funnel: dict, dagf: dict) -> list[str]:
    """DAG-level serialized fields that differ, less dag-factory's own additions (checked here)."""
    differing = []
    for key in funnel:
        f, d = funnel[key], dagf[key]
        if key == "tags" and sorted(set(d) - {"dagfactory"}) == sorted(f) and "dagfactory" in d:
            continue  # dag-factory adds the tag 'dagfactory' to every DAG it builds
        if key == "doc_md" and isinstance(d, str) and d.startswith(f or "") and "## YML DAG" in d:
            continue  # dag-factory appends the DAG's YAML to its doc
        if f != d:
            differing.append(key)
    return differing


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def check_dag(result: dict, n: int, side: str) -> dict:
    info = result["dags"].get(DAG_ID)
    if info is None:
        raise SystemExit(f"{side}: DAG {DAG_ID} not built (got {sorted(result['dags'])})")
    if info["tasks"] != n or info["serialized_tasks"] != n:
        raise SystemExit(f"{side}: {info['tasks']} tasks ({info['serialized_tasks']} serialized), expected {n}")
    return info


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prime() -> None:
    """One unmeasured parse per side, so the modules both import have their bytecode cached."""
    n = 10
    load_catalog(segment_rows(n))
    fresh_state(FUNNEL_STATE)
    spec_path = WORK / f"funnel-dag-{n}.json"
    measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE, dump_spec=spec_path)
    loader = write_dagfactory_folder(n, json.loads(spec_path.read_text()))
    fresh_state(DAGFACTORY_STATE)
    measure(loader, dagfactory_env(loader), DAGFACTORY_STATE)


def measure_size(n: int, repeats: int) -> dict:
    base = segment_rows(n)
    # funnel, full: like cold below, but one parse checks every query (no budget).
    full = []
    for rep in range(repeats):
        load_catalog(segment_rows(n, lookback_days=131 + rep))
        fresh_state(FUNNEL_STATE)
        full.append(measure(FUNNEL_DAG_FILE, funnel_env(check_everything=True), FUNNEL_STATE))
        log(f"  n={n:>6} funnel full #{rep + 1}: fill {full[-1]['fill_s']:.3f}s")
    # funnel, cold: each repetition follows a change of every query text (the lookback varies)
    # and starts from an empty state folder, so no snapshot and no checked-query digests.
    cold = []
    for rep in range(repeats):
        load_s = load_catalog(segment_rows(n, lookback_days=31 + rep))
        fresh_state(FUNNEL_STATE)
        cold.append(measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE))
        log(
            f"  n={n:>6} funnel cold #{rep + 1}: fill {cold[-1]['fill_s']:.3f}s, {cold[-1]['unchecked']} queries "
            f"left for later parses (catalog load {load_s:.2f}s)"
        )
    # funnel, edit: the base catalog, one unmeasured parse that checks every query and writes
    # the snapshot (the steady state the DAG processor reaches after a few budgeted parses),
    # then each repetition edits one segment's query (a different one each time) and parses.
    load_catalog(base)
    measure(FUNNEL_DAG_FILE, funnel_env(check_everything=True), FUNNEL_STATE)
    edit = []
    for rep in range(repeats):
        sid, _name, _kind, query = base[rep % n]
        edit_query(sid, query.replace("> 2", f"> {3 + rep}"))
        edit.append(measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE))
        log(f"  n={n:>6} funnel edit #{rep + 1}: fill {edit[-1]['fill_s']:.3f}s, wrote {edit[-1]['wrote']}")
    # funnel, warm: the base catalog again, one unmeasured warm-up parse (it also dumps the DAG
    # for dag-factory's YAML), then parses of the unchanged catalog.
    load_catalog(base)
    spec_path = WORK / f"funnel-dag-{n}.json"
    measure(FUNNEL_DAG_FILE, funnel_env(check_everything=True), FUNNEL_STATE, dump_spec=spec_path)
    warm = [measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE) for _ in range(repeats)]
    log(f"  n={n:>6} funnel warm: fill {median(warm, 'fill_s'):.3f}s, wrote {warm[-1]['wrote']}")
    # dag-factory: the same DAG and tasks, from one YAML.
    loader = write_dagfactory_folder(n, json.loads(spec_path.read_text()))
    fresh_state(DAGFACTORY_STATE)
    dagf = [measure(loader, dagfactory_env(loader), DAGFACTORY_STATE) for _ in range(repeats)]
    log(f"  n={n:>6} dag-factory: fill {median(dagf, 'fill_s'):.3f}s")

    for r in full + cold + edit + warm:
        check_dag(r, n, "funnel")
    for r in dagf:
        check_dag(r, n, "dag-factory")
    f_info, d_info = check_dag(warm[0], n, "funnel"), check_dag(dagf[0], n, "dag-factory")
    keys = set(f_info["first_task"]) | set(d_info["first_task"])
    return {
        "n": n,
        "tasks_funnel": f_info["tasks"],
        "tasks_dagfactory": d_info["tasks"],
        "funnel": {"full": full, "cold": cold, "edit": edit, "warm": warm},
        "unchecked_cold": median(cold, "unchecked"),
        "dagf": dagf,
        "task_diff": sorted(k for k in keys if f_info["first_task"].get(k) != d_info["first_task"].get(k)),
        "dag_diff": dag_differences(f_info["dag_fields"], d_info["dag_fields"]),
        "mb_funnel": f_info["serialized_bytes"] / 1e6,
        "mb_dagf": d_info["serialized_bytes"] / 1e6,
        "wrote": {mode: runs[0]["wrote"] for mode, runs in (("cold", cold), ("edit", edit), ("warm", warm))},
    }


def run(sizes: list[int], repeats: int, profile: bool, profile_top: int) -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, os.environ.get("FUNNEL_BENCH_SITE", str(WORK / "site")))  # dag-factory's version
    started = time.perf_counter()
    log(f"bench/parse: sizes {sizes}, {repeats} runs per cell; progress on stderr, the table on stdout")
    code_before, revision = funnel_code_digest(), funnel_revision()
    migrate_bench_db()
    prime()
    rows = [measure_size(n, repeats) for n in sizes]
    print_table(rows, repeats, revision)
    if funnel_code_digest() != code_before:
        print(f"\nWARNING: funnel's dags/ or plugins/ changed during this run (it started on: {revision});")
        print("the rows above may mix two versions. Rerun, or pin one with --funnel-rev.")
    passed = print_verdict(rows)
    if profile:
        print_profile(max(sizes), profile_top)
    print(f"\n(bench run took {time.perf_counter() - started:.0f} s)")
    return 0 if passed else 1


MODES = {
    "full": "full: as cold, with the query-check budget off, so this one parse checks all N queries "
    "(what strict mode does in CI; informational, not part of the verdict)",
    "cold": "cold: no snapshot and every query text new (first deploy / new DAG processor); new queries are "
    "checked for query_check_budget_seconds, the rest at the next parses and by each task before Hive",
    "edit": "edit: first parse after one segment's query was edited (snapshot present)",
    "warm": "warm: catalog unchanged since the last parse",
}


def print_table(rows: list[dict], repeats: int, revision: str) -> None:
    from importlib.metadata import version

    def cells(f: float, d: float) -> str:
        return f"{f:>7.3f} {d:>9.3f} {d / f:>6.1f}x"

    print()
    print(f"DAG parse time in seconds: median of {repeats} fresh subprocesses, Airflow imported before the clock.")
    print(f"funnel = {FUNNEL_DAG_FILE.relative_to(ROOT)} ({revision}), catalog in MySQL {BENCH_DB};")
    print(
        f"dag-factory {version('dag-factory')} = one YAML config and its loader file; "
        f"Airflow {version('apache-airflow-core')}."
    )
    print("fill = DagBag(dag_folder=<file>) (the file's import); +ser = fill + DagSerialization.to_dict of every DAG.")
    print("ratio = dag-factory / funnel (above 1 means funnel is faster).")
    print()
    head = (
        f"{'segments':>8}  {'tasks funnel/dagf':>17}  {'funnel':<6}"
        f" | {'fill':>7} {'dagf fill':>9} {'ratio':>7}"
        f" | {'+ser':>7} {'dagf +ser':>9} {'ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        d_fill, d_ser = median(row["dagf"], "fill_s"), median(row["dagf"], "fill_serialize_s")
        for i, (mode, runs) in enumerate(row["funnel"].items()):
            f_fill, f_ser = median(runs, "fill_s"), median(runs, "fill_serialize_s")
            n = f"{row['n']:,}" if i == 0 else ""
            tasks = f"{row['tasks_funnel']:,}/{row['tasks_dagfactory']:,}" if i == 0 else ""
            print(f"{n:>8}  {tasks:>17}  {mode:<6} | {cells(f_fill, d_fill)} | {cells(f_ser, d_ser)}")
    print()
    for text in MODES.values():
        print(f"  {text}")
    print()
    for row in rows:
        same = "identical" if not row["task_diff"] else f"differ in {row['task_diff']}"
        dag_same = (
            "identical but for dag-factory's additions (tag 'dagfactory', its YAML appended to the DAG doc)"
            if not row["dag_diff"]
            else f"differ in {row['dag_diff']}"
        )
        runs = "; ".join(
            mode + " " + "/".join(f"{r['fill_s']:.2f}" for r in rs)
            for mode, rs in [*row["funnel"].items(), ("dagf", row["dagf"])]
        )
        print(f"n={row['n']:,}: fill of each run: {runs}")
        print(
            f"  serialized first task: {same}; DAG {', '.join(DAG_FIELDS)}: {dag_same}; "
            f"serialized size {row['mb_funnel']:.1f} MB funnel, {row['mb_dagf']:.1f} MB dag-factory"
        )
        print(f"  files a funnel parse wrote: {row['wrote']}")


def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def use_revision(rev: str) -> None:
    """Measure dags/ and plugins/ as committed in ``rev``: a copy under bench/.work/ (git archive)."""
    global FUNNEL_SRC, FUNNEL_DAG_FILE, FUNNEL_REV
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"bench/parse: {rev!r} is not a commit of {ROOT}")
    target = WORK / f"src-{commit[:12]}"
    if not (target / "dags" / "funnel_segments.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "dags", "plugins"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    FUNNEL_SRC, FUNNEL_DAG_FILE, FUNNEL_REV = target, target / "dags" / "funnel_segments.py", commit


def funnel_code_digest() -> str:
    """A digest of the measured dags/ and plugins/ sources, to notice edits during a run."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*FUNNEL_SRC.glob("dags/**/*.py"), *FUNNEL_SRC.glob("plugins/**/*.py")]):
        digest.update(str(path.relative_to(FUNNEL_SRC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def funnel_revision() -> str:
    if FUNNEL_REV:
        return f"git {FUNNEL_REV[:10]} as committed"
    commit = git("rev-parse", "--short=10", "HEAD")
    if not commit:
        return "working tree, not a git checkout"
    dirty = git("status", "--porcelain", "--", "plugins", "dags")
    return f"working tree at git {commit}{', with uncommitted changes in plugins/ or dags/' if dirty else ''}"


def print_verdict(rows: list[dict]) -> bool:
    target = next((r for r in rows if r["n"] == TARGET_SIZE), None)
    print()
    if target is None:
        print(f"TARGET not measured (needs the {TARGET_SIZE:,}-segment size)")
        return True
    d_fill, d_ser = median(target["dagf"], "fill_s"), median(target["dagf"], "fill_serialize_s")
    ok = True
    for mode, runs in target["funnel"].items():
        f_fill, f_ser = median(runs, "fill_s"), median(runs, "fill_serialize_s")
        if mode == "full":
            print(
                f"INFO full: checking all {TARGET_SIZE:,} new queries in one parse takes {f_fill:.3f} s "
                f"({f_ser:.3f} s with serialization); a cold parse leaves "
                f"{target['unchecked_cold']:,.0f} of them to the next parses"
            )
            continue
        passed = f_fill <= TARGET_SECONDS and f_fill < d_fill and f_ser < d_ser
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'} {mode}: funnel fills the DagBag with {TARGET_SIZE:,} segments in "
            f"{f_fill:.3f} s ({'<=' if f_fill <= TARGET_SECONDS else '>'} {TARGET_SECONDS} s target), "
            f"{f_ser:.3f} s with serialization; dag-factory {d_fill:.3f} s / {d_ser:.3f} s "
            f"(funnel {'faster' if f_fill < d_fill and f_ser < d_ser else 'NOT faster'})"
        )
    print(
        f"{'PASS' if ok else 'FAIL'}: target {TARGET_SIZE:,} segments <= {TARGET_SECONDS} s "
        "and faster than dag-factory, in every case"
    )
    return ok


def print_profile(n: int, top: int) -> None:
    """cProfile of a warm, an edit and a cold funnel parse (fill + serialize) of ``n`` segments."""
    import pstats

    cases = []
    # warm: the catalog measured last is unchanged and its snapshot is in place
    out = WORK / f"funnel-{n}-warm.prof"
    cases.append(("warm", out, measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE, profile_to=out)))
    # edit: one query edited since that parse
    sid, _name, _kind, query = segment_rows(n)[n // 2]
    edit_query(sid, query.replace("> 2", "> 9"))
    out = WORK / f"funnel-{n}-edit.prof"
    cases.append(("edit", out, measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE, profile_to=out)))
    # cold: every query text new, empty state folder
    load_catalog(segment_rows(n, lookback_days=40))
    fresh_state(FUNNEL_STATE)
    out = WORK / f"funnel-{n}-cold.prof"
    cases.append(("cold", out, measure(FUNNEL_DAG_FILE, funnel_env(), FUNNEL_STATE, profile_to=out)))
    load_catalog(segment_rows(n))

    def short(filename: str) -> str:
        return filename.split("site-packages/")[-1].replace(str(FUNNEL_SRC) + "/", "").replace(str(ROOT) + "/", "")

    for mode, out, result in cases:
        stats = pstats.Stats(str(out))
        ours, funnel, libraries = [], [], []
        for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
            entry = (cumtime, tottime, ncalls, f"{short(filename)}:{line}({func})")
            if "/airflow/dag_processing/" in filename or filename == __file__:
                continue  # the DagBag and importer frames above the DAG file: the total, not a cause
            if "/funnel/" in filename or filename.endswith("funnel_segments.py"):
                ours.append(entry)
                funnel.append(entry)
            elif "/airflow/" in filename:
                ours.append(entry)
            elif "site-packages/" in filename:
                libraries.append(entry)
        compiled = sum(v[3] for k, v in stats.stats.items() if k[2] == "<built-in method builtins.compile>")
        print(
            f"\nProfile, {mode} funnel parse of {n:,} segments under cProfile (about 1.6x slower than unprofiled): "
            f"fill {result['fill_s']:.2f} s, +ser {result['fill_serialize_s']:.2f} s; {compiled:.2f} s compiling "
            f"source; {out.relative_to(ROOT)}, {funnel_revision()}"
        )
        lists = (
            (f"top {top} by cumulative time, funnel and airflow code below DagBag's importer", ours, 0, top),
            (f"top {top} by cumulative time, funnel code only", funnel, 0, top),
            (f"top {top} by own time, funnel and airflow code", ours, 1, top),
            ("top 5 by cumulative time in other libraries", libraries, 0, 5),
        )
        for title, entries, key, count in lists:
            print(f"  {title}:")
            print(f"  {'cumtime':>8} {'tottime':>8} {'ncalls':>8}  function")
            for cum, tot, calls, name in sorted(entries, key=lambda e: e[key], reverse=True)[:count]:
                print(f"  {cum:>8.3f} {tot:>8.3f} {calls:>8}  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("DAG_FILE", "RESULT_JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    parser.add_argument("--dump-spec", help=argparse.SUPPRESS)
    parser.add_argument(
        "--funnel-rev", help="measure dags/ and plugins/ as of this git commit (default: the working tree)"
    )
    parser.add_argument("--sizes", default="100,1000,10000", help="catalog sizes (default: 100,1000,10000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell; the median is shown")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile a warm, an edit and a cold funnel parse of the largest catalog",
    )
    parser.add_argument("--profile-top", type=int, default=10, help="entries per profile list (default 10)")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.profile_to, args.dump_spec)
        return 0
    if args.funnel_rev:
        use_revision(args.funnel_rev)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    return run(sizes, args.repeats, args.profile, args.profile_top)


if __name__ == "__main__":
    sys.exit(main())
