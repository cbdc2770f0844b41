"""The routes and the hot paths talk only to ``Service``: no route imports a store or reaches
into the service's clients, pools or executors. Reads the source; no server."""

from __future__ import annotations

import ast
from pathlib import Path

API = Path(__file__).resolve().parents[3] / "plugins" / "funnel" / "api"
ENTRY_MODULES = sorted([*API.glob("*_routes.py"), API / "fast_paths.py", API / "app.py"])


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_there_are_routers_by_resource() -> None:
    names = {path.stem for path in ENTRY_MODULES}
    assert {"segment_routes", "member_routes", "user_routes", "webhook_routes", "fast_paths"} <= names


def test_no_route_imports_a_store() -> None:
    reaching = {
        path.name: module
        for path in ENTRY_MODULES
        for module in _imports(ast.parse(path.read_text()))
        if module.startswith("funnel.storage")
    }
    assert reaching == {}


def test_no_route_reaches_into_the_service() -> None:
    """``service.<method>(...)`` only: never its private parts, its restorer or its previews."""
    inner = ("restorer", "previews", "mysql", "redis", "resp")
    reaching = [
        f"{path.name}:{node.lineno} service.{node.attr}"
        for path in ENTRY_MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "service"
        and (node.attr.startswith("_") or node.attr in inner)
    ]
    assert reaching == []
