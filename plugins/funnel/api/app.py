"""The serving API, a FastAPI app: ``create_app()``.

It runs on its own (``python -m funnel.cli serve``: uvicorn on 127.0.0.1 by default), as a
service in ``docker-compose.yaml``, and inside Airflow's API server under ``/funnel``
(``plugins/funnel_plugin.py``). OpenAPI: ``/docs`` and ``/openapi.json``.

Every answer is JSON. Bad input gets a 4xx with a plain message (``{"error": "..."}``);
a store that does not answer gets a 503; never a 500, a stack trace, a setting or a secret.
The hot paths (membership) parse and answer without models, in one Redis round trip
(``funnel.api.fast_paths``). This module only assembles the app: the routes live in the
``*_routes`` modules, by resource, and talk only to ``funnel.api.service.Service``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from funnel import settings
from funnel.api import (
    access_routes,
    definition_routes,
    event_routes,
    health_routes,
    member_routes,
    metrics_routes,
    preview_routes,
    segment_routes,
    user_routes,
    webhook_routes,
)
from funnel.api.error_answers import JSON, add_error_handlers
from funnel.api.fast_paths import FastPaths
from funnel.api.http_semantics import HeadAsGet
from funnel.api.segments_page import mount_ui
from funnel.api.serving_metrics import RequestMetrics

log = logging.getLogger(__name__)

#: In the order their routes are matched (and listed on the OpenAPI page).
_ROUTERS = (
    health_routes,
    metrics_routes,
    access_routes,
    segment_routes,
    definition_routes,
    member_routes,
    user_routes,
    event_routes,
    preview_routes,
    webhook_routes,
)


def create_app(airflow_login: bool = False) -> FastAPI:
    """The API. Clients and stores are made on the first request (a mounted app gets no lifespan).

    ``airflow_login``: the app is mounted in Airflow's API server (the plugin), where an
    Airflow login grants the read scope (``auth.granted_scope``).
    """
    tokens = settings.api_tokens()
    if not tokens:
        log.warning("funnel API: no [funnel] api_tokens are configured; every request but /healthz gets 401")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gc.freeze()  # what start-up made lives forever: collections need not walk it again
        sys.setswitchinterval(settings.API_SWITCH_INTERVAL_SECONDS)  # a standalone server's process only
        yield
        service = getattr(app.state, "service", None)
        app.state.service = None  # a mounted app outlives its host's lifespan: the next request makes a new one
        if service is not None:
            await service.close()

    app = FastAPI(
        title="funnel",
        summary="Who is in which user segment: membership, listings, user segments, events",
        version="1",
        lifespan=lifespan,
        default_response_class=JSON,
        generate_unique_id_function=lambda route: route.name,  # operationId: the route function's name
    )
    app.add_middleware(FastPaths, api=app)
    app.add_middleware(RequestMetrics)  # every request counted, by route template (the hot paths' too)
    app.add_middleware(HeadAsGet)  # outermost: a HEAD takes every path its GET takes, the hot ones too
    app.state.tokens = tokens
    app.state.airflow_login = airflow_login
    app.state.service_lock = asyncio.Lock()
    add_error_handlers(app)
    for routes in _ROUTERS:
        app.include_router(routes.router)
    mount_ui(app)
    return app
