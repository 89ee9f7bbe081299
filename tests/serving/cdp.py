"""Just enough of Chromium's DevTools protocol (over websocket-client) to drive a headless page."""
from __future__ import annotations

import base64
import itertools
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

from market import codec

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """The Debian chromium binary, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """A headless Chromium with a fresh profile, one page, and a CDP session on it."""

    def __init__(self, width: int = 1400, height: int = 950) -> None:
        binary = chromium_path()
        if binary is None:
            raise FileNotFoundError("chromium")
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = self._devtools_port(timeout=30)
        targets = codec.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
        page = next(t for t in targets if t.get("type") == "page")
        # suppress_origin: Chromium refuses DevTools sockets that carry a foreign Origin.
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self.call("Runtime.enable")
        self.call("Page.enable")

    def _devtools_port(self, timeout: float) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().splitlines()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events on the way are kept as console lines)."""
        ident = next(self._ids)
        self.ws.send(codec.dumps({"id": ident, "method": method, "params": params}).decode())
        while True:
            message = codec.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + str(message["params"]["exceptionDetails"].get("text")))

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll `expression` until it is truthy (errors count as not yet, e.g. mid-navigation); its value."""
        deadline = time.monotonic() + timeout
        value = None
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        while time.monotonic() < deadline:
            value = self.evaluate(guarded)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed {value!r} for {timeout} s; console: {self.console[-10:]}")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            shutil.rmtree(self.profile, ignore_errors=True)
