"""Regenerate the README's screenshots: ``docs/segments-page.png`` (the Segments page inside
Airflow's UI) and ``docs/dag-grid.png`` (the DAG grid after real runs). Run by ``scripts/screenshots``.

1. The demo's segment rows and Hive warehouse, in a MySQL database and Redis db of their own
   (``funnel_screenshots``, db 13: emptied first, never the demo's or the tests').
2. The real Airflow components (``tests/system/airflow_stack.py``: api-server, scheduler,
   dag-processor, triggerer on loopback, in their own process group and home), stopped at the
   end, also on failure.
3. Real runs, by the scheduler: a backfill (``POST /api/v2/backfills``) of
   ``funnel_dynamic_segments`` from two days ago to now with ``{"force": true}`` (each 09:00
   and 18:00 slot, in order; forced, because a backfill otherwise skips what the run before it
   refreshed: the overshoot rule), created before the DAG is unpaused so the scheduler adds
   no run of its own; the static segment's DAG and ``funnel_user_tags`` run on their own
   schedules once unpaused. Airflow's SQLite database is busy at times: its 5xx are retried.
4. Headless Chromium (``browser_driver``), logged in as the stack's admin: the grid, then
   the page in Airflow's navigation with ``recent_signups`` open and a user checked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests" / "system"), str(ROOT / "tests")]

from airflow_stack import AirflowStack, StackSettings, env_sh_environment  # noqa: E402
from browser_driver import Chromium  # noqa: E402

MYSQL_DB = "funnel_screenshots"
REDIS_DB = int(os.environ.get("FUNNEL_SCREENSHOTS_REDIS_DB", "10"))  # emptied: its own (scripts/redis-databases.env)
DYNAMIC_DAG = "funnel_dynamic_segments"
TAGS_DAG = "funnel_user_tags"
SHOWN_SEGMENT = "recent_signups"
CHECKED_USER = "12"  # signed up 12 days before today: in recent_signups
RUNS_TIMEOUT_SECONDS = 900.0
GRID_PANEL_WIDTH = 620  # where the grid's splitter is dragged to (CSS pixels from the left)


STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"== {message:72} ({time.monotonic() - STARTED:4.0f}s)", flush=True)


def run(env: dict[str, str], *command: str) -> None:
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def prepare_data(env: dict[str, str]) -> None:
    """An emptied MySQL database and Redis db with the demo's rows; the demo warehouse in Hive."""
    import MySQLdb
    import redis

    conn = MySQLdb.connect(host=env["FUNNEL_MYSQL_HOST"], port=int(env["FUNNEL_MYSQL_PORT"]), user="root")
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {MYSQL_DB}")
    conn.cursor().execute(f"CREATE DATABASE {MYSQL_DB}")
    conn.close()
    redis.Redis(host=env["FUNNEL_REDIS_HOST"], port=int(env["FUNNEL_REDIS_PORT"]), db=REDIS_DB).flushdb()
    py = sys.executable
    run(env, py, "-m", "funnel.cli", "migrate")
    run(env, py, "-m", "funnel.cli", "mysql", "demo/segments.sql")
    run(env, py, "-m", "funnel.cli", "hive", "demo/warehouse.hql")


class Airflow:
    """The stack's REST API v2, with the admin's token."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        login = {"username": stack.settings.username, "password": stack.settings.password}
        answer = httpx.post(f"{stack.base_url}/auth/token", json=login, timeout=30)
        answer.raise_for_status()
        self.token = str(answer.json()["access_token"])
        self.http = httpx.Client(
            base_url=f"{stack.base_url}/api/v2", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One request, tried again while Airflow's SQLite database is busy (a 5xx saying so)."""
        deadline = time.monotonic() + 60
        while True:
            response = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
            if response.status_code < 500 or time.monotonic() > deadline:
                response.raise_for_status()
                return response
            time.sleep(1)

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while self.http.get(f"/dags/{dag_id}").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit(f"{dag_id} did not appear within {timeout}s (see {self.stack.log_dir})")
            time.sleep(1)

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = RUNS_TIMEOUT_SECONDS) -> None:
        """Until ``dag_id`` has at least ``count`` runs and all of them succeeded."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
            states = [str(r["state"]) for r in runs]
            if "failed" in states:
                raise SystemExit(f"a run of {dag_id} failed: {states} (see {self.stack.log_dir})")
            if len(runs) >= count and set(states) == {"success"}:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{dag_id}: runs {states} not done within {timeout}s")
            time.sleep(2)


def make_runs(airflow: Airflow) -> None:
    """A forced backfill of the dynamic DAG up to now, then the users' tags."""
    for dag_id in (DYNAMIC_DAG, TAGS_DAG):
        airflow.wait_for_dag(dag_id)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    backfill = {
        "dag_id": DYNAMIC_DAG,
        "from_date": f"{(now - dt.timedelta(days=2)).date()}T00:00:00Z",
        "to_date": now.isoformat(),
        "dag_run_conf": {"force": True},
        "max_active_runs": 1,
        "reprocess_behavior": "none",
        "run_backwards": False,
    }
    slots = airflow.call("POST", "/backfills/dry_run", json=backfill).json()["total_entries"]
    say(f"backfill {DYNAMIC_DAG} from {backfill['from_date'][:10]} to now: {slots} runs, forced, in order")
    airflow.call("POST", "/backfills", json=backfill)
    # Unpaused only now: the backfill already holds the latest slot, so the scheduler adds no run of its own.
    airflow.call("PATCH", f"/dags/{DYNAMIC_DAG}", json={"is_paused": False})
    say(f"{TAGS_DAG}: unpaused, so the scheduler loads the users' tags for its latest slot")
    airflow.call("PATCH", f"/dags/{TAGS_DAG}", json={"is_paused": False})
    airflow.wait_for_runs(DYNAMIC_DAG, slots)
    airflow.wait_for_runs(TAGS_DAG, 1)


def take_screenshots(stack: AirflowStack, airflow: Airflow, out: Path) -> list[Path]:
    shots = []
    with Chromium(width=1440, height=960) as browser:
        browser.set_cookie("_token", airflow.token, stack.base_url, http_only=False)  # as Airflow's login page does
        say("screenshot: the DAG grid")
        browser.goto(f"{stack.base_url}/dags/{DYNAMIC_DAG}")
        browser.wait_for(
            "document.querySelectorAll('[data-testid^=\"grid-backfill\"]').length >= 3", timeout=60, what="the grid"
        )
        time.sleep(1.0)  # the panels' layout settles
        splitter, _ = browser.center_of("[role=separator]")
        browser.drag("[role=separator]", GRID_PANEL_WIDTH - splitter)  # a wider grid panel: every run shows
        browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=GRID_PANEL_WIDTH // 2, y=700)  # no tooltip
        time.sleep(1.5)  # the bars' transitions
        shots.append(browser.screenshot(out / "dag-grid.png"))

        say("screenshot: the Segments page in Airflow's navigation")
        frame = "iframe[title=Segments]"
        page = f"document.querySelector({frame!r})?.contentDocument"
        browser.goto(f"{stack.base_url}/plugin/funnel-segments")
        browser.wait_for(f"{page}?.body?.dataset.state === 'ready'", timeout=60, what="the page's list")
        browser.click(f"#segments tr[data-segment={SHOWN_SEGMENT}] a", frame=frame)
        browser.wait_for(f"{page}.getElementById('detail').dataset.state === 'ready'", what="the segment")
        browser.click("#member-id", frame=frame)
        browser.type_text(CHECKED_USER)
        browser.press_enter()
        browser.wait_for(f"{page}.getElementById('member-answer').className", what="the member box")
        browser.evaluate(f"{page}.defaultView.scrollTo(0, 0)")
        time.sleep(0.5)
        browser.resize(1440, 1480)  # the list and the open segment, whole
        shots.append(browser.screenshot(out / "segments-page.png"))
        if browser.problems:
            raise SystemExit("the browser saw problems:\n  " + "\n  ".join(browser.problems))
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--home", type=Path, default=ROOT / ".run" / "airflow-screenshots")
    args = parser.parse_args()
    env = env_sh_environment({"FUNNEL_MYSQL_DB": MYSQL_DB, "FUNNEL_REDIS_DB": str(REDIS_DB)})
    say(f"demo rows and warehouse (MySQL {MYSQL_DB}, Redis db {REDIS_DB}, Hive funnel_demo)")
    prepare_data(env)
    say("Airflow: api-server, scheduler, dag-processor, triggerer on 127.0.0.1")
    stack = AirflowStack(StackSettings(home=args.home, mysql_db=MYSQL_DB, redis_db=REDIS_DB))
    try:
        stack.start()
        say(f"Airflow is up at {stack.base_url}")
        airflow = Airflow(stack)
        make_runs(airflow)
        shots = take_screenshots(stack, airflow, args.out)
    finally:
        say("stopping Airflow")
        stack.stop()
    for shot in shots:
        print(f"wrote {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}")


if __name__ == "__main__":
    main()
