"""The runtime's engine generations: which valve changes start one, and which do not.

A new generation (``EngineBridge.reconfigure``) is for knobs the engine reads
from its configuration. The text batching of a request (the streaming valves)
travels with the request itself, so changing it must keep the engine running
as it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orpipe.adapters.openwebui import runtime as owui_runtime
from orpipe.adapters.openwebui.runtime import BridgeTarget, PipeRuntime
from orpipe.adapters.openwebui.valves import Valves
from orpipe.engine.config import EngineConfig

#: Valve changes that only alter what each request carries (its text batching).
PER_REQUEST_CHANGES = [
    {"STREAMING_UPDATE_CHAR_LIMIT": 77},
    {"STREAMING_IDLE_FLUSH_MS": 900},
    {"STREAMING_UPDATE_PROFILE": "slow"},
]
#: Valve changes the engine reads from its configuration.
ENGINE_CHANGES = [
    {"MAX_CONCURRENT_REQUESTS": 7},
    {"REQUEST_QUEUE_MAXSIZE": 12},
    {"ENGINE_OVERRIDES": "request_window_events=512"},
]


def target(**valves: Any) -> BridgeTarget:
    return BridgeTarget(config=Valves(**valves).engine_config(), api_key="sk-or-test-key")


class RecordingBridge:
    """Stands in for a bridge: records the configurations it is given."""

    def __init__(self, config: EngineConfig, api_key: str, **_: object) -> None:
        self.configs = [config]
        self.open_streams = 0

    async def start(self) -> None:
        pass

    async def reconfigure(self, config: EngineConfig, **_: object) -> None:
        self.configs.append(config)

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("change", PER_REQUEST_CHANGES)
def test_a_per_request_valve_keeps_the_fingerprint(change: dict[str, Any]) -> None:
    before, after = target(), target(**change)
    assert before.config != after.config, "the valve does reach the config"
    assert after.fingerprint() == before.fingerprint()


@pytest.mark.parametrize("change", ENGINE_CHANGES)
def test_an_engine_valve_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert target(**change).fingerprint() != target().fingerprint()


def test_the_key_changes_the_fingerprint_without_appearing_in_it() -> None:
    other = BridgeTarget(config=target().config, api_key="sk-or-another-key")
    assert other.fingerprint() != target().fingerprint()
    assert "sk-or" not in repr(target().fingerprint())


def test_only_engine_valves_start_a_new_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owui_runtime, "ThreadBridge", RecordingBridge)

    async def scenario() -> list[EngineConfig]:
        runtime = PipeRuntime(asyncio.get_running_loop())
        bridge = await runtime.bridge(target())
        for change in PER_REQUEST_CHANGES:
            assert await runtime.bridge(target(**change)) is bridge
        assert isinstance(bridge, RecordingBridge)
        assert len(bridge.configs) == 1, "streaming valves: the same engine generation"
        assert await runtime.bridge(target(MAX_CONCURRENT_REQUESTS=7)) is bridge
        await runtime.aclose()
        return bridge.configs

    configs = asyncio.run(scenario())
    assert [config.max_concurrent_requests for config in configs] == [200, 7]
