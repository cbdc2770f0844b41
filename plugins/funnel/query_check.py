"""Is a segment query exactly one read-only HiveQL SELECT? Parsed with sqlglot's Hive dialect.

A segment's query runs with the service account's rights on a shared warehouse, so only
a query passes: no DDL or DML, no ``SET``, ``ADD JAR``, ``TRANSFORM ... USING`` scripts,
and no second statement. Airflow template expressions (``{{ ds }}``) are checked as if
they were a plain identifier, since they are rendered only at run time.

sqlglot is imported on the first check, not at module import: a parse whose queries are
all known-good (the snapshot remembers them) never pays for loading the parser.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from funnel.errors import SegmentError

_JINJA_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_JINJA_BLOCK = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def load_parser() -> None:
    """Import sqlglot now (about 0.2 s once per process), e.g. before timing the checks."""
    _forbidden()


@functools.cache
def _forbidden() -> tuple[tuple[Any, str], ...]:
    """Nodes that make a statement something other than a read-only query, wherever they appear."""
    from sqlglot import exp

    # sqlglot warns when it falls back to a Command node; that case is rejected anyway.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    return (
        (exp.Insert, "INSERT"),
        (exp.Create, "CREATE"),
        (exp.Drop, "DROP"),
        (exp.Delete, "DELETE"),
        (exp.Update, "UPDATE"),
        (exp.Merge, "MERGE"),
        (exp.Set, "SET"),
        (exp.Alter, "ALTER"),
        (exp.TruncateTable, "TRUNCATE"),
        (exp.LoadData, "LOAD DATA"),
        (exp.QueryTransform, "TRANSFORM ... USING (an external script)"),
        (exp.Command, "a command"),
    )


_FIX = "make query a single HiveQL SELECT (or WITH ... SELECT) whose first column is the user id"


def check_query(segment_id: str, query: str) -> None:
    """Raise ``SegmentError`` unless ``query`` is exactly one read-only SELECT."""
    forbidden = _forbidden()
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    text = _JINJA_BLOCK.sub(" ", _JINJA_EXPRESSION.sub("funnel_template", query))
    try:
        statements = [s for s in sqlglot.parse(text, read="hive") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" near line {first.get('line')}, column {first.get('col')}" if first else ""
        raise SegmentError(segment_id, "query", f"is not valid HiveQL{where}", _FIX) from None
    if len(statements) != 1:
        raise SegmentError(segment_id, "query", f"holds {len(statements)} statements", _FIX)
    statement = statements[0]
    found = statement.find(*(node_type for node_type, _ in forbidden))  # one walk of the tree
    if found is not None:
        label = next(label for node_type, label in forbidden if isinstance(found, node_type))
        raise SegmentError(segment_id, "query", f"contains {label}, which is not a read-only query", _FIX)
    if not isinstance(statement, exp.Query):
        raise SegmentError(segment_id, "query", f"is a {statement.key.upper()} statement, not a SELECT", _FIX)
