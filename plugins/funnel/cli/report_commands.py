"""``report``: each segment's size in Redis and MySQL, then its freshness."""

from __future__ import annotations

import contextlib

from funnel import settings, wiring
from funnel.core.errors import SegmentError
from funnel.storage import layout


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
    from funnel.core.segment import Kind
    from funnel.core.utc_time import utc_now
    from funnel.services.restore import redis_serves

    client = wiring.redis_client()
    redis, redis_tags = wiring.redis_store(client), wiring.redis_tag_store(client)
    now = utc_now()
    with contextlib.closing(wiring.mysql_connection()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT segment_id, kind, enabled, rule FROM {layout.SEGMENTS_TABLE} ORDER BY segment_id")
        rows = cursor.fetchall()
        conn.commit()
        store, tags = wiring.mysql_store(conn), wiring.mysql_tag_store(conn)
        lives = {row[0]: store.live_version(row[0]) for row in rows if row[1] != Kind.PROXY}
        tag_live = tags.live()
        tag_users = tags.count(tag_live.version)
        rules = {}
        for segment_id, kind, _enabled, raw_rule in rows:
            if kind == Kind.PROXY:
                with contextlib.suppress(SegmentError):  # an invalid row: the report says so, the catalog why
                    rules[segment_id] = parse_rule(segment_id, raw_rule, settings.NEW_USER_DAYS)
        proxy_sizes = {segment_id: tags.count_matching(rule, now) for segment_id, rule in rules.items()}
    tags_serving = redis_tags.serving()
    # No tags at all agree with an empty Redis (nothing to restore).
    tags_agree = tags_serving == (tag_live.version, tag_users) or tags_serving == (None, 0) == (None, tag_users)
    all_agree = tags_agree
    stalled = wiring.hive_pool_problem()
    if stalled:  # first: nothing below will change until it is fixed
        print(f"WARNING: {stalled}")
    print(f"{'segment':<24} {'kind':<9} {'version':>7} {'redis':>9} {'mysql':>9}  agree")
    for segment_id, kind, enabled, _rule in rows:
        label = kind if enabled else f"{kind}*"
        if kind == Kind.PROXY and segment_id not in rules:
            agree, row = True, ("invalid", "-", "-")  # its rule does not parse (python -m funnel.cli preview says why)
        elif kind == Kind.PROXY:
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

    catalog = serving_catalog(wiring.mysql_hook())
    with contextlib.closing(wiring.mysql_connection()) as conn:
        summaries = wiring.history_on(conn).summaries()
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
