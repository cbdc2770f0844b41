"""The committed OpenAPI document is the app's: an API change without it fails here."""

from __future__ import annotations

import json
from pathlib import Path

from funnel.api.openapi_document import document, text

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_docs_openapi_json_is_the_apps_document() -> None:
    assert COMMITTED.read_text() == text(), (
        "the API changed: regenerate the document with "
        "`.venv/bin/python -m funnel.api.openapi_document > docs/openapi.json` and review the diff"
    )


def test_the_document_names_every_route() -> None:
    paths = document()["paths"]
    assert paths
    assert {"/healthz", "/v1/segments", "/v1/segments/{segment_id}", "/v1/events", "/v1/webhooks"} <= set(paths)
    assert json.loads(COMMITTED.read_text())["openapi"].startswith("3.")
