"""The committed document is good enough for a third-party generator, not only for FastAPI:
``openapi-python-client`` generates a client from ``docs/openapi.json`` into a temporary folder,
without a warning, and that client calls three routes of the API as deployed."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import READ_TOKEN, WRITE_TOKEN

pytestmark = [pytest.mark.services, pytest.mark.single_redis]  # real services; the single Redis (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "generated_funnel"


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Any]:
    """The generated package, imported from ``tmp_path``."""
    config = tmp_path / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\nproject_name_override: generated-funnel\n")
    tool = Path(sys.executable).parent / "openapi-python-client"
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff post-hook
    argv = [str(tool), "generate", "--path", str(ROOT / "docs" / "openapi.json"), "--meta", "none"]
    done = subprocess.run(
        [*argv, "--config", str(config), "--output-path", str(tmp_path / PACKAGE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_a_generated_client_calls_the_api(
    generated: Any,
    server: tuple[httpx.Client, Any],
    add_segment: Callable[..., None],
    refresh: Callable[..., Any],
) -> None:
    add_segment("buyers")
    refresh("buyers", ["1", "2", "3"])
    base = str(server[0].base_url)
    is_member = importlib.import_module(f"{PACKAGE}.api.membership.is_member")
    check_members = importlib.import_module(f"{PACKAGE}.api.membership.check_members")
    add_webhook = importlib.import_module(f"{PACKAGE}.api.webhooks.add_webhook")
    models = importlib.import_module(f"{PACKAGE}.models")

    reader = generated.AuthenticatedClient(base_url=base, token=READ_TOKEN)
    answer = is_member.sync("buyers", "2", client=reader)
    assert isinstance(answer, models.Membership)
    assert (answer.member, answer.version, answer.stale) == (True, 1, False)

    checked = check_members.sync("buyers", client=reader, body=models.CheckBody(user_ids=["1", "7"]))
    assert isinstance(checked, models.CheckAnswer)
    assert checked.members.to_dict() == {"1": True, "7": False}

    missing = is_member.sync("nosuch", "2", client=reader)
    assert isinstance(missing, models.ErrorAnswer)  # the 404's error model, typed
    assert "nosuch" in missing.error

    writer = generated.AuthenticatedClient(base_url=base, token=WRITE_TOKEN)
    body = models.WebhookBody(segment_id="buyers", url="https://hooks.example.com/funnel")
    hook = add_webhook.sync(client=writer, body=body)
    assert isinstance(hook, models.NewWebhook)
    assert (hook.segment_id, hook.enabled) == ("buyers", True)
