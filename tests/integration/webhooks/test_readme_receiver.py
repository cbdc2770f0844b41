"""The README's Python receiver, run as written against real deliveries: it accepts genuine
batches once, drops a repeat, and refuses a forged or replayed one."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import subscribe_on

from funnel.core.segment import Kind, Segment
from funnel.services.webhook_delivery import Deliverer, DeliverySettings
from funnel.storage import webhook_sender
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.webhook_store import WebhookStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

README = Path(__file__).resolve().parents[3] / "README.md"
SECRET = "whsec_readme-receiver-test-secret"


def readme_receiver() -> dict[str, Any]:
    """The README's receiver block, run up to (not including) its ``serve_forever`` line."""
    text = README.read_text()
    block = re.search(r"```python\n(import hashlib, hmac, json, time\n.*?)```", text, re.S)
    assert block is not None, "the README's receiver example is gone"
    code = "\n".join(line for line in block.group(1).splitlines() if not line.startswith("HTTPServer("))
    applied: list[dict[str, Any]] = []
    namespace: dict[str, Any] = {"apply_changes": applied.append}
    exec(compile(code, "README.md receiver", "exec"), namespace)
    namespace["SECRET"] = SECRET.encode()
    namespace["applied"] = applied
    return namespace


@pytest.fixture
def readme_server() -> Any:
    namespace = readme_receiver()
    server = HTTPServer(("127.0.0.1", 0), namespace["FunnelHook"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, namespace
    server.shutdown()
    server.server_close()


def test_the_readme_receiver_applies_each_batch_once_and_refuses_forgeries(
    mysql_conn: Any, refresh: Callable[..., Any], readme_server: Any
) -> None:
    server, namespace = readme_server
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    v1 = refresh("buyers", ["a", "b", "c"]).version
    catalog = {"buyers": Segment("buyers", "Buyers", Kind.DYNAMIC, query="q")}
    subscribe_on(mysql_conn, catalog, "buyers", url, SECRET, from_version=v1)
    v2 = refresh("buyers", ["b", "c", "d"]).version
    config = DeliverySettings(
        batch_size=2, max_attempts=1, backoff_seconds=0, backoff_max_seconds=0, timeout_seconds=2, refuse_private=False
    )
    [report] = Deliverer(WebhookStore(mysql_conn), MySqlSegmentStore(mysql_conn), config).run(retry_parked=False)
    assert report.parked is None
    assert [(b["delivery_id"], b["entered"], b["exited"]) for b in namespace["applied"]] == [
        (f"buyers:{v1}:1", ["a", "b"], []),
        (f"buyers:{v1}:2", ["c"], []),
        (f"buyers:{v2}:1", ["d"], []),
        (f"buyers:{v2}:2", [], ["a"]),
    ]

    body = b'{"segment_id":"buyers","version":9,"batch":1,"batches":1,"entered":["x"],"exited":[],"delivery_id":"d"}'
    now = int(time.time())
    genuine = webhook_sender.headers("buyers", v2, 2, SECRET, now, body)  # a repeat of a delivered id
    assert webhook_sender.post(url, body, genuine, 2, False).ok
    forged = webhook_sender.headers("buyers", 9, 1, "not-the-secret-at-all", now, body)
    replayed = webhook_sender.headers("buyers", 9, 1, SECRET, now - 301, body)
    for headers in (forged, replayed):
        outcome = webhook_sender.post(url, body, headers, 2, False)
        assert outcome.reason.startswith("HTTP 401"), outcome
    assert len(namespace["applied"]) == 4  # the repeat and the refused ones changed nothing
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=2)
