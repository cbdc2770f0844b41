"""System tests: funnel inside the real Airflow 3 components (``airflow_stack.py``).

One stack per session (api-server, scheduler, dag-processor, triggerer on free loopback ports),
against the real MySQL, Redis and HiveServer2, on data of its own: MySQL database
``funnel_system``, Redis db 12, Hive database ``funnel_system`` and Airflow home
``.run/airflow-system`` (``FUNNEL_SYSTEM_MYSQL_DB``, ``FUNNEL_SYSTEM_REDIS_DB``,
``FUNNEL_SYSTEM_HIVE_DB`` and ``FUNNEL_SYSTEM_AIRFLOW_HOME`` move them). Every test here is
marked ``system`` (and ``services``) and runs after all the others, so the stack is up only
while they run; it is stopped at the end of the session, also when a test fails.

For a test of a UI page: the session fixture ``airflow`` is an ``AirflowClient`` logged in as
the stack's admin (``.base_url``, ``.username``, ``.password``, ``.token``); ``airflow_stack``
is the stack itself (its environment, ``airflow ...`` CLI calls, funnel's API tokens).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_stack import AirflowClient, AirflowStack, StackSettings

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("FUNNEL_RUN_DIR", ROOT / ".run"))
SYSTEM_MYSQL_DB = os.environ.get("FUNNEL_SYSTEM_MYSQL_DB", "funnel_system")
SYSTEM_REDIS_DB = int(os.environ.get("FUNNEL_SYSTEM_REDIS_DB", "12"))
SYSTEM_HIVE_DB = os.environ.get("FUNNEL_SYSTEM_HIVE_DB", "funnel_system")
SYSTEM_AIRFLOW_HOME = Path(os.environ.get("FUNNEL_SYSTEM_AIRFLOW_HOME", RUN_DIR / "airflow-system"))
HERE = Path(__file__).resolve().parent

# The test process reads the stack's stores through connections of its own (the suite's
# funnel_* connections point at the test database).
os.environ["AIRFLOW_CONN_FUNNEL_SYSTEM_MYSQL"] = (
    f"mysql://root@{os.environ.get('FUNNEL_MYSQL_HOST', '127.0.0.1')}:{os.environ.get('FUNNEL_MYSQL_PORT', '3306')}"
    f"/{SYSTEM_MYSQL_DB}"
)
os.environ["AIRFLOW_CONN_FUNNEL_SYSTEM_REDIS"] = (
    f"redis://{os.environ.get('FUNNEL_REDIS_HOST', '127.0.0.1')}:{os.environ.get('FUNNEL_REDIS_PORT', '6379')}"
    f"?db={SYSTEM_REDIS_DB}"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of this folder ``system`` and ``services``, and run them last."""
    system = [item for item in items if HERE in item.path.parents]
    for item in system:
        item.add_marker(pytest.mark.system)
        item.add_marker(pytest.mark.services)
    ids = {id(item) for item in system}
    # The CeleryExecutor tests (a stack of their own, stopped at the end of their module) first,
    # so that their stack and this folder's session stack never run at the same time.
    system.sort(key=lambda item: item.get_closest_marker("celery") is None)
    items[:] = [item for item in items if id(item) not in ids] + system


def _check_isolated() -> None:
    """The stack wipes its database and Redis db: never the demo's or the other tests'."""
    taken_dbs = {os.environ.get("FUNNEL_MYSQL_DB", "funnel"), os.environ.get("FUNNEL_TEST_MYSQL_DB", "funnel_test")}
    taken_redis = {int(os.environ.get("FUNNEL_REDIS_DB", "0")), int(os.environ.get("FUNNEL_TEST_REDIS_DB", "15"))}
    if SYSTEM_MYSQL_DB in taken_dbs or SYSTEM_REDIS_DB in taken_redis:
        raise pytest.UsageError(
            f"FUNNEL_SYSTEM_MYSQL_DB={SYSTEM_MYSQL_DB} / FUNNEL_SYSTEM_REDIS_DB={SYSTEM_REDIS_DB} would wipe the "
            "demo's or the other tests' data; choose a database and a Redis db of their own"
        )


@pytest.fixture(scope="session")
def system_hive(hive_conn: Any) -> Any:
    """The system tests' Hive database (the stack's queries read it)."""
    hive_conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {SYSTEM_HIVE_DB}")
    return hive_conn


@pytest.fixture(scope="session")
def airflow_stack(system_hive: Any) -> Iterator[AirflowStack]:
    """The running stack on emptied data: a fresh Airflow home, MySQL database and Redis db."""
    from airflow.providers.redis.hooks.redis import RedisHook

    from funnel.storage.hooks import FunnelMySqlHook

    _check_isolated()
    conn = FunnelMySqlHook(mysql_conn_id="funnel_system_mysql", schema="information_schema").get_conn()
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{SYSTEM_MYSQL_DB}`")  # the stack's start migrates it
    finally:
        conn.close()
    redis = RedisHook(redis_conn_id="funnel_system_redis").get_conn()
    redis.flushdb()
    redis.close()
    stack = AirflowStack(
        StackSettings(
            home=SYSTEM_AIRFLOW_HOME,
            mysql_db=SYSTEM_MYSQL_DB,
            redis_db=SYSTEM_REDIS_DB,
            # No tag load: the system tests are about segments.
            extra_env={"AIRFLOW__FUNNEL__TAG_QUERY": ""},
        )
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def airflow(airflow_stack: AirflowStack) -> Iterator[AirflowClient]:
    """Airflow's REST API, logged in as the stack's admin user (the seam for a browser test)."""
    client = airflow_stack.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def system_mysql(airflow_stack: AirflowStack) -> Iterator[Any]:
    """A connection (autocommit) to the stack's MySQL database, migrated by the stack's start."""
    from funnel.storage.hooks import FunnelMySqlHook

    conn = FunnelMySqlHook(mysql_conn_id="funnel_system_mysql").get_conn()
    conn.autocommit(True)
    yield conn
    with contextlib.suppress(Exception):
        conn.close()


@pytest.fixture(scope="session")
def system_redis(airflow_stack: AirflowStack) -> Iterator[Any]:
    """The redis-py client of the stack's Redis db."""
    from airflow.providers.redis.hooks.redis import RedisHook

    client = RedisHook(redis_conn_id="funnel_system_redis").get_conn()
    yield client
    client.close()
