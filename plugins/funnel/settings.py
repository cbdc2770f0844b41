"""funnel's settings, in one place.

Each is read from the ``[funnel]`` section of Airflow's configuration, so the usual
``AIRFLOW__FUNNEL__<NAME>`` environment variables set them like any Airflow setting.
"""

from __future__ import annotations

import os

from airflow.sdk import conf

from funnel.core.ids import NAME_SLUG_PATTERN

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

#: Every Hive query runs in this Airflow pool, so hundreds of segments never flood Hive.
HIVE_POOL: str = conf.get(SECTION, "hive_pool", fallback="funnel_hive")
HIVE_POOL_SLOTS: int = conf.getint(SECTION, "hive_pool_slots", fallback=8)
#: How many segment tasks of one dynamic run may run at once. High by default, so the pool
#: (and ``[core] parallelism``) decide, not Airflow's ``max_active_tasks_per_dag`` (16).
DYNAMIC_MAX_ACTIVE_TASKS: int = conf.getint(SECTION, "dynamic_max_active_tasks", fallback=1024)
#: Tasks of one dynamic DAG, at most: above it, the dynamic segments are spread over shard DAGs
#: ``funnel_dynamic_segments_NN`` (README, "Dynamic DAGs in shards"). At least 1.
DYNAMIC_DAG_MAX_TASKS: int = max(conf.getint(SECTION, "dynamic_dag_max_tasks", fallback=1000), 1)

#: Parse-time catalog read: short timeouts, so a hanging MySQL never hangs the DAG processor.
CATALOG_CONNECT_TIMEOUT_SECONDS: int = conf.getint(SECTION, "catalog_connect_timeout_seconds", fallback=3)
CATALOG_READ_TIMEOUT_SECONDS: int = conf.getint(SECTION, "catalog_read_timeout_seconds", fallback=5)

#: The Airflow Variable that can hold segment rows too (a JSON list of catalog rows).
CATALOG_VARIABLE: str = conf.get(SECTION, "catalog_variable", fallback="funnel_segments")


def catalog_snapshot_path() -> str:
    """The last-good copy of the catalog, used when MySQL cannot be reached at parse time."""
    default = os.path.join(os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "funnel", "catalog.json")
    return conf.get(SECTION, "catalog_snapshot_path", fallback=default)


def strict_catalog() -> bool:
    """Turn any invalid segment into an import error (for CI). Read at every parse."""
    return conf.getboolean(SECTION, "strict_catalog", fallback=False)


#: Stage members in MySQL with LOAD DATA LOCAL INFILE (about 2.4x faster than INSERTs);
#: falls back to INSERTs by itself when the server does not allow it.
MYSQL_BULK_LOAD: bool = conf.getboolean(SECTION, "mysql_bulk_load", fallback=True)
#: Ids gathered into one MySQL load while a refresh stages (fewer, larger loads are faster).
MYSQL_LOAD_ROWS: int = conf.getint(SECTION, "mysql_load_rows", fallback=50_000)

#: Refresh semantics (issue: versioned, guarded, diffed, idempotent).
KEEP_VERSIONS: int = conf.getint(SECTION, "keep_versions", fallback=3)
MAX_SHRINK_PCT: float = conf.getfloat(SECTION, "max_shrink_pct", fallback=50.0)
CHANGE_TTL_SECONDS: int = conf.getint(SECTION, "change_ttl_seconds", fallback=7 * 86_400)
#: The change feed (README, "Change feed"): each segment's stream is capped near this many
#: entries (``XADD MAXLEN ~``), each entry holding up to ``feed_batch_ids`` user ids.
FEED_MAX_LEN: int = conf.getint(SECTION, "feed_max_len", fallback=100_000)
FEED_BATCH_IDS: int = conf.getint(SECTION, "feed_batch_ids", fallback=1_000)
PROGRESS_EVERY_ROWS: int = conf.getint(SECTION, "progress_every_rows", fallback=1_000_000)
#: Membership history by age: spans and change logs of versions promoted within this many days
#: (and proxy segments' changes at most this old) are kept, beyond ``keep_versions``; 0: none.
CHANGE_HISTORY_DAYS: int = max(conf.getint(SECTION, "change_history_days", fallback=90), 0)

#: The per-segment refresh lock: a lease renewed every third of its length, so a dead
#: holder blocks others for at most this long; how long a second refresh waits (logging
#: whom it waits for every ``lock_log_every_seconds``) before it fails and Airflow retries.
LOCK_TTL_SECONDS: float = conf.getfloat(SECTION, "lock_ttl_seconds", fallback=30.0)
LOCK_WAIT_SECONDS: float = conf.getfloat(SECTION, "lock_wait_seconds", fallback=300.0)
LOCK_POLL_SECONDS: float = conf.getfloat(SECTION, "lock_poll_seconds", fallback=0.5)
LOCK_LOG_EVERY_SECONDS: float = conf.getfloat(SECTION, "lock_log_every_seconds", fallback=30.0)

#: Each refresh task: stopped (Hive query cancelled, attempt recorded, lock released) after
#: this long, and retried this many times, this long apart.
REFRESH_TIMEOUT_SECONDS: int = conf.getint(SECTION, "refresh_timeout_seconds", fallback=3 * 3600)
REFRESH_RETRIES: int = conf.getint(SECTION, "refresh_retries", fallback=2)
REFRESH_RETRY_DELAY_SECONDS: int = conf.getint(SECTION, "refresh_retry_delay_seconds", fallback=120)

#: HiveServer2 at run time: connect and per-call read timeouts (a server that accepts and
#: never answers fails the task instead of hanging it), how often a running query's state is
#: polled, and how often the task log says it is still running. The read timeout bounds one
#: Thrift call, so it must exceed the longest: Apache Hive answers each within its long-poll
#: (5 s), but the Spark Thrift Server with ``incrementalCollect`` computes rows inside a fetch.
HIVE_CONNECT_TIMEOUT_SECONDS: float = conf.getfloat(SECTION, "hive_connect_timeout_seconds", fallback=10.0)
HIVE_READ_TIMEOUT_SECONDS: float = conf.getfloat(SECTION, "hive_read_timeout_seconds", fallback=600.0)
HIVE_POLL_SECONDS: float = conf.getfloat(SECTION, "hive_poll_seconds", fallback=1.0)
HIVE_LOG_EVERY_SECONDS: float = conf.getfloat(SECTION, "hive_log_every_seconds", fallback=60.0)

#: MySQL at run time (a refresh, the CLI): connect and read timeouts.
MYSQL_CONNECT_TIMEOUT_SECONDS: int = conf.getint(SECTION, "mysql_connect_timeout_seconds", fallback=10)
MYSQL_READ_TIMEOUT_SECONDS: int = conf.getint(SECTION, "mysql_read_timeout_seconds", fallback=600)
#: How many times a transaction MySQL rolled back on a lock conflict (deadlock 1213, lock wait
#: timeout 1205) is tried again at once, each with one warning line, before it fails (an event
#: batch: 503).
MYSQL_LOCK_RETRIES: int = max(conf.getint(SECTION, "mysql_lock_retries", fallback=3), 0)

#: Functions a segment query may call on top of the built-in allowlist (site UDFs an
#: administrator vetted), comma-separated, lower-case.
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    name.strip().lower() for name in conf.get(SECTION, "allowed_functions", fallback="").split(",") if name.strip()
)


def query_check_budget_seconds() -> float:
    """Time one parse may spend checking new queries with the SQL parser (strict mode: no limit).

    Known-good queries are remembered in the snapshot, so later parses check the rest.
    """
    return conf.getfloat(SECTION, "query_check_budget_seconds", fallback=0.1)


#: User tags, the input of proxy segments. The warehouse baseline comes from ``tag_query``
#: (HiveQL: ``user_id, first_seen, order_count``, as of the run's data interval end; the
#: run's dates work as in segment queries), loaded by the DAG ``funnel_user_tags`` on
#: ``tag_schedule``; the last ``tag_keep_versions`` loads are kept in MySQL.
TAG_SCHEDULE: str = conf.get(SECTION, "tag_schedule", fallback="0 6 * * *")
#: When ``funnel_purge_retired`` deletes the data of segments retired over ``change_history_days`` ago.
PURGE_SCHEDULE: str = conf.get(SECTION, "purge_schedule", fallback="30 3 * * *")


def tag_query() -> str:
    """The tag query (empty: not configured). Read at every parse, like the catalog."""
    return conf.get(SECTION, "tag_query", fallback="").strip().rstrip(";").strip()


TAG_KEEP_VERSIONS: int = conf.getint(SECTION, "tag_keep_versions", fallback=2)
#: A new user is one first seen within this many days (a rule's ``days`` overrides it).
NEW_USER_DAYS: int = conf.getint(SECTION, "new_user_days", fallback=30)
#: Most events one ``POST /v1/events`` takes.
MAX_EVENTS_PER_REQUEST: int = conf.getint(SECTION, "max_events_per_request", fallback=1000)

#: The serving API (``python -m funnel.cli serve``; also mounted in Airflow's API server
#: under ``/funnel``): bind address, port and uvicorn worker processes.
API_HOST: str = conf.get(SECTION, "api_host", fallback="127.0.0.1")
API_PORT: int = conf.getint(SECTION, "api_port", fallback=8081)
API_WORKERS: int = conf.getint(SECTION, "api_workers", fallback=2)
#: MySQL connections (and the threads that use them) per API worker: event batches, listings,
#: fallbacks and history run at most this many at once in a worker.
API_MYSQL_CONNECTIONS: int = max(conf.getint(SECTION, "api_mysql_connections", fallback=8), 1)
#: Most user ids one ``members:check`` takes, and the page sizes of the listings.
MAX_CHECK_IDS: int = conf.getint(SECTION, "max_check_ids", fallback=10_000)
#: The largest request body the API reads (bytes; more is a 413 before it is parsed): room for
#: ``max_check_ids`` ids of the longest kind, or ``max_events_per_request`` events.
MAX_BODY_BYTES: int = conf.getint(SECTION, "max_body_bytes", fallback=4 * 1024 * 1024)
PAGE_LIMIT_DEFAULT: int = conf.getint(SECTION, "page_limit_default", fallback=1000)
PAGE_LIMIT_MAX: int = conf.getint(SECTION, "page_limit_max", fallback=10_000)
#: Refresh attempts ``GET /v1/segments/{id}/runs`` lists when the request gives no ``limit``.
RUNS_LIMIT_DEFAULT: int = conf.getint(SECTION, "runs_limit_default", fallback=20)
#: How many versions ``GET /v1/webhooks/{id}/deliveries`` answers without ``?limit=``.
DELIVERIES_LIMIT_DEFAULT: int = conf.getint(SECTION, "deliveries_limit_default", fallback=100)
#: How long the API trusts its last look at Airflow's pools (``/readyz``'s warnings).
POOL_CHECK_SECONDS: float = conf.getfloat(SECTION, "pool_check_seconds", fallback=30.0)
#: What a 429 or 503 answer's ``Retry-After`` says: seconds before a client tries again.
RETRY_AFTER_SECONDS: int = conf.getint(SECTION, "retry_after_seconds", fallback=1)
#: How long the API trusts its copy of the catalog (segment ids, kinds, rules).
API_CATALOG_TTL_SECONDS: float = conf.getfloat(SECTION, "api_catalog_ttl_seconds", fallback=5.0)
#: ``serve``'s workers: how long a thread holds the GIL before another may take it
#: (``sys.setswitchinterval``; Python's default is 5 ms). The catalog copy's background pass is
#: pure Python (0.8 s of CPU at 10,000 segments): a short switch interval lets the event loop
#: answer within a fraction of a millisecond meanwhile instead of waiting 5 ms at each await.
API_SWITCH_INTERVAL_SECONDS: float = conf.getfloat(SECTION, "api_switch_interval_seconds", fallback=0.0005)
#: How long the size of a proxy segment whose rule combines tags is cached (one tag: exact).
PROXY_SIZE_CACHE_SECONDS: float = conf.getfloat(SECTION, "proxy_size_cache_seconds", fallback=60.0)
#: ``GET /metrics`` (Prometheus): a read-scope token, or this token of its own for the scraper
#: (empty: none); with ``metrics_open_on_loopback``, a scrape from 127.0.0.1 or ::1 needs none.
METRICS_TOKEN: str = conf.get(SECTION, "metrics_token", fallback="")
METRICS_OPEN_ON_LOOPBACK: bool = conf.getboolean(SECTION, "metrics_open_on_loopback", fallback=False)
#: Where ``serve`` keeps its workers' metrics (prometheus_client's multiprocess directory, emptied
#: at start; empty: a new temporary directory each start).
API_METRICS_DIR: str = conf.get(SECTION, "api_metrics_dir", fallback="")


#: Previews (``python -m funnel.cli preview``, ``POST /v1/preview``): a query runs on Hive at
#: most this long and reads at most this many distinct ids (then it is cancelled on the server
#: and the answer says ``capped``); the answer samples this many ids; the API runs at most
#: ``preview_concurrency`` previews at once (per worker process) and answers 429 beyond.
PREVIEW_TIMEOUT_SECONDS: float = conf.getfloat(SECTION, "preview_timeout_seconds", fallback=60.0)
PREVIEW_MAX_ROWS: int = conf.getint(SECTION, "preview_max_rows", fallback=100_000)
PREVIEW_SAMPLE_SIZE: int = conf.getint(SECTION, "preview_sample_size", fallback=20)
PREVIEW_CONCURRENCY: int = conf.getint(SECTION, "preview_concurrency", fallback=2)


#: Refuse a segment holding more than this share (0..1) of all users with tags: at a refresh,
#: and when a definition is saved with a preview (1: no limit). Forced runs and saves pass.
MAX_SHARE_OF_USERS: float = conf.getfloat(SECTION, "max_share_of_users", fallback=0.9)


def api_tokens() -> dict[str, tuple[str, str]]:
    """Bearer tokens of the API, each with its scope (``read`` or ``write``; write can read) and
    its name (who a change made with it is recorded as: ``api:<name>``).

    ``api_tokens`` is a comma-separated list of ``[name=]scope:token`` (from airflow.cfg, the
    environment, or ``api_tokens_file``: a file holding the same, e.g. a mounted secret); a
    token without a name is called ``<scope>-token``.
    """
    raw = conf.get(SECTION, "api_tokens", fallback="")
    path = conf.get(SECTION, "api_tokens_file", fallback="")
    if path:
        with open(path, encoding="utf-8") as handle:
            raw = f"{raw},{handle.read()}"
    tokens: dict[str, tuple[str, str]] = {}
    named: set[str] = set()
    for item in raw.replace("\n", ",").split(","):
        if not item.strip():
            continue
        head, sep, token = item.strip().partition(":")
        name, _, scope = head.rpartition("=")
        if not sep or scope not in ("read", "write") or not token:
            raise ValueError(
                "[funnel] api_tokens: each entry must be '[name=]read:<token>' or '[name=]write:<token>', "
                "comma-separated (e.g. 'crm-sync=write:<token>')"
            )
        if name and (not NAME_SLUG_PATTERN.fullmatch(name) or name in named):
            raise ValueError(
                f"[funnel] api_tokens: the token name {name[:70]!r} is {'taken' if name in named else 'not a slug'}. "
                "Fix: give each token its own name of lower-case letters, digits, '-', '_' or '.'"
            )
        named.add(name)
        tokens[token] = (scope, name or f"{scope}-token")
    return tokens


#: Webhooks (``funnel.services.webhook_delivery``): ids per delivered batch; attempts per batch within one run of
#: ``funnel_webhooks`` before it is parked, the first wait between them (doubled each time, up
#: to ``webhook_backoff_max_seconds``); the HTTP connect-and-read timeout of one attempt.
WEBHOOK_BATCH_SIZE: int = conf.getint(SECTION, "webhook_batch_size", fallback=1000)
WEBHOOK_MAX_ATTEMPTS: int = conf.getint(SECTION, "webhook_max_attempts", fallback=5)
WEBHOOK_BACKOFF_SECONDS: float = conf.getfloat(SECTION, "webhook_backoff_seconds", fallback=1.0)
WEBHOOK_BACKOFF_MAX_SECONDS: float = conf.getfloat(SECTION, "webhook_backoff_max_seconds", fallback=60.0)
WEBHOOK_TIMEOUT_SECONDS: float = conf.getfloat(SECTION, "webhook_timeout_seconds", fallback=10.0)
#: Refuse webhook receivers whose host is (or resolves to) a loopback, private or link-local
#: address: when a subscription is made, and again at every delivery attempt, which connects to
#: the address it checked. On by default, so a write-scope token cannot make funnel POST into the
#: private network (a metadata endpoint, an internal admin port); turn it off only where receivers
#: are trusted internal services (the local stack and the tests do, for their loopback receivers).
WEBHOOK_REFUSE_PRIVATE: bool = conf.getboolean(SECTION, "webhook_refuse_private", fallback=True)

#: The API's Redis client: connect and per-command timeouts.
REDIS_TIMEOUT_SECONDS: float = conf.getfloat(SECTION, "redis_timeout_seconds", fallback=5.0)

#: Freshness (``funnel.core.freshness``): a dynamic segment is stale when its last successful
#: refresh started before its last two slots of ``dynamic_schedule``; a static one when it
#: has no version ``static_grace_minutes`` after its ``run_at``.
STATIC_GRACE_MINUTES: int = conf.getint(SECTION, "static_grace_minutes", fallback=60)
#: The dynamic DAG's DeadlineAlert: a run still going this many minutes before the next slot
#: (measured on the shortest gap between two slots) calls ``funnel.airflow.deadline_callback``.
DEADLINE_MINUTES_BEFORE_NEXT_SLOT: int = conf.getint(SECTION, "deadline_minutes_before_next_slot", fallback=30)


def deadline_notifier() -> str:
    """The Airflow notifier class (dotted path) a missed deadline is sent through; empty: log only.

    Read when the deadline is missed (in the triggerer), not at parse time.
    """
    return conf.get(SECTION, "deadline_notifier", fallback="").strip()


def deadline_notifier_kwargs() -> dict[str, object]:
    """The notifier's arguments: a JSON object (its templated fields may use ``{{ message }}``)."""
    import json

    raw = conf.get(SECTION, "deadline_notifier_kwargs", fallback="").strip() or "{}"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(
            f"[funnel] deadline_notifier_kwargs is not valid JSON ({exc}). Fix: set it to a JSON object of the "
            'notifier\'s arguments, e.g. {"to": "data-eng@example.com"}'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            "[funnel] deadline_notifier_kwargs must be a JSON object of the notifier's arguments, "
            'e.g. {"to": "data-eng@example.com"}'
        )
    return value
