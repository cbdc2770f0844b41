"""A proxy segment's rule as a SQL condition over the users' tags (``funnel_user_tags``).

The rule itself (``funnel.core.proxy_rule``) is pure; this is its one translation to SQL, so
MySQL can count and page the users a rule holds for without reading them all
(``funnel.storage.mysql.tag_versions``).
"""

from __future__ import annotations

import datetime as dt

from funnel.core.proxy_matching import cutoff
from funnel.core.proxy_rule import AllOf, NewUser, Not, OldUser, OrderCount, Rule
from funnel.core.utc_time import to_naive_utc

_SQL_OPS = {"<": "<", "<=": "<=", "=": "=", "!=": "<>", ">=": ">=", ">": ">"}


def rule_sql(rule: Rule, now: dt.datetime) -> tuple[str, list[object]]:
    """A proxy rule as a SQL condition over ``t.first_seen`` and ``t.order_count``, with its
    parameters. Every leaf is true or false, never NULL, so ``NOT`` agrees with ``matches``."""
    if isinstance(rule, NewUser | OldUser):
        compare = ">=" if isinstance(rule, NewUser) else "<"
        return f"(t.first_seen IS NOT NULL AND t.first_seen {compare} %s)", [to_naive_utc(cutoff(rule.days, now))]
    if isinstance(rule, OrderCount):
        if rule.op == "between":
            return "(t.order_count BETWEEN %s AND %s)", [rule.low, rule.high]
        return f"(t.order_count {_SQL_OPS[rule.op]} %s)", [rule.low]
    if isinstance(rule, Not):
        inner, params = rule_sql(rule.rule, now)
        return f"(NOT {inner})", params
    parts = [rule_sql(child, now) for child in rule.rules]
    joiner = " AND " if isinstance(rule, AllOf) else " OR "
    return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, params in parts for p in params]
