"""funnel's settings, in one place.

Each is read from the ``[funnel]`` section of Airflow's configuration, so the usual
``AIRFLOW__FUNNEL__<NAME>`` environment variables set them like any Airflow setting.
"""

from __future__ import annotations

from airflow.sdk import conf

SECTION = "funnel"

#: Airflow connection ids used through the providers' hooks.
HIVE_CONN_ID: str = conf.get(SECTION, "hive_conn_id", fallback="funnel_hive")
MYSQL_CONN_ID: str = conf.get(SECTION, "mysql_conn_id", fallback="funnel_mysql")
REDIS_CONN_ID: str = conf.get(SECTION, "redis_conn_id", fallback="funnel_redis")

#: Rows fetched from Hive and written to each store per round trip.
BATCH_SIZE: int = conf.getint(SECTION, "batch_size", fallback=10_000)

#: The dynamic segments' schedule and the timezone it is read in.
DYNAMIC_SCHEDULE: str = conf.get(SECTION, "dynamic_schedule", fallback="0 9,18 * * *")
TIMEZONE: str = conf.get(SECTION, "timezone", fallback="UTC")

#: How long an abandoned staging key may linger in Redis before it expires (seconds).
STAGING_TTL_SECONDS: int = conf.getint(SECTION, "staging_ttl_seconds", fallback=86_400)
