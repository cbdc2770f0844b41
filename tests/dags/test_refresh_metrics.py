"""Refresh metrics through Airflow's own metrics pipeline: a real StatsD listener (a UDP socket on
loopback) receives what real refreshes of the dynamic DAG send, on the real services."""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import hive_execute, insert_segments

from funnel.core.dag_plan import DYNAMIC_DAG_ID

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

#: The suite's Hive database (tests/conftest.py creates it; FUNNEL_TEST_HIVE_DB keeps runs apart).
HIVE_DB = os.environ.get("FUNNEL_TEST_HIVE_DB", "funnel_test")
PREFIX = "funnel_test_statsd"
QUERY = f"SELECT user_id FROM {HIVE_DB}.metric_events WHERE grp = {{grp}}"
CATALOG = [
    {"segment_id": "group_zero", "name": "Group zero", "kind": "dynamic", "query": QUERY.format(grp=0)},
    {"segment_id": "group_one", "name": "Group one", "kind": "dynamic", "query": QUERY.format(grp=1)},
    {
        "segment_id": "zero_or_one",
        "name": "Zero or one",
        "kind": "composite",
        "rule": '{"union": ["group_zero", "group_one"]}',
    },
]
#: Future slots (no overshoot skip), then a past one: refreshed since, so that run skips.
MORNING = dt.datetime(2030, 1, 20, 9, tzinfo=dt.UTC)
EVENING = dt.datetime(2030, 1, 20, 18, tzinfo=dt.UTC)
PAST = dt.datetime(2026, 1, 5, 18, tzinfo=dt.UTC)
STEPS = {"stage", "fetch", "redis", "mysql", "exited", "swap", "prune", "feed"}


@dataclass(frozen=True)
class Datagram:
    """One StatsD line with InfluxDB-style tags: ``<prefix>.<name>,k=v,...:<value>|<type>``."""

    name: str
    tags: dict[str, str]
    value: float
    type: str

    @classmethod
    def parse(cls, line: str) -> Datagram:
        stat, _, rest = line.partition(":")
        value, _, kind = rest.partition("|")
        name, *pairs = stat.split(",")
        return cls(name, dict(pair.split("=", 1) for pair in pairs), float(value), kind)


class StatsdListener:
    """A UDP socket on 127.0.0.1 that a StatsD client sends to; ``received`` drains it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]

    def received(self) -> list[Datagram]:
        """funnel's datagrams received since the last call (Airflow's own, if any, left out)."""
        lines = []
        while True:
            try:
                lines += self.sock.recv(65536).decode().splitlines()
            except TimeoutError:
                break
        head = f"{PREFIX}.funnel."
        return [Datagram.parse(line[len(PREFIX) + 1 :]) for line in lines if line.startswith(head)]


def _init_airflow_stats() -> None:
    """What Airflow's task runner does as a task process starts: the stats backend from ``[metrics]``."""
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    stats.initialize(
        factory=stats_utils.get_stats_factory(),
        export_legacy_names=conf.getboolean("metrics", "legacy_names_on"),
    )


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdListener]:
    """Airflow's metrics on, to a StatsD listener on loopback, with InfluxDB-style tags."""
    try:
        import statsd  # noqa: F401  (Airflow's StatsD client; requirements.txt: apache-airflow[statsd])
    except ImportError:
        pytest.fail("the statsd package is not installed: run scripts/bootstrap (requirements.txt)")
    listener = StatsdListener()
    settings = {
        "STATSD_ON": "True",
        "STATSD_HOST": "127.0.0.1",
        "STATSD_PORT": str(listener.port),
        "STATSD_PREFIX": PREFIX,
        "STATSD_INFLUXDB_ENABLED": "True",
    }
    for key, value in settings.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    _init_airflow_stats()
    try:
        yield listener
    finally:
        for key in settings:
            monkeypatch.delenv(f"AIRFLOW__METRICS__{key}")
        _init_airflow_stats()  # back to the suite's (metrics off)
        listener.sock.close()


@pytest.fixture
def events(hive_conn: Any) -> Any:
    hive_execute(
        hive_conn,
        f"DROP TABLE IF EXISTS {HIVE_DB}.metric_events",
        f"CREATE TABLE {HIVE_DB}.metric_events STORED AS PARQUET AS SELECT id AS user_id, id % 3 AS grp "
        "FROM range(3000)",
    )
    return hive_conn


def of(datagrams: list[Datagram], segment_id: str) -> dict[tuple[str, str], Datagram]:
    """A segment's datagrams by (name, step), each name sent once per refresh."""
    found: dict[tuple[str, str], Datagram] = {}
    for datagram in datagrams:
        if datagram.tags.get("segment_id") == segment_id:
            key = (datagram.name, datagram.tags.get("step", ""))
            assert key not in found, f"{key} sent twice"
            found[key] = datagram
    return found


def test_a_real_refresh_sends_its_duration_rows_and_changes_to_statsd_tagged_by_outcome(
    mysql_conn: Any, events: Any, redis_client: Any, airflow_db: None, statsd: StatsdListener
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    insert_segments(mysql_conn, *CATALOG)
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags[DYNAMIC_DAG_ID]
    assert dag.test(logical_date=MORNING).state == "success"
    received = statsd.received()
    first = of(received, "group_zero")
    tags = {"dag_id": DYNAMIC_DAG_ID, "segment_id": "group_zero", "kind": "dynamic", "outcome": "success"}
    duration = first["funnel.refresh.duration", ""]
    assert (duration.type, duration.tags) == ("ms", tags)
    assert 0 < duration.value < 600_000  # milliseconds
    assert first["funnel.refresh.lock_wait", ""].type == "ms"
    assert {step for name, step in first if name == "funnel.refresh.step_duration"} == STEPS
    assert counts(first) == {"rows_read": 1000, "entered": 1000, "exited": 0}
    assert {d.tags["outcome"] for d in first.values()} == {"success"}
    # The composite: from both operands' versions made by this very run (none kept).
    composite = of(received, "zero_or_one")
    assert composite["funnel.refresh.duration", ""].tags["kind"] == "composite"
    assert counts(composite) == {"rows_read": 2000, "entered": 2000, "exited": 0, "inputs_kept": 0}

    # Group zero becomes ids 1500..4499 with id % 3 == 2: 1000 new members, the 1000 old ones gone.
    hive_execute(
        events,
        f"INSERT OVERWRITE TABLE {HIVE_DB}.metric_events SELECT id AS user_id, (id + 1) % 3 AS grp "
        "FROM range(1500, 4500)",
    )
    assert dag.test(logical_date=EVENING).state == "success"
    assert counts(of(statsd.received(), "group_zero")) == {"rows_read": 1000, "entered": 1000, "exited": 1000}

    # A past slot, refreshed since: skipped, and said so with its duration.
    run = dag.test(logical_date=PAST)
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["group_zero"] == "skipped"
    skipped = of(statsd.received(), "group_zero")
    assert set(skipped) == {("funnel.refresh.duration", ""), ("funnel.refresh.lock_wait", "")}
    assert skipped["funnel.refresh.duration", ""].tags == {**tags, "outcome": "skipped"}


def counts(datagrams: dict[tuple[str, str], Datagram]) -> dict[str, float]:
    """The counters among a segment's datagrams, by name less ``funnel.refresh.``."""
    return {name.removeprefix("funnel.refresh."): d.value for (name, _), d in datagrams.items() if d.type == "c"}
