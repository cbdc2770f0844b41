"""funnel's command line: ``python -m funnel.cli <command>`` (the project's scripts use it).

Commands: ``migrate`` (MySQL schema), ``hive FILE`` and ``mysql FILE`` (run a script of
statements, one per ``;`` at a line end), ``report`` (each segment's size in both stores),
``ensure-pool`` (the Airflow pool Hive queries run in), ``static-runs`` (each static
segment's DAG and run_at), ``rebuild-redis SEGMENT_ID`` (reload Redis from MySQL).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from funnel import layout, settings, wiring
from funnel.schema import migrate

_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)


def split_statements(text: str) -> Iterator[str]:
    """Statements of a script: each ends with ``;`` at the end of a line; ``--`` lines dropped."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    for chunk in _STATEMENT_END.split(body):
        if chunk.strip():
            yield chunk.strip()


def run_hive_script(path: Path) -> None:
    with contextlib.closing(wiring.hive_hook().get_conn()) as conn:
        cursor = conn.cursor()
        for statement in split_statements(path.read_text()):
            cursor.execute(statement)


def run_mysql_script(path: Path) -> None:
    with contextlib.closing(wiring.mysql_connection()) as conn:
        cursor = conn.cursor()
        for statement in split_statements(path.read_text()):
            cursor.execute(statement)
        conn.commit()


def report() -> bool:
    """Print each segment's live version and size in Redis and MySQL; return whether all agree.

    They agree when Redis serves MySQL's live version with exactly its members (the rule the
    refresh and ``rebuild-redis`` reconcile on).
    """
    from funnel.refresh import redis_serves
    from funnel.stores.mysql_store import MySqlSegmentStore

    redis = wiring.redis_store(wiring.redis_client())
    with contextlib.closing(wiring.mysql_connection()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT segment_id, kind, enabled FROM {layout.SEGMENTS_TABLE} ORDER BY segment_id")
        rows = cursor.fetchall()
        store = MySqlSegmentStore(conn)
        lives = {segment_id: store.live_version(segment_id) for segment_id, _kind, _enabled in rows}
    all_agree = True
    print(f"{'segment':<24} {'kind':<8} {'version':>7} {'redis':>9} {'mysql':>9}  agree")
    for segment_id, kind, enabled in rows:
        live = lives[segment_id]
        serving = redis.serving(segment_id)
        agree = redis_serves(live, serving) if live is not None else serving == (None, 0)
        all_agree &= agree
        label = kind if enabled else f"{kind}*"
        shown_version = "-" if live is None else str(live.version)
        if live is not None and serving[0] != live.version:
            shown_version += f" (redis {serving[0] if serving[0] is not None else '-'})"
        verdict = "yes" if agree else "NO"
        mysql_size = live.size if live is not None else 0
        print(f"{segment_id:<24} {label:<8} {shown_version:>7} {serving[1]:>9,} {mysql_size:>9,}  {verdict}")
    print("(* disabled)")
    return all_agree


def rebuild_redis(segment_id: str) -> bool:
    """Bring Redis level with MySQL's live version of one segment, under the segment's lock."""
    from funnel.refresh import sync_redis_from_mysql
    from funnel.stores.mysql_store import MySqlSegmentStore
    from funnel.stores.run_info import utc_now

    client = wiring.redis_client()
    holder = {"dag_id": "funnel.cli", "run_id": "rebuild-redis", "try_number": 0, "since": utc_now()}
    lock = wiring.segment_lock(client, segment_id, holder)
    with lock, contextlib.closing(wiring.mysql_connection()) as conn:
        store = MySqlSegmentStore(conn)
        rebuilt = sync_redis_from_mysql(segment_id, store, wiring.redis_store(client), settings.BATCH_SIZE, lock)
    print(f"segment {segment_id}: {'rebuilt Redis from MySQL' if rebuilt else 'Redis already matches MySQL'}")
    return rebuilt


def static_runs(output: Path) -> None:
    """Write ``dag_id run_at`` lines for each enabled static segment (what the demo runs).

    A file, not stdout: Airflow's logging writes to stdout too.
    """
    from funnel.catalog import load_catalog
    from funnel.plan import plan_dags
    from funnel.segments import Kind

    lines = [
        f"{plan.dag_id} {plan.run_at.isoformat()}\n"
        for plan in plan_dags(load_catalog().segments, settings.DYNAMIC_SCHEDULE)
        if plan.kind is Kind.STATIC and plan.run_at is not None
    ]
    output.write_text("".join(lines))


def ensure_pool() -> None:
    """Create or resize the Airflow pool every Hive query runs in (needs Airflow's metadata DB)."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        settings.HIVE_POOL,
        settings.HIVE_POOL_SLOTS,
        "funnel: concurrent segment queries on HiveServer2",
        include_deferred=False,
    )
    print(f"pool {settings.HIVE_POOL}: {settings.HIVE_POOL_SLOTS} slots")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m funnel.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade funnel's MySQL tables")
    sub.add_parser("hive", help="run a HiveQL script").add_argument("path", type=Path)
    sub.add_parser("mysql", help="run a SQL script against funnel's MySQL database").add_argument("path", type=Path)
    sub.add_parser("ensure-pool", help="create or resize the funnel_hive Airflow pool")
    sub.add_parser("report", help="each segment's live size in Redis and MySQL")
    sub.add_parser("static-runs", help="write each static segment's DAG id and run_at").add_argument(
        "output", type=Path
    )
    sub.add_parser("rebuild-redis", help="reload a segment's Redis set from MySQL").add_argument("segment_id")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        applied = migrate()
        print(f"funnel schema: {'applied migrations ' + str(applied) if applied else 'up to date'}")
    elif args.command == "hive":
        run_hive_script(args.path)
    elif args.command == "mysql":
        run_mysql_script(args.path)
    elif args.command == "ensure-pool":
        ensure_pool()
    elif args.command == "report":
        return 0 if report() else 1
    elif args.command == "static-runs":
        static_runs(args.output)
    elif args.command == "rebuild-redis":
        rebuild_redis(args.segment_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
