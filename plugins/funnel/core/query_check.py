"""Is a segment query exactly one read-only HiveQL SELECT? Parsed with sqlglot's Hive dialect.

A segment's query runs with the service account's rights on a shared warehouse, so only
a query passes: no DDL or DML, no ``SET``, ``ADD JAR``, ``TRANSFORM ... USING`` scripts,
and no second statement. Airflow template expressions (``{{ ds }}``) are checked as if
they were a plain identifier, since they are rendered only at run time.

A query can still run code through a function call (``reflect('java.lang.System', 'exit', 0)``
stops HiveServer2) or read the server's files (Spark's ``SELECT * FROM text.`/etc/passwd```).
So every function the query calls must be a known built-in from ``funnel.core.hive_functions``
(or one an administrator allows), and no table may be a file path.

What runs on Hive is the author's text, not sqlglot's rewrite of it, so functions are judged
by the name the author wrote: sqlglot turns ``nvl`` into ``Coalesce`` and would turn some
future ``evil`` into a class with a harmless name. The dialect below records the written
name on every call node. A typed node without one is an operator (``a AND b``, ``a RLIKE b``),
keyword syntax (``CURRENT_DATE``, ``DATE '...'``, judged by the names sqlglot gives it), or was
made by sqlglot inside a recorded call (``datediff`` wraps its arguments in ``TsOrDsToDate``).

sqlglot is imported on the first check, not at module import: a parse whose queries are
all known-good (the snapshot remembers them) never pays for loading the parser.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, ClassVar, NamedTuple

from funnel.core.errors import SegmentError
from funnel.core.hive_functions import ALLOWED_FUNCTIONS, REFUSED_FUNCTIONS

_JINJA_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_JINJA_BLOCK = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_TEMPLATE = "funnel_template"  # what a {{ ... }} expression becomes for the parser

# Meta key under which the parser below records the function name as written.
_NAME_KEY = "funnel_written_name"

# Spark reads ``<format>.`<path>``` as the file at <path> ("SQL on files"), relative paths
# included. The formats Spark and the common table-format plugins register.
_FILE_FORMATS = frozenset(
    {"avro", "binaryfile", "csv", "delta", "hudi", "iceberg", "image", "jdbc", "json", "kafka", "libsvm"}
    | {"noop", "orc", "parquet", "rate", "socket", "state", "statestore", "text", "xml", "console"}
)
_PLAIN_NAME = re.compile(r"\w+")


class _Rules(NamedTuple):
    """What the check needs from sqlglot, built once per process."""

    dialect: Any
    forbidden: tuple[tuple[Any, str], ...]


#: Bump whenever the rules get stricter: queries checked under older rules (the snapshot
#: remembers them) are then checked again at the next parses.
RULES_VERSION = 2


def rules_fingerprint(extra_allowed: frozenset[str] = frozenset()) -> str:
    """What a query passed under: this module's rules and the site's extra allowed functions."""
    return f"v{RULES_VERSION}:{','.join(sorted(extra_allowed))}"


def load_parser() -> None:
    """Import sqlglot now (about 0.2 s once per process), e.g. before timing the checks."""
    _rules()


@functools.cache
def _rules() -> _Rules:
    """The parser and the forbidden node types, built on the first check (sqlglot loads here)."""
    # sqlglot warns when it falls back to a Command node; that case is rejected anyway.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    return _Rules(dialect=_recording_dialect(), forbidden=_forbidden())


def _forbidden() -> tuple[tuple[Any, str], ...]:
    """Nodes that make a statement something other than a read-only query, wherever they appear."""
    from sqlglot import exp

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


def _recording_dialect() -> Any:
    """sqlglot's Hive dialect, recording on each call node the function name as written.

    sqlglot records it for plain calls (``ORIGINAL_NAME_META_KEY``) but not for the calls it
    parses with special syntax (``CAST(x AS INT)``, ``EXTRACT(... FROM ...)``, ``IF``, ``CASE``);
    those parsers are wrapped here to record their name too. sqlglot registers this dialect
    under the name ``funnelhive``; nothing else uses it.
    """
    from sqlglot import exp
    from sqlglot.dialects.hive import Hive

    def recording(name: str, parse: Any) -> Any:
        def parse_and_record(parser: Any) -> Any:
            node = parse(parser)
            if isinstance(node, exp.Expr):
                node.meta[_NAME_KEY] = name
            return node

        return parse_and_record

    class FunnelHive(Hive):
        ORIGINAL_NAME_META_KEY = _NAME_KEY

        class Parser(Hive.Parser):
            FUNCTION_PARSERS: ClassVar[dict[str, Any]] = {
                name: recording(name, p) for name, p in Hive.Parser.FUNCTION_PARSERS.items()
            }
            NO_PAREN_FUNCTION_PARSERS: ClassVar[dict[str, Any]] = {
                name: recording(name, p) for name, p in Hive.Parser.NO_PAREN_FUNCTION_PARSERS.items()
            }

    return FunnelHive


_FIX = "make query a single HiveQL SELECT (or WITH ... SELECT) whose first column is the user id"


def check_query(segment_id: str, query: str, *, extra_allowed: frozenset[str] = frozenset()) -> None:
    """Raise ``SegmentError`` unless ``query`` is exactly one read-only SELECT.

    ``extra_allowed``: lower-case function names an administrator allows on top of the Hive
    built-ins (site UDFs), written as the query calls them (``my_udf`` or ``db.my_udf``).
    It never re-allows a function in ``REFUSED_FUNCTIONS``.
    """
    rules = _rules()
    from sqlglot import exp

    statement = _parse_one(segment_id, query, rules.dialect)
    problem = _first_problem(statement, rules.forbidden, extra_allowed)
    if problem is not None:
        raise SegmentError(segment_id, "query", *problem)
    if not isinstance(statement, exp.Query):
        raise SegmentError(segment_id, "query", f"is a {statement.key.upper()} statement, not a SELECT", _FIX)


def _parse_one(segment_id: str, query: str, dialect: Any) -> Any:
    """The single statement in ``query``, templates blanked out; invalid text is the author's error.

    Any failure inside sqlglot counts as invalid HiveQL: an unclosed quote raises
    ``TokenError``, odd input can raise ``IndexError`` or ``RecursionError``, and none of them
    may escape as anything but a ``SegmentError`` (one bad segment must not break the others).
    """
    import sqlglot
    from sqlglot.errors import ParseError

    text = _JINJA_BLOCK.sub(" ", _JINJA_EXPRESSION.sub(_TEMPLATE, query))
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" near line {first.get('line')}, column {first.get('col')}" if first else ""
        raise SegmentError(segment_id, "query", f"is not valid HiveQL{where}", _FIX) from None
    except Exception as exc:  # sqlglot's own failure on odd input; refuse rather than crash
        raise SegmentError(
            segment_id, "query", f"is not valid HiveQL (the parser failed: {type(exc).__name__})", _FIX
        ) from None
    if len(statements) != 1:
        raise SegmentError(segment_id, "query", f"holds {len(statements)} statements", _FIX)
    return statements[0]


def _first_problem(
    statement: Any, forbidden: tuple[tuple[Any, str], ...], extra_allowed: frozenset[str]
) -> tuple[str, str] | None:
    """(problem, fix) for the first node no segment query may hold, else None: one walk of the tree."""
    from sqlglot import exp

    forbidden_types = tuple(node_type for node_type, _ in forbidden)
    for node in statement.walk():
        if isinstance(node, forbidden_types):
            label = next(label for node_type, label in forbidden if isinstance(node, node_type))
            return f"contains {label}, which is not a read-only query", _FIX
        if isinstance(node, exp.Table):
            problem = _file_problem(node)
        elif isinstance(node, exp.Func) or node.meta_get(_NAME_KEY) is not None:
            problem = _function_problem(node, extra_allowed)
        else:
            continue
        if problem is not None:
            return problem
    return None


def _function_problem(node: Any, extra_allowed: frozenset[str]) -> tuple[str, str] | None:
    """(problem, fix) if ``node`` calls a function the query may not call, else None."""
    from sqlglot import exp

    if isinstance(node.parent, exp.Hint):  # /*+ MAPJOIN(u) */ names a plan, calls nothing; its arguments are walked
        return None
    if isinstance(node, exp.Anonymous):
        written = node.name
    else:
        written = node.meta_get(_NAME_KEY)
        if written is None:
            # Not a call the author wrote: an operator (a AND b, a RLIKE b) is syntax, not a
            # function; a node sqlglot made inside a recorded call was judged with that call.
            if not isinstance(node, exp.Func) or isinstance(node, exp.Binary | exp.Unary) or _made_by_parser(node):
                return None
            # Keyword syntax (CURRENT_DATE, DATE '...'): judged by the names sqlglot gives it.
            names = [name.lower() for name in node.sql_names()]
            if any(name in ALLOWED_FUNCTIONS for name in names):
                return None
            written = names[0] if names else node.key
    name = written.lower()
    if name == _TEMPLATE:
        return (
            "calls a function whose name is a template ({{ ... }}), which cannot be checked before it is rendered",
            "write the function's name in the query itself",
        )
    qualifier = _qualifier(node)
    called = f"{qualifier}.{name}" if qualifier else name
    return _name_problem(called, name, extra_allowed)


def _made_by_parser(node: Any) -> bool:
    """Whether a typed node without a written name sits inside a call the author wrote.

    sqlglot builds such nodes from that call's arguments (``datediff`` wraps them in
    ``TsOrDsToDate``); the author's call was judged by its own name.
    """
    from sqlglot import exp

    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Anonymous) or parent.meta_get(_NAME_KEY) is not None:
            return True
        parent = parent.parent
    return False


def _qualifier(node: Any) -> str:
    """``db`` for a call written ``db.fn(...)`` (``a.b`` for ``a.b.fn(...)``), else ``''``."""
    from sqlglot import exp

    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        return _dotted(parent.this)
    if isinstance(parent, exp.Table) and parent.this is node:  # FROM db.fn(...)
        return ".".join(part.name for part in (parent.args.get("catalog"), parent.args.get("db")) if part)
    return ""


def _dotted(node: Any) -> str:
    """The dotted name ``node`` spells (``a.b``), lower case."""
    from sqlglot import exp

    if isinstance(node, exp.Dot):
        return f"{_dotted(node.this)}.{_dotted(node.expression)}"
    if isinstance(node, exp.Column):
        return ".".join(part.name.lower() for part in node.parts)
    return node.name.lower()


def _name_problem(called: str, name: str, extra_allowed: frozenset[str]) -> tuple[str, str] | None:
    """(problem, fix) unless ``called`` (``name`` with its qualifier, if any) may be called.

    A qualified call (``db.fn``, ``system.builtin.fn``) is judged whole: it is a site UDF
    unless the administrator allowed that exact name; ``default.reflect`` gives reflect's reason.
    """
    reason = REFUSED_FUNCTIONS.get(name)
    if reason is not None:
        return (
            f"calls {called}(), which {reason}",
            f"remove {called}() from the query: a segment query may not run code, read files or "
            "reach the network, and no setting allows it",
        )
    if called in extra_allowed or (called == name and name in ALLOWED_FUNCTIONS):
        return None
    return (
        f"calls {called}(), which is not a known Hive built-in function",
        f"remove {called}() or use a Hive built-in; to allow a site UDF, an administrator adds "
        f"{called!r} to the setting allowed_functions",
    )


def _file_problem(table: Any) -> tuple[str, str] | None:
    """(problem, fix) if ``table`` names a file rather than a Hive table (Spark's SQL on files).

    ``text.`/etc/passwd``` reads that file on the server, and so does a relative path or a
    format given as a class name (``org.apache.spark.sql.parquet``).
    """
    from sqlglot import exp

    if not isinstance(table.this, exp.Identifier):  # FROM range(10): a table function, judged by name
        return None
    parts = [part.name for part in (table.args.get("catalog"), table.args.get("db"), table.this) if part]
    looks_like_path = any("/" in part or ":" in part for part in parts)
    db = table.args.get("db")
    names_format = (
        db is not None and table.args.get("catalog") is None and (db.name.lower() in _FILE_FORMATS or "." in db.name)
    )
    if not looks_like_path and not names_format:
        return None
    shown = ".".join(part if _PLAIN_NAME.fullmatch(part) else f"`{part}`" for part in parts)
    return (
        f"reads {shown}, which is a file on HiveServer2's file system (Spark's SQL on files), not a Hive table",
        "read Hive tables by database.table name; a segment query may not read files",
    )
