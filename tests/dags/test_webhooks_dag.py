"""The funnel_webhooks DAG: scheduled on exactly the subscribed segments' Assets, and run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from helpers import WebhookReceiver, insert_segments, refresh_segment, subscribe_on

from funnel import settings
from funnel.airflow.dag_factory import WEBHOOKS_HOWTO
from funnel.core.dag_plan import WEBHOOKS_DAG_ID
from funnel.core.segment import Kind, Segment
from funnel.core.utc_time import utc_now
from funnel.core.webhook_signing import verify
from funnel.storage import layout
from funnel.storage.mysql.webhook_store import WebhookStore

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)


def load_dagbag() -> Any:
    import os

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def serialized(dag: Any) -> Any:
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))


SECRET = "dag-test-secret-0123456789"
ROWS = [
    {"segment_id": s, "name": s.title(), "kind": "dynamic", "query": "SELECT user_id FROM dw.users"}
    for s in ("buyers", "paused", "sellers", "unsubscribed")
]
CATALOG = {row["segment_id"]: Segment(row["segment_id"], row["name"], Kind.DYNAMIC, query="q") for row in ROWS}


def scheduled_uris(dag: Any) -> set[str]:
    return {asset.uri for _, asset in dag.timetable.asset_condition.iter_assets()}


def test_the_dag_is_scheduled_on_any_of_the_subscribed_segments_assets(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *ROWS)
    bag = load_dagbag()
    assert bag.import_errors == {}
    none = serialized(bag.dags[WEBHOOKS_DAG_ID])
    assert none.timetable.summary == "None"
    assert none.description == WEBHOOKS_HOWTO

    url = "http://127.0.0.1:9/hook"
    for segment_id in ("sellers", "buyers", "buyers", "paused"):
        webhook, _ = subscribe_on(mysql_conn, CATALOG, segment_id, url)
    WebhookStore(mysql_conn).set_enabled(webhook.id, False)  # paused's only subscription
    store = WebhookStore(mysql_conn)
    store.add("proxy_or_gone", url, SECRET, 0, utc_now())  # not a stored segment of the catalog: left out
    back = serialized(load_dagbag().dags[WEBHOOKS_DAG_ID])
    assert scheduled_uris(back) == {layout.asset_uri("buyers"), layout.asset_uri("sellers")}
    assert type(back.timetable.asset_condition).__name__.endswith("AssetAny")  # any one refresh, not all
    assert back.description.endswith("webhook subscriptions of: buyers, sellers")
    assert back.max_active_runs == 1

    single = next(s for s in store.list() if s.segment_id == "sellers")
    store.remove(single.id)
    assert scheduled_uris(serialized(load_dagbag().dags[WEBHOOKS_DAG_ID])) == {layout.asset_uri("buyers")}


def test_a_dag_run_delivers_parks_when_the_receiver_is_down_and_a_manual_run_delivers_the_rest(
    mysql_conn: Any,
    redis_client: Any,
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "WEBHOOK_BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(settings, "WEBHOOK_MAX_ATTEMPTS", 2)
    monkeypatch.setattr(settings, "WEBHOOK_BATCH_SIZE", 2)
    insert_segments(mysql_conn, *ROWS)
    receiver = WebhookReceiver()
    try:
        v1 = refresh_segment(redis_client, "buyers", ["a", "b", "c"], 0).version
        webhook, _ = subscribe_on(mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1)
        receiver.down()
        run = load_dagbag().dags[WEBHOOKS_DAG_ID].test()
        assert run.state == "failed"
        [(version, batch, reason)] = WebhookStore(mysql_conn).parked(webhook.id)
        assert (version, batch) == (v1, 1)
        assert "Connection refused" in reason

        receiver.up()
        v2 = refresh_segment(redis_client, "buyers", ["b", "c", "d"], 1).version
        run = load_dagbag().dags[WEBHOOKS_DAG_ID].test()  # dag.test() is a manual run: parked ones first
        assert run.state == "success"
        bodies = []
        for headers, body in receiver.accepted():
            assert (
                verify(SECRET, headers["x-funnel-signature"], headers["x-funnel-timestamp"], body, time.time()) is None
            )
            bodies.append(json.loads(body))
        assert [(b["delivery_id"], b["entered"], b["exited"]) for b in bodies] == [
            (f"buyers:{v1}:1", ["a", "b"], []),
            (f"buyers:{v1}:2", ["c"], []),
            (f"buyers:{v2}:1", ["d"], []),
            (f"buyers:{v2}:2", [], ["a"]),
        ]
        assert WebhookStore(mysql_conn).parked(webhook.id) == []
    finally:
        receiver.down()


def test_by_default_the_deliver_task_refuses_private_receivers(mysql_conn: Any) -> None:
    insert_segments(mysql_conn, *ROWS)
    code = (
        "import os; from airflow.dag_processing.dagbag import DagBag;"
        "bag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER']);"
        f"print('refuse_private:', bag.dags[{WEBHOOKS_DAG_ID!r}].get_task('deliver').refuse_private)"
    )
    env = {key: value for key, value in os.environ.items() if key != "AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-1] == "refuse_private: True"


def test_with_refuse_private_a_dag_run_sends_nothing_to_a_loopback_receiver_and_fails_saying_why(
    mysql_conn: Any,
    redis_client: Any,
    airflow_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "WEBHOOK_REFUSE_PRIVATE", True)  # the default (the tests turn it off)
    monkeypatch.setattr(settings, "WEBHOOK_MAX_ATTEMPTS", 1)
    insert_segments(mysql_conn, *ROWS)
    receiver = WebhookReceiver()
    try:
        v1 = refresh_segment(redis_client, "buyers", ["a", "b"], 0).version
        # subscribed while allowed (or under a name that resolved elsewhere then)
        webhook, _ = subscribe_on(
            mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1, refuse_private=False
        )
        run = load_dagbag().dags[WEBHOOKS_DAG_ID].test()
        assert run.state == "failed"
        assert receiver.requests == []
        [(version, batch, reason)] = WebhookStore(mysql_conn).parked(webhook.id)
        assert (version, batch) == (v1, 1)
        assert reason.startswith(
            "1 attempts failed, the last: refused, nothing was sent: the URL points at '127.0.0.1', a loopback, "
            "private or link-local address, which [funnel] webhook_refuse_private forbids. Fix: "
        )
    finally:
        receiver.down()
