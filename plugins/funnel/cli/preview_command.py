"""``preview SEGMENT_ID | --query-file PATH | --rule-file PATH | --file PATH``: what a segment would
hold, without writing anything (``funnel.services.previewer``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from funnel import wiring


def preview(
    segment_id: str | None,
    query_file: str | None,
    rule_file: str | None,
    text_file: str | None,
    kind: str | None,
    as_json: bool,
) -> int:
    """Preview a segment, a query or a rule (``funnel.services.previewer``); print the answer. Exit status 1
    with the message when it cannot be previewed (a bad query or rule, a time limit, Hive down)."""
    import json

    from funnel.core.errors import FunnelError
    from funnel.services.preview_values import PreviewRequest

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
