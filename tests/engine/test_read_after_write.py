"""Read-after-write across workers: an ending waits until its own artifacts are written.

Two engines in one trio run stand for two workers; they share one artifact
store (``MemoryStore``), each through a ``GatedStore`` of its own so that one
worker's writes can be held back. Nothing here measures time: the tests hold
writes on an event and look at the engine's statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import trio

from orpipe.engine import ChatRequest, Engine, OutputItem
from orpipe.engine.artifacts import Artifact, ArtifactContext
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import ConfigError
from orpipe.engine.messages import Cancelled, Completed
from tests.engine.support import MemoryStore, collect, mock_server, request, running_engine
from tests.engine.support import wait_until as wait_for


class GatedStore(MemoryStore):
    """One worker's view of the shared ``MemoryStore``: its writes wait for ``gate``."""

    def __init__(self, shared: MemoryStore) -> None:
        super().__init__()
        self.rows = shared.rows  # one store for every worker
        self.writes_per_id = shared.writes_per_id
        self.gate = trio.Event()
        self.gate.set()

    async def write(self, artifacts: Sequence[Artifact]) -> None:
        await self.gate.wait()
        await super().write(artifacts)


def turn(chat: str, n: int) -> ChatRequest:
    req = request("reasoning", tokens=5, seed=n)
    context = ArtifactContext(chat_id=chat, message_id=f"msg-{n}")
    return dataclasses.replace(req, artifacts=context)


def artifact_ids(events: Sequence[object]) -> list[str]:
    return [e.artifact_id for e in events if isinstance(e, OutputItem) and e.artifact_id]


def durable(engine: Engine) -> dict[str, int]:
    persister = engine.statistics().actors["persister"]
    return {k: v for k, v in persister.items() if "durable" in k}


async def test_the_next_turn_on_another_worker_finds_the_artifacts_of_a_slow_writer() -> None:
    shared = MemoryStore()
    store_a, store_b = GatedStore(shared), GatedStore(shared)
    store_a.gate = trio.Event()  # A's persister is held until the test lets it write
    async with (
        mock_server() as server,
        running_engine(server, artifacts=store_a) as engine_a,
        running_engine(server, artifacts=store_b) as engine_b,
    ):
        ending_seen = trio.Event()
        got: list[object] = []

        async def first_turn() -> None:
            async with engine_a.submit(turn("chat-x", 1)) as stream:
                async for event in stream:
                    got.append(event)
            ending_seen.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_turn)
            # The answer is out but for its ending, which waits for the write.
            await wait_for(lambda: durable(engine_a).get("now_durable_waiting") == 1)
            assert not ending_seen.is_set() and artifact_ids(got)
            assert not shared.rows
            store_a.gate.set()
        # At once, on the other worker: its own barrier has nothing to wait for,
        # and the store already has what A's answer referenced.
        await engine_b.wait_persisted(0.0)
        (artifact_id,) = artifact_ids(got)
        found = await store_b.fetch("chat-x", [artifact_id])
        assert list(found) == [artifact_id]
        ending = got[-1]
        assert isinstance(ending, Completed) and ending.unwritten_artifact_ids == ()
        stats = durable(engine_a)
    assert stats["durable_waits"] == 1 and stats["now_durable_waiting"] == 0
    assert "durable_timeouts" not in stats and "durable_unwritten" not in stats


async def test_a_writer_slower_than_the_timeout_ends_the_answer_without_its_references() -> None:
    shared = MemoryStore()
    store_a, store_b = GatedStore(shared), GatedStore(shared)
    store_a.gate = trio.Event()
    async with (
        mock_server() as server,
        running_engine(server, artifacts=store_a, durable_wait_s=0.05) as engine_a,
        running_engine(server, artifacts=store_b) as engine_b,
    ):
        got = await collect(engine_a.submit(turn("chat-y", 2)))
        (artifact_id,) = artifact_ids(got.events)
        assert isinstance(got.ending, Completed)
        assert got.ending.unwritten_artifact_ids == (artifact_id,)
        # The other worker does not find it: the consumer left the reference out.
        await engine_b.wait_persisted(0.0)
        assert await store_b.fetch("chat-y", [artifact_id]) == {}
        stats = durable(engine_a)
        assert stats["durable_timeouts"] == 1 and stats["durable_unwritten"] == 1
        assert stats["now_durable_wait_max_ms"] >= 50
        # Written later all the same: the next turn finds it as an orphan.
        store_a.gate.set()
        await wait_for(lambda: artifact_id in shared.rows)


async def test_a_failing_store_does_not_hold_the_ending_for_the_timeout() -> None:
    store = MemoryStore()
    store.down = True
    async with (
        mock_server() as server,
        running_engine(
            server,
            artifacts=store,
            durable_wait_s=60,
            persist_retry_initial_s=0.05,
            persist_retry_max_s=0.1,
        ) as engine,
    ):
        # Bounded far below durable_wait_s: the first failed write releases the wait.
        with trio.fail_after(30):
            got = await collect(engine.submit(turn("chat-z", 3)))
        assert isinstance(got.ending, Completed)
        assert got.ending.unwritten_artifact_ids == tuple(artifact_ids(got.events))
        stats = durable(engine)
        assert stats["durable_store_failing"] == 1 and "durable_timeouts" not in stats
        store.down = False  # the shutdown then flushes the backlog


async def test_a_cancelled_request_does_not_wait_and_names_what_is_not_written() -> None:
    store = GatedStore(MemoryStore())
    store.gate = trio.Event()
    async with (
        mock_server() as server,
        running_engine(server, artifacts=store, durable_wait_s=60) as engine,
    ):
        req = turn("chat-c", 4)
        with trio.fail_after(30):  # far below durable_wait_s
            async with engine.submit(req) as stream:
                events = []
                async for event in stream:
                    events.append(event)
                    if isinstance(event, OutputItem):
                        engine.cancel(req.request_id, "the test stops it")
        ending = stream.ending
        assert isinstance(ending, Cancelled)
        assert ending.unwritten_artifact_ids == tuple(artifact_ids(events))
        assert "durable_waits" not in durable(engine)
        store.gate.set()


async def test_a_consumer_cancelled_during_the_wait_leaves_at_once() -> None:
    store = GatedStore(MemoryStore())
    store.gate = trio.Event()
    async with (
        mock_server() as server,
        running_engine(server, artifacts=store, durable_wait_s=60) as engine,
    ):
        stream = engine.submit(turn("chat-d", 5))
        with trio.CancelScope() as scope:

            async def cancel_when_waiting() -> None:
                await wait_for(lambda: durable(engine).get("now_durable_waiting") == 1)
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_waiting)
                async for _ in stream:
                    pass
        assert scope.cancelled_caught
        assert durable(engine)["now_durable_waiting"] == 0
        # Read on after the cancellation: the ending names the unwritten artifact.
        last = await stream.receive_batch()
        assert isinstance(last[-1], Completed) and len(last[-1].unwritten_artifact_ids) == 1
        store.gate.set()


async def test_a_zero_wait_never_waits_but_still_names_what_is_not_written() -> None:
    store = GatedStore(MemoryStore())
    store.gate = trio.Event()
    async with (
        mock_server() as server,
        running_engine(server, artifacts=store, durable_wait_s=0) as engine,
    ):
        got = await collect(engine.submit(turn("chat-0", 6)))
        assert isinstance(got.ending, Completed)
        assert got.ending.unwritten_artifact_ids == tuple(artifact_ids(got.events))
        assert "durable_waits" not in durable(engine)
        store.gate.set()


def test_the_wait_is_range_checked() -> None:
    assert EngineConfig().durable_wait_s == 2.0
    for bad in (-1.0, 61.0):
        with pytest.raises(ConfigError, match="durable_wait_s"):
            EngineConfig(durable_wait_s=bad)
