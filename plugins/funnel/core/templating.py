"""Segment queries as templates: only the run's dates, rendered in a sandbox.

A segment author writes HiveQL, not Python. Airflow's own template context reaches
connections (``{{ conn.x.password }}``), Variables, the task instance and, through
attribute walks, nearly anything in the worker; none of that may flow into a query that
runs on a shared warehouse and whose result lands in Redis and MySQL. So a segment query
is rendered here, never by Airflow's environment:

- the only names are the run's date values (``DATE_VALUES`` and ``macros``);
- the only attribute uses are ``macros.ds_add`` / ``macros.ds_format`` and a few date
  methods (``strftime``, ``isoformat``, ``year``...);
- the only filters are a handful of harmless string ones; no ``{% %}`` statements;
- rendering happens in Jinja's immutable sandbox with undefined names as errors.

``check_template`` enforces the first three on the parsed template at validation time
(catalog) and again before every render, and names what it refused. Pure: no Airflow.
"""

from __future__ import annotations

import datetime as dt
import functools
import types
from collections.abc import Mapping
from typing import Any

from funnel.core.errors import SegmentError

#: Date values a query may use, as Airflow names them.
DATE_VALUES = (
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
)
#: ``macros.<name>`` a query may call.
MACROS = ("ds_add", "ds_format")
#: Attributes and methods of the date values a query may use.
DATE_ATTRIBUTES = frozenset(
    {"strftime", "isoformat", "date", "year", "month", "day", "hour", "minute", "weekday", "isoweekday"}
)
#: Jinja filters a query may use: string shaping only.
FILTERS = ("upper", "lower", "replace", "trim", "string", "int", "reverse", "truncate", "default")

_ALLOWED_NAMES = frozenset((*DATE_VALUES, "macros"))
_FIX = (
    "use only the run's dates in {{ }} ("
    + ", ".join(DATE_VALUES)
    + ", macros.ds_add, macros.ds_format), e.g. '{{ macros.ds_add(ds, -30) }}'"
)


def has_template(query: str) -> bool:
    """Whether the query holds any Jinja syntax at all (most do not; they skip the parse)."""
    return "{{" in query or "{%" in query or "{#" in query


def check_template(segment_id: str, query: str) -> None:
    """Raise ``SegmentError`` (field ``query``) unless the template uses only what is allowed."""
    if not has_template(query):
        return
    from jinja2 import TemplateSyntaxError, nodes

    try:
        tree = _environment().parse(query)
    except TemplateSyntaxError as exc:
        problem = f"has a template syntax error ({exc.message}, line {exc.lineno})"
        raise SegmentError(segment_id, "query", problem, _FIX) from None
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            raise SegmentError(segment_id, "query", f"uses a {{% {_statement_name(node)} %}} template statement", _FIX)
    every = list(tree.find_all(nodes.Node))
    # Names first, then the innermost constructs: "{{ conn.x.password }}" is refused for
    # reading conn, "{{ macros.datetime.now() }}" for macros.datetime.
    others = [n for n in reversed(every) if not isinstance(n, nodes.Name)]
    for node in [n for n in every if isinstance(n, nodes.Name)] + others:
        problem = _refused(node)
        if problem:
            raise SegmentError(segment_id, "query", problem, _FIX)


def _statement_name(node: Any) -> str:
    return type(node).__name__.lower()


def _refused(node: Any) -> str | None:
    """Why this template node is not allowed, or None."""
    from jinja2 import nodes

    if isinstance(node, nodes.Name):
        if node.name not in _ALLOWED_NAMES:
            return f"uses {{{{ {node.name} }}}} in a template, which a segment query may not read"
        return None
    if isinstance(node, nodes.Getattr):
        return _refused_attribute(node)
    if isinstance(node, nodes.Getitem):
        if (isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, int)) or isinstance(node.arg, nodes.Slice):
            return None
        return "looks up an item by name in a template, which a segment query may not do"
    if isinstance(node, nodes.Filter):
        if node.name not in FILTERS:
            return f"uses the template filter '{node.name}', which a segment query may not use"
        return None
    if isinstance(node, nodes.Call):
        if isinstance(node.node, nodes.Getattr) and node.dyn_args is None and node.dyn_kwargs is None:
            return None  # the attribute itself is checked on its own
        return "calls something other than a date method or macros.ds_add / macros.ds_format in a template"
    if isinstance(node, nodes.Test | nodes.Const | nodes.TemplateData | nodes.Output | nodes.Slice | nodes.Keyword):
        return None
    if isinstance(node, nodes.BinExpr | nodes.UnaryExpr | nodes.Compare | nodes.Operand | nodes.CondExpr):
        return None
    if isinstance(node, nodes.Concat | nodes.Tuple | nodes.List | nodes.Pair):  # a Dict itself is refused
        return None
    return f"uses the template construct {type(node).__name__}, which a segment query may not use"


def _refused_attribute(node: Any) -> str | None:
    from jinja2 import nodes

    target = node.node
    if isinstance(target, nodes.Name) and target.name == "macros":
        if node.attr in MACROS:
            return None
        return f"uses macros.{node.attr} in a template; only macros.ds_add and macros.ds_format are allowed"
    if node.attr in DATE_ATTRIBUTES:
        return None
    return f"reads the attribute '.{node.attr}' in a template, which a segment query may not do"


def date_values(
    moment: dt.datetime,
    data_interval_start: dt.datetime | None = None,
    data_interval_end: dt.datetime | None = None,
) -> dict[str, Any]:
    """The values a query may use, for a run whose logical date (or run_after) is ``moment``."""
    ds = moment.strftime("%Y-%m-%d")
    ts = moment.isoformat()
    return {
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": ts,
        "ts_nodash": moment.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": ts.replace("-", "").replace(":", ""),
        "logical_date": moment,
        "data_interval_start": data_interval_start or moment,
        "data_interval_end": data_interval_end or moment,
    }


def render_query(segment_id: str, query: str, values: Mapping[str, Any]) -> str:
    """Render a segment query with only ``values`` (see ``date_values``) and the two macros."""
    check_template(segment_id, query)
    if not has_template(query):
        return query
    from jinja2 import UndefinedError

    context = {name: values[name] for name in DATE_VALUES if name in values}
    context["macros"] = _MACROS
    try:
        return _environment().from_string(query).render(context)
    except UndefinedError as exc:
        raise SegmentError(segment_id, "query", f"could not be rendered ({exc.message})", _FIX) from None
    except Exception as exc:  # a date method given bad arguments, a security refusal
        raise SegmentError(segment_id, "query", f"could not be rendered ({type(exc).__name__}: {exc})", _FIX) from None


def ds_add(ds: str, days: int) -> str:
    """Airflow's ``macros.ds_add``: ``ds`` (YYYY-MM-DD) plus ``days`` days."""
    return (dt.datetime.strptime(ds, "%Y-%m-%d") + dt.timedelta(days=int(days))).strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """Airflow's ``macros.ds_format``: ``ds`` read with ``input_format``, written with ``output_format``."""
    return dt.datetime.strptime(ds, input_format).strftime(output_format)


_MACROS = types.SimpleNamespace(ds_add=ds_add, ds_format=ds_format)


@functools.cache
def _environment() -> Any:
    """Jinja's immutable sandbox, with no globals and only the allowed filters."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in FILTERS}
    env.tests = {name: env.tests[name] for name in ("defined", "undefined", "none", "number", "string")}
    return env
