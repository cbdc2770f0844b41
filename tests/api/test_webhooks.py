"""/v1/webhooks: subscriptions managed with the write scope, checked before they are stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from funnel.core.states import DeliveryStatus
from funnel.core.utc_time import utc_now
from funnel.storage.mysql.webhook_store import WebhookStore

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

HOOK = "https://hooks.example.com/funnel"


def test_a_read_token_can_neither_see_nor_change_subscriptions(
    api: TestClient, add_segment: Callable[..., None], write_auth: dict[str, str]
) -> None:
    add_segment("buyers")
    made = api.post("/v1/webhooks", json={"segment_id": "buyers", "url": HOOK}, headers=write_auth).json()
    for method, path in (
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("PATCH", f"/v1/webhooks/{made['id']}"),
        ("DELETE", f"/v1/webhooks/{made['id']}"),
        ("GET", f"/v1/webhooks/{made['id']}/deliveries"),
    ):
        answer = api.request(method, path, json={"segment_id": "buyers", "url": HOOK, "enabled": False})
        assert answer.status_code == 403, (method, path)
        assert answer.json() == {"error": "this endpoint needs a token with the write scope; this token can only read"}
    assert api.get("/v1/webhooks", headers={"Authorization": ""}).status_code == 401


def test_add_list_pause_and_remove_a_subscription(
    api: TestClient,
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    write_auth: dict[str, str],
    mysql_conn: Any,
) -> None:
    add_segment("buyers")
    live = refresh("buyers", ["1", "2"]).version
    made = api.post("/v1/webhooks", json={"segment_id": "buyers", "url": HOOK}, headers=write_auth)
    assert made.status_code == 201
    body = made.json()
    secret = body.pop("secret")
    assert secret.startswith("whsec_")
    assert len(secret) == 70
    assert body["segment_id"] == "buyers"
    assert body["url"] == HOOK
    assert body["enabled"] is True
    assert body["delivered_version"] == live  # the next version is the first it gets
    listed = api.get("/v1/webhooks", headers=write_auth)
    assert listed.json() == {"webhooks": [body]}
    assert secret not in listed.text
    own = api.post(
        "/v1/webhooks",
        json={"segment_id": "buyers", "url": HOOK, "secret": "s" * 20, "from_version": 1},
        headers=write_auth,
    ).json()
    assert (own["secret"], own["delivered_version"]) == ("s" * 20, 0)

    paused = api.patch(f"/v1/webhooks/{body['id']}", json={"enabled": False}, headers=write_auth)
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False
    assert WebhookStore(mysql_conn).subscribed_segments() == ["buyers"]  # the other one still is
    webhook = WebhookStore(mysql_conn).get(own["id"])
    WebhookStore(mysql_conn).park(webhook, 1, 1, 1, "HTTP 500 Internal Server Error", utc_now())
    deliveries = api.get(f"/v1/webhooks/{own['id']}/deliveries", headers=write_auth).json()
    [version] = deliveries["versions"]
    assert (version["version"], version["status"], version["last_error"]) == (
        1,
        DeliveryStatus.PARKED.value,
        "HTTP 500 Internal Server Error",
    )
    assert "secret" not in deliveries

    assert api.delete(f"/v1/webhooks/{own['id']}", headers=write_auth).json() == {"id": own["id"], "removed": True}
    gone = api.get(f"/v1/webhooks/{own['id']}/deliveries", headers=write_auth)
    assert gone.status_code == 404
    assert gone.json() == {"error": f"webhook {own['id']} does not exist (list them with GET /v1/webhooks)"}


def test_bad_subscriptions_are_422_naming_the_field_and_the_fix(
    api: TestClient, add_segment: Callable[..., None], write_auth: dict[str, str], mysql_conn: Any
) -> None:
    add_segment("buyers")
    add_segment("new_users", rule='{"tag": "new_user"}')
    cases = [
        (
            {"segment_id": "nope", "url": HOOK},
            "segment_id: segment 'nope' is not in the catalog. Fix: name a segment of funnel_segments "
            "(GET /v1/segments lists them)",
        ),
        (
            {"segment_id": "new_users", "url": HOOK},
            "segment_id: segment 'new_users' is a proxy segment: it is answered at request time from users' tags "
            "and has no versions, so there are no version changes to deliver. Fix: subscribe to a static, dynamic "
            "or composite segment",
        ),
        (
            {"segment_id": "buyers", "url": "file:///etc/passwd"},
            "url: has scheme 'file'. Fix: give an http:// or https:// URL (webhooks are HTTP POSTs)",
        ),
        (
            {"segment_id": "buyers", "url": HOOK, "secret": "short"},
            "secret: must be 16 to 128 printable ASCII characters without spaces. Fix: leave it out to have one "
            "generated",
        ),
        (
            {"url": HOOK},
            'segment_id is missing. Fix: send {"segment_id": "...", "url": "https://...", "secret"?: "...", '
            '"from_version"?: 1}',
        ),
        (
            {"segment_id": "buyers", "url": HOOK, "events": "all"},
            "'events' is not a webhook field; use segment_id, url, secret and from_version",
        ),
    ]
    for body, message in cases:
        answer = api.post("/v1/webhooks", json=body, headers=write_auth)
        assert (answer.status_code, answer.json()) == (422, {"error": message})
    assert WebhookStore(mysql_conn).list() == []
    bad_patch = api.patch("/v1/webhooks/1", json={"enabled": "no"}, headers=write_auth)
    assert bad_patch.status_code == 422
    assert bad_patch.json()["error"].startswith("enabled must be true or false. Fix: ")
    assert api.patch("/v1/webhooks/abc", json={"enabled": True}, headers=write_auth).status_code == 422
    assert api.delete("/v1/webhooks/999", headers=write_auth).status_code == 404


@pytest.mark.parametrize("server_env", [{"AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE": None}])  # the default
def test_by_default_a_loopback_private_or_link_local_receiver_is_422_naming_the_field_and_the_fix(
    server: tuple[httpx.Client, Path], add_segment: Callable[..., None], write_auth: dict[str, str], mysql_conn: Any
) -> None:
    client, _ = server
    add_segment("buyers")
    refused = (
        "a loopback, private or link-local address, which [funnel] webhook_refuse_private forbids. Fix: use a "
        "public receiver, or, where receivers are trusted internal services, set [funnel] webhook_refuse_private "
        "= False (AIRFLOW__FUNNEL__WEBHOOK_REFUSE_PRIVATE=False)"
    )
    for url, where in (
        ("http://169.254.169.254/latest/meta-data/", "'169.254.169.254'"),  # a cloud metadata endpoint
        ("http://127.0.0.1:8081/v1/segments", "'127.0.0.1'"),  # an internal admin port
        ("http://10.0.0.7/hook", "'10.0.0.7'"),
        ("https://[::1]:8443/hook", "'::1'"),
    ):
        answer = client.post("/v1/webhooks", json={"segment_id": "buyers", "url": url}, headers=write_auth)
        assert (answer.status_code, answer.json()) == (422, {"error": f"url: points at {where}, {refused}"})
    named = client.post(
        "/v1/webhooks", json={"segment_id": "buyers", "url": "http://localhost:9/hook"}, headers=write_auth
    )
    assert named.status_code == 422
    assert named.json()["error"].startswith("url: points at 'localhost', which resolves to ")
    assert named.json()["error"].endswith(refused)
    assert WebhookStore(mysql_conn).list() == []
    public = {"segment_id": "buyers", "url": "https://93.184.216.34/funnel"}  # an IP literal: no DNS in the test
    assert client.post("/v1/webhooks", json=public, headers=write_auth).status_code == 201
