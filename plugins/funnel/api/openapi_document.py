"""The API's OpenAPI document as a reviewed artefact: ``docs/openapi.json``.

``python -m funnel.api.openapi_document > docs/openapi.json`` writes it; a test fails when the
app's document and the committed file differ, so every change to the API shows in review. The
running API serves the same document at ``/openapi.json`` and its pages at ``/docs``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from funnel.api.app import create_app


def document() -> dict[str, Any]:
    """The app's OpenAPI document (no store is reached: the app makes its clients at its first request)."""
    return create_app().openapi()


def text() -> str:
    """The document as committed: indented, keys in the app's order, a final newline."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
