"""The dynamic DAG's deadline alert: its interval, and what its callback does when Airflow calls it.

The callback runs against the real MySQL (catalog and run history); the notifier is Airflow's
own ``SmtpNotifier`` sending to an SMTP server on a loopback port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import insert_segments

from funnel.airflow.deadline_callback import (
    ALERT_NAME,
    deadline_interval,
    deadline_message,
    not_done,
    slot_deadline,
    slot_deadline_missed,
)
from funnel.core.run_info import RunInfo
from funnel.core.states import RunStatus
from funnel.storage.mysql.run_history import Outcome, RunHistory

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

DAG_ID = "funnel_dynamic_segments"
RUN_ID = "scheduled__2026-11-26T09:00:00+00:00"
SLOT = dt.datetime(2026, 11, 26, 9, tzinfo=dt.UTC)


# ---------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("schedule", "timezone", "minutes", "interval"),
    [
        ("0 9,18 * * *", "UTC", 30, dt.timedelta(hours=8, minutes=30)),  # the 09:00 run: at 17:30
        ("0 9,18 * * *", "Europe/Berlin", 30, dt.timedelta(hours=8, minutes=30)),
        ("0 9,18 * * *", "UTC", 0, dt.timedelta(hours=9)),  # at the next slot itself
        ("0 6 * * *", "UTC", 60, dt.timedelta(hours=23)),
        ("0 9,18 * * *", "UTC", 540, None),  # nothing left of the 9 h gap
        ("0 9,18 * * *", "UTC", -5, None),
    ],
)
def test_the_deadline_is_the_shortest_gap_minus_the_setting(
    schedule: str, timezone: str, minutes: int, interval: dt.timedelta | None
) -> None:
    assert deadline_interval(schedule, timezone, minutes) == interval


def test_the_alert_is_on_the_runs_logical_date_and_calls_funnels_callback() -> None:
    from airflow.sdk import AsyncCallback, DeadlineReference

    alert = slot_deadline("0 9,18 * * *", "UTC", 30)
    assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
    assert alert.interval == dt.timedelta(hours=8, minutes=30)
    assert alert.name == ALERT_NAME
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "funnel.airflow.deadline_callback.slot_deadline_missed"
    assert alert.callback.kwargs == {"minutes_before_next_slot": 30}


def test_a_setting_that_leaves_no_time_gives_no_alert_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="funnel.airflow.deadline_callback"):
        assert slot_deadline("0 9,18 * * *", "UTC", 600) is None
    assert "deadline_minutes_before_next_slot is 600, which leaves no time before the next slot" in caplog.text
    assert "Fix: set it from 0 to less than the gap" in caplog.text


def test_segments_not_done_are_those_without_a_success_skip_or_supersede_in_the_run() -> None:
    statuses = {
        "a": RunStatus.SUCCESS,
        "b": RunStatus.FAILED,
        "c": RunStatus.RUNNING,
        "d": RunStatus.SKIPPED,
        "e": RunStatus.SUPERSEDED,
        "f": RunStatus.REJECTED,
    }
    assert not_done(["g", "f", "e", "d", "c", "b", "a"], statuses) == ["b", "c", "f", "g"]


def test_the_message_names_the_run_the_next_slot_and_at_most_fifty_segments() -> None:
    ids = [f"s{n:03d}" for n in range(60)]
    deadline = SLOT + dt.timedelta(hours=8, minutes=30)
    message = deadline_message(DAG_ID, RUN_ID, SLOT, deadline, SLOT + dt.timedelta(hours=9), ids)
    assert message.startswith(
        f"funnel: run {RUN_ID} of {DAG_ID} (slot 2026-11-26 09:00 UTC) is still going at its deadline "
        "2026-11-26 17:30 UTC, 30 min before the next slot 2026-11-26 18:00 UTC; 60 segment(s) not done: s000, s001,"
    )
    assert "s049 and 10 more. They will be stale at the next slot" in message
    assert "s050" not in message
    unknown = deadline_message(DAG_ID, RUN_ID, SLOT, deadline, None, None, "StoreError: MySQL down")
    assert unknown.endswith(
        "at its deadline 2026-11-26 17:30 UTC; the segments not done are unknown (StoreError: MySQL down)"
    )


def test_the_evening_runs_deadline_is_hours_before_the_morning_slot() -> None:
    evening = SLOT + dt.timedelta(hours=9)
    message = deadline_message(
        DAG_ID, "scheduled__18", evening, evening + dt.timedelta(hours=8, minutes=30), SLOT + dt.timedelta(days=1), []
    )
    assert "at its deadline 2026-11-27 02:30 UTC, 6 h 30 min before the next slot 2026-11-27 09:00 UTC" in message
    assert message.endswith("every segment is done, the run is finishing")


# ---------------------------------------------------------------------- the callback, as Airflow calls it


class _SmtpSession(socketserver.StreamRequestHandler):
    """Just enough SMTP to take mail: every message lands in ``server.messages``."""

    def handle(self) -> None:
        self.wfile.write(b"220 funnel-test ESMTP\r\n")
        data: list[bytes] | None = None
        while line := self.rfile.readline():
            if data is not None:
                if line.rstrip(b"\r\n") == b".":
                    self.server.messages.append(b"".join(data))  # type: ignore[attr-defined]
                    data = None
                    self.wfile.write(b"250 2.0.0 queued\r\n")
                else:
                    data.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-funnel-test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                data = []
                self.wfile.write(b"354 end with <CRLF>.<CRLF>\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                self.wfile.write(b"250 OK\r\n")


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """An SMTP server on a free loopback port, as the Airflow connection ``funnel_test_smtp``."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSession)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_FUNNEL_TEST_SMTP",
        f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true&timeout=10&retry_limit=0",
    )
    yield server.messages  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp_notifier(monkeypatch: pytest.MonkeyPatch, smtp_server: list[bytes]) -> list[bytes]:
    """The deadline notifier set to Airflow's SmtpNotifier, through the settings."""
    monkeypatch.setenv("AIRFLOW__FUNNEL__DEADLINE_NOTIFIER", "airflow.providers.smtp.notifications.smtp.SmtpNotifier")
    monkeypatch.setenv(
        "AIRFLOW__FUNNEL__DEADLINE_NOTIFIER_KWARGS",
        json.dumps(
            {
                "to": "data-eng@example.com",
                "from_email": "airflow@example.com",
                "smtp_conn_id": "funnel_test_smtp",
                "subject": "{{ dag_run.dag_id }}: {{ segment_ids | length }} segment(s) late",
                "html_content": "<p>{{ message }}</p>",
            }
        ),
    )
    return smtp_server


@pytest.fixture
def a_late_run(mysql_conn: Any) -> dict[str, Any]:
    """A catalog and a 09:00 run in which a is done, b failed (a retry is due), c has not started.

    Returns the callback context Airflow passes (the run as its REST API shows it).
    """
    rows = [{"segment_id": s, "name": s.upper(), "kind": "dynamic", "query": "SELECT 1"} for s in "abcd"]
    rows[3]["enabled"] = False
    rows.append(
        {
            "segment_id": "once",
            "name": "Once",
            "kind": "static",
            "query": "SELECT 1",
            "run_at": SLOT.replace(tzinfo=None),
        }
    )
    rows.append({"segment_id": "vips", "name": "Vips", "kind": "proxy", "rule": '{"tag": "new_user"}'})
    insert_segments(mysql_conn, *rows)
    history = RunHistory(mysql_conn)
    run = RunInfo(DAG_ID, RUN_ID, SLOT)
    started = SLOT + dt.timedelta(seconds=5)
    a = history.start("a", run, started)
    history.finish(a, Outcome(RunStatus.SUCCESS, version=1, size=3), started + dt.timedelta(minutes=3))
    b = history.start("b", run, started)
    history.finish(b, Outcome(RunStatus.FAILED, error="HiveUnavailable: ..."), started + dt.timedelta(minutes=1))
    # c was refreshed by yesterday's run, not this one.
    yesterday = RunInfo(DAG_ID, "scheduled__2026-11-25T18:00:00+00:00", SLOT - dt.timedelta(hours=15))
    c = history.start("c", yesterday, SLOT - dt.timedelta(hours=15))
    history.finish(c, Outcome(RunStatus.SUCCESS, version=1, size=1), SLOT - dt.timedelta(hours=14))
    return {
        "dag_run": {
            "dag_id": DAG_ID,
            "dag_run_id": RUN_ID,
            "logical_date": "2026-11-26T09:00:00Z",
            "queued_at": "2026-11-26T09:00:01.120000Z",
            "start_date": "2026-11-26T09:00:02.450000Z",
            "run_type": "scheduled",
            "state": "running",
        },
        "deadline": {"id": "0193", "deadline_time": "2026-11-26T17:30:00Z"},
    }


EXPECTED = (
    f"funnel: run {RUN_ID} of {DAG_ID} (slot 2026-11-26 09:00 UTC) is still going at its deadline 2026-11-26 17:30 "
    "UTC, 30 min before the next slot 2026-11-26 18:00 UTC; 2 segment(s) not done: b, c. They will be stale at the "
    "next slot unless refreshed by then (check the task logs and funnel_segment_runs)"
)


def test_the_callback_logs_the_segments_not_done(a_late_run: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="funnel.airflow.deadline_callback"):
        output = asyncio.run(slot_deadline_missed(30, context=a_late_run))

    assert output == EXPECTED  # text: the triggerer stores it as the callback's output
    assert EXPECTED in caplog.text


def test_the_callback_sends_the_message_through_the_configured_notifier(
    a_late_run: dict[str, Any], smtp_notifier: list[bytes]
) -> None:
    assert asyncio.run(slot_deadline_missed(30, context=a_late_run)) == EXPECTED

    (raw,) = smtp_notifier
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert (mail["To"], mail["From"]) == ("data-eng@example.com", "airflow@example.com")
    assert mail["Subject"] == f"{DAG_ID}: 2 segment(s) late"
    body = mail.get_body(("html",))
    assert body is not None
    assert f"<p>{EXPECTED}</p>" in body.get_content()


def test_with_mysql_down_the_alert_still_goes_out_and_says_what_is_unknown(
    a_late_run: dict[str, Any], smtp_notifier: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_FUNNEL_MYSQL", f"mysql://root@127.0.0.1:{port}/funnel_down")

    output = asyncio.run(slot_deadline_missed(30, context=a_late_run))

    assert "17:30 UTC, 30 min before the next slot 2026-11-26 18:00 UTC; the segments not done are unknown (" in (
        output
    )
    assert len(smtp_notifier) == 1


def test_a_backfill_run_past_its_deadline_is_logged_not_sent(
    a_late_run: dict[str, Any], smtp_notifier: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    a_late_run["dag_run"]["run_type"] = "backfill"
    with caplog.at_level(logging.INFO, logger="funnel.airflow.deadline_callback"):
        output = asyncio.run(slot_deadline_missed(30, context=a_late_run))
    assert (
        output == f"funnel: backfill run {RUN_ID} of {DAG_ID} (a past slot) passed its deadline; no alert for backfills"
    )
    assert smtp_notifier == []
    assert output in caplog.text


def test_without_the_deadline_in_the_context_it_is_placed_as_airflow_places_it(a_late_run: dict[str, Any]) -> None:
    del a_late_run["deadline"]
    assert asyncio.run(slot_deadline_missed(30, context=a_late_run)) == EXPECTED


def test_a_run_that_ended_after_its_deadline_is_told_as_such(a_late_run: dict[str, Any]) -> None:
    a_late_run["dag_run"]["state"] = "failed"
    output = asyncio.run(slot_deadline_missed(30, context=a_late_run))
    assert output.startswith(
        f"funnel: run {RUN_ID} of {DAG_ID} (slot 2026-11-26 09:00 UTC) ended (failed) after its deadline "
        "2026-11-26 17:30 UTC, 30 min before the next slot 2026-11-26 18:00 UTC; 2 segment(s) not done: b, c."
    )


@pytest.mark.parametrize(
    ("path", "kwargs", "error"),
    [
        ("funnel.nowhere.Notifier", "{}", "[funnel] deadline_notifier 'funnel.nowhere.Notifier' cannot be imported"),
        ("funnel.settings.api_tokens", "{}", "is not an Airflow notifier (BaseNotifier)"),
        ("airflow.providers.smtp.notifications.smtp.SmtpNotifier", "[1]", "must be a JSON object"),
    ],
)
def test_a_wrong_notifier_setting_fails_the_callback_naming_the_setting(
    a_late_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch, path: str, kwargs: str, error: str
) -> None:
    monkeypatch.setenv("AIRFLOW__FUNNEL__DEADLINE_NOTIFIER", path)
    monkeypatch.setenv("AIRFLOW__FUNNEL__DEADLINE_NOTIFIER_KWARGS", kwargs)
    with pytest.raises(ValueError, match="deadline_notifier") as raised:
        asyncio.run(slot_deadline_missed(30, context=a_late_run))
    assert error in str(raised.value)


def test_a_shards_alert_names_only_the_segments_of_its_shard(
    a_late_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnel import settings
    from funnel.core.dag_plan import shard_dag_id

    monkeypatch.setattr(settings, "DYNAMIC_DAG_MAX_TASKS", 2)  # a, b and c: three shards
    shard = shard_dag_id("c")
    context = {**a_late_run, "dag_run": {**a_late_run["dag_run"], "dag_id": shard}}
    output = asyncio.run(slot_deadline_missed(30, context=context))
    assert output.startswith(f"funnel: run {RUN_ID} of {shard} (slot 2026-11-26 09:00 UTC)")
    assert "1 segment(s) not done: c. They will be stale" in output
