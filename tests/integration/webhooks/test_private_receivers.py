"""webhook_refuse_private at delivery time: a receiver on a loopback, private or link-local address
gets nothing, whatever it was when subscribed, and a delivery connects to the address it checked."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import WebhookReceiver, subscribe_on

from funnel.core.segment import Kind, Segment
from funnel.core.states import DeliveryStatus
from funnel.services.webhook_delivery import Deliverer, DeliverySettings
from funnel.storage import webhook_sender
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.webhook_store import WebhookStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

SECRET = "test-secret-0123456789abcdef"
CATALOG = {"buyers": Segment("buyers", "Buyers", Kind.DYNAMIC, query="SELECT 1")}
REFUSING = DeliverySettings(
    batch_size=2, max_attempts=2, backoff_seconds=0.01, backoff_max_seconds=0.05, timeout_seconds=2, refuse_private=True
)
FIX = (
    "Fix: use a public receiver, or, where receivers are trusted internal services, set [funnel] "
    "webhook_refuse_private = False (AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE=False)"
)


def deliverer(conn: Any, config: DeliverySettings) -> Deliverer:
    return Deliverer(WebhookStore(conn), MySqlSegmentStore(conn), config, stop=threading.Event())


def test_a_loopback_receiver_subscribed_while_allowed_gets_nothing_once_refused_and_the_batch_parks_saying_why(
    mysql_conn: Any, refresh: Any, receiver: WebhookReceiver
) -> None:
    v1 = refresh("buyers", ["a", "b"]).version
    # Made while the setting was off (or under a name that resolved elsewhere then).
    webhook, _ = subscribe_on(
        mysql_conn, CATALOG, "buyers", receiver.url, SECRET, from_version=v1, refuse_private=False
    )

    [report] = deliverer(mysql_conn, REFUSING).run(retry_parked=False)

    assert receiver.requests == []  # nothing reached it, not even a connection's worth of a request
    assert report.delivered == []
    reason = (
        "refused, nothing was sent: the URL points at '127.0.0.1', a loopback, private or link-local address, "
        f"which [funnel] webhook_refuse_private forbids. {FIX}"
    )
    assert report.parked == f"buyers:{v1}:1: 2 attempts failed, the last: {reason}"
    store = WebhookStore(mysql_conn)
    assert store.parked(webhook.id) == [(v1, 1, f"2 attempts failed, the last: {reason}")]
    [row] = store.by_version(webhook.id)
    assert (row.version, row.status, row.attempts) == (v1, DeliveryStatus.PARKED, 2)
    assert store.get(webhook.id).cursor.version == v1 - 1  # nothing counted as delivered

    # Turned off (a trusted internal receiver), a manual run sends the parked batch: nothing was lost.
    [report] = deliverer(mysql_conn, dataclasses.replace(REFUSING, refuse_private=False)).run(retry_parked=True)
    assert report.versions == [v1]
    assert len(receiver.accepted()) == 1


def test_a_name_is_resolved_at_each_delivery_and_refused_when_it_points_at_loopback(
    mysql_conn: Any, refresh: Any, receiver: WebhookReceiver
) -> None:
    v1 = refresh("buyers", ["a"]).version
    url = f"http://localhost:{receiver.port}/hook"
    webhook, _ = subscribe_on(mysql_conn, CATALOG, "buyers", url, SECRET, from_version=v1, refuse_private=False)
    [report] = deliverer(mysql_conn, REFUSING).run(retry_parked=False)
    assert (receiver.requests, report.delivered) == ([], [])
    [(_, _, reason)] = WebhookStore(mysql_conn).parked(webhook.id)
    assert reason.startswith(
        "2 attempts failed, the last: refused, nothing was sent: the URL points at 'localhost', which resolves to "
    )
    assert "127.0.0.1" in reason
    assert reason.endswith(
        f"a loopback, private or link-local address, which [funnel] webhook_refuse_private forbids. {FIX}"
    )


def test_a_pinned_post_connects_to_the_checked_address_and_never_resolves_the_name_again(
    receiver: WebhookReceiver,
) -> None:
    # .invalid never resolves (RFC 6761): the POST arrives only because the checked address is used.
    url = f"http://receiver.invalid:{receiver.port}/hook"
    outcome = webhook_sender.post_pinned(url, b"{}", {"Content-Type": "application/json"}, 2, ["::1", "127.0.0.1"])
    assert outcome.ok, outcome.reason  # ::1 refuses (the receiver is on 127.0.0.1 only): the next address is tried
    [(headers, body, status)] = receiver.requests
    assert (headers["host"], body, status) == (f"receiver.invalid:{receiver.port}", b"{}", 200)
    assert webhook_sender.post(url, b"{}", {}, 2, True).reason.startswith(
        f"cannot reach http://receiver.invalid:{receiver.port}: 'receiver.invalid' does not resolve ("
    )


def test_a_pinned_https_post_sends_the_name_as_sni_and_checks_the_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=receiver.test",
         "-addext", "subjectAltName=DNS:receiver.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _context: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
        conn.close()

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    try:
        outcome = webhook_sender.post_pinned(f"https://receiver.test:{port}/hook", b"{}", {}, 5, ["127.0.0.1"])
    finally:
        thread.join(10)
        listener.close()
    assert names == ["receiver.test"]  # SNI: the name, not the address connected to
    assert not outcome.ok
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.reason  # a self-signed certificate is not trusted
