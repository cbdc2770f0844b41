"""The Airflow pool every Hive query task runs in, as Airflow's metadata database holds it.

A missing pool stops everything silently: the scheduler leaves each Hive task ``scheduled``
forever and says so only in its own log ("Tasks using non-existent pool ... will not be
scheduled"). ``missing_pool`` puts that in words for ``/readyz``, ``report`` and the Segments
page. Where Airflow's metadata database cannot be read (an API with no Airflow database of its
own, a database not migrated yet), there is nothing to say, and nothing is said.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def missing_pool(name: str) -> str | None:
    """What a missing pool ``name`` does and the command that creates it; None when the pool
    exists or Airflow's metadata database cannot be read here."""
    try:
        from airflow.configuration import conf
        from airflow.models.pool import Pool

        database = conf.get("database", "sql_alchemy_conn")
        if database.startswith("sqlite:///") and not Path(database.removeprefix("sqlite:///")).exists():
            return None  # no Airflow database here: asking would create an empty one
        found = Pool.get_pool(name)
    except Exception as exc:  # no metadata database here, or not migrated: no verdict
        log.debug("funnel: Airflow's pools cannot be read here (%s: %s)", type(exc).__name__, exc)
        return None
    if found is not None:
        return None
    return (
        f"the Airflow pool {name!r} does not exist, so every Hive query task stays 'scheduled' and no segment "
        "is refreshed (the scheduler logs 'Tasks using non-existent pool'). Fix: python -m funnel.cli ensure-pool"
    )
