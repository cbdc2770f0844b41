"""A missing Hive pool stops every refresh silently (each Hive task stays ``scheduled``): ``/readyz``,
``report`` and the Segments page say so, with the command that creates it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_driver import Chromium

from funnel import settings
from funnel.cli.airflow_commands import ensure_pool
from funnel.cli.main import main

pytestmark = pytest.mark.services  # the real MySQL, Redis or HiveServer2 (tests/conftest.py)

FIX = "python -m funnel.cli ensure-pool"


@pytest.fixture
def no_pool(airflow_db: None) -> Iterator[None]:
    """Airflow's metadata DB without funnel's Hive pool; the pool is back afterwards."""
    from airflow.models.pool import Pool

    if Pool.get_pool(settings.HIVE_POOL) is not None:
        Pool.delete_pool(settings.HIVE_POOL)
    yield
    ensure_pool()


def test_readyz_and_report_name_the_missing_pool_and_the_fix(
    no_pool: None, start_api: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    ready = start_api(token=None).get("/readyz")
    assert ready.status_code == 200  # the API serves: the refreshes are what stopped
    (warning,) = ready.json()["warnings"]
    assert f"the Airflow pool {settings.HIVE_POOL!r} does not exist" in warning
    assert warning.endswith(f"Fix: {FIX}")

    main(["report"])
    assert f"WARNING: the Airflow pool {settings.HIVE_POOL!r} does not exist" in capsys.readouterr().out

    ensure_pool()
    assert start_api(token=None).get("/readyz").json() == {"status": "ready"}  # a new app looks again
    main(["report"])
    assert "WARNING" not in capsys.readouterr().out


@pytest.mark.browser
def test_the_segments_page_shows_the_missing_pool(no_pool: None, server: tuple[httpx.Client, Path]) -> None:
    client, _log = server
    with Chromium() as browser:
        browser.goto(f"{client.base_url}/ui/")
        shown = browser.wait_for(
            "(() => { const w = document.getElementById('warning'); return w.hidden ? null : w.textContent; })()",
            what="the pool warning",
        )
        assert f"{settings.HIVE_POOL!r} does not exist" in shown
        assert FIX in shown
