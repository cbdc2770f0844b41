"""Segment queries render with the run's dates only, in a sandbox; everything else is refused."""

from __future__ import annotations

import datetime as dt

import pytest

from funnel.core.errors import SegmentError
from funnel.core.segment import segment_from_row
from funnel.core.templating import check_template, date_values, render_query

MOMENT = dt.datetime(2026, 11, 29, 9, tzinfo=dt.UTC)


def render(query: str) -> str:
    return render_query("seg", query, date_values(MOMENT))


@pytest.mark.parametrize(
    ("query", "rendered"),
    [
        ("SELECT 1 WHERE d = '{{ ds }}'", "SELECT 1 WHERE d = '2026-11-29'"),
        ("d = {{ ds_nodash }}", "d = 20261129"),
        ("d >= '{{ macros.ds_add(ds, -30) }}'", "d >= '2026-10-30'"),
        ("m = '{{ macros.ds_format(ds, '%Y-%m-%d', '%Y%m') }}'", "m = '202611'"),
        ("y = {{ logical_date.year }}", "y = 2026"),
        ("m = '{{ logical_date.strftime('%Y-%m') }}'", "m = '2026-11'"),
        ("t < '{{ data_interval_end.isoformat() }}'", "t < '2026-11-29T09:00:00+00:00'"),
        ("ts = '{{ ts_nodash }}'", "ts = '20261129T090000'"),
        ("x = '{{ ds | replace('-', '/') }}'", "x = '2026/11/29'"),
        ("y = '{{ ds[0:4] }}'", "y = '2026'"),
        ("SELECT user_id FROM t {# a comment #}", "SELECT user_id FROM t "),
        ("SELECT user_id FROM t", "SELECT user_id FROM t"),
    ],
)
def test_date_values_render(query: str, rendered: str) -> None:
    assert render(query) == rendered


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT '{{ conn.funnel_mysql.password }}'", "uses {{ conn }}"),
        ("SELECT '{{ conn.funnel_mysql.password | reverse }}'", "uses {{ conn }}"),
        ("SELECT '{{ var.value.secret }}'", "uses {{ var }}"),
        ("SELECT '{{ ti.xcom_pull('x') }}'", "uses {{ ti }}"),
        ("SELECT '{{ task_instance }}'", "uses {{ task_instance }}"),
        ("SELECT '{{ dag_run.conf }}'", "uses {{ dag_run }}"),
        ("SELECT '{{ params.table }}'", "uses {{ params }}"),
        ("SELECT '{{ ds.__class__.__mro__ }}'", "reads the attribute '.__class__'"),
        ("SELECT '{{ logical_date.tzinfo }}'", "reads the attribute '.tzinfo'"),
        ("SELECT '{{ macros.datetime.now() }}'", "uses macros.datetime"),
        ("SELECT '{{ macros.ds_add.__globals__ }}'", "reads the attribute '.__globals__'"),
        ("SELECT '{{ range(10) }}'", "uses {{ range }}"),
        ("SELECT '{{ lipsum() }}'", "uses {{ lipsum }}"),
        ("SELECT '{{ ds | attr('upper') }}'", "template filter 'attr'"),
        ("SELECT '{{ ds | map('upper') | list }}'", "template filter"),
        ("SELECT '{{ ds['__class__'] }}'", "looks up an item by name"),
        ("SELECT '{{ {'a': 1} }}'", "template construct Dict"),
        ("{% for i in range(3) %}SELECT 1{% endfor %}", "{% for %} template statement"),
        ("{% set x = 1 %}SELECT 1", "{% assign %} template statement"),
        ("{% include 'x.sql' %}", "{% include %} template statement"),
        ("SELECT '{{ ds }'", "template syntax error"),
        ("SELECT '{{ (ds).__len__() }}'", "reads the attribute '.__len__'"),
    ],
)
def test_anything_but_the_dates_is_refused_naming_the_field(query: str, problem: str) -> None:
    with pytest.raises(SegmentError) as caught:
        check_template("seg", query)
    assert caught.value.field == "query"
    assert problem in str(caught.value)
    assert str(caught.value).startswith("segment 'seg': field 'query'")
    assert "Fix: use only the run's dates" in str(caught.value)


def test_catalog_validation_refuses_a_secret_in_the_query() -> None:
    row = {
        "segment_id": "leak",
        "name": "Leak",
        "kind": "dynamic",
        "query": "SELECT '{{ conn.funnel_mysql.password }}'",
    }
    with pytest.raises(SegmentError, match=r"segment 'leak': field 'query' uses \{\{ conn \}\}"):
        segment_from_row(row)


def test_render_refuses_even_what_validation_never_saw() -> None:
    # A row that skipped validation (or an edited operator) still cannot reach the context.
    with pytest.raises(SegmentError, match=r"uses \{\{ conn \}\}"):
        render_query("seg", "SELECT '{{ conn.x.password }}'", {**date_values(MOMENT), "conn": object()})


def test_a_render_error_names_the_field_not_a_traceback() -> None:
    assert render("d = '{{ logical_date.date() }}'") == "d = '2026-11-29'"
    with pytest.raises(SegmentError, match=r"field 'query' could not be rendered \(ValueError: invalid literal"):
        render("{{ macros.ds_add(ds, 'x') }}")
