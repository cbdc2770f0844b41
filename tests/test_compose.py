"""docker-compose.yaml, read by a real Compose parser, against scripts/stack.env and scripts/env.sh.

There is no Docker engine here: Debian's ``docker-compose`` (1.29, installed by
``scripts/bootstrap``) parses, validates and interpolates the file with ``config``, which
needs none. The one source of the stack's ports, databases and settings is
``scripts/stack.env``: ``scripts/env.sh`` reads it, Compose gets it with ``--env-file``.
"The same" then means: every port the compose file publishes is on 127.0.0.1 and is the
port env.sh's tools use (and the port the service listens on inside the compose network);
each funnel connection in the containers is env.sh's with the host 127.0.0.1 replaced by
the name of the compose service that listens on that port; funnel's settings are equal.
Every check runs twice: on the real stack.env, and on a copy with every value changed, to
show that both sides follow the file rather than agree by accident.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from funnel import settings

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
STACK_ENV = ROOT / "scripts" / "stack.env"
ENV_SH = ROOT / "scripts" / "env.sh"
# Values only the compose file has, with Compose defaults (Airflow's file does the same).
COMPOSE_ONLY = {"_AIRFLOW_WWW_USER_USERNAME", "_AIRFLOW_WWW_USER_PASSWORD"}
AIRFLOW_COMPONENTS = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
# Which published port belongs to which service, by the env.sh variable that names it.
PUBLISHED = {
    "mysql": "FUNNEL_MYSQL_PORT",
    "redis": "FUNNEL_REDIS_PORT",
    "hive": "FUNNEL_HIVE_PORT",
    "airflow-apiserver": "AIRFLOW__API__PORT",
    "funnel-api": "AIRFLOW__FUNNEL__API_PORT",
}
# A stack.env with every value changed (ports shifted, other names and tokens).
CHANGED = {
    "FUNNEL_MYSQL_PORT": "13306",
    "FUNNEL_REDIS_PORT": "16379",
    "FUNNEL_HIVE_PORT": "20000",
    "AIRFLOW__API__PORT": "18080",
    "AIRFLOW__FUNNEL__API_PORT": "18081",
    "FUNNEL_MYSQL_DB": "funnel_other",
    "FUNNEL_REDIS_DB": "3",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "True",
    "AIRFLOW__FUNNEL__API_TOKENS": "read:other-read,write:other-write",
}


def clean_env(**extra: str) -> dict[str, str]:
    """No variable of the caller (the test suite sets funnel's): only the files decide."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **extra}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


@pytest.fixture(scope="module")
def compose_bin() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip(
            "docker-compose is not installed, so nothing can parse docker-compose.yaml here: "
            "scripts/bootstrap installs Debian's docker-compose package (apt-get, no Docker engine)"
        )
    return found


def run_compose(compose_bin: str, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_bin, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Stack:
    """One stack.env, what env.sh exports from it, and what Compose makes of the file with it."""

    def __init__(self, compose_bin: str, root: Path) -> None:
        self.values = read_env_file(root / "scripts" / "stack.env")
        sourced = subprocess.run(
            ["bash", "-c", f"source {ENV_SH} && env -0"],
            env=clean_env(FUNNEL_ROOT=str(root)),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        self.env_sh = dict(item.split("=", 1) for item in sourced.stdout.split("\0") if "=" in item)
        parsed = run_compose(compose_bin, root / "scripts" / "stack.env", "config")
        assert parsed.returncode == 0, f"docker-compose config refused docker-compose.yaml:\n{parsed.stderr}"
        self.config: dict[str, Any] = yaml.safe_load(parsed.stdout)
        self.services: dict[str, dict[str, Any]] = self.config["services"]

    def image_services(self) -> dict[str, dict[str, Any]]:
        """The services that run the funnel image (Airflow's components, init, cli, the funnel API)."""
        return {name: svc for name, svc in self.services.items() if "build" in svc}


@pytest.fixture(scope="module", params=["stack.env", "changed stack.env"])
def stack(request: pytest.FixtureRequest, compose_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    if request.param == "stack.env":
        return Stack(compose_bin, ROOT)
    root = tmp_path_factory.mktemp("changed-root")
    (root / "scripts").mkdir()
    (root / "demo").mkdir()
    shutil.copy(ROOT / "demo" / "tag_query.hql", root / "demo" / "tag_query.hql")
    assert set(CHANGED) == set(read_env_file(STACK_ENV)), "CHANGED must change every value of scripts/stack.env"
    (root / "scripts" / "stack.env").write_text("".join(f"{key}={value}\n" for key, value in CHANGED.items()))
    changed = Stack(compose_bin, root)
    assert changed.values == CHANGED
    return changed


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port, in either Compose's output form."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # Compose v2: the long form
            found.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:  # Compose 1.29: "127.0.0.1:8080:8080/tcp"
            parts = str(port).split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            found.append((host_ip, int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return found


def test_the_file_parses_and_env_sh_reads_stack_env(stack: Stack) -> None:
    # env.sh exports exactly what stack.env says when the caller sets nothing.
    assert {key: stack.env_sh.get(key) for key in stack.values} == stack.values


def test_every_published_port_is_on_loopback_and_is_env_sh_port(stack: Stack) -> None:
    published = {name: published_ports(svc) for name, svc in stack.services.items() if svc.get("ports")}
    assert published == {
        name: [("127.0.0.1", int(stack.env_sh[var]), int(stack.env_sh[var]))] for name, var in PUBLISHED.items()
    }


def test_connections_are_env_sh_ones_with_the_service_as_host(stack: Stack) -> None:
    conn_ids = (settings.HIVE_CONN_ID, settings.MYSQL_CONN_ID, settings.REDIS_CONN_ID)
    conn_vars = {f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id in conn_ids}
    assert conn_vars == {key for key in stack.env_sh if key.startswith("AIRFLOW_CONN_")}
    for name, svc in stack.image_services().items():
        env = svc["environment"]
        assert {key for key in env if key.startswith("AIRFLOW_CONN_")} == conn_vars, name
        for var in conn_vars:
            uri = urlsplit(env[var])
            # The host is the compose service that listens on that port and publishes it on loopback.
            assert ("127.0.0.1", uri.port, uri.port) in published_ports(stack.services[uri.hostname]), f"{name}: {var}"
            user = uri.netloc.rpartition("@")[0]
            on_loopback = uri._replace(netloc=f"{user}@127.0.0.1:{uri.port}" if user else f"127.0.0.1:{uri.port}")
            assert urlunsplit(on_loopback) == stack.env_sh[var], f"{name}: {var}"


def test_airflow_and_funnel_settings_are_env_sh_ones(stack: Stack) -> None:
    shared = {key: value for key, value in stack.values.items() if key.startswith("AIRFLOW__")}
    assert shared, "scripts/stack.env has Airflow/funnel settings"
    for name, svc in stack.image_services().items():
        env = svc["environment"]
        assert {key: env.get(key) for key in shared} == {key: stack.env_sh[key] for key in shared}, name
        api_port = stack.env_sh["AIRFLOW__API__PORT"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{api_port}/execution/"
    assert stack.services["mysql"]["environment"]["MARIADB_DATABASE"] == stack.env_sh["FUNNEL_MYSQL_DB"]


def test_every_compose_variable_comes_from_stack_env(compose_bin: str, tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    stack_keys = set(read_env_file(STACK_ENV))
    assert used - stack_keys == COMPOSE_ONLY
    assert stack_keys <= used, f"stack.env values the compose file never uses: {sorted(stack_keys - used)}"
    # Without the file, Compose stops and says how to run it (no silent blank ports).
    (tmp_path / "empty.env").write_text("")
    empty = run_compose(compose_bin, tmp_path / "empty.env", "config", "-q")
    assert empty.returncode != 0
    assert "run docker compose with --env-file scripts/stack.env" in empty.stderr


def test_services_are_laid_out_as_in_airflows_compose_file(stack: Stack) -> None:
    services = stack.services
    assert set(services) == {
        "postgres",
        "mysql",
        "redis",
        "hive",
        "airflow-init",
        *AIRFLOW_COMPONENTS,
        "funnel-api",
        "airflow-cli",
    }
    assert services["airflow-cli"]["profiles"] == ["debug"]
    images = {svc["image"] for svc in stack.image_services().values()}
    assert images == {"funnel-airflow:3.3.2"}
    assert {Path(svc["build"]["context"]) for svc in stack.image_services().values()} == {ROOT}
    for name, svc in services.items():
        if name in ("airflow-init", "airflow-cli"):
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "always", name
    for name in (*AIRFLOW_COMPONENTS, "funnel-api"):
        depends = services[name]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
        for backing in ("postgres", "mysql", "redis"):
            assert depends[backing] == {"condition": "service_healthy"}, f"{name} -> {backing}"
    assert services["airflow-scheduler"]["depends_on"]["hive"] == {"condition": "service_healthy"}
    assert {services[name]["command"] for name in AIRFLOW_COMPONENTS} == {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
    }
    assert services["funnel-api"]["command"] == ["python", "-m", "funnel.cli", "serve"]
    # One airflow.cfg (fernet key, JWT secret) and one passwords file for every component.
    for name, svc in stack.image_services().items():
        assert "airflow-config:/opt/airflow/config:rw" in svc["volumes"] or any(
            isinstance(v, dict) and v.get("source") == "airflow-config" for v in svc["volumes"]
        ), name
        assert svc["environment"]["AIRFLOW_CONFIG"].startswith("/opt/airflow/config/"), name
        assert svc["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name


def test_airflow_init_prepares_airflow_and_funnel(stack: Stack) -> None:
    script = "\n".join(stack.services["airflow-init"]["command"])
    for step in (
        "airflow db migrate",
        "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "python -m funnel.cli migrate",
        "python -m funnel.cli ensure-pool",
    ):
        assert step in script
    assert script.index("airflow db migrate") < script.index("python -m funnel.cli ensure-pool")


def test_nothing_is_pip_installed_at_container_start(stack: Stack) -> None:
    for name, svc in stack.services.items():
        started = yaml.safe_dump([svc.get("command"), svc.get("entrypoint")])
        assert "pip install" not in started, name
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in svc.get("environment", {}), name


def test_the_image_installs_the_requirements_at_build_time() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned is not None
    assert re.search(rf"^FROM apache/airflow:{re.escape(pinned.group(1))}(-python3\.11)?$", dockerfile, re.MULTILINE)
    assert "-c /opt/funnel/constraints.txt" in dockerfile
    # The image installs requirements.txt less the local tools, and nothing else is left out.
    dropped = re.search(r"grep -vE '([^']+)' /opt/funnel/requirements.txt", dockerfile)
    assert dropped is not None
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    local_tools = ["pyspark", "pytest", "ruff", "import-linter", "schemathesis", "openapi-python-client"]
    assert [line.split("=")[0] for line in lines if re.search(dropped.group(1), line)] == local_tools
    for copied in ("COPY --chown=airflow:0 dags/ /opt/airflow/dags/", "COPY --chown=airflow:0 plugins/"):
        assert copied in dockerfile
