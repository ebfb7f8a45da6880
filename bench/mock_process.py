"""The mock OpenRouter as a child process, for the length of a bench run, from any caller.

Owns starting ``python -m bench.mock_openrouter --port 0`` (with the
``--variant`` pacings, ``--param`` defaults and ``--api-key`` a run asks
for), waiting (bounded) for its readiness line, reading its counters, and
stopping it on every way out (normal end, error, Ctrl-C). A separate
process, so the bench's CPU figures (``process_time``) count the client only.

The launcher, ``MockChild``, is plain blocking code; the two ways to hold it
differ only in who waits: ``running_mock_child`` for callers with no loop
running (the Open WebUI bench starts the mock before and between its asyncio
loops; the smoke test beside a real Open WebUI), ``running_mock`` for trio
runs, which wait in a worker thread. On cancellation the trio side still
stops the mock (shielded) before it returns.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import trio

__all__ = [
    "BenchError",
    "MockChild",
    "MockProcess",
    "mock_stats",
    "running_mock",
    "running_mock_child",
]

_READY = re.compile(rb"mock-openrouter listening on (http://\S+)")
_READY_LIMIT = 8192
_STOP_GRACE_S = 5.0
_REPO = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchError(Exception):
    """A bench run could not go on; the message is meant for the person running it."""


@dataclass(frozen=True, slots=True)
class MockProcess:
    """A running mock: its API base URL and process id."""

    base_url: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the mock so far (Linux ``/proc``; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # Fields 14 and 15 of stat(5), counted after the ")" that ends the command name.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    @property
    def stats_url(self) -> str:
        return self.base_url.rsplit("/api/v1", 1)[0] + "/mock/stats"


class MockChild:
    """Start the mock and stop it, with blocking calls; ``stop`` is safe to call always."""

    def __init__(
        self,
        *,
        variants: Mapping[str, Mapping[str, str]] | None = None,
        params: Mapping[str, str] | None = None,
        api_key: str | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 20.0,
    ) -> None:
        self._argv = [sys.executable, "-m", "orpipe.bench.mock_openrouter", "--port", "0"]
        for name, variant in (variants or {}).items():
            pairs = "&".join(f"{key}={value}" for key, value in variant.items())
            self._argv += ["--variant", f"{name}={pairs}"]
        for key, value in (params or {}).items():
            self._argv += ["--param", f"{key}={value}"]
        if api_key is not None:
            self._argv += ["--api-key", api_key]
        self._log_path = log_path
        self._ready_timeout_s = ready_timeout_s
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MockProcess:
        """Start the child and return once it listens; ``BenchError`` if it does not."""
        # The repo on the path, so the child finds ``bench`` even without an install.
        path = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
        if self._log_path is not None:
            self._log = self._log_path.open("wb")
        self._process = subprocess.Popen(
            self._argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONPATH": path},
            cwd=str(_REPO),
            # Own session: a Ctrl-C in the terminal reaches the bench only, which
            # keeps what it measured and then stops the mock itself.
            start_new_session=True,
        )
        return MockProcess(base_url=self._await_ready(self._process), pid=self._process.pid)

    def _await_ready(self, process: subprocess.Popen[bytes]) -> str:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + self._ready_timeout_s
        seen = b""
        while b"\n" not in seen and len(seen) < _READY_LIMIT:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            seen += chunk
        # Nothing else is printed on stdout; closing our end keeps no pipe to drain.
        process.stdout.close()
        match = _READY.search(seen)
        if match is None:
            where = f" (its log: {self._log_path})" if self._log_path is not None else ""
            raise BenchError(
                "the mock OpenRouter did not report ready within "
                f"{self._ready_timeout_s:g} s{where}"
            )
        return match.group(1).decode()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def running_mock_child(
    *,
    params: Mapping[str, str] | None = None,
    api_key: str | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 20.0,
) -> Iterator[MockProcess]:
    """Start the mock, yield once it listens, and always stop it afterwards. Blocking.

    ``params`` are ``mock.*`` defaults for every request (``--param``);
    ``api_key`` makes the mock require it.
    """
    child = MockChild(
        params=params, api_key=api_key, log_path=log_path, ready_timeout_s=ready_timeout_s
    )
    try:
        yield child.start()
    finally:
        child.stop()


@asynccontextmanager
async def running_mock(
    *,
    variants: Mapping[str, Mapping[str, str]] | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 20.0,
) -> AsyncIterator[MockProcess]:
    """The same under trio: start and stop wait in a worker thread, off the loop."""
    child = MockChild(variants=variants, log_path=log_path, ready_timeout_s=ready_timeout_s)
    try:
        yield await trio.to_thread.run_sync(child.start)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(child.stop)


def mock_stats(mock: MockProcess) -> dict[str, Any] | str:
    """The mock's counters without the per-stream table; informative, so never raises. Blocking."""
    try:
        response = httpx.get(mock.stats_url, timeout=5.0)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"unavailable: {type(exc).__name__}"
    stats.pop("active_stream_events", None)
    return stats
