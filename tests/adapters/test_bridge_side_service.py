"""The bridge's side service (the telemetry server's slot): it runs beside each engine
generation, sees that generation's statistics, and stops when the generation retires
or the bridge closes, before the engine does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import trio

from orpipe.engine import EngineConfig, EngineStatistics
from tests.adapters.asyncio_support import BRIDGES, Mock, run_on
from tests.engine.support import API_KEY


class RecordingService:
    """A side service that records each run: started, the limit it saw, and how it ended."""

    def __init__(self) -> None:
        self.runs: list[dict[str, object]] = []

    async def __call__(self, statistics: Callable[[], EngineStatistics]) -> None:
        run: dict[str, object] = {"limit": statistics().admission.max_concurrent}
        self.runs.append(run)
        try:
            await trio.sleep_forever()
        finally:
            # The engine is still open when the service is cancelled.
            run["limit_at_end"] = statistics().admission.max_concurrent
            run["ended"] = True


@pytest.mark.parametrize("bridge_kind", sorted(BRIDGES))
def test_the_side_service_follows_the_engine_generations(mock: Mock, bridge_kind: str) -> None:
    service = RecordingService()

    async def scenario() -> None:
        config = EngineConfig(base_url=mock.base_url, max_concurrent_requests=3)
        bridge = BRIDGES[bridge_kind](config, API_KEY, side_service=service)
        try:
            await bridge.start()
            await bridge.statistics()  # a crossing: the service has been started by now
            assert service.runs == [{"limit": 3}]
            await bridge.reconfigure(
                EngineConfig(base_url=mock.base_url, max_concurrent_requests=5),
                side_service=service,
            )
            # The retired generation's service is cancelled at once (even with streams still
            # open, so the next one can take its port); bounded by run_on's limit.
            while not service.runs[0].get("ended") or len(service.runs) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert service.runs[0] == {"limit": 3, "limit_at_end": 3, "ended": True}
            assert service.runs[1] == {"limit": 5}
        finally:
            await bridge.aclose()
        assert service.runs[1] == {"limit": 5, "limit_at_end": 5, "ended": True}

    run_on("asyncio", scenario)
