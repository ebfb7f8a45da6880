"""The mock OpenRouter as a child process, for callers that run no event loop of their own.

Owns starting ``python -m bench.mock_openrouter --port 0`` with plain
``subprocess``, waiting (bounded) for its readiness line, reading its
counters, and stopping it on every way out. ``bench.mock_process`` does the
same for the trio runs; the Open WebUI bench (``bench.owui_run``) needs a
mock that outlives several asyncio loops, one per phase, so it starts it
here, before and between those loops, where blocking calls are fine.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from orpipe.bench.mock_process import BenchError, MockProcess

__all__ = ["mock_stats", "running_mock_child"]

_READY = re.compile(rb"mock-openrouter listening on (http://\S+)")
_READY_LIMIT = 8192
_STOP_GRACE_S = 5.0
_REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running_mock_child(
    *, log_path: Path | None = None, ready_timeout_s: float = 20.0
) -> Iterator[MockProcess]:
    """Start the mock, yield once it listens, and always stop it afterwards."""
    path = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    log: IO[bytes] | None = log_path.open("wb") if log_path is not None else None
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "orpipe.bench.mock_openrouter", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(_REPO),
            # Own session: a Ctrl-C in the terminal reaches the bench only, which
            # keeps what it measured and then stops the mock itself.
            start_new_session=True,
        )
        try:
            base_url = _await_ready(process, ready_timeout_s, log_path)
            yield MockProcess(base_url=base_url, pid=process.pid)
        finally:
            _stop(process)
    finally:
        if log is not None:
            log.close()


def _await_ready(process: subprocess.Popen[bytes], timeout_s: float, log_path: Path | None) -> str:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    seen = b""
    while b"\n" not in seen and len(seen) < _READY_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        seen += chunk
    # Nothing else is printed on stdout; closing our end keeps no pipe to drain.
    process.stdout.close()
    match = _READY.search(seen)
    if match is None:
        where = f" (its log: {log_path})" if log_path is not None else ""
        raise BenchError(f"the mock OpenRouter did not report ready within {timeout_s:g} s{where}")
    return match.group(1).decode()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None and not process.stdout.closed:
        process.stdout.close()


def mock_stats(mock: MockProcess) -> dict[str, Any] | str:
    """The mock's counters without the per-stream table; informative, so never raises."""
    try:
        response = httpx.get(mock.stats_url, timeout=5.0)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"unavailable: {type(exc).__name__}"
    stats.pop("active_stream_events", None)
    return stats
