"""The Airflow plugin: funnel's serving API inside Airflow's API server, under ``/funnel``,
and its Segments page in Airflow's navigation.

Only this file is an Airflow plugin (``plugins/.airflowignore`` keeps the plugin manager out
of the ``funnel`` package, which it would otherwise import file by file). Like every plugin,
a change needs a restart of the Airflow processes. The API's routes take funnel's own bearer
tokens (``[funnel] api_tokens``); here an Airflow login also grants the read scope, so the
Segments page (``/funnel/ui/``), shown by Airflow's UI in a same-origin iframe, reads with
the logged-in user's cookie and can never write.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from funnel.api.app import create_app

#: Where Airflow's API server is served ([api] base_url's path; empty at the root).
_ROOT = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
#: funnel's app inside the API server.
URL_PREFIX = "/funnel"


class FunnelPlugin(AirflowPlugin):
    name = "funnel"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads the class attribute)
        {"app": create_app(airflow_login=True), "url_prefix": URL_PREFIX, "name": "funnel serving API"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Segments",
            "href": f"{_ROOT}{URL_PREFIX}/ui/",
            "url_route": "funnel-segments",  # the page's address in Airflow's UI: /plugin/funnel-segments
            "destination": "nav",
            "nav_top_level": True,
            "icon": f"{_ROOT}{URL_PREFIX}/ui/icon.svg",
        },
    ]
