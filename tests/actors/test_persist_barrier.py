"""The persister's "flushed up to here" barrier: waits for what was sent before, unpolled."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from orpipe.actors.graph import open_engine
from orpipe.actors.persister import persister
from orpipe.engine.artifacts import Artifact
from orpipe.engine.config import EngineConfig
from orpipe.engine.persist_barrier import ArtifactMarks, PersistBarrier
from orpipe.engine.ports import EnginePorts
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import FakeTransport, tasks_named
from tests.engine.support import MemoryStore


def one(n: int) -> tuple[Artifact, ...]:
    return (Artifact(chat_id="chat", message_id="m", item_type="reasoning", payload={"n": n}),)


def _open(store: MemoryStore, **config: object):
    send, receive = trio.open_memory_channel[tuple[Artifact, ...]](100)
    barrier = PersistBarrier()
    actor = functools.partial(
        persister,
        receive,
        store=store,
        config=EngineConfig(**config),  # type: ignore[arg-type]
        counters=ActorCounters(),
        barrier=barrier,
    )
    return send, barrier, actor


async def test_nothing_pending_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    send, barrier, actor = _open(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            start = trio.current_time()
            assert await barrier.wait_flushed(5.0) is False
            assert trio.current_time() == start
    # A barrier nothing was ever sent through (no persister at all) does not wait either.
    assert await PersistBarrier().wait_flushed(5.0) is False


async def test_waits_for_what_was_sent_before_and_returns_right_after_its_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.slow_s = 1.0
    send, barrier, actor = _open(store)
    bundle = one(0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            start = trio.current_time()
            await barrier.send(send, bundle)
            assert barrier.sent == 1
            assert await barrier.wait_flushed(5.0) is False
            assert trio.current_time() - start == 1.0  # the write's own time, no more
            assert bundle[0].artifact_id in store.rows
            assert barrier.written_count == 1


async def test_does_not_wait_for_what_is_sent_after_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.slow_s = 1.0
    send, barrier, actor = _open(store, persist_batch_size=1)
    first, later = one(1), one(2)
    returned_at: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            start = trio.current_time()
            await barrier.send(send, first)

            async def waiter(task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                await barrier.wait_flushed(10.0)
                returned_at.append(trio.current_time() - start)
                assert later[0].artifact_id not in store.rows

            await nursery.start(waiter)
            await barrier.send(send, later)
            for n in range(3, 8):  # a busy persister: more keeps coming after the call
                await barrier.send(send, one(n))
    assert returned_at == [1.0]  # the first write; the later ones are not waited for
    assert barrier.written_count == barrier.sent == 7


async def test_a_failing_store_is_reported_at_once_and_never_hangs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.down = True
    send, barrier, actor = _open(store, persist_retry_initial_s=1.0, persist_retry_max_s=1.0)
    bundle = one(0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            await barrier.send(send, bundle)
            start = trio.current_time()
            assert await barrier.wait_flushed(5.0) is True  # the first failed write says so
            assert trio.current_time() - start < 5.0
            assert barrier.failing and barrier.written_count == 0  # held for retry: not written
            start = trio.current_time()
            assert await barrier.wait_flushed(5.0) is True  # still failing: no wait at all
            assert trio.current_time() == start
            store.down = False
            await trio.sleep(1.5)  # the persister's next retry (after 1 s) succeeds
            assert await barrier.wait_flushed(5.0) is False
            assert bundle[0].artifact_id in store.rows and not barrier.failing


async def test_a_write_slower_than_the_timeout_returns_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.slow_s = 30.0
    send, barrier, actor = _open(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            await barrier.send(send, one(0))
            start = trio.current_time()
            assert await barrier.wait_flushed(2.0) is False
            assert trio.current_time() - start == 2.0


async def test_cancellation_leaves_nothing_behind(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    store.slow_s = 5.0
    send, barrier, actor = _open(store, persist_batch_size=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="persister-actor")
        async with send:
            await barrier.send(send, one(0))
            with trio.move_on_after(1.0) as scope:
                await barrier.wait_flushed(10.0)
            assert scope.cancelled_caught
            # The barrier works as before: a new wait sees the same write.
            assert await barrier.wait_flushed(10.0) is False
            assert barrier.written_count == 1
    assert not tasks_named("persister-actor")
    # A send that never got through (cancelled while the channel was full) is not counted.
    full_send, _full_receive = trio.open_memory_channel[tuple[Artifact, ...]](0)
    with trio.move_on_after(1.0):
        await barrier.send(full_send, one(9))
    assert barrier.sent == 1
    assert await barrier.wait_flushed(10.0) is False


async def test_the_engine_waits_for_what_its_emitter_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    ports = EnginePorts(transport=FakeTransport([]), artifacts=store)
    async with open_engine(EngineConfig(), ports) as engine:
        assert await engine.wait_persisted(1.0) is False
        assert engine.persist_barrier.sent == 0


async def test_per_request_marks_wait_for_that_requests_artifacts_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each artifact is numbered as it is sent; a request waits for its own last one."""
    store = MemoryStore()
    store.slow_s = 1.0
    send, barrier, actor = _open(store, persist_batch_size=1)
    first, second = ArtifactMarks(), ArtifactMarks()
    a, b, c = one(1) + one(2) + one(3)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            await barrier.send(send, (a, b), [(first, a.artifact_id), None])
            await barrier.send(send, (c,), [(second, c.artifact_id)])
            assert (first.last, second.last) == (1, 3)
            start = trio.current_time()
            assert await barrier.wait_written(first.last, 30.0) is True
            assert trio.current_time() - start == 1.0  # one write, not all three
            assert second.unwritten(barrier.written_count) == (c.artifact_id,)
            assert await barrier.wait_written(second.last, 0.5) is False  # the timeout
            assert await barrier.wait_written(second.last, 30.0) is True
            assert second.unwritten(barrier.written_count) == ()


async def test_a_send_that_raises_withdraws_its_marks() -> None:
    """Never delivered, never written: the request names it whatever is written later."""
    send, receive = trio.open_memory_channel[tuple[Artifact, ...]](0)
    barrier, marks = PersistBarrier(), ArtifactMarks()
    (artifact,) = one(1)
    receive.close()
    with pytest.raises(trio.BrokenResourceError):
        await barrier.send(send, (artifact,), [(marks, artifact.artifact_id)])
    assert barrier.sent == 0 and marks.last == 0
    barrier.written(5)  # other requests' artifacts
    assert marks.unwritten(barrier.written_count) == (artifact.artifact_id,)
