"""funnel's command line: ``python -m funnel.cli <command>`` (the project's scripts use it).

Commands: ``migrate`` (MySQL schema), ``hive FILE`` and ``mysql FILE`` (run a script of
statements, one per ``;`` at a line end), ``report`` (each segment's size in both stores and
its freshness; exit status 1 when the stores disagree, 2 when a segment is stale or failing, 3 both),
``ensure-pool`` (the Airflow pool Hive queries run in), ``static-runs`` (each static
segment's DAG and run_at), ``rebuild-redis SEGMENT_ID|--all`` (reload Redis from MySQL),
``serve`` (the serving API), ``preview SEGMENT_ID | --query-file PATH | --rule-file PATH`` (what a
segment would hold, without writing anything; ``funnel.services.preview``), ``history USER_ID`` (when the user
entered and left each segment, within ``change_history_days``; the API's ``/v1/users/{user_id}/history``),
``webhooks add|list|enable|disable|remove|deliveries|retry`` (webhook subscriptions).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from funnel import settings, wiring
from funnel.core import ids
from funnel.core.errors import TimeRefused
from funnel.core.utc_time import ISO_EXAMPLE, parse_utc
from funnel.storage import layout
from funnel.storage.migrations import migrate

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

    A static or dynamic segment agrees when Redis serves MySQL's live version with exactly its
    members (the rule the refresh and ``rebuild-redis`` reconcile on). A proxy segment's size
    is counted over the users' tags in each store (in Redis for a one-tag rule; a rule that
    combines tags is counted in MySQL only); the tags agree when Redis serves MySQL's tag
    version with as many users.
    """
    from funnel.core.proxy_matching import is_leaf, leaf_ranges
    from funnel.core.proxy_rule import parse_rule
    from funnel.core.utc_time import utc_now
    from funnel.services.restore import redis_serves
    from funnel.storage.mysql.segment_versions import MySqlSegmentStore

    client = wiring.redis_client()
    redis, redis_tags = wiring.redis_store(client), wiring.redis_tag_store(client)
    now = utc_now()
    with contextlib.closing(wiring.mysql_connection()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT segment_id, kind, enabled, rule FROM {layout.SEGMENTS_TABLE} ORDER BY segment_id")
        rows = cursor.fetchall()
        conn.commit()
        store, tags = MySqlSegmentStore(conn), wiring.mysql_tag_store(conn)
        lives = {row[0]: store.live_version(row[0]) for row in rows if row[1] != "proxy"}
        tag_live = tags.live()
        tag_users = tags.count(tag_live.version)
        rules = {row[0]: parse_rule(row[0], row[3], settings.NEW_USER_DAYS) for row in rows if row[1] == "proxy"}
        proxy_sizes = {segment_id: tags.count_matching(rule, now) for segment_id, rule in rules.items()}
    tags_serving = redis_tags.serving()
    # No tags at all agree with an empty Redis (nothing to restore).
    tags_agree = tags_serving == (tag_live.version, tag_users) or tags_serving == (None, 0) == (None, tag_users)
    all_agree = tags_agree
    print(f"{'segment':<24} {'kind':<9} {'version':>7} {'redis':>9} {'mysql':>9}  agree")
    for segment_id, kind, enabled, _rule in rows:
        label = kind if enabled else f"{kind}*"
        if kind == "proxy":
            rule = rules[segment_id]
            in_redis = (
                f"{sum(redis_tags.count_range(tag, low, high) for tag, low, high in leaf_ranges(rule, now)):,}"
                if is_leaf(rule)
                else "-"
            )
            agree = tags_agree and in_redis in ("-", f"{proxy_sizes[segment_id]:,}")
            row = (f"tags {tag_live.version}", in_redis, f"{proxy_sizes[segment_id]:,}")
        else:
            live = lives[segment_id]
            serving = redis.serving(segment_id)
            agree = redis_serves(live, serving) if live is not None else serving == (None, 0)
            shown_version = "-" if live is None else str(live.version)
            if live is not None and serving[0] != live.version:
                shown_version += f" (redis {serving[0] if serving[0] is not None else '-'})"
            row = (shown_version, f"{serving[1]:,}", f"{live.size if live is not None else 0:,}")
        all_agree &= agree
        print(f"{segment_id:<24} {label:<9} {row[0]:>7} {row[1]:>9} {row[2]:>9}  {'yes' if agree else 'NO'}")
    shown_tags = "-" if tags_serving[0] is None else str(tags_serving[0])
    print(
        f"{'(user tags)':<24} {'':<9} {tag_live.version:>7} {tags_serving[1]:>9,} {tag_users:>9,}  "
        f"{'yes' if tags_agree else 'NO (redis serves tag version ' + shown_tags + ')'}"
    )
    print("(* disabled; a proxy segment's redis column is '-' when its rule combines tags)")
    return all_agree


def freshness_report() -> list[str]:
    """Print each segment's freshness (``funnel.core.freshness``) and why; return the stale and failing ids."""
    from funnel.core.freshness import assess
    from funnel.core.utc_time import utc_now
    from funnel.services.catalog import serving_catalog
    from funnel.storage.hooks import FunnelMySqlHook
    from funnel.storage.mysql.run_history import RunHistory

    catalog = serving_catalog(
        FunnelMySqlHook(
            connect_timeout=settings.MYSQL_CONNECT_TIMEOUT_SECONDS, read_timeout=settings.MYSQL_READ_TIMEOUT_SECONDS
        )
    )
    with contextlib.closing(wiring.mysql_connection()) as conn:
        summaries = RunHistory(conn).summaries()
    objectives, now = wiring.freshness_objectives(), utc_now()
    print(
        f"\nfreshness at {now:%Y-%m-%d %H:%M} UTC (dynamic: a success since the older of the last two slots of "
        f"{objectives.dynamic_schedule} {objectives.timezone}; static: computed by run_at + "
        f"{settings.STATIC_GRACE_MINUTES} min)"
    )
    print(f"{'segment':<24} {'freshness':<9}  reason")
    flagged = []
    for segment in catalog.segments:
        verdict = assess(segment, summaries.get(segment.segment_id), now, objectives)
        if verdict.flagged:
            flagged.append(segment.segment_id)
        shown = verdict.state.value.upper() if verdict.flagged else verdict.state.value
        print(f"{segment.segment_id:<24} {shown:<9}  {verdict.reason}")
    print(f"stale or failing: {', '.join(flagged)}" if flagged else "every segment is fresh")
    return flagged


def rebuild_redis(segment_id: str) -> bool:
    """Bring Redis level with MySQL's live version of one segment, under the segment's lock
    (``SegmentBusy`` when a refresh holds it past ``lock_wait_seconds``)."""
    from funnel.services.restore import restore_into_redis

    wait = settings.LOCK_WAIT_SECONDS
    rebuilt = restore_into_redis(segment_id, wiring, wait_seconds=wait, by="funnel.cli", step_back=False)
    print(f"segment {segment_id}: {'rebuilt Redis from MySQL' if rebuilt else 'Redis already matches MySQL'}")
    return rebuilt


def rebuild_all() -> list[str]:
    """Restore every segment with a live version, and the users' tags, into Redis from MySQL."""
    from funnel.services.restore import restore_all

    checked, rebuilt = restore_all(wiring, by="funnel.cli")
    shown = ", ".join("user tags" if s == layout.TAGS_ID else s for s in rebuilt) or "none"
    print(f"checked {len(checked) - 1} segments and the user tags; rebuilt: {shown}")
    return rebuilt


def webhooks_command(args: argparse.Namespace) -> int:
    """Manage webhook subscriptions (``webhooks add|list|enable|disable|remove|deliveries|retry``)."""
    from funnel.core.errors import UnknownWebhook, WebhookError
    from funnel.core.utc_time import utc_now
    from funnel.services.catalog import serving_catalog
    from funnel.services.webhook_admin import subscribe
    from funnel.storage.hooks import FunnelMySqlHook

    with contextlib.closing(wiring.mysql_connection()) as conn:
        store = wiring.webhook_store(conn)
        try:
            if args.action == "add":
                segments = {s.segment_id: s for s in serving_catalog(FunnelMySqlHook()).segments}
                webhook, secret = subscribe(
                    conn,
                    segments,
                    args.segment_id,
                    args.url,
                    args.secret,
                    args.from_version,
                    refuse_private=settings.WEBHOOK_REFUSE_PRIVATE,
                )
                print(
                    f"webhook {webhook.id}: segment {webhook.segment_id} -> {webhook.url}, from version "
                    f"{webhook.cursor.version + 1}"
                )
                print(f"secret (shown once; the receiver checks X-Funnel-Signature with it): {secret}")
            elif args.action == "list":
                print(f"{'id':>4}  {'segment':<24} {'enabled':<8} {'delivered':>9}  url")
                for webhook in store.list():
                    print(
                        f"{webhook.id:>4}  {webhook.segment_id:<24} {'yes' if webhook.enabled else 'no':<8} "
                        f"{webhook.cursor.version:>9}  {webhook.url}"
                    )
            elif args.action in ("enable", "disable"):
                webhook = store.set_enabled(args.id, args.action == "enable")
                print(f"webhook {webhook.id}: {'enabled' if webhook.enabled else 'disabled'}")
            elif args.action == "remove":
                store.remove(args.id)
                print(f"webhook {args.id}: removed, with its delivery records")
            elif args.action == "deliveries":
                rows = store.by_version(args.id)
                print(f"{'version':>7}  {'status':<9} {'batches':>7} {'attempts':>8}  last error")
                for row in rows:
                    line = (
                        f"{row.version:>7}  {row.status.value:<9} {row.delivered:>3}/{row.batches:<3} "
                        f"{row.attempts:>8}  {row.last_error or ''}"
                    )
                    print(line.rstrip())
                if not rows:
                    print("no deliveries yet")
            elif args.action == "retry":
                count = store.unpark(args.id, utc_now())
                print(
                    f"webhook {args.id}: {count} parked batch(es) will be sent again by the next run of "
                    "funnel_webhooks (trigger it now: airflow dags trigger funnel_webhooks)"
                )
        except (WebhookError, UnknownWebhook) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


def preview(
    segment_id: str | None,
    query_file: str | None,
    rule_file: str | None,
    text_file: str | None,
    kind: str | None,
    as_json: bool,
) -> int:
    """Preview a segment, a query or a rule (``funnel.services.preview``); print the answer. Exit status 1
    with the message when it cannot be previewed (a bad query or rule, a time limit, Hive down)."""
    import json

    from funnel.core.errors import FunnelError
    from funnel.services.preview import PreviewRequest

    _logs_to_stderr()  # stdout holds the answer alone (``--json | jq`` works)
    if query_file is not None:
        request = PreviewRequest(segment_id, query=_read_text(query_file), kind=kind)
    elif rule_file is not None:
        request = PreviewRequest(segment_id, rule=_read_text(rule_file), kind=kind)
    elif text_file is not None:
        request = PreviewRequest.from_text(_read_text(text_file), segment_id, kind)
    else:
        request = PreviewRequest(segment_id, kind=kind)
    try:
        with wiring.previewer() as previewer:
            answer = previewer.preview(request).to_dict()
    except FunnelError as exc:
        print(f"preview: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        print_preview(answer)
    return 0


def _logs_to_stderr() -> None:
    """Point the log handlers that write to stdout (Airflow's logging config does) at stderr."""
    for handler in logging.root.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _read_text(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def print_preview(a: dict[str, Any]) -> None:
    """A preview's answer (``Preview.to_dict()``) as the terminal shows it."""
    what = f"segment {a['segment_id']}" if a["segment_id"] else "a new segment"
    size = f"{a['size']:,}" + (" or more (capped at preview_max_rows)" if a["capped"] else "")
    print(f"preview of {what} ({a['kind']}): {size} users")
    print(f"  read {a['rows_read']:,} rows ({a['null_ids']:,} NULL ids skipped) in {a['query_seconds']:.1f} s")
    print(f"  sample: {', '.join(a['sample']) or '(none)'}")
    live = a["against_live"]
    if live is not None:
        counts = (
            f"+{live['entered']:,} entered, -{live['exited']:,} exited"
            if live["entered"] is not None
            else "entered and exited not known"
        )
        shown = "no live version" if live["version"] is None else f"live version {live['version']} ({live['size']:,})"
        print(f"  against {shown}: {counts}")
        if live["would_refuse"] is None:
            print("  guards: cannot tell")
        else:
            print(f"  guards: {'WOULD REFUSE: ' + live['guard'] if live['would_refuse'] else 'pass'}")
        if live["reason"]:
            print(f"  ({live['reason']})")
    print(f"  {'overlap with':<24} {'kind':<8} {'overlap':>9} {'size':>9}")
    for item in a["overlap"]:
        overlap = "-" if item["overlap"] is None else f"{item['overlap']:,}"
        size_shown = "-" if item["size"] is None else f"{item['size']:,}"
        note = f"  {item['reason']}" if item["reason"] and item["overlap"] is None else ""
        print(f"  {item['segment_id']:<24} {item['kind']:<8} {overlap:>9} {size_shown:>9}{note}")
    if a["capped"]:
        print("  (capped: overlaps count only the ids read before the cap)")


def serve(host: str, port: int, workers: int) -> None:
    """Run the serving API with uvicorn (loopback by default: put a proxy in front to expose it).

    Each worker is its own process with its own listening socket on the same port
    (``SO_REUSEPORT``): the kernel spreads connections evenly, where one shared socket
    lets the busiest worker take most of them. Stopping the parent (SIGTERM, Ctrl-C)
    stops every worker; if a worker dies, the others are stopped and the exit code says so.
    """
    import multiprocessing
    import multiprocessing.connection
    import signal

    if workers <= 1:
        _serve_one(host, port)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_serve_one, args=(host, port), daemon=True) for _ in range(workers)]
    for child in children:
        child.start()

    def stop(*_: object) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        multiprocessing.connection.wait([child.sentinel for child in children])
    finally:
        stop()
        for child in children:
            child.join(10)
    codes = [child.exitcode for child in children]
    if any(code not in (0, -signal.SIGTERM) for code in codes):
        raise SystemExit(f"funnel API: a worker stopped with exit code {codes}")


def _serve_one(host: str, port: int) -> None:
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    config = uvicorn.Config(
        "funnel.api.app:create_app",
        factory=True,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run(sockets=[sock])


def static_runs(output: Path) -> None:
    """Write ``dag_id run_at`` lines for each enabled static segment (what the demo runs).

    A file, not stdout: Airflow's logging writes to stdout too.
    """
    from funnel.core.dag_plan import plan_dags
    from funnel.core.segment import Kind
    from funnel.services.catalog import load_catalog

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


def history(
    user_id: str,
    segment_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    as_json: bool = False,
) -> None:
    """Print a user's membership history (``membership_history.user_history``, as the API answers)."""
    import orjson

    from funnel.core.utc_time import utc_now
    from funnel.storage.mysql.membership_history import user_history

    problem = ids.user_id_problem(user_id)
    if problem:
        raise SystemExit(f"user id {user_id!r} {problem}")
    conn = wiring.mysql_connection()
    try:
        found = user_history(
            conn,
            user_id,
            now=utc_now(),
            days=settings.CHANGE_HISTORY_DAYS,
            limit=settings.PAGE_LIMIT_DEFAULT,
            segment_id=segment_id,
            since=since,
            until=until,
        )
    finally:
        conn.close()
    if as_json:
        print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"user {user_id}: membership history since {_shown_time(found.horizon)} UTC "
        f"(change_history_days {found.change_history_days})"
    )
    rows = [
        (
            stay.segment_id,
            _shown_time(stay.entered_at) if stay.entered_at else "(before the horizon)",
            _shown_time(stay.exited_at) if stay.exited_at else "-",
            f"version {stay.entered_version} -> {stay.exited_version}"
            if stay.exited_version is not None
            else f"version {stay.entered_version} -> (member now)",
        )
        for stay in found.stays
    ]
    rows += _proxy_rows(found.proxy_changes)
    if not rows:
        print("no stays or changes recorded in that time")
        return
    width = max(len("segment"), *(len(row[0]) for row in rows))
    print(f"{'segment':<{width}}  {'entered (UTC)':<20}  {'left (UTC)':<20}  by")
    for segment, entered, left, by in sorted(rows, key=lambda row: row[0]):
        print(f"{segment:<{width}}  {entered:<20}  {left:<20}  {by}")
    if found.truncated:
        print(f"(only the first {found.limit} stays and proxy changes: narrow with --segment, --since, --until)")


def _proxy_rows(changes: Sequence[Any]) -> list[tuple[str, str, str, str]]:
    """A proxy segment's changes paired into stays (entered ... exited), in time order."""
    rows: list[tuple[str, str, str, str]] = []
    open_stays: dict[str, Any] = {}
    for change in changes:
        label = f"{change.segment_id} (proxy)"
        if change.change == "entered":
            open_stays[change.segment_id] = change
            continue
        began = open_stays.pop(change.segment_id, None)
        entered = _shown_time(began.at) if began else "(before the log)"
        by = f"event {began.event_id} -> {change.event_id}" if began else f"event ... -> {change.event_id}"
        rows.append((label, entered, _shown_time(change.at), by))
    for segment_id, began in open_stays.items():
        rows.append((f"{segment_id} (proxy)", _shown_time(began.at), "-", f"event {began.event_id} -> (member now)"))
    return rows


def _shown_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _time_argument(raw: str) -> dt.datetime:
    """A command-line time: ISO-8601; without an offset it is UTC."""
    try:
        return parse_utc(raw)
    except TimeRefused:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO-8601 time, e.g. {ISO_EXAMPLE}") from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
        agree = report()
        flagged = freshness_report()
        return (0 if agree else 1) | (2 if flagged else 0)
    elif args.command == "static-runs":
        static_runs(args.output)
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
    elif args.command == "preview":
        if not (args.segment_id or args.query_file or args.rule_file or args.file):
            parser.error("preview takes a segment id, --query-file, --rule-file or --file")
        return preview(args.segment_id, args.query_file, args.rule_file, args.file, args.kind, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
