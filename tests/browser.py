"""Open a page in headless Chromium and report what a person would see: a full-page PNG, the page's text, its
images that did not load, and every console error, uncaught exception and failed load.

It speaks the Chrome DevTools Protocol over --remote-debugging-pipe (JSON messages ending in a NUL byte on the
browser's file descriptors 3 and 4), so it needs nothing beyond the standard library and the browser.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass
class Rendered:
    png: bytes
    text: str
    broken_images: list[str]   # alt text (or a src prefix) of each <img> that did not decode
    images: int
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads


class Browser:
    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends move above fd 9 first, so that placing them on 3 and 4 cannot overwrite one another.
        to_browser_r, from_browser_w = (_above_nine(fd) for fd in (to_browser_r, from_browser_w))
        self._profile = tempfile.TemporaryDirectory(prefix="medal-chromium-", ignore_cleanup_errors=True)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", "about:blank"]
        # The browser reads commands on fd 3 and writes replies on fd 4 (bash: dash refuses fds above 9).
        shell = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.process = subprocess.Popen(["bash", "-c", shell, "bash", *args], pass_fds=(to_browser_r, from_browser_w),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def close(self) -> None:
        """Ask the browser to quit, then end its whole process group (renderers included) either way."""
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in self.events."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            event = self._read()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium sent nothing for {self.timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


CHECK_IMAGES = """JSON.stringify([...document.images].map(i => [i.complete && i.naturalWidth > 0,
                                                                   i.alt || i.src.slice(0, 60)]))"""


def render(page: Path, binary: str, width: int = 1280) -> Rendered:
    """Load `page` (a local file) and wait for it; return its screenshot, text, broken images and errors."""
    with Browser(binary) as browser:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session)
        browser.send("Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1,
                     mobile=False)
        browser.send("Page.navigate", session, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        checked = json.loads(browser.send("Runtime.evaluate", session, expression=CHECK_IMAGES,
                                          returnByValue=True)["result"]["value"])
        text = browser.send("Runtime.evaluate", session, expression="document.body.innerText",
                            returnByValue=True)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        errors = [error for e in browser.events if (error := _error(e))]
    return Rendered(base64.b64decode(shot["data"]), text, [name for ok, name in checked if not ok], len(checked), errors)


def _error(event: dict) -> str | None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return "exception: " + params["exceptionDetails"].get("exception", {}).get("description", params["exceptionDetails"]["text"])
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip()
    if method == "Network.loadingFailed":
        return f"load failed: {params.get('errorText')}"
    return None
