"""Headless Chromium over the DevTools protocol (trio): open a page, evaluate, screenshot.

Used by the dashboard test, by ``python -m bench.telemetry_run --screenshot`` and by the
browser step of ``make owui-smoke`` (``bench.owui_browser``), which also types, clicks and
presses keys through the protocol's ``Input`` domain so the page sees real input events.
The protocol, not ``--dump-dom`` / ``--screenshot`` with a virtual-time budget:
a page that waits on a WebSocket has no fixed "ready" moment, so callers poll
the page (``evaluate``) until it shows what they need, under their own
deadline.

``open_chromium(url, profile_dir)`` owns one Chromium process (Debian's
``chromium`` package) and its DevTools WebSocket for the duration of the
block. On exit or cancellation the WebSocket is closed and the process is
terminated (``trio.run_process``'s cancellation: SIGTERM, then SIGKILL after
5 s).
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

__all__ = ["ChromiumMissing", "DevToolsPage", "open_chromium"]


class ChromiumMissing(RuntimeError):
    """No ``chromium`` executable on PATH."""

    def __init__(self) -> None:
        super().__init__(
            "chromium is not installed; install Debian's chromium package "
            "(bash tests/services.sh does it)."
        )


class DevToolsPage:
    """One page target of a running Chromium."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its result."""
        call_id = next(self._ids)
        await self._ws.send_message(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive only for enabled domains; skip any all the same
            reply = json.loads(await self._ws.get_message())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        """The expression's value in the page, or None if it threw (e.g. mid-navigation)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            return None
        return result["result"].get("value")

    async def evaluate_or_raise(self, expression: str, *, await_promise: bool = False) -> Any:
        """The expression's value in the page (a promise's, with ``await_promise``);
        RuntimeError with the page's exception text if it threw."""
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        details = result.get("exceptionDetails")
        if details:
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text") or "exception"
            raise RuntimeError(f"page script failed: {text}")
        return result["result"].get("value")

    async def add_init_script(self, source: str) -> None:
        """Run ``source`` in every new document before the page's own scripts.

        Enables the Page domain first (Chromium ignores the script otherwise); its events
        are then skipped by ``call`` like any other."""
        await self.call("Page.enable")
        await self.call("Page.addScriptToEvaluateOnNewDocument", source=source)

    async def navigate(self, url: str) -> None:
        """Start loading ``url``; poll the page (``evaluate``) to know when it is ready."""
        result = await self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")

    async def click(self, x: float, y: float) -> None:
        """A left click at viewport coordinates: move, press, release."""
        await self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def insert_text(self, text: str) -> None:
        """Type ``text`` into the focused element (one input event, as an IME commits)."""
        await self.call("Input.insertText", text=text)

    async def press_key(self, key: str) -> None:
        """Press and release one named key: ``Enter``, ``Escape``, ``Tab`` or ``Backspace``."""
        code, text = _KEYS[key]
        down: dict[str, Any] = {"key": key, "code": key, "windowsVirtualKeyCode": code}
        if text:
            await self.call("Input.dispatchKeyEvent", type="keyDown", text=text, **down)
        else:
            await self.call("Input.dispatchKeyEvent", type="rawKeyDown", **down)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **down)

    async def screenshot(self, path: Path) -> None:
        """Save the page as a PNG."""
        result = await self.call("Page.captureScreenshot", format="png")
        await trio.Path(path).parent.mkdir(parents=True, exist_ok=True)
        await trio.Path(path).write_bytes(base64.b64decode(result["data"]))


#: Named keys for ``press_key``: Windows virtual key code and the text the key types.
_KEYS: dict[str, tuple[int, str]] = {
    "Enter": (13, "\r"),
    "Escape": (27, ""),
    "Tab": (9, ""),
    "Backspace": (8, ""),
}


@asynccontextmanager
async def open_chromium(
    url: str, profile_dir: Path, *, window: tuple[int, int] = (1400, 1000)
) -> AsyncIterator[DevToolsPage]:
    """Headless Chromium showing ``url``, with its profile in ``profile_dir``."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise ChromiumMissing()
    command = [
        executable,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile_dir}",
        f"--window-size={window[0]},{window[1]}",
        url,
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        )
        port = await _devtools_port(profile_dir)
        page_url = await _page_target(port)
        async with open_websocket_url(page_url, max_message_size=64 * 1024 * 1024) as ws:
            yield DevToolsPage(ws)
        nursery.cancel_scope.cancel()  # terminates Chromium


async def _devtools_port(profile_dir: Path) -> int:
    """Chromium writes its DevTools port to ``DevToolsActivePort`` once it listens."""
    port_file = trio.Path(profile_dir / "DevToolsActivePort")
    with trio.fail_after(60):
        while True:
            try:
                lines = (await port_file.read_text()).split()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2:  # the port, then the browser target's path
                return int(lines[0])
            await trio.sleep(0.05)


async def _page_target(port: int) -> str:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(60):
            while True:
                targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
                await trio.sleep(0.05)
