"""The command line the project's scripts use, against the real services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from funnel.cli.main import main
from funnel.cli.script_commands import split_statements

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m funnel.cli ARGS`` in its own process, on the test databases (tests/conftest.py's
    environment, less ``unset``: those settings take their defaults)."""
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "funnel.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_split_statements_keeps_semicolons_inside_lines() -> None:
    script = "-- a comment\nCREATE TABLE t (a INT);\nSELECT 'a;b' FROM t;\n\nSELECT 1\n"
    assert list(split_statements(script)) == ["CREATE TABLE t (a INT)", "SELECT 'a;b' FROM t", "SELECT 1"]


def test_ensure_pool_creates_the_hive_pool_with_the_configured_size(airflow_db: None) -> None:
    from airflow.models.pool import Pool

    assert main(["ensure-pool"]) == 0
    assert Pool.get_pool("funnel_hive").slots == 8


def test_mysql_script_loads_catalog_rows(mysql_conn: Any, tmp_path: Path) -> None:
    script = tmp_path / "rows.sql"
    script.write_text(
        "INSERT INTO funnel_segments (segment_id, name, kind, query) VALUES\n"
        "('a', 'A', 'dynamic', 'SELECT user_id FROM t');\n"
    )
    assert main(["mysql", str(script)]) == 0
    cur = mysql_conn.cursor()
    cur.execute("SELECT segment_id, kind FROM funnel_segments")
    assert cur.fetchall() == (("a", "dynamic"),)


def test_report_and_rebuild_redis_see_a_segment_half_lost_in_redis(
    mysql_conn: Any, redis_client: Any, capsys: Any
) -> None:
    import datetime as dt

    from helpers import insert_segments, redis_live_members

    from funnel import wiring
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.services.refresh import RefreshRequest
    from funnel.storage import layout

    insert_segments(mysql_conn, {"segment_id": "s", "name": "S", "kind": "dynamic", "query": "SELECT 1"})
    run = RunInfo("d", "r", dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC))
    with wiring.refresher(redis_client=redis_client) as refresher:
        lock = wiring.segment_lock(redis_client, "s", {"run_id": "r"})
        refresher.refresh(RefreshRequest("s", Kind.DYNAMIC, run), lambda: iter([["1", "2", "3"]]), lock)
    assert main(["report"]) == 0
    redis_client.delete(layout.members_key("s"))  # :meta stays: it still names the live version
    capsys.readouterr()
    assert main(["report"]) == 1
    assert capsys.readouterr().out.splitlines()[1].split() == ["s", "dynamic", "1", "0", "3", "NO"]
    assert main(["rebuild-redis", "s"]) == 0
    assert "rebuilt Redis from MySQL" in capsys.readouterr().out
    assert redis_live_members(redis_client, "s") == {"1", "2", "3"}
    assert main(["report"]) == 0


def test_rebuild_redis_all_restores_every_live_segment_and_the_tags(
    mysql_conn: Any, redis_client: Any, capsys: Any
) -> None:
    import datetime as dt

    from helpers import redis_live_members

    from funnel import wiring
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.services.refresh import RefreshRequest

    run = RunInfo("d", "r", dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC))
    with wiring.refresher(redis_client=redis_client) as refresher:
        for segment_id, ids in (("a", ["1", "2"]), ("b", ["3"])):
            lock = wiring.segment_lock(redis_client, segment_id, {"run_id": "r"})
            refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, run), lambda ids=ids: iter([ids]), lock)
    redis_client.flushdb()
    assert main(["rebuild-redis", "--all"]) == 0
    assert "checked 2 segments and the user tags; rebuilt: a, b, user tags" in capsys.readouterr().out
    assert (redis_live_members(redis_client, "a"), redis_live_members(redis_client, "b")) == ({"1", "2"}, {"3"})
    assert main(["rebuild-redis", "--all"]) == 0
    assert "rebuilt: none" in capsys.readouterr().out


def test_report_flags_stale_and_failing_segments_in_its_exit_status(
    mysql_conn: Any, redis_client: Any, capsys: Any
) -> None:
    import datetime as dt

    from helpers import insert_segments

    from funnel import wiring
    from funnel.core.run_info import RunInfo
    from funnel.core.segment import Kind
    from funnel.core.states import RunStatus
    from funnel.services.refresh import RefreshRequest
    from funnel.storage import layout
    from funnel.storage.mysql.run_history import Outcome, RunHistory

    insert_segments(
        mysql_conn,
        *({"segment_id": s, "name": s.title(), "kind": "dynamic", "query": "SELECT 1"} for s in ("late", "ok", "sour")),
        {"segment_id": "vips", "name": "Vips", "kind": "proxy", "rule": '{"tag": "new_user"}'},
    )
    run = RunInfo("d", "r", dt.datetime(2030, 1, 1, 9, tzinfo=dt.UTC))
    with wiring.refresher(redis_client=redis_client) as refresher:
        for segment_id in ("ok", "sour"):
            lock = wiring.segment_lock(redis_client, segment_id, {"run_id": "r"})
            refresher.refresh(RefreshRequest(segment_id, Kind.DYNAMIC, run), lambda: iter([["1", "2"]]), lock)
    history = RunHistory(mysql_conn)
    now = dt.datetime.now(dt.UTC)
    failed = history.start("sour", RunInfo("d", "r2", now), now)
    history.finish(failed, Outcome(RunStatus.FAILED, error="HiveUnavailable: no answer in 10s"), now)
    long_ago = now - dt.timedelta(days=2)
    late = history.start("late", RunInfo("d", "r0", long_ago), long_ago)
    history.finish(late, Outcome(RunStatus.SUCCESS, version=1, size=1), long_ago)
    capsys.readouterr()

    assert main(["report"]) == 2  # the stores agree; two segments need a look

    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.split("\nfreshness at ")[1].splitlines()[2:-1]}
    assert rows["late"].split()[1] == "STALE"
    assert "the last successful refresh started" in rows["late"]
    assert "a whole slot passed" in rows["late"]
    assert rows["sour"].split()[1] == "FAILING"
    assert "(r2, try 1) failed at" in rows["sour"]
    assert "HiveUnavailable: no answer in 10s" in rows["sour"]
    assert (rows["ok"].split()[1], rows["vips"].split()[1]) == ("fresh", "fresh")
    assert out.rstrip().endswith("stale or failing: late, sour")

    redis_client.delete(layout.members_key("ok"))
    assert main(["report"]) == 3  # and now the stores disagree too


def test_history_prints_a_users_stays_and_proxy_changes_as_a_table(mysql_conn: Any, capsys: Any) -> None:
    import datetime as dt
    import json

    from funnel.core.proxy_rule import parse_rule
    from funnel.core.run_info import RunInfo
    from funnel.core.user_events import Event, EventType
    from funnel.core.utc_time import utc_now
    from funnel.storage.mysql.event_ledger import EventLedger
    from funnel.storage.mysql.segment_versions import MySqlSegmentStore

    now = utc_now().replace(microsecond=0)
    store = MySqlSegmentStore(mysql_conn)
    for n, (members, hours_ago) in enumerate([(["1"], 3), (["2"], 2), (["1"], 1)]):
        run = RunInfo("funnel_dynamic_segments", f"scheduled__{n}", dt.datetime(2030, 1, 1 + n, tzinfo=dt.UTC))
        version = store.begin_version("buyers", run, now, logged=n > 0)
        store.add_entered("buyers", version, members, logged=n > 0)
        if n > 0:
            store.add_exited("buyers", version, ["2"] if members == ["1"] else ["1"])
            store.close_exited("buyers", version)
        store.promote("buyers", version, run, 1, now - dt.timedelta(hours=hours_ago))
    loyal = {"loyal": parse_rule("loyal", '{"tag": "order_count", "op": ">=", "value": 1}', 30)}
    order = Event("o-1", EventType.ORDER, "1", now - dt.timedelta(minutes=30))
    EventLedger(mysql_conn, lock_retries=0).record_events([order], "r" * 32, now, loyal)

    assert main(["history", "1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    hour = {n: (now - dt.timedelta(hours=n)).strftime("%Y-%m-%d %H:%M:%S") for n in (1, 2, 3)}
    assert shown[0].startswith("user 1: membership history since ")
    assert shown[0].endswith("(change_history_days 90)")
    assert shown[1:] == [
        "segment        entered (UTC)         left (UTC)            by",
        f"buyers         {hour[3]}   {hour[2]}   version 1 -> 2",
        f"buyers         {hour[1]}   -                     version 3 -> (member now)",
        f"loyal (proxy)  {order.at.strftime('%Y-%m-%d %H:%M:%S')}   -                     event o-1 -> (member now)",
    ]
    assert main(["history", "1", "--segment", "loyal", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["stays"] == []
    assert [c["event_id"] for c in answer["proxy_changes"]] == ["o-1"]
    assert main(["history", "nobody"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "no stays or changes recorded in that time"


def test_webhooks_commands_add_list_pause_show_deliveries_retry_and_remove(
    mysql_conn: Any, redis_client: Any, capsys: Any
) -> None:
    from helpers import insert_segments, refresh_segment

    from funnel.core.utc_time import utc_now
    from funnel.storage.mysql.webhook_store import WebhookStore

    insert_segments(mysql_conn, {"segment_id": "buyers", "name": "Buyers", "kind": "dynamic", "query": "SELECT 1"})
    live = refresh_segment(redis_client, "buyers", ["1", "2"], 0).version
    assert main(["webhooks", "add", "buyers", "https://hooks.example.com/funnel"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    webhook = WebhookStore(mysql_conn).list()[0]
    assert first == f"webhook {webhook.id}: segment buyers -> https://hooks.example.com/funnel, from version {live + 1}"
    assert second == f"secret (shown once; the receiver checks X-Funnel-Signature with it): {webhook.secret}"

    assert main(["webhooks", "add", "buyers", "ftp://x"]) == 2
    assert capsys.readouterr().err == (
        "error: url: has scheme 'ftp'. Fix: give an http:// or https:// URL (webhooks are HTTP POSTs)\n"
    )
    assert main(["webhooks", "disable", str(webhook.id)]) == 0
    assert main(["webhooks", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{webhook.id:>4}  buyers                   no       {live:>9}  https://hooks.example.com/funnel" in listing
    assert webhook.secret not in listing

    WebhookStore(mysql_conn).park(webhook, live + 1, 1, 2, "HTTP 503 Service Unavailable", utc_now())
    assert main(["webhooks", "deliveries", str(webhook.id)]) == 0
    assert f"{live + 1:>7}  parked      0/2          0  HTTP 503 Service Unavailable" in capsys.readouterr().out
    assert main(["webhooks", "retry", str(webhook.id)]) == 0
    assert capsys.readouterr().out.startswith(f"webhook {webhook.id}: 1 parked batch(es) will be sent again")
    assert WebhookStore(mysql_conn).parked(webhook.id) == []
    assert main(["webhooks", "remove", str(webhook.id)]) == 0
    assert main(["webhooks", "remove", str(webhook.id)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_names_a_proxy_row_whose_rule_does_not_parse_and_goes_on(
    mysql_conn: Any, redis_client: Any, capsys: Any
) -> None:
    from helpers import insert_segments

    insert_segments(
        mysql_conn,
        {"segment_id": "ok", "name": "Ok", "kind": "proxy", "rule": '{"tag": "new_user"}'},
        {"segment_id": "broken", "name": "Broken", "kind": "proxy", "rule": '{"tag": "shoe_size"}'},
    )
    capsys.readouterr()
    main(["report"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "invalid" in lines["broken"]
    assert "tags" in lines["ok"]


def test_report_prints_its_table_alone_on_stdout_and_its_log_lines_on_stderr(mysql_conn: Any) -> None:
    from helpers import insert_segments

    insert_segments(mysql_conn, {"segment_id": "buyers", "name": "Buyers", "kind": "dynamic", "query": "SELECT 1"})
    done = run_cli("report")
    assert done.returncode == 2, done.stderr  # never computed: stale
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["segment", "kind", "version", "redis", "mysql", "agree"]
    assert lines[1].split() == ["buyers", "dynamic", "-", "0", "0", "yes"]
    assert lines[-1] == "stale or failing: buyers"
    for line in lines:  # the table and the freshness lines only: no log record among them
        assert not any(mark in line for mark in ("[info", "[warning", "funnel: read", "loc=")), line
    assert "funnel: read 1 catalog rows from MySQL" in done.stderr  # the freshness report's catalog read


def test_webhooks_add_refuses_a_loopback_receiver_by_default(mysql_conn: Any) -> None:
    from helpers import insert_segments

    from funnel.storage.mysql.webhook_store import WebhookStore

    insert_segments(mysql_conn, {"segment_id": "buyers", "name": "Buyers", "kind": "dynamic", "query": "SELECT 1"})
    done = run_cli(
        "webhooks", "add", "buyers", "http://127.0.0.1:8080/admin", unset=("AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE",)
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        "error: url: points at '127.0.0.1', a loopback, private or link-local address, which [funnel] "
        "webhook_refuse_private forbids. Fix: use a public receiver, or, where receivers are trusted internal "
        "services, set [funnel] webhook_refuse_private = False (AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE=False)"
    )
    assert WebhookStore(mysql_conn).list() == []


def test_dynamic_dags_prints_the_one_dynamic_dag_or_its_shards(mysql_conn: Any, capsys: Any, monkeypatch: Any) -> None:
    from helpers import insert_segments

    from funnel import settings

    insert_segments(
        mysql_conn,
        *({"segment_id": s, "name": s, "kind": "dynamic", "query": "SELECT 1"} for s in ("a", "b", "c")),
        {"segment_id": "once", "name": "once", "kind": "static", "query": "SELECT 1", "run_at": "2026-12-01 09:00:00"},
    )
    assert main(["dynamic-dags"]) == 0
    assert capsys.readouterr().out == "funnel_dynamic_segments\n"
    monkeypatch.setattr(settings, "DYNAMIC_DAG_MAX_TASKS", 2)
    assert main(["dynamic-dags"]) == 0
    shards = ["funnel_dynamic_segments_30", "funnel_dynamic_segments_46", "funnel_dynamic_segments_50"]
    assert capsys.readouterr().out.splitlines() == shards
