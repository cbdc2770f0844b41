"""MySQL schema for funnel, applied by idempotent, numbered migrations.

``python -m funnel.cli migrate`` (run by the project's scripts) creates the database if needed
and applies every migration not yet recorded in ``funnel_schema_migrations``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from funnel.core import ids
from funnel.storage import layout
from funnel.storage.hooks import FunnelMySqlHook

log = logging.getLogger(__name__)

_MEMBER_ID = f"VARCHAR({ids.USER_ID_MAX_LENGTH}) CHARACTER SET ascii COLLATE ascii_bin NOT NULL"

#: (id, statements). Append only: an applied migration is never edited.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            f"""CREATE TABLE IF NOT EXISTS {layout.SEGMENTS_TABLE} (
                segment_id VARCHAR(64) NOT NULL PRIMARY KEY,
                name VARCHAR(255) NOT NULL,
                kind ENUM('static','dynamic','proxy') NOT NULL,
                query TEXT NULL,
                run_at DATETIME NULL,
                rule JSON NULL,
                enabled BOOLEAN NOT NULL DEFAULT TRUE,
                updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS {layout.VERSIONS_TABLE} (
                segment_id VARCHAR(64) NOT NULL,
                version INT UNSIGNED NOT NULL,
                state ENUM('staging','live','retired','discarded') NOT NULL,
                logical_date DATETIME(6) NOT NULL,
                dag_id VARCHAR(250) NOT NULL,
                run_id VARCHAR(250) NOT NULL,
                size BIGINT UNSIGNED NULL,
                created_at DATETIME(6) NOT NULL,
                promoted_at DATETIME(6) NULL,
                PRIMARY KEY (segment_id, version),
                KEY state_idx (segment_id, state)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS funnel_segment_members (
                segment_id VARCHAR(64) NOT NULL,
                version INT UNSIGNED NOT NULL,
                user_id {_MEMBER_ID},
                PRIMARY KEY (segment_id, version, user_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS {layout.LIVE_TABLE} (
                segment_id VARCHAR(64) NOT NULL PRIMARY KEY,
                version INT UNSIGNED NOT NULL,
                logical_date DATETIME(6) NOT NULL,
                size BIGINT UNSIGNED NOT NULL,
                dag_id VARCHAR(250) NOT NULL,
                run_id VARCHAR(250) NOT NULL,
                refreshed_at DATETIME(6) NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE OR REPLACE VIEW {layout.CURRENT_MEMBERS_VIEW} AS
                SELECT m.segment_id, m.user_id
                FROM funnel_segment_members m
                JOIN {layout.LIVE_TABLE} l
                  ON m.segment_id = l.segment_id AND m.version = l.version""",
        ],
    ),
    (
        2,
        [
            f"""CREATE TABLE IF NOT EXISTS {layout.RUNS_TABLE} (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                segment_id VARCHAR(64) NOT NULL,
                version INT UNSIGNED NULL,
                dag_id VARCHAR(250) NOT NULL,
                run_id VARCHAR(250) NOT NULL,
                try_number INT NOT NULL,
                logical_date DATETIME(6) NOT NULL,
                started_at DATETIME(6) NOT NULL,
                finished_at DATETIME(6) NULL,
                status ENUM('running','success','failed','rejected','skipped','superseded') NOT NULL,
                size BIGINT UNSIGNED NULL,
                entered BIGINT UNSIGNED NULL,
                exited BIGINT UNSIGNED NULL,
                error TEXT NULL,
                KEY segment_started_idx (segment_id, started_at),
                KEY segment_status_idx (segment_id, status)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS {layout.CHANGES_TABLE} (
                segment_id VARCHAR(64) NOT NULL,
                version INT UNSIGNED NOT NULL,
                change_type ENUM('entered','exited') NOT NULL,
                user_id {_MEMBER_ID},
                PRIMARY KEY (segment_id, version, change_type, user_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""ALTER TABLE {layout.VERSIONS_TABLE}
                ADD COLUMN entered BIGINT UNSIGNED NULL,
                ADD COLUMN exited BIGINT UNSIGNED NULL""",
            f"""ALTER TABLE {layout.LIVE_TABLE}
                ADD COLUMN entered BIGINT UNSIGNED NULL,
                ADD COLUMN exited BIGINT UNSIGNED NULL""",
            f"ALTER TABLE {layout.SEGMENTS_TABLE} ADD COLUMN max_shrink_pct DECIMAL(5,2) NULL AFTER rule",
        ],
    ),
    (
        3,
        [
            # 'dropped': a failed attempt's version, its rows deleted, its number never reused.
            f"""ALTER TABLE {layout.VERSIONS_TABLE} MODIFY state
                ENUM('staging','live','retired','discarded','dropped') NOT NULL""",
        ],
    ),
    (
        4,
        [
            # User tags, the input of proxy segments: versioned like members, one live pointer.
            f"""CREATE TABLE IF NOT EXISTS {layout.TAG_VERSIONS_TABLE} (
                version INT UNSIGNED NOT NULL PRIMARY KEY,
                state ENUM('staging','live','retired','discarded','dropped') NOT NULL,
                as_of DATETIME(6) NOT NULL,
                dag_id VARCHAR(250) NOT NULL,
                run_id VARCHAR(250) NOT NULL,
                size BIGINT UNSIGNED NULL,
                replayed BIGINT UNSIGNED NULL,
                created_at DATETIME(6) NOT NULL,
                promoted_at DATETIME(6) NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS {layout.USER_TAGS_TABLE} (
                version INT UNSIGNED NOT NULL,
                user_id {_MEMBER_ID},
                first_seen DATETIME(6) NULL,
                order_count INT NOT NULL DEFAULT 0,
                seq INT UNSIGNED NOT NULL DEFAULT 0,
                PRIMARY KEY (version, user_id),
                KEY first_seen_idx (version, first_seen),
                KEY order_count_idx (version, order_count)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS {layout.TAG_LIVE_TABLE} (
                id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
                version INT UNSIGNED NOT NULL,
                as_of DATETIME(6) NOT NULL,
                size BIGINT UNSIGNED NOT NULL,
                refreshed_at DATETIME(6) NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            # Version 0: no load yet. Events apply to it until the first load swaps in.
            f"""INSERT IGNORE INTO {layout.TAG_VERSIONS_TABLE} (version, state, as_of, dag_id, run_id, size, created_at)
                VALUES (0, 'live', '1970-01-01 00:00:00', 'funnel', 'initial', 0, UTC_TIMESTAMP(6))""",
            f"""INSERT IGNORE INTO {layout.TAG_LIVE_TABLE} (id, version, as_of, size, refreshed_at)
                VALUES (1, 0, '1970-01-01 00:00:00', 0, UTC_TIMESTAMP(6))""",
            f"""CREATE TABLE IF NOT EXISTS {layout.EVENTS_TABLE} (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                event_id VARCHAR({ids.EVENT_ID_MAX_LENGTH}) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                type ENUM('signup','order','order_cancelled') NOT NULL,
                user_id {_MEMBER_ID},
                at DATETIME(6) NOT NULL,
                received_at DATETIME(6) NOT NULL,
                request_id CHAR(32) CHARACTER SET ascii NOT NULL,
                UNIQUE KEY event_id_idx (event_id),
                KEY at_idx (at)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        ],
    ),
    (
        5,
        [
            # Members as spans of versions: a row per stay of a user in a segment, from the
            # version it entered to the one it exited (NULL: still a member). A refresh writes
            # only who entered and exited; retiring a version deletes only the spans that ended
            # before the oldest kept version, found through the change log.
            f"""CREATE TABLE IF NOT EXISTS {layout.MEMBERSHIPS_TABLE} (
                segment_id VARCHAR(64) NOT NULL,
                user_id {_MEMBER_ID},
                entered INT UNSIGNED NOT NULL,
                exited INT UNSIGNED NULL,
                PRIMARY KEY (segment_id, user_id, entered)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""ALTER TABLE {layout.VERSIONS_TABLE}
                ADD COLUMN logged BOOLEAN NOT NULL DEFAULT TRUE""",
            # The live versions carry over; older kept versions' members cannot (their rows
            # were per version), so those versions retire as dropped.
            f"""INSERT IGNORE INTO {layout.MEMBERSHIPS_TABLE} (segment_id, user_id, entered, exited)
                SELECT m.segment_id, m.user_id, m.version, NULL FROM funnel_segment_members m
                JOIN {layout.LIVE_TABLE} l ON l.segment_id = m.segment_id AND l.version = m.version""",
            f"UPDATE {layout.VERSIONS_TABLE} SET state = 'dropped' WHERE state = 'retired'",
            f"UPDATE {layout.VERSIONS_TABLE} SET logged = FALSE WHERE state = 'live'",
            f"""DELETE c FROM {layout.CHANGES_TABLE} c LEFT JOIN {layout.LIVE_TABLE} l
                ON l.segment_id = c.segment_id AND l.version = c.version WHERE l.segment_id IS NULL""",
            f"""CREATE OR REPLACE VIEW {layout.CURRENT_MEMBERS_VIEW} AS
                SELECT m.segment_id, m.user_id
                FROM {layout.MEMBERSHIPS_TABLE} m
                JOIN {layout.LIVE_TABLE} l ON l.segment_id = m.segment_id
                WHERE m.entered <= l.version AND (m.exited IS NULL OR m.exited > l.version)""",
            "DROP TABLE IF EXISTS funnel_segment_members",
        ],
    ),
    (
        6,
        [
            # segment_id as in every other table (a join across different character sets
            # cannot use the index: the change log would read every span of the segment).
            f"ALTER TABLE {layout.MEMBERSHIPS_TABLE} MODIFY segment_id VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL",
        ],
    ),
    (
        7,
        [
            # Composite segments: set expressions over other segments, computed without Hive.
            f"""ALTER TABLE {layout.SEGMENTS_TABLE}
                MODIFY kind ENUM('static','dynamic','proxy','composite') NOT NULL""",
            # Which version of each operand a composite's attempt used (JSON; NULL for query segments).
            f"ALTER TABLE {layout.RUNS_TABLE} ADD COLUMN inputs TEXT NULL",
        ],
    ),
    (
        8,
        [
            # Membership history by age (change_history_days): a version beyond keep_versions but
            # within the horizon is 'archived' (members no longer pageable, spans and changes kept).
            f"""ALTER TABLE {layout.VERSIONS_TABLE} MODIFY state
                ENUM('staging','live','retired','discarded','dropped','archived') NOT NULL""",
            # A user's stays in every segment (GET /v1/users/{user_id}/history), by index.
            f"ALTER TABLE {layout.MEMBERSHIPS_TABLE} ADD KEY user_idx (user_id, segment_id, entered)",
            # Proxy segments' changes: an event that moves a user across a rule, at the event's time.
            f"""CREATE TABLE IF NOT EXISTS {layout.PROXY_CHANGES_TABLE} (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                segment_id VARCHAR(64) NOT NULL,
                user_id {_MEMBER_ID},
                at DATETIME(6) NOT NULL,
                change_type ENUM('entered','exited') NOT NULL,
                event_id VARCHAR({ids.EVENT_ID_MAX_LENGTH}) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                recorded_at DATETIME(6) NOT NULL,
                KEY user_idx (user_id, at),
                KEY segment_idx (segment_id, at),
                KEY at_idx (at)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        ],
    ),
    (
        9,
        [
            # Webhook subscriptions and their cursor: the last version delivered in full
            # (``delivered_version``) and how many batches of the next one were delivered,
            # cut at ``batch_size`` ids (a changed setting restarts that version).
            f"""CREATE TABLE IF NOT EXISTS {layout.WEBHOOKS_TABLE} (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                segment_id VARCHAR(64) NOT NULL,
                url VARCHAR(2048) NOT NULL,
                secret VARCHAR(128) NOT NULL,
                enabled BOOLEAN NOT NULL DEFAULT TRUE,
                created_at DATETIME(6) NOT NULL,
                delivered_version INT UNSIGNED NOT NULL DEFAULT 0,
                delivered_batches INT UNSIGNED NOT NULL DEFAULT 0,
                batch_size INT UNSIGNED NOT NULL DEFAULT 0,
                KEY segment_idx (segment_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE IF NOT EXISTS {layout.WEBHOOK_DELIVERIES_TABLE} (
                webhook_id BIGINT UNSIGNED NOT NULL,
                segment_id VARCHAR(64) NOT NULL,
                version INT UNSIGNED NOT NULL,
                batch INT UNSIGNED NOT NULL,
                batches INT UNSIGNED NOT NULL,
                status ENUM('pending','delivered','parked') NOT NULL,
                attempts INT UNSIGNED NOT NULL DEFAULT 0,
                last_error TEXT NULL,
                updated_at DATETIME(6) NOT NULL,
                PRIMARY KEY (webhook_id, segment_id, version, batch),
                KEY status_idx (webhook_id, status)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        ],
    ),
    (
        10,
        [
            # Proxy changes go to the segments' change feeds (Redis Streams) at least once: a row
            # stays unpublished until its entries are in the stream; the next batch sweeps it.
            f"""ALTER TABLE {layout.PROXY_CHANGES_TABLE}
                ADD COLUMN published BOOLEAN NOT NULL DEFAULT FALSE,
                ADD KEY unpublished_idx (published, id)""",
        ],
    ),
    (
        11,
        [
            # Every change of a segment's definition through funnel's write path (the CLI's
            # `segments` commands), numbered per segment from 1 (its creation).
            f"""CREATE TABLE IF NOT EXISTS {layout.REVISIONS_TABLE} (
                segment_id VARCHAR(64) NOT NULL,
                revision INT UNSIGNED NOT NULL,
                change_type ENUM('created','edited','enabled','disabled','retired','restored','catalog') NOT NULL,
                actor VARCHAR(255) NOT NULL,
                at DATETIME(6) NOT NULL,
                definition JSON NOT NULL,
                changed JSON NOT NULL,
                comment VARCHAR(1000) NULL,
                PRIMARY KEY (segment_id, revision)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        ],
    ),
    (
        12,
        [
            # A segment's owner (a team or an address) and labels (a JSON list of slugs).
            f"""ALTER TABLE {layout.SEGMENTS_TABLE}
                ADD COLUMN owner VARCHAR(255) NULL,
                ADD COLUMN labels JSON NULL""",
            # The digest of the definition each revision records (``segment_revisions.digest``):
            # the parse finds a row changed by hand, and a version its revision, by it.
            f"""ALTER TABLE {layout.REVISIONS_TABLE}
                ADD COLUMN digest CHAR(64) CHARACTER SET ascii NULL,
                ADD KEY digest_idx (segment_id, digest)""",
            # The revision of the definition a version was computed from (NULL: not recorded).
            f"""ALTER TABLE {layout.VERSIONS_TABLE} ADD COLUMN revision INT UNSIGNED NULL""",
        ],
    ),
]

_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]+")


def ensure_database(hook: FunnelMySqlHook) -> str:
    """Create the connection's database if it does not exist yet; return its name."""
    database = hook.schema or hook.get_connection(hook.get_conn_id()).schema
    if not database or not _DATABASE_NAME.fullmatch(database):
        raise ValueError(
            f"MySQL connection {hook.get_conn_id()!r} names database {database!r}; "
            "set a plain database name (letters, digits, '_') as the connection's schema"
        )
    # The same connection and timeouts, on a database that always exists.
    bootstrap = FunnelMySqlHook(
        mysql_conn_id=hook.get_conn_id(),
        schema="information_schema",
        connect_timeout=hook.connect_timeout,
        read_timeout=hook.read_timeout,
    )
    conn = bootstrap.get_conn()
    try:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    return database


#: MySQL errors that mean "this DDL already took effect" (a migration that died half-way).
_ALREADY_DONE = {1060: "duplicate column", 1050: "table exists", 1061: "duplicate key name"}


def _execute_idempotent(cur: Any, statement: str) -> None:
    import MySQLdb

    try:
        cur.execute(statement)
    except MySQLdb.OperationalError as exc:
        if exc.args[0] not in _ALREADY_DONE:
            raise
        log.info("funnel: migration statement already applied (%s)", _ALREADY_DONE[exc.args[0]])


def migrate(hook: FunnelMySqlHook) -> list[int]:
    """Apply pending migrations over ``hook`` (``funnel.wiring.schema_hook``); return the ids applied
    now (empty when up to date)."""
    ensure_database(hook)
    conn = hook.get_conn()
    applied_now: list[int] = []
    try:
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE IF NOT EXISTS funnel_schema_migrations ("
            " id INT NOT NULL PRIMARY KEY,"
            " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        cur.execute("SELECT id FROM funnel_schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        for migration_id, statements in MIGRATIONS:
            if migration_id in done:
                continue
            for statement in statements:
                _execute_idempotent(cur, statement)
            cur.execute("INSERT INTO funnel_schema_migrations (id) VALUES (%s)", (migration_id,))
            conn.commit()
            applied_now.append(migration_id)
            log.info("funnel: applied MySQL migration %s", migration_id)
    finally:
        conn.close()
    return applied_now
