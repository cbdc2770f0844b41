"""The package's shape (docs/architecture.md): layers whose imports only go down, one home per
concept, modules a reader can take in. Reads the source; no server."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "funnel"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)

#: Every state value funnel stores (``funnel.core.states``): SQL takes them as parameters.
STATES = (
    "running|success|failed|rejected|skipped|superseded|staging|live|retired|archived|discarded|dropped"
    "|entered|exited|pending|delivered|parked"
)
#: The event types (``funnel.core.user_events.EventType``): SQL takes them as parameters too.
EVENT_TYPES = "signup|order|order_cancelled"
#: A quoted state or event type in SQL: compared (``state = 'live'``, ``IN ('live', ...)``,
#: ``CASE type WHEN 'order'``) or set.
QUOTED_STATE = re.compile(
    rf"\b(state|status|change_type|type)\s*(=|<>|!=|IN)\s*\(?[^)]*'({STATES}|{EVENT_TYPES})'"
    rf"|VALUES\s*\([^)]*'({STATES})'|\bWHEN\s+'({STATES}|{EVENT_TYPES})'",
    re.IGNORECASE,
)


def _lint_imports(cwd: Path, plugins: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugins)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_layers_hold() -> None:
    result = _lint_imports(ROOT, ROOT / "plugins")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "imports", "named"),
    [
        ("core/upward.py", "from funnel.services import refresh", "funnel.core.upward -> funnel.services.refresh"),
        ("core/reads_settings.py", "from funnel import settings", "funnel.core.reads_settings -> funnel.settings"),
        ("storage/wired.py", "from funnel import wiring", "funnel.storage.wired -> funnel.wiring"),
        ("api/sideways.py", "from funnel.cli import main", "funnel.api.sideways -> funnel.cli.main"),
        ("core/does_io.py", "import socket", "funnel.core.does_io -> socket"),
        ("core/calls_redis.py", "import redis", "funnel.core.calls_redis -> redis"),
    ],
)
def test_an_import_against_the_layers_fails_naming_it(tmp_path: Path, module: str, imports: str, named: str) -> None:
    shutil.copytree(PACKAGE, tmp_path / "plugins" / "funnel", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "plugins" / "funnel" / module).write_text(f'"""A deliberate violation."""\n\n{imports}\n')
    result = _lint_imports(tmp_path, tmp_path / "plugins")
    assert result.returncode == 1, result.stdout
    assert named in result.stdout


def test_the_core_has_no_import_cycle() -> None:
    graph = grimp.build_graph("funnel")
    core = sorted(m for m in graph.modules if m.startswith("funnel.core."))
    assert core
    cycles = [(a, b) for a in core for b in core if a < b and graph.chain_exists(a, b) and graph.chain_exists(b, a)]
    assert cycles == []


def test_module_names_are_unique_and_modules_small() -> None:
    names = [p.name for p in MODULES if p.name not in ("__init__.py", "__main__.py")]
    assert names
    assert sorted({n for n in names if names.count(n) > 1}) == []
    too_long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 450}
    assert too_long == {}


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_state_is_quoted_in_sql() -> None:
    sources = [p for p in MODULES if p.name != "migrations.py"]  # the migrations define the ENUMs
    assert sources
    found = [
        f"{p.relative_to(PACKAGE)}: {m.group(0)}"
        for p in sources
        for text in _strings(p)
        if (m := QUOTED_STATE.search(text))
    ]
    assert found == []


def test_the_check_finds_a_quoted_state() -> None:
    assert QUOTED_STATE.search(" AND state IN ('live', 'retired')")
    assert QUOTED_STATE.search("UPDATE t SET state = 'discarded' WHERE")
    assert QUOTED_STATE.search(" VALUES (%s, %s, 'staging', %s)")
    assert QUOTED_STATE.search("SUM(CASE type WHEN 'order' THEN 1 ELSE 0 END)")
    assert QUOTED_STATE.search("MIN(CASE WHEN type = 'signup' THEN at END)")
    assert not QUOTED_STATE.search(" AND state IN (%s, %s)")
