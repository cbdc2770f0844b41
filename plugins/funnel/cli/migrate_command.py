"""``migrate``: create or upgrade funnel's MySQL tables."""

from __future__ import annotations

from funnel import wiring
from funnel.storage.migrations import migrate


def migrate_schema() -> None:
    """Apply the pending migrations and say which (or that the schema is up to date)."""
    applied = migrate(wiring.schema_hook())
    print(f"funnel schema: {'applied migrations ' + str(applied) if applied else 'up to date'}")
