"""``EngineBridge.wait_persisted``: the persister's barrier from asyncio, in one crossing.

The history loader settles on it before reading a chat's artifacts, and
never looks at the engine's statistics to decide.
"""

from __future__ import annotations

import dataclasses

import pytest

from orpipe.adapters.openwebui import history as owui_history
from orpipe.engine import EngineClosed, OutputItem
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.statistics import EngineStatistics
from tests.adapters.asyncio_support import BRIDGES, Mock, bridge_with_store, run_on
from tests.engine.support import MemoryStore, request


@pytest.mark.parametrize("bridge_kind", sorted(BRIDGES))
def test_the_history_settles_on_the_barrier_not_on_statistics(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    store = MemoryStore()
    store.slow_s = 0.3  # the write is still under way when the answer has ended

    async def scenario() -> None:
        bridge = bridge_with_store(bridge_kind, mock, store)

        async def no_statistics() -> EngineStatistics:
            raise AssertionError("the history loader must not read statistics")

        bridge.statistics = no_statistics  # type: ignore[method-assign]
        try:
            assert await owui_history._settle(bridge) is False  # not running: nothing to wait for
            req = dataclasses.replace(
                request("reasoning", tokens=5),
                artifacts=ArtifactContext(chat_id="c1", message_id="m1"),
            )
            ids: list[str] = []
            async for event in await bridge.submit(req):
                if isinstance(event, OutputItem) and event.artifact_id is not None:
                    ids.append(event.artifact_id)
            assert ids
            assert await owui_history._settle(bridge) is False
            assert set(ids) <= set(store.rows)  # written by the time the barrier opened
            assert await bridge.wait_persisted(2.0) is False  # nothing pending: at once
        finally:
            await bridge.aclose()
        with pytest.raises(EngineClosed):
            await bridge.wait_persisted(2.0)

    run_on(loop_kind, scenario)
