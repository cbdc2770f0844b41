"""``hive FILE`` and ``mysql FILE``: run a script of statements, one per ``;`` at a line end."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from funnel import wiring

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
