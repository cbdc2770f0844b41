"""The Segments page: a static HTML + JS page that the serving API serves under ``/ui/``.

Inside Airflow it is ``/funnel/ui/``, registered in Airflow's navigation by the plugin
(``plugins/funnel_plugin.py``, an ``external_views`` entry), so Airflow's UI shows it in an
iframe of the same origin. The page reads through the API's own endpoints (relative URLs,
so it works at either place), and its form (``segment_form.js``) changes definitions for who
may (``GET /v1/access``); it holds no data itself, so it is served without a token. Its
requests carry Airflow's login cookie inside Airflow (with the ``X-Funnel-Page`` header that
lets the cookie count on a write), or a token pasted into the page (kept in the tab's
``sessionStorage``) when served on its own.

Everything is local: no build step, no CDN, no external library; the chart is SVG drawn
by the page's own script. A strict Content-Security-Policy allows nothing but the page's
own files and its own origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

#: The page's files: index.html, segments.js, segment_form.js, segments.css, icon.svg.
STATIC_DIR = Path(__file__).with_name("static")
#: Where the API serves the page (under the API's own root: ``/funnel/ui/`` inside Airflow).
UI_PATH = "/ui"

#: Sent with every file of the page. ``frame-ancestors 'self'``: Airflow's UI (same origin)
#: may show it in its iframe, no other site may.
PAGE_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        b" frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),
)


class _PageFiles:
    """The static files, with ``PAGE_HEADERS`` added to each response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *PAGE_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_ui(app: FastAPI) -> None:
    """Serve the page at ``/ui/`` of ``app`` (``/ui`` redirects there)."""
    app.mount(UI_PATH, _PageFiles(StaticFiles(directory=STATIC_DIR, html=True)), name="segments-page")
