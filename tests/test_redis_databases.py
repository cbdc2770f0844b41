"""Each Redis consumer (the demo, the tests, the system and Celery stacks, every bench) has its own
database, named in ``scripts/redis-databases.env`` (the demo's in ``scripts/stack.env``); the
number its code falls back to is the same."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A fallback in the consumers' code: os.environ.get of a ..._REDIS_..._DB variable with a number.
CODE_DEFAULT = re.compile(r"""os\.environ\.get\(\s*"([A-Z_]*REDIS[A-Z_]*DB)",\s*"(\d+)"\s*\)""")


def registry() -> dict[str, int]:
    """The Redis databases the scripts name: variable -> number."""
    found = {}
    text = (ROOT / "scripts" / "stack.env").read_text() + (ROOT / "scripts" / "redis-databases.env").read_text()
    for line in text.splitlines():
        name, sep, number = line.partition("=")
        if sep and "REDIS" in name and name.endswith("DB"):
            found[name] = int(number)
    assert len(found) > 1, "scripts/redis-databases.env names no Redis database"
    return found


def test_no_two_consumers_share_a_redis_database() -> None:
    numbers = registry()
    shared = {n for n in numbers.values() if list(numbers.values()).count(n) > 1}
    assert not shared, f"Redis databases used by two consumers: {sorted(shared)} ({numbers})"
    assert all(0 <= n <= 15 for n in numbers.values()), numbers


def test_every_consumer_falls_back_to_its_registered_database() -> None:
    numbers = registry()
    defaults = [
        (path.relative_to(ROOT), name, int(number))
        for folder in ("bench", "tests", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name, number in CODE_DEFAULT.findall(path.read_text())
    ]
    assert len(defaults) >= 8, defaults
    for path, name, number in defaults:
        assert name in numbers, f"{path}: {name} is not named in scripts/redis-databases.env"
        assert number == numbers[name], f"{path}: {name} falls back to {number}, the scripts say {numbers[name]}"
