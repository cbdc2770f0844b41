"""Test set-up: real MySQL, Redis and HiveServer2, isolated from the demo's data.

The suite uses its own MySQL database (``funnel_test``), Redis database (15), Hive
database (``funnel_test``) and Airflow home (``.run/airflow-test``). The environment is
set here, before Airflow or funnel is imported, so ``pytest`` alone works as well as
``scripts/test``. Start the services with ``scripts/services up`` (``scripts/test`` does).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("FUNNEL_RUN_DIR", ROOT / ".run"))
MYSQL_HOST = os.environ.get("FUNNEL_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = os.environ.get("FUNNEL_MYSQL_PORT", "3306")
REDIS_HOST = os.environ.get("FUNNEL_REDIS_HOST", "127.0.0.1")
REDIS_PORT = os.environ.get("FUNNEL_REDIS_PORT", "6379")
HIVE_HOST = os.environ.get("FUNNEL_HIVE_HOST", "127.0.0.1")
HIVE_PORT = os.environ.get("FUNNEL_HIVE_PORT", "10000")
# Two test runs at once (say, two checkouts on one machine) can keep apart with these.
TEST_MYSQL_DB = os.environ.get("FUNNEL_TEST_MYSQL_DB", "funnel_test")
TEST_REDIS_DB = int(os.environ.get("FUNNEL_TEST_REDIS_DB", "15"))
TEST_HIVE_DB = os.environ.get("FUNNEL_TEST_HIVE_DB", "funnel_test")

os.environ.update(
    {
        "AIRFLOW_HOME": os.environ.get("FUNNEL_TEST_AIRFLOW_HOME", str(RUN_DIR / "airflow-test")),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_FUNNEL_MYSQL": f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{TEST_MYSQL_DB}",
        "AIRFLOW_CONN_FUNNEL_REDIS": f"redis://{REDIS_HOST}:{REDIS_PORT}?db={TEST_REDIS_DB}",
        "AIRFLOW_CONN_FUNNEL_HIVE": f"hiveserver2://funnel@{HIVE_HOST}:{HIVE_PORT}/default?auth_mechanism=NONE",
        # dag.test() waits out a retry's delay: a failing task in a test fails at once.
        "AIRFLOW__FUNNEL__REFRESH_RETRIES": "0",
        # The tests' webhook receivers listen on loopback, which the default refuses; the tests of
        # that default remove this (the "by default" tests in tests/{cli,api,dags}), those of the
        # refusal at delivery pass refuse_private=True (tests/integration/webhooks/test_private_receivers.py).
        "AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE": "False",
    }
)
# The local stack's tag query and tokens (scripts/env.sh) are not the tests': each test sets its own.
os.environ.pop("AIRFLOW__FUNNEL__TAG_QUERY", None)
os.environ.pop("AIRFLOW__FUNNEL__API_TOKENS", None)
sys.path.insert(0, str(ROOT / "plugins"))

from funnel.storage import layout  # noqa: E402
from funnel.storage.hooks import FunnelMySqlHook  # noqa: E402
from funnel.storage.migrations import migrate  # noqa: E402

FUNNEL_TABLES = (
    layout.SEGMENTS_TABLE,
    layout.VERSIONS_TABLE,
    layout.MEMBERSHIPS_TABLE,
    layout.LIVE_TABLE,
    layout.RUNS_TABLE,
    layout.CHANGES_TABLE,
    layout.USER_TAGS_TABLE,
    layout.EVENTS_TABLE,
    layout.PROXY_CHANGES_TABLE,
    layout.WEBHOOKS_TABLE,
    layout.WEBHOOK_DELIVERIES_TABLE,
    layout.REVISIONS_TABLE,
)


@pytest.fixture(scope="session")
def mysql_schema() -> None:
    """funnel's tables in the test database, created by the real migration."""
    migrate(FunnelMySqlHook())


@pytest.fixture
def mysql_conn(mysql_schema: None) -> Iterator[Any]:
    """A connection to an emptied ``funnel_test`` database."""
    conn = FunnelMySqlHook().get_conn()
    cur = conn.cursor()
    for table in FUNNEL_TABLES:
        cur.execute(f"DELETE FROM {table}")
    # The user tags as the migration leaves them: version 0 live, no load yet.
    cur.execute(f"DELETE FROM {layout.TAG_VERSIONS_TABLE} WHERE version <> 0")
    cur.execute(f"UPDATE {layout.TAG_VERSIONS_TABLE} SET state = 'live', as_of = '1970-01-01' WHERE version = 0")
    cur.execute(
        f"UPDATE {layout.TAG_LIVE_TABLE}"
        " SET version = 0, as_of = '1970-01-01', size = 0, refreshed_at = UTC_TIMESTAMP(6)"
    )
    conn.commit()
    yield conn
    conn.close()


#: The Redis deployments each Redis-using test runs against: ``single`` (the test database of
#: the Redis on 6379) and ``cluster`` (a local three-master Redis Cluster, ``redis_cluster``).
#: ``FUNNEL_TEST_REDIS_MODES=single`` runs one; ``-m "not cluster"`` leaves the cluster out.
REDIS_MODES = tuple(os.environ.get("FUNNEL_TEST_REDIS_MODES", "single,cluster").split(","))


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A local three-master Redis Cluster on free loopback ports (started once, stopped at the end)."""
    from redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=REDIS_MODES)
def redis_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the ``funnel_redis`` connection at the single Redis or, with the extra
    ``{"cluster": true}``, at the local Redis Cluster, for the whole test."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        conn = {"conn_type": "redis", "host": cluster.host, "port": cluster.ports[0], "extra": {"cluster": True}}
        monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_REDIS", json.dumps(conn))
    return request.param


@pytest.fixture
def redis_client(redis_mode: str) -> Iterator[Any]:
    """The redis-py client of the funnel_redis connection (a ``RedisCluster`` in the ``cluster``
    mode), emptied: the test database of the single Redis, or every master of the cluster."""
    from airflow.providers.redis.hooks.redis import RedisHook

    client = RedisHook(redis_conn_id="funnel_redis").get_conn()
    if redis_mode != "cluster":
        client.flushdb()
        yield client
        client.close()
        return
    masters = [node.redis_connection for node in client.get_primaries()]
    for master in masters:
        master.flushdb()
        master.config_resetstat()
    yield client
    # Redis Cluster refuses a command whose keys span slots (CROSSSLOT): none may have been sent.
    refused = {str(m.connection_pool.connection_kwargs["port"]): m.info("errorstats") for m in masters}
    client.close()
    assert not any("errorstat_CROSSSLOT" in stats for stats in refused.values()), refused


@pytest.fixture(scope="session")
def hive_conn() -> Iterator[Any]:
    """A HiveServer2 connection with the ``funnel_test`` Hive database created."""
    from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

    with contextlib.closing(HiveServer2Hook(hiveserver2_conn_id="funnel_hive").get_conn()) as conn:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {TEST_HIVE_DB}")
        yield conn


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata DB (SQLite in the test Airflow home), migrated by Airflow's CLI, with
    funnel's Hive pool."""
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    # As a deployment is set up: with the pool the Hive tasks run in (tests/api/test_pool_warning.py
    # takes it away and puts it back).
    subprocess.run(
        [sys.executable, "-m", "funnel.cli", "ensure-pool"], check=True, capture_output=True, env=os.environ.copy()
    )


#: Fixtures that reach a real server: a module whose tests use any of them says so with
#: ``pytestmark = pytest.mark.services`` (checked below), so ``pytest -m "not services"`` runs
#: the pure tests alone, in seconds.
SERVICE_FIXTURES = frozenset(
    {"mysql_schema", "mysql_conn", "redis_client", "redis_mode", "redis_cluster", "hive_conn", "airflow_db"}
)
#: ``tests/unit/``: pure tests of pure code, no fixture at all (docs/architecture.md).
UNIT_DIR = ROOT / "tests" / "unit"


def _layout_problem(item: pytest.Item) -> str | None:
    """Why ``item`` stands in the wrong place or lacks its marker, or None."""
    used = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    fixtures = used - set(callspec.params if callspec is not None else ())
    if UNIT_DIR in item.path.parents:
        if fixtures:
            return f"tests/unit/ is fixture-free, yet it uses {sorted(fixtures)}: move it to tests/integration/"
        return None
    services = sorted(SERVICE_FIXTURES & used)
    if services and item.get_closest_marker("services") is None:
        return f"it uses {services}: add `pytestmark = pytest.mark.services` to its module"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = [f"{item.nodeid}: {problem}" for item in items if (problem := _layout_problem(item))]
    if problems:
        raise pytest.UsageError("tests in the wrong place or unmarked:\n" + "\n".join(problems))
    single_only = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("redis_mode") == "cluster":
            item.add_marker(pytest.mark.cluster)
            if item.get_closest_marker("single_redis") is not None:
                single_only.append(item)
    # A slow test whose Redis work is the same code the cluster tests already cover runs once, on
    # the single Redis (``single_redis``), so the suite stays well within CI's time on 2 cores.
    if single_only:
        config.hook.pytest_deselected(items=single_only)
        items[:] = [item for item in items if item not in set(single_only)]
