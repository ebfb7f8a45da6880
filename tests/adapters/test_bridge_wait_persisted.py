"""The persister's barrier from asyncio: ``EngineBridge.wait_persisted``, and
``call_store_when_persisted``, the history loader's one crossing (the barrier, then
the read). The loader never looks at the engine's statistics to decide.
"""

from __future__ import annotations

import dataclasses

import pytest

from orpipe.engine import EngineClosed, OutputItem
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.ports import ArtifactStore
from orpipe.engine.statistics import EngineStatistics
from tests.adapters.asyncio_support import BRIDGES, Mock, bridge_with_store, run_on
from tests.engine.support import MemoryStore, request


@pytest.mark.parametrize("bridge_kind", sorted(BRIDGES))
def test_the_history_reads_after_the_barrier_not_after_statistics(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    store = MemoryStore()
    store.slow_s = 0.3  # the write is still under way when the answer has ended

    async def scenario() -> None:
        bridge = bridge_with_store(bridge_kind, mock, store)

        async def no_statistics() -> EngineStatistics:
            raise AssertionError("the history loader must not read statistics")

        async def stored(_: ArtifactStore) -> set[str]:
            return set(store.rows)  # what the store holds once the barrier has opened

        bridge.statistics = no_statistics  # type: ignore[method-assign]
        try:
            # Not running yet: it starts, and there is nothing to wait for.
            assert await bridge.call_store_when_persisted(stored, 2.0) == (set(), False)
            req = dataclasses.replace(
                request("reasoning", tokens=5),
                artifacts=ArtifactContext(chat_id="c1", message_id="m1"),
            )
            ids: list[str] = []
            async for event in await bridge.submit(req):
                if isinstance(event, OutputItem) and event.artifact_id is not None:
                    ids.append(event.artifact_id)
            assert ids
            rows, writes_failing = await bridge.call_store_when_persisted(stored, 2.0)
            assert writes_failing is False
            assert rows is not None and set(ids) <= rows  # written when the barrier opened
            assert await bridge.wait_persisted(2.0) is False  # nothing pending: at once
        finally:
            await bridge.aclose()
        with pytest.raises(EngineClosed):
            await bridge.wait_persisted(2.0)

    run_on(loop_kind, scenario)
