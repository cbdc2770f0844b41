"""``funnel.client`` against the API as deployed (``python -m funnel.cli serve`` on a loopback
port): typed answers, the listings as iterators, errors with the API's words; and against a
small real HTTP server that answers 429 and 503 with ``Retry-After`` or takes too long."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from helpers import READ_TOKEN, WRITE_TOKEN

from funnel.api import answers
from funnel.client import ApiError, AsyncFunnelClient, FunnelClient

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

HOOK = "https://hooks.example.com/funnel"


def test_the_client_reads_and_writes_through_the_api(
    server: tuple[httpx.Client, Any], add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3", "4", "5"])
    base = str(server[0].base_url)
    with FunnelClient(base, READ_TOKEN) as funnel, FunnelClient(base, WRITE_TOKEN) as admin:
        answer = funnel.is_member("buyers", "3")
        assert isinstance(answer, answers.Membership)
        assert (answer.member, answer.version, answer.stale, answer.source) == (True, 1, False, "redis")
        assert answer.refreshed_at is not None
        assert answer.refreshed_at.tzinfo is not None
        assert funnel.check("buyers", ["1", "9"]).members == {"1": True, "9": False}
        assert sorted(funnel.members("buyers", page_size=2)) == ["1", "2", "3", "4", "5"]  # three pages
        assert sorted(funnel.changes("buyers", page_size=2)) == ["1", "2", "3", "4", "5"]
        (listed,) = funnel.segments().segments
        assert (listed.segment_id, listed.size, listed.freshness.value) == ("buyers", 5, "fresh")
        assert funnel.segment("buyers").query is not None
        assert [v.version for v in funnel.versions("buyers").versions] == [1]
        assert funnel.user_segments("4").segments == ["buyers"]

        with pytest.raises(ApiError) as unknown:
            funnel.segment("nosuch")
        assert unknown.value.http_status == 404
        assert "nosuch" in unknown.value.message
        with pytest.raises(ApiError) as read_only:
            funnel.webhooks()
        assert read_only.value.http_status == 403

        hook = admin.subscribe("buyers", HOOK)
        assert (hook.segment_id, hook.enabled, len(hook.secret) >= 16) == ("buyers", True, True)
        assert admin.set_webhook_enabled(hook.id, False).enabled is False
        assert admin.deliveries(hook.id).versions == []
        assert admin.remove_webhook(hook.id).removed is True
        assert admin.webhooks().webhooks == []

        dutch = {"segment_id": "dutch", "name": "Dutch", "kind": "proxy", "rule": {"tag": "new_user"}}
        assert admin.add_segment(dutch, comment="launch").revision == 1
        assert admin.edit_segment("dutch", {"name": "NL"}, expect_revision=1).changed == {"name": ["Dutch", "NL"]}
        with pytest.raises(ApiError) as stale:
            admin.edit_segment("dutch", {"name": "Late"}, expect_revision=1)
        assert stale.value.http_status == 409
        assert [r.change.value for r in funnel.revisions("dutch").revisions] == ["created", "edited"]
        assert funnel.dependents("dutch").dependents == []
        assert (admin.access().scope, funnel.access().scope) == ("write", "read")
        new_rule = {"name": "NL", "kind": "proxy", "rule": {"tag": "order_count", "op": ">=", "value": 1}}
        replaced = admin.replace_segment("dutch", new_rule, expect_revision=2)
        assert (replaced.revision, replaced.preview is not None) == (3, True)  # a new rule: previewed over the tags
        assert admin.edit_segment("dutch", {"owner": "growth"}, preview=False).preview is None
        assert [s.segment_id for s in funnel.segments(owner="growth").segments] == ["dutch"]
        assert admin.retire_segment("dutch", comment="done").change.value == "retired"
        with pytest.raises(ApiError) as gone:
            funnel.segment("dutch")
        assert gone.value.http_status == 410
        assert admin.restore_segment("dutch").change.value == "restored"


def test_the_async_client_answers_the_same(
    server: tuple[httpx.Client, Any], add_segment: Callable[..., None], refresh: Callable[..., Any]
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3"])
    base = str(server[0].base_url)

    async def tour() -> tuple[Any, ...]:
        async with AsyncFunnelClient(base, READ_TOKEN) as funnel:
            member = await funnel.is_member("buyers", "2")
            checked = await funnel.check("buyers", ["3", "4"])
            listed = [user async for user in funnel.members("buyers", page_size=2)]
            return member.member, checked.members, sorted(listed)

    assert asyncio.run(tour()) == (True, {"3": True, "4": False}, ["1", "2", "3"])


class Scripted:
    """A real HTTP server on a loopback port that answers from a script: ``(status, headers,
    body, delay)`` per request, in order; it records when each request came."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes, float]]) -> None:
        self.script, self.arrivals = list(script), []  # type: list[float]
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.arrivals.append(time.monotonic())
                status, headers, body, delay = outer.script.pop(0)
                time.sleep(delay)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(*script: tuple[int, dict[str, str], bytes, float]) -> Scripted:
        made.append(Scripted(list(script)))
        return made[-1]

    yield make
    for server in made:
        server.httpd.shutdown()
        server.httpd.server_close()


LISTED = (200, {}, b'{"segments": []}', 0.0)
BUSY = (429, {"Retry-After": "0.3"}, b'{"error": "busy"}', 0.0)
DOWN = (503, {"Retry-After": "0.2"}, b'{"error": "a store (Redis or MySQL) did not answer; try again"}', 0.0)


def test_429_and_503_are_tried_again_after_retry_after(scripted: Callable[..., Scripted]) -> None:
    server = scripted(BUSY, DOWN, LISTED)
    with FunnelClient(server.url) as funnel:
        assert funnel.segments().segments == []
    first, second, third = server.arrivals  # the waits are what Retry-After said
    assert second - first >= 0.3
    assert third - second >= 0.2


def test_retries_end_and_the_last_answer_is_raised(scripted: Callable[..., Scripted]) -> None:
    server = scripted(BUSY, BUSY)
    with FunnelClient(server.url, retries=1) as funnel, pytest.raises(ApiError) as busy:
        funnel.segments()
    assert (busy.value.http_status, busy.value.message, len(server.arrivals)) == (429, "busy", 2)

    patient = scripted((503, {"Retry-After": "60"}, b'{"error": "down"}', 0.0))
    started = time.monotonic()
    with FunnelClient(patient.url, max_wait=5) as funnel, pytest.raises(ApiError) as down:
        funnel.segments()  # a minute is beyond max_wait: not waited for
    assert (down.value.http_status, len(patient.arrivals)) == (503, 1)
    assert time.monotonic() - started < 5


def test_a_subscription_is_not_sent_twice_on_a_503(scripted: Callable[..., Scripted]) -> None:
    server = scripted(DOWN)  # the first try may have been stored: the caller decides
    with FunnelClient(server.url) as funnel, pytest.raises(ApiError) as down:
        funnel.subscribe("buyers", HOOK)
    assert (down.value.http_status, len(server.arrivals)) == (503, 1)


def test_a_slow_answer_is_a_timeout(scripted: Callable[..., Scripted]) -> None:
    server = scripted((200, {}, b'{"segments": []}', 2.0))
    started = time.monotonic()
    with FunnelClient(server.url, timeout=0.3) as funnel, pytest.raises(httpx.TimeoutException):
        funnel.segments()
    assert time.monotonic() - started < 1.5
