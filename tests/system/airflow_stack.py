"""The real Airflow 3 components for funnel, on loopback: api-server, scheduler, dag-processor, triggerer.

Used by the system tests (``tests/system/``) and by anything that needs funnel inside a running
Airflow (screenshots, a look at the UI). From a shell::

    scripts/airflow-stack up [--home DIR] [--mysql-db DB] [--redis-db N]   # prints URL and login
    scripts/airflow-stack up --celery-workers 2 [--broker-redis-db 6]       # the CeleryExecutor
    scripts/airflow-stack status
    scripts/airflow-stack down

What it runs:

- the four components, each ``airflow <component>``, started by one launcher shell in a new
  session, so all of them (and the LocalExecutor's workers) share one process group; ``stop``
  signals that group (SIGTERM, then SIGKILL after a deadline), then any task process that put
  itself in a group of its own;
- the connections, folders and tokens of ``scripts/env.sh`` (the one place that names them),
  with this stack's own MySQL database and Redis db, so it never touches the demo's data;
- LocalExecutor on SQLite in its own ``AIRFLOW_HOME`` (Airflow 3.3.2 accepts that pair:
  ``airflow standalone`` runs it too), or, with ``celery_workers``, the CeleryExecutor: a Redis
  db as Celery's broker and result backend, and one ``airflow celery worker`` per name in the
  same process group (distinct Celery hostnames, pid files and log-server ports; each names
  itself in its task instances' ``hostname`` through ``stack_hostname.py``). Workers reach
  Airflow only through the API server's execution API, so SQLite stays the scheduler's alone
  (Airflow 3.3.2 and the Celery provider 3.26 accept the pair); ``load_examples`` off, 5 s instead of Airflow's 300 s /
  30 s / 30 s between DAG bundle refreshes, parses of a file and writes of a changed DAG (so a
  catalog row shows up within seconds), fixed admin credentials from a passwords file, a JWT
  secret shared by the components, and free loopback ports for the API server and both log
  servers.

Its state (URL, login, process group) is in ``<home>/stack.json``; the components' logs are in
``<home>/stack-logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
ENV_SH = ROOT / "scripts" / "env.sh"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HERE = Path(__file__).resolve().parent
#: Health entries of ``GET /api/v2/monitor/health`` that must say "healthy".
HEALTH_KEYS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
STATE_FILE = "stack.json"
LOG_DIR = "stack-logs"
# Airflow answers 503 "Database is locked" while SQLite is busy with another writer; try again this long.
SQLITE_LOCKED_PATIENCE_SECONDS = 60
#: Variables that name the stack's data; taken from the caller's environment they would point the
#: stack at someone else's database (the test suite sets some of them for its own use).
_NOT_INHERITED_PREFIXES = ("AIRFLOW", "FUNNEL_TEST_", "FUNNEL_SYSTEM_")
_NOT_INHERITED = {"FUNNEL_MYSQL_DB", "FUNNEL_REDIS_DB", "PYTHONPATH"}
T = TypeVar("T")


class StackError(RuntimeError):
    """The stack did not start, or did not stop; the message says which log to read."""


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """Where the stack keeps its state and data, and how it behaves."""

    home: Path
    mysql_db: str
    redis_db: int
    username: str = "admin"
    password: str = "funnel-admin"  # a loopback-only stack's fixed login
    #: Seconds between DAG bundle refreshes and between two parses of a DAG file.
    parse_interval_seconds: int = 5
    parallelism: int = 4
    #: CeleryExecutor workers to start, by name (each ``airflow celery worker --celery-hostname
    #: <name>@127.0.0.1``); empty: LocalExecutor.
    celery_workers: tuple[str, ...] = ()
    #: The Redis db of Celery's broker and result backend (emptied at a fresh start).
    celery_redis_db: int = 6
    #: Task slots per Celery worker.
    worker_concurrency: int = 1
    #: Extra environment for every component (e.g. ``AIRFLOW__FUNNEL__TAG_QUERY``).
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    start_timeout_seconds: float = 240.0
    stop_timeout_seconds: float = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_sh_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment ``scripts/env.sh`` builds from the caller's, with ``overrides`` set first."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_NOT_INHERITED_PREFIXES) and key not in _NOT_INHERITED
    }
    base.update(overrides)
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "env.sh", str(ENV_SH)],
        env=base,
        check=True,
        capture_output=True,
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


# ---------------------------------------------------------------- processes (by /proc)


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of a process, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _processes() -> dict[int, tuple[str, int, int, int]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            table[int(entry)] = stat
    return table


def _tree(pgid: int) -> dict[int, int]:
    """Every live process of the group and their descendants: pid -> starttime."""
    table = _processes()
    found = {pid for pid, (state, _, pgrp, _) in table.items() if pgrp == pgid and state != "Z"}
    grew = True
    while grew:
        children = {pid for pid, (state, ppid, _, _) in table.items() if ppid in found and state != "Z"}
        grew = not children <= found
        found |= children
    return {pid: table[pid][3] for pid in found}


def _alive(pid: int, starttime: int | None = None) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and (starttime is None or stat[3] == starttime)


def _group_alive(pgid: int) -> bool:
    return any(pgrp == pgid and state != "Z" for state, _, pgrp, _ in _processes().values())


def stop_group(pgid: int, leader: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout`` seconds, then any of its
    descendants that moved to a group of their own (Airflow's task runners do)."""
    tree = _tree(pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pgid):
        if leader is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                leader.wait(timeout=0.2)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for pid, starttime in tree.items():
        if _alive(pid, starttime):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=5)


# ---------------------------------------------------------------- the stack


class AirflowStack:
    """One Airflow installation for funnel on loopback; ``start()`` / ``stop()``, or ``with``."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.api_port = 0
        self.pgid: int | None = None
        self._launcher: subprocess.Popen | None = None
        self._env: dict[str, str] | None = None

    # -- what a client needs

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.home / LOG_DIR

    def env(self) -> dict[str, str]:
        """The environment of every component and of ``airflow`` CLI calls against this stack."""
        if self._env is None:
            raise StackError("the stack has no environment before start()")
        return dict(self._env)

    def funnel_tokens(self) -> dict[str, str]:
        """funnel's serving API tokens in this stack (``[funnel] api_tokens``): scope -> token."""
        pairs = (item.split(":", 1) for item in self.env().get("AIRFLOW__FUNNEL__API_TOKENS", "").split(",") if item)
        return {scope.strip(): token.strip() for scope, token in pairs}

    @property
    def celery_broker_url(self) -> str:
        """Celery's broker and result backend: a Redis db of the stack's own."""
        host = os.environ.get("FUNNEL_REDIS_HOST", "127.0.0.1")
        port = os.environ.get("FUNNEL_REDIS_PORT", "6379")
        return f"redis://{host}:{port}/{self.settings.celery_redis_db}"

    def celery_workers_up(self) -> set[str]:
        """The Celery workers that answer a ping on the stack's broker (their Celery hostnames)."""
        from celery import Celery

        app = Celery(broker=self.celery_broker_url, backend=self.celery_broker_url)
        try:
            return {name for reply in app.control.ping(timeout=2.0) or [] for name in reply}
        finally:
            app.close()

    def client(self) -> AirflowClient:
        """A REST client logged in as the stack's admin user."""
        return AirflowClient(self.base_url, self.settings.username, self.settings.password)

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` against this stack (its home, database and connections)."""
        return subprocess.run(
            [self._airflow_bin(), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def python(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the venv's ``python ARGS`` with this stack's environment (e.g. ``-m funnel.cli ...``)."""
        return subprocess.run(
            [sys.executable, *args], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    # -- life cycle

    def start(self, fresh: bool = True) -> AirflowStack:
        """Prepare the home (wiped first when ``fresh``), migrate, launch, and wait until healthy."""
        s = self.settings
        stop_recorded(self.home)  # a stack left running from this home (its session was killed)
        if fresh and self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({s.username: s.password}))
        passwords.chmod(0o600)
        self.api_port = free_port()
        stack_env = {
            "AIRFLOW_HOME": str(self.home),
            "FUNNEL_MYSQL_DB": s.mysql_db,
            "FUNNEL_REDIS_DB": str(s.redis_db),
        }
        env = env_sh_environment(stack_env)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if s.celery_workers else "LocalExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__PARALLELISM": str(s.parallelism),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(s.parse_interval_seconds),
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(s.parse_interval_seconds),
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                # A re-parsed DAG is written (and served) at most this often (default 30 s).
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": str(s.parse_interval_seconds),
            }
        )
        if s.celery_workers:
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": self.celery_broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": self.celery_broker_url,
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(s.worker_concurrency),
                    # Tasks run a few seconds to minutes here; a lost worker's task comes back after this.
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                }
            )
            if fresh:
                self._empty_celery_db()
        env.update(s.extra_env)
        self._env = env
        self._run_checked(self._airflow_bin(), "db", "migrate", name="airflow db migrate")
        self._run_checked(sys.executable, "-m", "funnel.cli", "migrate", name="funnel migrate")
        self._run_checked(sys.executable, "-m", "funnel.cli", "ensure-pool", name="funnel ensure-pool")
        self._launch()
        self._write_state()
        try:
            self.wait_healthy(s.start_timeout_seconds)
            if s.celery_workers:
                self.wait_workers(s.start_timeout_seconds)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process of the stack (idempotent)."""
        if self.pgid is not None:
            stop_group(self.pgid, self._launcher, self.settings.stop_timeout_seconds)
            self.pgid = None
        self._launcher = None
        with contextlib.suppress(FileNotFoundError):
            (self.home / STATE_FILE).unlink()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=10).json()

    def wait_healthy(self, timeout: float) -> None:
        """Poll the API server's health until every component says healthy."""
        deadline = time.monotonic() + timeout
        last: object = "no answer"
        while time.monotonic() < deadline:
            if self._launcher is not None and self._launcher.poll() is not None:
                raise StackError(f"the Airflow components exited during start-up{self._log_tails()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                last = self.health()
                if all((last.get(key) or {}).get("status") == "healthy" for key in HEALTH_KEYS):
                    return
            time.sleep(1)
        raise StackError(f"Airflow was not healthy after {timeout:.0f} s (last health: {last}){self._log_tails()}")

    def wait_workers(self, timeout: float) -> None:
        """Poll the broker until every Celery worker of the stack answers a ping."""
        want = {f"{name}@127.0.0.1" for name in self.settings.celery_workers}
        deadline = time.monotonic() + timeout
        up: set[str] = set()
        while time.monotonic() < deadline:
            if self._launcher is not None and self._launcher.poll() is not None:
                raise StackError(f"the Airflow components exited during start-up{self._log_tails()}")
            with contextlib.suppress(Exception):
                up = self.celery_workers_up()
            if want <= up:
                return
            time.sleep(1)
        raise StackError(f"Celery workers {sorted(want - up)} did not answer within {timeout:.0f} s{self._log_tails()}")

    # -- internals

    def _empty_celery_db(self) -> None:
        """Empty the broker's Redis db, so no message of an earlier stack reaches the new workers."""
        import redis

        client = redis.Redis.from_url(self.celery_broker_url)
        try:
            client.flushdb()
        finally:
            client.close()

    def _airflow_bin(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def _run_checked(self, *cmd: str, name: str) -> None:
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise StackError(f"{name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def _launch(self) -> None:
        airflow = shlex.quote(self._airflow_bin())
        lines = [
            f"{airflow} {component}"
            + (f" --host 127.0.0.1 --port {self.api_port}" if component == "api-server" else "")
            + f" >{shlex.quote(str(self.log_dir / component))}.log 2>&1 &"
            for component in COMPONENTS
        ]
        for name in self.settings.celery_workers:
            worker_env = {
                # The task instances' ``hostname`` names the worker (all run on this one machine).
                "FUNNEL_STACK_HOSTNAME": name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack_hostname.hostname",
                "PYTHONPATH": f"{self.env().get('PYTHONPATH', '')}:{HERE}",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            }
            assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in worker_env.items())
            command = (
                f"{airflow} celery worker --celery-hostname {shlex.quote(name)}@127.0.0.1"
                f" --concurrency {self.settings.worker_concurrency}"
                f" --pid {shlex.quote(str(self.home / f'worker-{name}.pid'))}"
            )
            log = shlex.quote(str(self.log_dir / f"worker-{name}.log"))
            lines.append(f"env {assignments} {command} >{log} 2>&1 &")
        launcher_log = (self.log_dir / "launcher.log").open("wb")
        self._launcher = subprocess.Popen(
            ["bash", "-c", "\n".join([*lines, "wait"])],
            env=self.env(),
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=launcher_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group: pgid == its pid
        )
        launcher_log.close()
        self.pgid = self._launcher.pid

    def _write_state(self) -> None:
        state = {
            "base_url": self.base_url,
            "username": self.settings.username,
            "password": self.settings.password,
            "pgid": self.pgid,
            "leader_starttime": (_proc_stat(self.pgid) or ("", 0, 0, 0))[3] if self.pgid else None,
            "logs": str(self.log_dir),
        }
        path = self.home / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)

    def _log_tails(self, lines: int = 25) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"\n--- {log} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "".join(parts)


def eventually(probe: Callable[[], T], timeout: float, what: str, interval: float = 1.0) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` seconds pass
    (AssertionError naming ``what`` and the last value): a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value!r})")
        time.sleep(interval)


def clear_of_the_next_slot(
    airflow: AirflowClient, dag_id: str, margin: dt.timedelta, parse_timeout: float, run_timeout: float
) -> None:
    """Let every scheduled run of ``dag_id`` that is due now or within ``margin`` be created and
    finish, so that a real 09:00 / 18:00 slot never crosses a test's expectations (a manual run
    right after it would skip its segments: the overshoot rule). Right after an unpause, the due
    one is the latest past slot: catchup is off, so Airflow runs it."""
    while True:
        due = parse_time((airflow.dag(dag_id) or {}).get("next_dagrun_run_after"))
        if due is None or due - dt.datetime.now(dt.UTC) > margin:
            return
        eventually(
            lambda due=due: any(parse_time(r["logical_date"]) == due for r in airflow.runs(dag_id)),
            margin.total_seconds() + parse_timeout,
            f"the scheduled run of {due}",
        )
        airflow.wait_until_idle(dag_id, run_timeout)


def parse_time(value: str | None) -> dt.datetime | None:
    """An API timestamp (``2026-11-29T17:02:54Z``) as an aware datetime."""
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class AirflowClient:
    """Airflow's REST API v2 as the stack's admin user (a token from ``POST /auth/token``).

    ``base_url``, ``username``, ``password`` and ``token`` are what a browser test needs to log in.
    """

    FINISHED = frozenset({"success", "failed"})

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url, self.username, self.password = base_url, username, password
        response = httpx.post(f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=30)
        response.raise_for_status()
        self.token: str = response.json()["access_token"]
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API; a write SQLite could not lock (Airflow answers 503) is tried again for a while.

        The stacks keep Airflow's metadata in SQLite, one writer at a time: while the scheduler
        writes, ``POST /api/v2/backfills`` can answer 503 "Database is locked" (Airflow rolls the
        attempt back, so it is safe to repeat).
        """
        deadline = time.monotonic() + SQLITE_LOCKED_PATIENCE_SECONDS
        response = self.http.request(method, path, **kwargs)
        while response.status_code == 503 and "locked" in response.text and time.monotonic() < deadline:
            time.sleep(1)
            response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG's details, or None while the DAG processor has not written it."""
        response = self.http.get(f"/api/v2/dags/{dag_id}")
        if response.status_code == 404:
            return None
        if response.is_error:
            raise AssertionError(f"GET /api/v2/dags/{dag_id}: {response.status_code} {response.text[:500]}")
        return response.json()

    def task_ids(self, dag_id: str) -> list[str]:
        return list(self.tasks(dag_id))

    def tasks(self, dag_id: str) -> dict[str, dict[str, Any]]:
        """The DAG's tasks as Airflow serves them (owner, doc_md, ...), by task id."""
        return {task["task_id"]: task for task in self.request("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]}

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """Trigger a run now (``logical_date: null``, as the UI's button does)."""
        body: dict[str, Any] = {"logical_date": None}
        if conf is not None:
            body["conf"] = conf
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """The DAG's runs, oldest logical date / run_after first."""
        params.setdefault("order_by", "run_after")
        params.setdefault("limit", 100)
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll a run until it finished; return it."""
        return eventually(
            lambda: (run := self.run(dag_id, run_id))["state"] in self.FINISHED and run,
            timeout,
            f"run {run_id} of {dag_id} to finish",
        )

    def wait_until_idle(self, dag_id: str, timeout: float) -> None:
        """Poll until the DAG has no queued or running run."""
        eventually(
            lambda: not self.runs(dag_id, state=["queued", "running"]),
            timeout,
            f"{dag_id} to have no queued or running run",
        )

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]

    def wait_for_backfills(self, dag_id: str, timeout: float) -> None:
        """Poll until every backfill of the DAG is complete: all its runs finished and the
        scheduler marked it so (every 30 s); only then can the next one be created."""
        eventually(
            lambda: all(b["completed_at"] for b in self.backfills(dag_id)),
            timeout,
            f"every backfill of {dag_id} to complete",
        )

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}


@contextlib.contextmanager
def running_stack(settings: StackSettings) -> Iterator[AirflowStack]:
    stack = AirflowStack(settings)
    try:
        yield stack.start()
    finally:
        stack.stop()


# ---------------------------------------------------------------- command line


def stop_recorded(home: Path) -> int | None:
    """Stop the stack recorded in ``home`` if it still runs; return its process group, if it did."""
    path = home / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    pgid = int(state["pgid"])
    running = _alive(pgid, state.get("leader_starttime"))
    if running:
        stop_group(pgid)
    path.unlink()
    return pgid if running else None


def _down(home: Path) -> int:
    pgid = stop_recorded(home)
    print("airflow-stack: " + (f"stopped process group {pgid}" if pgid else f"nothing running from {home}"))
    return 0


def _status(home: Path) -> int:
    path = home / STATE_FILE
    if not path.exists():
        print("airflow-stack: not running")
        return 1
    state = json.loads(path.read_text())
    if not _alive(int(state["pgid"]), state.get("leader_starttime")):
        print(f"airflow-stack: recorded in {path} but not running")
        return 1
    try:
        health = httpx.get(f"{state['base_url']}/api/v2/monitor/health", timeout=10).json()
    except httpx.HTTPError as exc:
        print(f"airflow-stack: {state['base_url']} does not answer: {exc}")
        return 1
    print(f"airflow-stack: {state['base_url']} (login {state['username']} / {state['password']})")
    for key in HEALTH_KEYS:
        print(f"  {key:14} {(health.get(key) or {}).get('status')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    defaults = env_sh_environment({})
    parser = argparse.ArgumentParser(prog="scripts/airflow-stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--home", type=Path, default=Path(defaults["FUNNEL_RUN_DIR"]) / "airflow-stack")
    parser.add_argument("--mysql-db", default=defaults["FUNNEL_MYSQL_DB"], help="funnel's MySQL database (the demo's)")
    parser.add_argument("--redis-db", type=int, default=int(defaults["FUNNEL_REDIS_DB"]), help="funnel's Redis db")
    parser.add_argument("--keep", action="store_true", help="up: keep the home's Airflow database and runs")
    parser.add_argument(
        "--celery-workers", type=int, default=0, help="up: the CeleryExecutor with this many workers (0: LocalExecutor)"
    )
    parser.add_argument("--broker-redis-db", type=int, default=6, help="up: the Redis db of Celery's broker (emptied)")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if args.command == "down":
        return _down(home)
    if args.command == "status":
        return _status(home)
    if (home / STATE_FILE).exists() and _status(home) == 0:
        return 0
    workers = tuple(f"worker{n}" for n in range(1, args.celery_workers + 1))
    if workers and args.broker_redis_db == args.redis_db:
        parser.error("--broker-redis-db must differ from --redis-db: the broker's db is emptied at start")
    stack = AirflowStack(
        StackSettings(
            home=home,
            mysql_db=args.mysql_db,
            redis_db=args.redis_db,
            celery_workers=workers,
            celery_redis_db=args.broker_redis_db,
        )
    )
    stack.start(fresh=not args.keep)
    print(f"airflow-stack: up at {stack.base_url} (login {stack.settings.username} / {stack.settings.password})")
    print(f"airflow-stack: logs in {stack.log_dir}; stop with scripts/airflow-stack down --home {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
