"""The Segments page's form (``segment_form.js``) in a real headless Chromium against the API as
deployed: add a segment with a typo (the message shows next to the field, nothing is saved),
fix it, preview it, save it, and its task appears at the next parse; edit it; and a read token
is offered no form at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_driver import Chromium
from helpers import READ_TOKEN, WRITE_TOKEN

from funnel.core.dag_plan import DYNAMIC_DAG_ID

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

READY = "document.body.dataset.state === 'ready'"
ROWS = "[...document.querySelectorAll('#segments tbody tr')].map(r => r.dataset.segment)"
EDITOR_STATE = "document.getElementById('editor').dataset.state"
TYPO_QUERY = "SELEC id AS user_id FROM range(0, 5)"
QUERY = "SELECT id AS user_id FROM range(0, 5)"


def open_page(browser: Chromium, client: httpx.Client, token: str) -> None:
    browser.goto(f"{client.base_url}/ui/")
    browser.wait_for("!document.getElementById('token-form').hidden", what="the token form")
    browser.click("#token")
    browser.type_text(token)
    browser.press_enter()
    browser.wait_for(READY, what="the segment list")


def fill(browser: Chromium, field: str, text: str) -> None:
    browser.evaluate(f"document.getElementById('f-{field}').value = ''")
    browser.click(f"#f-{field}")
    browser.type_text(text)


def test_the_form_adds_a_segment_after_a_typo_and_a_preview_and_its_task_appears(
    server: tuple[httpx.Client, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client, _log = server
    writer = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    with Chromium() as browser:
        open_page(browser, client, WRITE_TOKEN)
        browser.wait_for("!document.getElementById('add-segment').hidden", what="the Add segment button")
        browser.click("#add-segment")
        browser.wait_for(f"{EDITOR_STATE} === 'open'")
        fill(browser, "segment_id", "dutch_users")
        fill(browser, "name", "Users in the Netherlands")
        fill(browser, "query", TYPO_QUERY)
        fill(browser, "labels", "nl, growth")
        browser.click("#f-save")
        browser.wait_for(f"{EDITOR_STATE} === 'refused'", what="the refusal")
        message = browser.evaluate("document.getElementById('f-message').textContent")
        assert message.startswith("segment 'dutch_users': field 'query' ")
        assert "Fix: " in message
        assert browser.evaluate("document.getElementById('f-query').getAttribute('aria-invalid')") == "true"
        assert client.get("/v1/segments/dutch_users", headers=writer).status_code == 404  # nothing saved

        fill(browser, "query", QUERY)
        browser.click("#f-preview")
        browser.wait_for(f"{EDITOR_STATE} === 'previewed'", what="the preview")
        preview = browser.evaluate("document.getElementById('f-preview-result').textContent")
        assert preview == "Preview: 5 users; sample: 0, 1, 2, 3, 4."
        assert browser.evaluate("document.getElementById('f-message').hidden")
        assert browser.evaluate("document.getElementById('f-query').getAttribute('aria-invalid')") is None

        browser.click("#f-save")
        browser.wait_for(f"{EDITOR_STATE} === 'saved'", what="the save")
        browser.wait_for(f"{READY} && document.querySelector('#segments tr[data-segment=dutch_users]') !== null")
        saved = browser.evaluate("document.getElementById('f-preview-result').textContent")
        assert saved.endswith("Saved as revision 1 of dutch_users.")
        revisions = client.get("/v1/segments/dutch_users/revisions", headers=writer).json()["revisions"]
        assert [(r["change"], r["actor"], r["definition"]["labels"]) for r in revisions] == [
            ("created", "api:write-token", ["growth", "nl"])
        ]

        # Edit the segment shown: its id and kind stay; the change is a revision.
        browser.wait_for("!document.getElementById('edit-segment').hidden", what="the Edit button")
        browser.click("#edit-segment")
        browser.wait_for(f"{EDITOR_STATE} === 'open' && document.getElementById('f-name').value !== ''")
        assert browser.evaluate("document.getElementById('f-segment_id').disabled")
        fill(browser, "name", "Dutch users")
        browser.click("#f-save")
        browser.wait_for(f"{EDITOR_STATE} === 'saved'", what="the edit")
        changed = client.get("/v1/segments/dutch_users/revisions", headers=writer).json()["revisions"][-1]
        assert (changed["revision"], changed["changed"]) == (2, {"name": ["Users in the Netherlands", "Dutch users"]})

        # The list filters by label (and owner): GET /v1/segments?label=...
        client.post(
            "/v1/segments?preview=false",
            json={"segment_id": "other", "name": "Other", "kind": "dynamic", "query": QUERY},
            headers=writer,
        )
        browser.click("#reload")
        browser.wait_for(f"{READY} && document.querySelectorAll('#segments tbody tr').length === 2")
        browser.click("#filter-label")
        browser.type_text("nl")
        browser.press_enter()
        browser.evaluate("document.getElementById('filter-label').dispatchEvent(new Event('change'))")
        browser.wait_for(f"{READY} && document.querySelectorAll('#segments tbody tr').length === 1", what="the filter")
        assert browser.evaluate(ROWS) == ["dutch_users"]
        assert browser.problems == []

    # The task appears at the next parse.
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__FUNNEL__CATALOG_SNAPSHOT_PATH", str(tmp_path / "catalog.json"))
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags[DYNAMIC_DAG_ID]
    assert dag.get_task("dutch_users").doc_md.startswith("### Dutch users")


def test_a_read_token_is_offered_no_form(server: tuple[httpx.Client, Path], add_segment: Any) -> None:
    client, _log = server
    add_segment("buyers")
    with Chromium() as browser:
        open_page(browser, client, READ_TOKEN)
        browser.click("#segments tr[data-segment=buyers] a")
        browser.wait_for("document.getElementById('detail').dataset.state === 'ready'")
        assert browser.evaluate("document.body.dataset.canDefine") == "false"
        assert browser.evaluate("document.getElementById('add-segment').hidden")
        assert browser.evaluate("document.getElementById('edit-segment').hidden")
        assert browser.problems == []
