"""Shared by the asyncio adapter tests: the mock OpenRouter in a subprocess, loops, bounds.

The adapter tests are plain sync test functions that run an asyncio (or uvloop)
loop themselves, so pytest-trio stays out of the way; the mock runs as its own
process, as it would in production, reached over loopback.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orpipe.adapters.bridge import GuestModeBridge, ThreadBridge
from orpipe.engine.config import EngineConfig
from orpipe.engine.ports import ArtifactStore
from tests.engine.support import API_KEY

#: Both bridges, by the name the tests are parametrised with.
BRIDGES: dict[str, type[GuestModeBridge] | type[ThreadBridge]] = {
    "guest": GuestModeBridge,
    "thread": ThreadBridge,
}

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"mock-openrouter listening on (http://\S+)")
TEST_LIMIT_S = 5.0


@dataclass(frozen=True)
class Mock:
    base_url: str

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.root + "/mock/stats", timeout=5.0).json()
        return stats

    @property
    def root(self) -> str:
        return self.base_url.rsplit("/api/v1", 1)[0]


@contextmanager
def mock_process(*, api_key: str | None = None, variants: tuple[str, ...] = ()) -> Iterator[Mock]:
    """``python -m bench.mock_openrouter`` on a free port, stopped with SIGTERM.

    ``variants`` are ``--variant`` specs (``NAME=tokens=60&tps=200``), served as
    models ``mock/<scenario>:NAME``.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    argv = [sys.executable, "-m", "orpipe.bench.mock_openrouter", "--port", "0"]
    if api_key is not None:
        argv += ["--api-key", api_key]
    for spec in variants:
        argv += ["--variant", spec]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, env=env, cwd=str(REPO), start_new_session=True
    )
    assert process.stdout is not None
    try:
        # The readiness line comes from a thread, so a silent mock fails the
        # test after a bound instead of hanging on readline().
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(20.0)
        match = READY.search(line[0].decode()) if line else None
        assert match is not None, "the mock OpenRouter did not report ready within 20 s"
        yield Mock(base_url=match.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        pytest.fail(
            "uvloop is not installed; the adapters must be tested on uvloop (Open WebUI's "
            "loop): pip install 'uvloop>=0.19,<0.24'"
        )
    return uvloop.new_event_loop()


def run_on(
    loop_kind: str, scenario: Callable[[], Awaitable[None]], *, limit_s: float = TEST_LIMIT_S
) -> None:
    """Run ``scenario()`` on a fresh loop of that kind, failing after ``limit_s``."""

    async def bounded() -> None:
        async with asyncio.timeout(limit_s):
            await scenario()

    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as runner:
        runner.run(bounded())


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, limit_s: float = 3.0) -> None:
    """Poll a condition with a bound (for state that has no event to wait on)."""
    async with asyncio.timeout(limit_s):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def mock_streams_are(mock: Mock, n: int) -> bool:
    stats = await asyncio.to_thread(mock.stats)
    return bool(stats["streams_active"] == n)


async def mock_idle(mock: Mock) -> bool:
    return await mock_streams_are(mock, 0)


def bridge_with_store(
    bridge_kind: str, mock: Mock, store: ArtifactStore
) -> GuestModeBridge | ThreadBridge:
    """A bridge of that kind on the mock whose engine persists into ``store``."""

    @asynccontextmanager
    async def store_factory() -> AsyncIterator[ArtifactStore]:
        yield store

    return BRIDGES[bridge_kind](
        EngineConfig(base_url=mock.base_url, shutdown_grace_s=1.0),
        API_KEY,
        store_factory=store_factory,
    )
