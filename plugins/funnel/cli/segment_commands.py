"""``segments list|show|add|edit|enable|disable|retire|restore|purge|history|dependents``: segment definitions through
funnel's one write path (``funnel.services.segment_admin``): checked as the catalog checks them,
each change a revision naming who made it (``cli:<OS user>``).

``add`` and ``edit`` take the fields as flags, or as a JSON or YAML object in ``--file`` (``-``:
stdin), or both (the flags win). A refused change prints what was wrong and the fix, writes
nothing, and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from funnel import wiring
from funnel.core.segment import selected


def add_parsers(sub: Any) -> None:
    """The ``segments`` command group on ``python -m funnel.cli``."""
    group = sub.add_parser("segments", help="add, change and inspect segment definitions (with their revisions)")
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every segment: kind, enabled, latest revision, name")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--owner", help="only this owner's segments (any case)")
    listing.add_argument("--label", action="append", default=[], help="only segments with this label (repeatable)")
    for action, text in (
        ("show", "a segment's definition and its latest revision"),
        ("history", "every revision: who, when, what changed"),
        ("dependents", "the enabled composites and webhooks that use a segment"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("segment_id")
        parser.add_argument("--json", action="store_true")
    adding = actions.add_parser("add", help="a new segment, checked as the catalog checks it")
    adding.add_argument("segment_id", nargs="?", help="its id (or segment_id in --file)")
    _field_flags(adding)
    editing = actions.add_parser("edit", help="change some fields of a segment (its id and kind stay)")
    editing.add_argument("segment_id")
    _field_flags(editing)
    editing.add_argument("--expect-revision", type=int, metavar="N", help="refuse when the latest revision is not N")
    for action, text in (
        ("enable", "refresh it again"),
        ("disable", "stop refreshing it (refused while in use)"),
        ("retire", "no task, answers 410; data kept change_history_days (refused while in use)"),
        ("restore", "bring a retired segment back as it was"),
    ):
        toggling = actions.add_parser(action, help=text)
        toggling.add_argument("segment_id")
        toggling.add_argument("--comment")
    purging = actions.add_parser("purge", help="delete the data of segments retired over change_history_days ago")
    purging.add_argument("--days", type=_days, help="the horizon in days (default: change_history_days)")


def _field_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", metavar="PATH", help="the fields as a JSON or YAML object ('-': stdin)")
    parser.add_argument("--name")
    parser.add_argument("--kind", choices=["dynamic", "static", "proxy", "composite"])
    parser.add_argument("--query", help="the HiveQL query (dynamic, static)")
    parser.add_argument("--query-file", metavar="PATH", help="the query from a file ('-': stdin)")
    parser.add_argument("--run-at", help="a static segment's run time (ISO-8601)")
    parser.add_argument("--rule", help="a proxy or composite rule (JSON)")
    parser.add_argument("--max-shrink-pct", type=float)
    parser.add_argument("--owner", help="who to ask about it: a team or an address")
    parser.add_argument(
        "--label", action="append", dest="labels", help="a label (repeatable; replaces the labels it had)"
    )
    parser.add_argument("--disabled", action="store_true", help="add it disabled")
    parser.add_argument("--comment", help="why: kept with the revision")
    parser.add_argument(
        "--no-preview",
        dest="preview",
        action="store_false",
        help="save without previewing the query or rule first (the preview runs it on Hive)",
    )
    parser.add_argument("--force", action="store_true", help="save even a segment over max_share_of_users")


def _days(text: str) -> float:
    days = float(text)
    if not days >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (0 or more)")
    return days


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.file:
        import yaml

        loaded = yaml.safe_load(_read(args.file))  # JSON is YAML too
        if not isinstance(loaded, dict):
            raise SystemExit(f"segments: {args.file} does not hold an object of segment fields")
        fields.update(loaded)
    flags = {
        "name": args.name,
        "kind": args.kind,
        "query": _read(args.query_file) if args.query_file else args.query,
        "run_at": args.run_at,
        "rule": args.rule,
        "max_shrink_pct": args.max_shrink_pct,
        "owner": args.owner,
        "labels": args.labels,
    }
    fields.update({key: value for key, value in flags.items() if value is not None})
    if args.disabled:
        fields["enabled"] = False
    if args.segment_id:
        fields["segment_id"] = args.segment_id
    return fields


@contextlib.contextmanager
def _previewing(preview: bool) -> Iterator[Any]:
    """The preview an add or edit runs first (``Previewer.preview``), or None (``--no-preview``)."""
    if not preview:
        yield None
        return
    with wiring.previewer() as previewer:
        yield previewer.preview


def _said(revision: Any, what: str, preview: Any = None) -> None:
    if preview is not None:
        capped = " or more (capped)" if preview.capped else ""
        sample = ", ".join(preview.sample[:5]) or "-"
        print(f"preview: {preview.size:,} users{capped} in {preview.query_seconds:g}s; sample: {sample}")
        if preview.against_live is not None and preview.against_live.guard:
            print(f"warning: its next refresh would be refused: {preview.against_live.guard}")
    if revision is None:
        print(f"segment: {what}: nothing changed (no new revision)")
        return
    fields = ", ".join(revision.changed) or "-"
    print(f"segment {revision.segment_id}: revision {revision.revision} ({revision.change.value}: {fields})")


def segments_command(args: argparse.Namespace) -> int:
    """Run one ``segments`` action; 1 when the change is refused (the message says why and the fix)."""
    from funnel.core.errors import FunnelError

    actor = f"cli:{getpass.getuser()}"
    with contextlib.closing(wiring.mysql_connection()) as conn:
        admin = wiring.segment_admin(conn)
        try:
            if args.action == "list":
                _list(admin, args)
            elif args.action == "show":
                definition, latest = admin.show(args.segment_id)
                shown = {"definition": definition, "revision": None if latest is None else latest.revision}
                print(json.dumps(shown, indent=None if args.json else 2))
            elif args.action == "history":
                _history(admin, args.segment_id, args.json)
            elif args.action == "dependents":
                using = admin.dependents(args.segment_id)
                print(json.dumps(using) if args.json else ("\n".join(using) or "nothing depends on it"))
            elif args.action == "add":
                with _previewing(args.preview) as preview:
                    added = admin.add(_fields(args), actor, args.comment, preview=preview, force=args.force)
                _said(added, "add", admin.last_preview)
            elif args.action == "edit":
                changes = {k: v for k, v in _fields(args).items() if k != "segment_id" or v != args.segment_id}
                with _previewing(args.preview) as preview:
                    edited = admin.edit(
                        args.segment_id,
                        changes,
                        actor,
                        args.expect_revision,
                        args.comment,
                        preview=preview,
                        force=args.force,
                    )
                _said(edited, "edit", admin.last_preview)
            elif args.action in ("enable", "disable"):
                _said(admin.set_enabled(args.segment_id, args.action == "enable", actor, args.comment), args.action)
            elif args.action == "retire":
                _said(admin.retire(args.segment_id, actor, args.comment), args.action)
            elif args.action == "restore":
                _said(admin.restore(args.segment_id, actor, args.comment), args.action)
            elif args.action == "purge":
                _purge(admin, args.days)
        except FunnelError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
    return 0


def _purge(admin: Any, days: float | None) -> None:
    from funnel import settings

    horizon = settings.CHANGE_HISTORY_DAYS if days is None else days
    redis = wiring.redis_store(wiring.redis_client())
    purged = admin.purge(horizon, redis.forget)
    print(f"purged {len(purged)} segments retired over {horizon:g} days ago{': ' if purged else ''}{', '.join(purged)}")


def _list(admin: Any, args: argparse.Namespace) -> None:
    listed = [
        (definition, number)
        for definition, number in admin.listing()
        if selected(definition["owner"], definition["labels"] or (), args.owner, args.label)
    ]
    if args.json:
        print(json.dumps([{**definition, "revision": number} for definition, number in listed]))
        return
    print(f"{'segment':<24} {'kind':<9} {'enabled':<7} {'revision':>8}  {'owner':<20} name")
    for definition, number in listed:
        enabled, shown = "yes" if definition["enabled"] else "no", "-" if number is None else str(number)
        owner = definition["owner"] or "-"
        line = f"{definition['segment_id']:<24} {definition['kind']:<9} {enabled:<7} {shown:>8}  {owner:<20} "
        print(f"{line}{definition['name']}")


def _history(admin: Any, segment_id: str, as_json: bool) -> None:
    revisions = admin.history(segment_id)
    if as_json:
        print(json.dumps([revision.public() for revision in revisions]))
        return
    print(f"{'revision':>8}  {'change':<9} {'at (UTC)':<19}  {'by':<20} changed")
    for revision in revisions:
        at, changed = revision.at.strftime("%Y-%m-%d %H:%M:%S"), ", ".join(revision.changed) or "-"
        line = f"{revision.revision:>8}  {revision.change.value:<9} {at:<19}  {revision.actor:<20} {changed}"
        print(f"{line}{f'  ({revision.comment})' if revision.comment else ''}")
