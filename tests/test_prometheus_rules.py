"""``docs/prometheus/funnel-rules.yml``: valid for Prometheus (``promtool check rules``), each alert
firing on its trouble and quiet on a healthy funnel (``promtool test rules``), each with its
runbook in ``docs/operations.md``, and naming only metrics the API exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "docs" / "prometheus"
RULES = RULES_DIR / "funnel-rules.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
SERVING_METRICS = ROOT / "plugins" / "funnel" / "api" / "serving_metrics.py"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run scripts/bootstrap (it installs Debian's prometheus)"
    return subprocess.run([binary, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False)


def alerts() -> dict[str, str]:
    """Each alert's name and expression."""
    found = {
        rule["alert"]: rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }
    assert found, "the rules file holds no alert"
    return found


def test_the_rules_are_valid_and_every_alert_fires_on_trouble_and_stays_quiet_when_healthy() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout

    tested = promtool("test", "rules", "funnel-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load((RULES_DIR / "funnel-rules.test.yml").read_text())["tests"]
    firing = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in cases for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == quiet == set(alerts()), "every alert is tested firing and quiet"


def test_every_alert_has_a_runbook_and_names_only_exported_metrics() -> None:
    operations = OPERATIONS.read_text()
    exported = SERVING_METRICS.read_text()
    for name, expr in alerts().items():
        assert f"### {name}" in operations, f"docs/operations.md has no runbook section '### {name}'"
        names = set(re.findall(r"\bfunnel_[a-z_]+", expr))
        for metric in names:
            base = re.sub(r"_total$", "", metric)
            assert f'"{base}"' in exported, f"{name} uses {metric}, which the API does not export"
