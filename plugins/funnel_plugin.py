"""The Airflow plugin: funnel's serving API inside Airflow's API server, under ``/funnel``.

Only this file is an Airflow plugin (``plugins/.airflowignore`` keeps the plugin manager out
of the ``funnel`` package, which it would otherwise import file by file). Like every plugin,
a change needs a restart of the Airflow processes. The routes use funnel's own bearer
tokens (``[funnel] api_tokens``), not Airflow's login.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from funnel.api.app import create_app


class FunnelPlugin(AirflowPlugin):
    name = "funnel"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads the class attribute)
        {"app": create_app(), "url_prefix": "/funnel", "name": "funnel serving API"},
    ]
