"""Headless Chromium over the DevTools protocol: the Segments page's browser tests and
``scripts/screenshots`` drive the real browser with it (Debian's ``chromium``; no driver,
no external library but ``websockets``).

    with Chromium() as browser:
        browser.goto("http://127.0.0.1:8081/ui/")
        browser.wait_for("document.body.dataset.state === 'ready'")
        browser.screenshot(Path("page.png"))

The browser runs in its own process group with a throw-away profile, on loopback only
(``--remote-debugging-port=0``: it picks a free port and writes it into the profile), and is
stopped with its whole group at the end. Script errors, failed requests and console
errors (a Content-Security-Policy violation is one) are gathered in ``problems``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: The flags every run uses (headless, no sandbox for root in a container, nothing phoning home).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    """Chromium did not start, a DevTools command failed, or a wait ran out."""


class Chromium:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, executable: str | None = None, width: int = 1400, height: int = 900, timeout: float = 30.0):
        self.executable = executable or shutil.which("chromium") or "/usr/bin/chromium"
        self.width, self.height = width, height
        self.timeout = timeout
        self.problems: list[str] = []
        self._ids = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._ws: ClientConnection | None = None
        self._log: Any = None
        self._closing = contextlib.ExitStack()

    # ------------------------------------------------------------------ start and stop

    def __enter__(self) -> Chromium:
        if not Path(self.executable).exists():
            raise BrowserError(f"{self.executable} not found: install Debian's chromium (scripts/bootstrap does)")
        self._profile = tempfile.mkdtemp(prefix="funnel-chromium-")
        window = f"--window-size={self.width},{self.height}"
        command = [self.executable, *FLAGS, f"--user-data-dir={self._profile}", window]
        self._log = open(Path(self._profile) / "chromium.log", "wb")
        self._process = subprocess.Popen(
            [*command, "about:blank"], stdout=self._log, stderr=self._log, start_new_session=True
        )
        try:
            self._ws = self._closing.enter_context(
                connect(self._page_socket(self._process, Path(self._profile)), max_size=None)
            )
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.send(f"{domain}.enable")
            self.resize(self.width, self.height)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _page_socket(self, process: subprocess.Popen[bytes], profile: Path) -> str:
        """The DevTools WebSocket of the browser's first page (the port is in the profile)."""
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None:
                raise BrowserError(f"chromium exited at start: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium did not open its DevTools port within {self.timeout}s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                pages = [t for t in json.load(answer) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise BrowserError("chromium has no page to drive")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._closing.close()
            self._ws = None
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=5)
            self._process = None
        if self._profile is not None:
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def resize(self, width: int, height: int) -> None:
        """The viewport's size in CSS pixels (what a screenshot holds)."""
        self.width, self.height = width, height
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    # ------------------------------------------------------------------ the protocol

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result (events on the way are noted)."""
        if self._ws is None:
            raise BrowserError("the browser is not running: use Chromium() as a context manager")
        self._ids += 1
        self._ws.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"{method}: no answer within {self.timeout}s")
            try:
                message = json.loads(self._ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            if message.get("id") == self._ids:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return dict(message.get("result", {}))
            self._note(message)

    def _note(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.problems.append(f"script error: {details.get('exception', {}).get('description') or details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.problems.append("console error: " + " ".join(str(a.get("value", "")) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            if params["entry"].get("source") == "network":
                return  # an HTTP error status (a 401, a 422) the page itself handles
            entry = params["entry"]
            self.problems.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.problems.append(f"request failed: {params.get('errorText')}")

    # ------------------------------------------------------------------ what a user does

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until its document has loaded."""
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, what: str | None = None) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"waited {timeout or self.timeout}s for {what or expression}; problems: {self.problems}"
                )
            time.sleep(0.05)

    def center_of(self, selector: str, frame: str | None = None) -> tuple[float, float]:
        """The middle of the first element matching ``selector`` in viewport coordinates,
        optionally inside the same-origin iframe matching ``frame``."""
        lookup = f"document.querySelector({json.dumps(selector)})"
        offset = "{x: 0, y: 0}"
        if frame is not None:
            frame_js = f"document.querySelector({json.dumps(frame)})"
            lookup = f"{frame_js}.contentDocument.querySelector({json.dumps(selector)})"
            offset = f"(() => {{ const r = {frame_js}.getBoundingClientRect(); return {{x: r.left, y: r.top}}; }})()"
        point = self.wait_for(
            f"(() => {{ const e = {lookup}; if (!e) return null; e.scrollIntoView({{block: 'center'}});"
            f" const r = e.getBoundingClientRect(), o = {offset};"
            " return r.width && r.height ? [o.x + r.left + r.width / 2, o.y + r.top + r.height / 2] : null; })()",
            what=f"{selector} to show",
        )
        return float(point[0]), float(point[1])

    def click(self, selector: str, frame: str | None = None) -> None:
        """A real mouse click in the middle of the element."""
        x, y = self.center_of(selector, frame)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def drag(self, selector: str, dx: float, dy: float = 0.0, steps: int = 20) -> None:
        """Press the mouse on the element, move it by (dx, dy) in steps, release (a splitter, a slider)."""
        x, y = self.center_of(selector)
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for step in range(1, steps + 1):
            at = {"x": x + dx * step / steps, "y": y + dy * step / steps}
            self.send("Input.dispatchMouseEvent", type="mouseMoved", button="left", buttons=1, **at)
        self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x + dx, y=y + dy, button="left", clickCount=1)

    def type_text(self, text: str) -> None:
        """Type into whatever has the focus, as a keyboard would."""
        self.send("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            text = {"text": "\r"} if kind == "keyDown" else {}
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13, **text)

    def set_cookie(self, name: str, value: str, url: str, http_only: bool = True) -> None:
        """A cookie for ``url``'s site, as a login would leave it."""
        self.send("Network.setCookie", name=name, value=value, url=url, httpOnly=http_only, sameSite="Lax")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page's height)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")
            content = metrics.get("cssContentSize") or metrics["contentSize"]
            height = max(self.height, int(content["height"]))
            clip = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
            params.update(captureBeyondViewport=True, clip=clip)
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
