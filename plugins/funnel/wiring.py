"""The one place that turns settings into clients and stores.

The refresh operator, the CLI, the API and previews build their connections, stores, run
history and locks here, so timeouts, TTLs and flags are the same for every entry point
and their defaults live only in ``settings``. Hooks still own the connections: this module
only says which hook, with which settings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from funnel import settings
from funnel.core.errors import StoreError
from funnel.core.freshness import Objectives
from funnel.services.catalog import read_variable_rows
from funnel.services.refresh import Refresher
from funnel.services.segment_admin import SegmentAdmin
from funnel.services.tag_load import TagLoader
from funnel.services.webhook_delivery import Deliverer, DeliverySettings
from funnel.storage.airflow_pool import missing_pool
from funnel.storage.hooks import FunnelHiveHook, FunnelMySqlHook
from funnel.storage.mysql.composite_source import CompositeSource
from funnel.storage.mysql.event_ledger import EventLedger
from funnel.storage.mysql.proxy_change_log import ProxyChangeLog
from funnel.storage.mysql.run_history import RunHistory
from funnel.storage.mysql.segment_definitions import DefinitionStore
from funnel.storage.mysql.segment_versions import MySqlSegmentStore
from funnel.storage.mysql.tag_versions import MySqlTagStore
from funnel.storage.mysql.webhook_store import WebhookStore
from funnel.storage.redis.change_feed import SegmentFeed
from funnel.storage.redis.segment_lock import SegmentLock
from funnel.storage.redis.segment_sets import RedisSegmentStore
from funnel.storage.redis.tag_sets import RedisTagStore
from funnel.storage.redis.user_index import RedisUserIndex

if TYPE_CHECKING:
    from funnel.services.previewer import Previewer

log = logging.getLogger(__name__)


def redis_client(conn_id: str = settings.REDIS_CONN_ID) -> Any:
    """The redis-py client of an Airflow Redis connection."""
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=conn_id).get_conn()


def async_redis_client(conn_id: str = settings.REDIS_CONN_ID) -> Any:
    """An asyncio redis-py client on the same Airflow connection as ``redis_client`` (the API's):
    a ``RedisCluster`` when the connection's extra says ``{"cluster": true}``."""
    import redis.asyncio
    from airflow.providers.redis.hooks.redis import RedisHook

    conn = RedisHook(redis_conn_id=conn_id).get_connection(conn_id)
    extra = conn.extra_dejson
    ssl = {k: v for k, v in extra.items() if k.startswith("ssl")}
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    common: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "username": conn.login,
        "password": password,
        "socket_connect_timeout": settings.REDIS_TIMEOUT_SECONDS,
        "socket_timeout": settings.REDIS_TIMEOUT_SECONDS,
        **ssl,
    }
    if extra.get("cluster", False):
        # redis-py sends each command to the master of its key's slot and splits a pipeline
        # into one pipeline per node; all of a segment's keys share its ``{segment_id}`` tag.
        from redis.asyncio.cluster import ClusterNode

        nodes = [ClusterNode(host, port) for host, port in _cluster_nodes(conn)]
        return redis.asyncio.RedisCluster(retry=Retry(NoBackoff(), 1), startup_nodes=nodes, **common)
    # one quick retry: a Redis that is down answers 503 at once
    return redis.asyncio.Redis(retry=Retry(NoBackoff(), 1), db=int(extra.get("db") or 0), **common)


def resp_pool(conn_id: str = settings.REDIS_CONN_ID) -> Any:
    """The API's lean hot-path Redis client (``funnel.storage.redis.resp_client``) on the same Airflow connection:
    ``RespCluster`` (one pipeline per node, by slot) when the connection is a Redis Cluster."""
    from airflow.providers.redis.hooks.redis import RedisHook

    from funnel.storage.redis.resp_client import RespCluster, RespPool

    conn = RedisHook(redis_conn_id=conn_id).get_connection(conn_id)
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    host, port = conn.host or "127.0.0.1", int(conn.port or 6379)
    if conn.extra_dejson.get("cluster", False):
        return RespCluster(
            _cluster_nodes(conn), username=conn.login, password=password, timeout=settings.REDIS_TIMEOUT_SECONDS
        )
    return RespPool(
        host,
        port,
        db=int(conn.extra_dejson.get("db") or 0),
        username=conn.login,
        password=password,
        timeout=settings.REDIS_TIMEOUT_SECONDS,
    )


def _cluster_nodes(conn: Any) -> list[tuple[str, int]]:
    """A Redis Cluster's nodes to ask first: the connection's host, then its ``startup_nodes``
    extra (``"host:port,host:port"``, as Airflow's ``RedisHook`` reads it)."""
    nodes = [(conn.host or "127.0.0.1", int(conn.port or 6379))]
    for entry in str(conn.extra_dejson.get("startup_nodes") or "").split(","):
        host, _, port = entry.strip().partition(":")
        if host:
            nodes.append((host, int(port or 6379)))
    return nodes


def mysql_connection(conn_id: str = settings.MYSQL_CONN_ID, *, local_infile: bool = False) -> Any:
    """A mysqlclient connection with the run-time timeouts (never the parse-time ones).

    Raises ``StoreError`` naming the connection and the fix when MySQL cannot be reached.
    """
    import MySQLdb

    try:
        return mysql_hook(conn_id, local_infile=local_infile).get_conn()
    except MySQLdb.OperationalError as exc:
        raise StoreError(
            f"cannot connect to MySQL connection {conn_id!r} within {settings.MYSQL_CONNECT_TIMEOUT_SECONDS}s "
            f"({exc.args[-1] if exc.args else exc}); nothing was read or written. Fix: check that MySQL is up and "
            f"that Airflow connection {conn_id!r} points at it"
        ) from exc


def hive_hook(conn_id: str = settings.HIVE_CONN_ID) -> FunnelHiveHook:
    """The HiveServer2 hook with connect and read timeouts."""
    return FunnelHiveHook(
        hiveserver2_conn_id=conn_id,
        connect_timeout=settings.HIVE_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.HIVE_READ_TIMEOUT_SECONDS,
    )


def hive_pool_problem() -> str | None:
    """Why no Hive task can run, in words, when the ``hive_pool`` Airflow pool is missing; else None."""
    return missing_pool(settings.HIVE_POOL)


def redis_store(client: Any) -> RedisSegmentStore:
    return RedisSegmentStore(client, settings.STAGING_TTL_SECONDS, settings.CHANGE_TTL_SECONDS)


def user_index(client: Any) -> RedisUserIndex:
    """The user index alone (the API's catalog copy reads it; every swap keeps it)."""
    return RedisUserIndex(client)


def segment_feed(client: Any) -> SegmentFeed:
    return SegmentFeed(client, settings.FEED_MAX_LEN, settings.FEED_BATCH_IDS)


def mysql_store(conn: Any) -> MySqlSegmentStore:
    return MySqlSegmentStore(conn, bulk_load=settings.MYSQL_BULK_LOAD)


def run_history(conn_id: str = settings.MYSQL_CONN_ID) -> RunHistory:
    """The run history on a connection of its own, able to reconnect to record an outcome."""
    return RunHistory(mysql_connection(conn_id), reconnect=lambda: mysql_connection(conn_id))


def history_on(conn: Any) -> RunHistory:
    """The run history on a connection the caller owns (reads: listings, reports, callbacks)."""
    return RunHistory(conn)


def segment_lock(
    client: Any, segment_id: str, holder: dict[str, Any], *, wait_seconds: float | None = None
) -> SegmentLock:
    """A segment's refresh lock (``layout.TAGS_ID``: the tags'); waits ``lock_wait_seconds`` unless told."""
    return SegmentLock(
        client,
        segment_id,
        holder,
        ttl_seconds=settings.LOCK_TTL_SECONDS,
        wait_seconds=settings.LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds,
        poll_seconds=settings.LOCK_POLL_SECONDS,
        log_every_seconds=settings.LOCK_LOG_EVERY_SECONDS,
    )


@contextlib.contextmanager
def refresher(
    *,
    mysql_conn_id: str = settings.MYSQL_CONN_ID,
    redis_client: Any,
    batch_size: int = settings.BATCH_SIZE,
) -> Iterator[Refresher]:
    """A ``Refresher`` over fresh MySQL connections (staging and history), closed on exit."""
    with _staging_and_history(mysql_conn_id) as (conn, history):
        yield Refresher(
            mysql=mysql_store(conn),
            redis=redis_store(redis_client),
            history=history,
            feed=segment_feed(redis_client),
            batch_size=batch_size,
            keep_versions=settings.KEEP_VERSIONS,
            progress_every=settings.PROGRESS_EVERY_ROWS,
            mysql_load_rows=settings.MYSQL_LOAD_ROWS,
            change_history_days=settings.CHANGE_HISTORY_DAYS,
            users_with_tags=mysql_tag_store(conn).users_with_tags,
        )


@contextlib.contextmanager
def _staging_and_history(mysql_conn_id: str) -> Iterator[tuple[Any, RunHistory]]:
    """The two MySQL connections a batch load uses: one for its staging, one for its run history."""
    with contextlib.ExitStack() as stack:
        conn = mysql_connection(mysql_conn_id, local_infile=settings.MYSQL_BULK_LOAD)
        stack.callback(_close_quietly, conn)
        history = run_history(mysql_conn_id)
        stack.callback(history.close)
        yield conn, history


@contextlib.contextmanager
def composite_source(mysql_conn_id: str = settings.MYSQL_CONN_ID) -> Iterator[CompositeSource]:
    """A ``CompositeSource`` on a MySQL connection of its own (its stream holds the connection),
    closed on exit."""
    conn = mysql_connection(mysql_conn_id)
    try:
        yield CompositeSource(conn)
    finally:
        _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def mysql_tag_store(conn: Any) -> MySqlTagStore:
    return MySqlTagStore(conn, bulk_load=settings.MYSQL_BULK_LOAD)


def redis_tag_store(client: Any) -> RedisTagStore:
    return RedisTagStore(client, settings.STAGING_TTL_SECONDS)


def event_ledger(conn: Any) -> EventLedger:
    return EventLedger(conn, lock_retries=settings.MYSQL_LOCK_RETRIES)


def proxy_change_log(conn: Any) -> ProxyChangeLog:
    return ProxyChangeLog(conn)


@contextlib.contextmanager
def tag_loader(
    *, mysql_conn_id: str = settings.MYSQL_CONN_ID, redis_client: Any, batch_size: int = settings.BATCH_SIZE
) -> Iterator[TagLoader]:
    """A ``TagLoader`` over fresh MySQL connections (staging and history), closed on exit."""
    with _staging_and_history(mysql_conn_id) as (conn, history):
        yield TagLoader(
            mysql=mysql_tag_store(conn),
            redis=redis_tag_store(redis_client),
            proxy_changes=proxy_change_log(conn),
            history=history,
            batch_size=batch_size,
            keep_versions=settings.TAG_KEEP_VERSIONS,
            progress_every=settings.PROGRESS_EVERY_ROWS,
            change_history_days=settings.CHANGE_HISTORY_DAYS,
        )


def webhook_store(conn: Any) -> WebhookStore:
    return WebhookStore(conn)


def segment_admin(conn: Any) -> SegmentAdmin:
    """The write path for definitions over one MySQL connection, with the Airflow Variable's rows."""
    return SegmentAdmin(
        DefinitionStore(conn),
        WebhookStore(conn),
        _variable_rows,
        users_with_tags=mysql_tag_store(conn).users_with_tags,
        max_share_of_users=settings.MAX_SHARE_OF_USERS,
    )


def _variable_rows() -> list[dict[str, Any]]:
    """The catalog rows of the Airflow Variable; none where Airflow's metadata cannot be read."""
    try:
        rows, _errors = read_variable_rows(settings.CATALOG_VARIABLE)
    except Exception as exc:
        log.warning(
            "funnel: the Airflow Variable %s cannot be read (%s); checking against MySQL's rows",
            settings.CATALOG_VARIABLE,
            exc,
        )
        return []
    return rows


def webhook_deliverer(conn: Any, config: DeliverySettings, stop: threading.Event) -> Deliverer:
    """A delivery run over one MySQL connection (subscriptions and the change log)."""
    return Deliverer(webhook_store(conn), mysql_store(conn), config, stop=stop)


def webhook_settings() -> DeliverySettings:
    """The ``webhook_*`` settings, as the DAG passes them to its operator."""
    return DeliverySettings(
        batch_size=settings.WEBHOOK_BATCH_SIZE,
        max_attempts=settings.WEBHOOK_MAX_ATTEMPTS,
        backoff_seconds=settings.WEBHOOK_BACKOFF_SECONDS,
        backoff_max_seconds=settings.WEBHOOK_BACKOFF_MAX_SECONDS,
        timeout_seconds=settings.WEBHOOK_TIMEOUT_SECONDS,
        refuse_private=settings.WEBHOOK_REFUSE_PRIVATE,
    )


@contextlib.contextmanager
def previewer(
    *,
    redis: Any = None,
    mysql_conn_id: str = settings.MYSQL_CONN_ID,
    hive_conn_id: str = settings.HIVE_CONN_ID,
) -> Iterator[Previewer]:
    """A ``Previewer`` (``funnel.services.previewer``) with the preview settings, over a MySQL connection
    of its own (closed on exit), the Redis client ``redis`` (default: a new one) and HiveServer2.
    It only reads."""
    from funnel.services.catalog import serving_catalog
    from funnel.services.preview_values import PreviewLimits
    from funnel.services.previewer import Previewer

    limits = PreviewLimits(
        timeout_seconds=settings.PREVIEW_TIMEOUT_SECONDS,
        max_rows=settings.PREVIEW_MAX_ROWS,
        sample_size=settings.PREVIEW_SAMPLE_SIZE,
        batch_size=settings.BATCH_SIZE,
        max_shrink_pct=settings.MAX_SHRINK_PCT,
        new_user_days=settings.NEW_USER_DAYS,
        allowed_functions=settings.ALLOWED_FUNCTIONS,
        hive_poll_seconds=settings.HIVE_POLL_SECONDS,
        hive_log_every_seconds=settings.HIVE_LOG_EVERY_SECONDS,
    )
    hook = mysql_hook(mysql_conn_id)
    client = redis if redis is not None else redis_client()
    try:
        with contextlib.closing(mysql_connection(mysql_conn_id)) as conn:
            yield Previewer(
                redis=redis_store(client),
                redis_tags=redis_tag_store(client),
                mysql=MySqlSegmentStore(conn),
                mysql_tags=MySqlTagStore(conn),
                read_catalog=lambda: serving_catalog(hook),
                hive_connect=hive_hook(hive_conn_id).get_conn,
                limits=limits,
                composite_source=lambda: composite_source(mysql_conn_id),
            )
    finally:
        if redis is None:
            client.close()


def freshness_objectives() -> Objectives:
    """What fresh means, from the settings: the dynamic schedule in its timezone, a static segment's grace."""
    return Objectives(settings.DYNAMIC_SCHEDULE, settings.TIMEZONE, dt.timedelta(minutes=settings.STATIC_GRACE_MINUTES))


def catalog_hook(conn_id: str = settings.MYSQL_CONN_ID) -> FunnelMySqlHook:
    """The catalog's MySQL hook, with the catalog's own short timeouts: DAG parsing and the API's
    background re-read never wait long on a hung MySQL (they fall back to the last-good copy)."""
    return FunnelMySqlHook(
        mysql_conn_id=conn_id,
        connect_timeout=settings.CATALOG_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.CATALOG_READ_TIMEOUT_SECONDS,
    )


def mysql_hook(conn_id: str = settings.MYSQL_CONN_ID, *, local_infile: bool = False) -> FunnelMySqlHook:
    """A MySQL hook with the run-time timeouts (a refresh's, a preview's, the CLI's); ``local_infile``
    for a bulk load (``LOAD DATA LOCAL INFILE``)."""
    return FunnelMySqlHook(
        mysql_conn_id=conn_id,
        connect_timeout=settings.MYSQL_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.MYSQL_READ_TIMEOUT_SECONDS,
        local_infile=local_infile,
    )


def schema_hook(conn_id: str = settings.MYSQL_CONN_ID) -> FunnelMySqlHook:
    """The hook ``migrate`` runs on: the run-time connect timeout, no read timeout (an ALTER TABLE of
    a large table may run longer than any read timeout, and must not be cut off half-way)."""
    return FunnelMySqlHook(mysql_conn_id=conn_id, connect_timeout=settings.MYSQL_CONNECT_TIMEOUT_SECONDS)


# ---------------------------------------------------------------------- the API's workers' metrics

#: prometheus_client's multiprocess directory, read from the environment when it is imported.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def fresh_metrics_dir(path: str | None) -> str:
    """Make the API workers' metrics directory empty (``path``, else a new temporary one), export
    it to the workers about to start (``PROMETHEUS_MULTIPROC_DIR``), and return it."""
    import shutil
    import tempfile
    from pathlib import Path

    if path:
        shutil.rmtree(path, ignore_errors=True)
        Path(path).mkdir(parents=True)
    else:
        path = tempfile.mkdtemp(prefix="funnel-api-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    return path


def metrics_worker_gone(pid: int | None) -> None:
    """An API worker process ended: its live gauges leave the scrape (its counters stay counted)."""
    if pid is not None and os.environ.get(METRICS_DIR_ENV):
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid)
