"""funnel's command line: ``python -m funnel.cli <command>`` (the project's scripts use it).

Commands: ``migrate`` (MySQL schema), ``hive FILE`` and ``mysql FILE`` (run a script of
statements, one per ``;`` at a line end), ``report`` (each segment's size in both stores and
its freshness; exit status 1 when the stores disagree, 2 when a segment is stale or failing, 3 both),
``ensure-pool`` (the Airflow pool Hive queries run in), ``static-runs`` (each static
segment's DAG and run_at), ``rebuild-redis SEGMENT_ID|--all`` (reload Redis from MySQL),
``serve`` (the serving API), ``preview SEGMENT_ID | --query-file PATH | --rule-file PATH`` (what a
segment would hold, without writing anything; ``funnel.services.previewer``), ``history USER_ID`` (when the user
entered and left each segment, within ``change_history_days``; the API's ``/v1/users/{user_id}/history``),
``webhooks add|list|enable|disable|remove|deliveries|retry`` (webhook subscriptions),
``segments list|show|add|edit|enable|disable|history|dependents`` (segment definitions, each change
a revision).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from funnel import settings
from funnel.cli.airflow_commands import dynamic_dags, ensure_pool, static_runs
from funnel.cli.history_command import history
from funnel.cli.log_output import logs_to_stderr
from funnel.cli.migrate_command import migrate_schema
from funnel.cli.preview_command import preview
from funnel.cli.redis_commands import rebuild_all, rebuild_redis
from funnel.cli.report_commands import freshness_report, report
from funnel.cli.script_commands import run_hive_script, run_mysql_script
from funnel.cli.segment_commands import add_parsers as add_segment_parsers
from funnel.cli.segment_commands import segments_command
from funnel.cli.serve_command import serve
from funnel.cli.webhook_commands import webhooks_command
from funnel.core.errors import TimeRefused
from funnel.core.utc_time import ISO_EXAMPLE, parse_utc


def _time_argument(raw: str) -> dt.datetime:
    """A command-line time: ISO-8601; without an offset it is UTC."""
    try:
        return parse_utc(raw)
    except TimeRefused:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO-8601 time, e.g. {ISO_EXAMPLE}") from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # to stderr, where Airflow set up none
    logs_to_stderr()  # every command: stdout holds its answer alone (the report's table, --json)
    parser = argparse.ArgumentParser(prog="python -m funnel.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade funnel's MySQL tables")
    sub.add_parser("hive", help="run a HiveQL script").add_argument("path", type=Path)
    sub.add_parser("mysql", help="run a SQL script against funnel's MySQL database").add_argument("path", type=Path)
    sub.add_parser("ensure-pool", help="create or resize the funnel_hive Airflow pool")
    sub.add_parser(
        "report",
        help="each segment's live size in Redis and MySQL, and its freshness; exit status 1: the stores "
        "disagree, 2: a segment is stale or failing, 3: both",
    )
    sub.add_parser("static-runs", help="write each static segment's DAG id and run_at").add_argument(
        "output", type=Path
    )
    sub.add_parser(
        "dynamic-dags",
        help="print the dynamic DAG ids, one a line: funnel_dynamic_segments, or its shards (dynamic_dag_max_tasks)",
    )
    rebuild = sub.add_parser("rebuild-redis", help="reload a segment (or --all, and the tags) into Redis from MySQL")
    rebuild.add_argument("segment_id", nargs="?")
    rebuild.add_argument("--all", action="store_true", help="every segment with a live version, and the user tags")
    serving = sub.add_parser("serve", help="run the serving API (uvicorn)")
    serving.add_argument("--host", default=settings.API_HOST)
    serving.add_argument("--port", type=int, default=settings.API_PORT)
    serving.add_argument("--workers", type=int, default=settings.API_WORKERS)
    hooks = sub.add_parser("webhooks", help="manage webhook subscriptions").add_subparsers(dest="action", required=True)
    add = hooks.add_parser("add", help="subscribe URL to a segment's changes (prints the secret once)")
    add.add_argument("segment_id")
    add.add_argument("url")
    add.add_argument("--secret", help="the signing secret (default: a random one)")
    add.add_argument("--from-version", type=int, help="first version to deliver (default: the one after the live)")
    hooks.add_parser("list", help="every subscription (no secrets)")
    for action, text in (
        ("enable", "start delivering again"),
        ("disable", "stop delivering (the cursor stays)"),
        ("remove", "delete a subscription and its delivery records"),
        ("deliveries", "how each version went: status, batches, attempts, last error"),
        ("retry", "unpark a subscription's parked deliveries: the next run sends them first"),
    ):
        hooks.add_parser(action, help=text).add_argument("id", type=int)
    previewing = sub.add_parser(
        "preview",
        help="what a segment, a query or a rule would hold, and change, without writing anything",
    )
    previewing.add_argument("segment_id", nargs="?", help="an existing segment (with a file: the one it would replace)")
    source = previewing.add_mutually_exclusive_group()
    source.add_argument("--query-file", metavar="PATH", help="a HiveQL SELECT to preview ('-': stdin)")
    source.add_argument("--rule-file", metavar="PATH", help="a proxy rule (JSON) to preview ('-': stdin)")
    source.add_argument("--file", metavar="PATH", help="a rule if it holds a JSON object, else a query ('-': stdin)")
    previewing.add_argument("--kind", choices=["dynamic", "static"], help="a query's kind (default: dynamic)")
    previewing.add_argument("--json", action="store_true", help="print the answer as JSON")
    past = sub.add_parser(
        "history", help="when a user entered and left each segment (within change_history_days), as a table"
    )
    past.add_argument("user_id")
    past.add_argument("--segment", help="this segment only")
    past.add_argument("--since", type=_time_argument, help="stays and changes at or after this time (ISO-8601; UTC)")
    past.add_argument("--until", type=_time_argument, help="stays and changes at or before this time")
    past.add_argument("--json", action="store_true", help="the API's JSON answer instead of a table")
    add_segment_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        migrate_schema()
    elif args.command == "hive":
        run_hive_script(args.path)
    elif args.command == "mysql":
        run_mysql_script(args.path)
    elif args.command == "ensure-pool":
        ensure_pool()
    elif args.command == "report":
        agree = report()
        flagged = freshness_report()
        return (0 if agree else 1) | (2 if flagged else 0)
    elif args.command == "static-runs":
        static_runs(args.output)
    elif args.command == "dynamic-dags":
        dynamic_dags()
    elif args.command == "rebuild-redis":
        if args.all == bool(args.segment_id):
            parser.error("rebuild-redis takes a segment id or --all")
        if args.all:
            rebuild_all()
        else:
            rebuild_redis(args.segment_id)
    elif args.command == "serve":
        serve(args.host, args.port, args.workers)
    elif args.command == "history":
        history(args.user_id, args.segment, args.since, args.until, args.json)
    elif args.command == "webhooks":
        return webhooks_command(args)
    elif args.command == "segments":
        return segments_command(args)
    elif args.command == "preview":
        if not (args.segment_id or args.query_file or args.rule_file or args.file):
            parser.error("preview takes a segment id, --query-file, --rule-file or --file")
        return preview(args.segment_id, args.query_file, args.rule_file, args.file, args.kind, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
