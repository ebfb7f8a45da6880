"""The shared admission ledger from the valves to the engine.

``ledger_settings_for`` turns it on where Open WebUI runs on Redis (``REDIS_URL``)
unless ``GLOBAL_ADMISSION`` is off, and never shows the URL; the bridge opens
the ledger with each generation's config, hands it to the engine's ports and
closes it after the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
import trio

from orpipe.adapters.bridge import ThreadBridge
from orpipe.adapters.cluster.assembly import LedgerSettings, open_ledger
from orpipe.adapters.openwebui.valves import Valves
from orpipe.adapters.openwebui.valves.engine_settings import (
    ledger_factory_for,
    ledger_settings_for,
)
from orpipe.engine import EngineConfig, UpstreamTransport
from orpipe.engine.ports import AdmissionLedger, LedgerVerdict
from orpipe.engine.statistics import LedgerStats
from tests.adapters.asyncio_support import run_on

PASSWORD = "redis-pass-w0rd"
URL = f"redis://:{PASSWORD}@127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def no_host_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


def test_it_is_on_by_default_where_open_webui_runs_on_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ledger_settings_for(Valves(), pipe_id="orpipe") is None
    assert ledger_factory_for(Valves(), pipe_id="orpipe") == (None, None)
    monkeypatch.setenv("REDIS_URL", URL)
    settings = ledger_settings_for(Valves(), pipe_id="orpipe")
    assert settings is not None
    assert (settings.redis_url, settings.prefix) == (URL, "orpipe:admission:orpipe")
    assert (settings.lease_s, settings.workers) == (10.0, None)
    assert ledger_settings_for(Valves(GLOBAL_ADMISSION=False), pipe_id="orpipe") is None


def test_the_valves_set_the_lease_and_the_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", URL)
    valves = Valves(ADMISSION_LEASE_SECONDS=3, ADMISSION_WORKERS=4)
    settings = ledger_settings_for(valves, pipe_id="other")
    assert settings is not None
    assert (settings.lease_s, settings.workers, settings.prefix) == (
        3.0,
        4,
        "orpipe:admission:other",
    )
    with pytest.raises(ValueError, match="ADMISSION_LEASE_SECONDS"):
        Valves(ADMISSION_LEASE_SECONDS=11)


def test_the_url_shows_neither_in_repr_nor_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", URL)
    factory, key = ledger_factory_for(Valves(), pipe_id="orpipe")
    settings = ledger_settings_for(Valves(), pipe_id="orpipe")
    assert factory is not None and settings is not None
    for text in (repr(settings), str(settings), repr(key)):
        assert PASSWORD not in text and "127.0.0.1" not in text
    assert key == ledger_factory_for(Valves(), pipe_id="orpipe")[1]
    assert key != ledger_factory_for(Valves(ADMISSION_WORKERS=2), pipe_id="orpipe")[1]


async def test_the_ledger_takes_its_limits_from_the_engine_config() -> None:
    # Opening does no I/O: nothing listens on port 1, and nothing is asked of it here.
    settings = LedgerSettings(redis_url="redis://127.0.0.1:1/0", prefix="orpipe:admission:t")
    config = EngineConfig(max_concurrent_requests=7, queue_maxsize=3, busy_retry_after_s=2.0)
    async with open_ledger(settings, config) as ledger:
        port: AdmissionLedger = ledger
        stats = port.statistics()
        assert (stats.limit, stats.queue_maxsize, stats.mode) == (7, 3, "global")


class FakeLedger:
    """Admits everything; records nothing but that it is a ledger."""

    async def arrive(self, request_id: str) -> LedgerVerdict:
        return LedgerVerdict(admitted=True)

    async def retry(self, request_id: str) -> bool:
        return True

    async def leave(self, request_id: str) -> None:
        pass

    async def wait_for_change(self, timeout_s: float) -> None:
        await trio.sleep(timeout_s)

    async def run(self) -> None:
        await trio.sleep_forever()

    def statistics(self) -> LedgerStats:
        raise NotImplementedError


def test_the_bridge_opens_the_ledger_per_generation_and_gives_it_to_the_engine() -> None:
    opened: list[EngineConfig] = []
    closed: list[EngineConfig] = []
    ledgers: list[FakeLedger] = []

    @asynccontextmanager
    async def ledger_factory(config: EngineConfig) -> AsyncIterator[AdmissionLedger]:
        opened.append(config)
        ledgers.append(FakeLedger())
        try:
            yield ledgers[-1]
        finally:
            closed.append(config)

    @asynccontextmanager
    async def transport_factory(config: EngineConfig) -> AsyncIterator[UpstreamTransport]:
        yield cast(UpstreamTransport, object())  # no request is sent in this test

    first = EngineConfig(max_concurrent_requests=3)
    second = EngineConfig(max_concurrent_requests=5)

    async def scenario() -> None:
        bridge = ThreadBridge(
            first, "key", transport_factory=transport_factory, ledger_factory=ledger_factory
        )
        try:
            await bridge.start()
            assert opened == [first]
            await bridge.reconfigure(second, ledger_factory=ledger_factory)
            assert opened == [first, second]
            # (the run's current generation: what the engine was given)
            run = bridge._run
            assert run is not None and run.current is not None
            assert run.current.engine.ports.admission_ledger is ledgers[-1]
        finally:
            await bridge.aclose()
        assert sorted(c.max_concurrent_requests for c in closed) == [3, 5]

    run_on("asyncio", scenario)
