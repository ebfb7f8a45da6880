"""The mock OpenRouter as a child process, for the length of a bench run.

Owns starting ``python -m bench.mock_openrouter --port 0``, waiting for its
readiness line, and stopping it on every way out (normal end, error,
Ctrl-C). A separate process, so the bench's CPU figures (``process_time``)
count the client only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import trio

__all__ = ["BenchError", "MockProcess", "fetch_mock_stats", "running_mock"]

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


@asynccontextmanager
async def running_mock(
    *, log_path: Path | None = None, ready_timeout_s: float = 20.0
) -> AsyncIterator[MockProcess]:
    """Start the mock, yield once it listens, and always stop it afterwards."""
    # The repo on the path, so the child finds ``bench`` even without an install.
    path = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    log: IO[bytes] | None = log_path.open("wb") if log_path is not None else None
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "orpipe.bench.mock_openrouter", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(_REPO),
            # Own session: a Ctrl-C in the terminal reaches the bench only, which
            # then measures what it has and stops the mock itself, in order.
            start_new_session=True,
        )
        try:
            base_url = await _await_ready(process, ready_timeout_s, log_path)
            yield MockProcess(base_url=base_url, pid=process.pid)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
    finally:
        if log is not None:
            log.close()


async def _await_ready(process: trio.Process, timeout_s: float, log_path: Path | None) -> str:
    assert process.stdout is not None
    seen = b""
    with trio.move_on_after(timeout_s):
        while b"\n" not in seen and len(seen) < _READY_LIMIT:
            chunk = await process.stdout.receive_some(1024)
            if not chunk:
                break
            seen += chunk
    # Nothing else is printed on stdout; closing our end keeps no pipe to drain.
    await process.stdout.aclose()
    match = _READY.search(seen)
    if match is None:
        where = f" (its log: {log_path})" if log_path is not None else ""
        raise BenchError(f"the mock OpenRouter did not report ready within {timeout_s:g} s{where}")
    return match.group(1).decode()


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(_STOP_GRACE_S):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


async def fetch_mock_stats(mock: MockProcess) -> dict[str, Any]:
    """The mock's counters (``GET /mock/stats``), without the per-stream table."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(mock.stats_url)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
    stats.pop("active_stream_events", None)
    return stats
