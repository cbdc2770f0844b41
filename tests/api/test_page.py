"""The Segments page (``/ui/``), served by the API: its files, and the page itself in a real
headless Chromium against the API server as deployed (uvicorn on a loopback port)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_driver import Chromium
from fastapi.testclient import TestClient

from funnel.api.segments_page import STATIC_DIR
from funnel.core.errors import RefreshRejected
from funnel.core.segment import Kind

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

VIPS_RULE = '{"tag": "order_count", "op": ">=", "value": 2}'
READY = "document.body.dataset.state === 'ready'"
ROWS = "[...document.querySelectorAll('#segments tbody tr')].map(r => r.dataset.segment)"
DETAIL_READY = "document.getElementById('detail').dataset.state === 'ready'"


def test_the_page_is_served_with_a_policy_that_allows_only_its_own_files() -> None:
    from funnel.api.app import create_app

    client = TestClient(create_app())

    page = client.get("/ui/")
    script = client.get("/ui/segments.js")
    redirect = client.get("/ui", follow_redirects=False)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="segments.js"' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'self'" in policy  # Airflow's UI (same origin) may frame it, no other site
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert redirect.status_code in (307, 308)
    assert redirect.headers["location"].endswith("/ui/")
    assert client.get("/ui/nope.js").status_code == 404


def test_the_pages_files_load_nothing_from_elsewhere() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        outside = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text)
        assert [u for u in outside if "www.w3.org" not in u] == [], f"{path.name} reaches outside: {outside}"
        assert "innerHTML" not in text, f"{path.name}: API values go into the page as text only"


@pytest.mark.browser
def test_the_page_lists_the_segments_flags_the_stale_shows_one_and_answers_the_member_box(
    server: tuple[httpx.Client, Path],
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
    refresh_composite: Callable[..., Any],
    tags_in_redis: None,
    read_auth: dict[str, str],
) -> None:
    client, _log = server
    add_segment("buyers")
    add_segment("launch", "static")
    add_segment("vips", rule=VIPS_RULE)
    add_segment("never_run")
    add_segment("shrinking")
    refresh("buyers", ["u1", "u2", "u3"])
    refresh("buyers", ["u2", "u3", "u4", "u5"])
    refresh("launch", ["u1"], Kind.STATIC)
    refresh("shrinking", ["u1", "u2", "u3", "u4"])
    with pytest.raises(RefreshRejected):
        refresh("shrinking", ["u1"])  # refused by the shrink guard: the segment is failing
    add_segment("late_buyers", "composite", rule='{"minus": ["buyers", "launch"]}')
    refresh_composite("late_buyers", {"minus": ["buyers", "launch"]})
    read_token = read_auth["Authorization"].removeprefix("Bearer ")

    with Chromium() as browser:
        browser.goto(f"{client.base_url}/ui/")
        # On its own (no Airflow login), the page asks for a read token.
        browser.wait_for("!document.getElementById('token-form').hidden", what="the token form")
        browser.click("#token")
        browser.type_text(read_token)
        browser.press_enter()
        browser.wait_for(READY, what="the segment list")

        buyers, shrinking = (
            browser.evaluate(
                f"[...document.querySelector('#segments tr[data-segment={s}]').cells].map(c => c.innerText)"
            )
            for s in ("buyers", "shrinking")
        )
        assert browser.evaluate(ROWS) == ["buyers", "late_buyers", "launch", "never_run", "shrinking", "vips"]
        late = browser.evaluate(
            "[...document.querySelector('#segments tr[data-segment=late_buyers]').cells].map(c => c.innerText)"
        )
        assert late[1:4] == ["composite\nof buyers, launch", "4", "1"]  # its operands under the kind
        assert buyers[1:4] == ["dynamic", "4", "2"]  # kind, size, version
        assert buyers[4].endswith(" s ago")
        assert buyers[5:7] == ["fresh", "success"]  # freshness, last run
        assert shrinking[5:7] == ["failing", "rejected"]
        assert shrinking[7].startswith("segment 'shrinking': the new result has 1 users against 4 live")
        assert browser.evaluate("document.getElementById('token-form').hidden")

        browser.click("#only-stale")  # GET /v1/segments?stale=true
        browser.wait_for(f"{READY} && document.querySelectorAll('#segments tbody tr').length === 2")
        assert browser.evaluate(ROWS) == ["never_run", "shrinking"]
        browser.click("#only-stale")
        browser.wait_for(f"{READY} && document.querySelectorAll('#segments tbody tr').length === 6")

        browser.click("#segments tr[data-segment=buyers] a")
        browser.wait_for(f"{DETAIL_READY} && document.getElementById('d-id').textContent === 'buyers'")
        assert browser.evaluate("document.getElementById('d-definition').textContent") == "SELECT user_id FROM dw.users"
        assert browser.evaluate("document.querySelectorAll('#d-chart svg circle').length") == 2  # two kept versions
        assert browser.evaluate("document.querySelectorAll('#d-runs tbody tr').length") == 2  # two attempts
        assert browser.evaluate("location.hash") == "#buyers"

        answers = {}
        for user_id in ("u4", "u1", "u1 "):
            browser.evaluate("document.getElementById('member-id').value = ''")
            browser.click("#member-id")
            browser.type_text(user_id)
            browser.press_enter()
            answers[user_id] = browser.wait_for(
                "(() => { const a = document.getElementById('member-answer');"
                " return a.className ? [a.className, a.textContent] : null; })()",
                what=f"the member box's answer for {user_id!r}",
            )
        assert answers["u4"] == ["yes", "u4 is a member of buyers (version 2, read from redis)"]
        assert answers["u1"] == ["no", "u1 is not a member of buyers (version 2, read from redis)"]
        assert answers["u1 "][0] == "error"
        assert "leading or trailing whitespace" in answers["u1 "][1]

        # A proxy segment shows its rule, and no chart or attempts (it has no refreshes).
        browser.click("#segments tr[data-segment=vips] a")
        browser.wait_for(f"{DETAIL_READY} && document.getElementById('d-id').textContent === 'vips'")
        rule = browser.evaluate("JSON.parse(document.getElementById('d-definition').textContent)")
        assert rule == {"tag": "order_count", "op": ">=", "value": 2}
        assert browser.evaluate("document.getElementById('d-runs-box').hidden")

        # A composite shows its set expression, and the operand versions each attempt used.
        browser.click("#segments tr[data-segment=late_buyers] a")
        browser.wait_for(f"{DETAIL_READY} && document.getElementById('d-id').textContent === 'late_buyers'")
        assert browser.evaluate("document.getElementById('d-def-title').textContent") == "Set expression"
        definition = browser.evaluate("document.getElementById('d-definition').textContent")
        assert definition.startswith("buyers - launch\n\n")
        run_cells = browser.evaluate("[...document.querySelector('#d-runs tbody tr').cells].map(c => c.innerText)")
        assert run_cells[-1] == "from buyers v2 (kept), launch v1 (kept)"

        assert browser.problems == []
