"""The persister: batches, retries without loss, backpressure, and the flush guarantee."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
import trio
import trio.testing

from orpipe.actors.persist_backlog import Backlog, RetryClock
from orpipe.actors.persister import artifact_cleanup, persister
from orpipe.engine.artifacts import Artifact
from orpipe.engine.config import EngineConfig
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import tasks_named
from tests.engine.support import MemoryStore


def artifacts(n: int, chat: str = "chat") -> list[Artifact]:
    return [
        Artifact(chat_id=chat, message_id="m", item_type="reasoning", payload={"n": i})
        for i in range(n)
    ]


def _open(store: MemoryStore, *, inbox_size: int = 100, **config: object):
    send, receive = trio.open_memory_channel[tuple[Artifact, ...]](inbox_size)
    counters = ActorCounters()
    actor = functools.partial(
        persister,
        receive,
        store=store,
        config=EngineConfig(**config),  # type: ignore[arg-type]
        counters=counters,
    )
    return send, counters, actor


async def test_writes_everything_in_batches_and_ends_with_its_inbox() -> None:
    store = MemoryStore()
    send, counters, actor = _open(store, persist_batch_size=4)
    items = artifacts(10)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="persister-actor")
        async with send:
            await send.send(tuple(items[:3]))
            await send.send(tuple(items[3:]))
    assert set(store.rows) == {a.artifact_id for a in items}
    assert max(store.writes_per_id.values()) == 1
    stats = counters.snapshot()
    assert stats["written"] == stats["accepted"] == 10
    assert stats["now_backlog"] == 0
    assert not tasks_named("persister-actor")


async def test_a_failing_store_is_retried_with_backoff_and_nothing_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.fail_next = 3
    send, counters, actor = _open(
        store, persist_batch_size=5, persist_retry_initial_s=1.0, persist_retry_max_s=4.0
    )
    items = artifacts(12)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        async with send:
            await send.send(tuple(items))
    assert set(store.rows) == {a.artifact_id for a in items}
    assert counters.snapshot()["write_failures"] == 3
    # Pauses of 1, 2 and 4 s between the failed attempts (autojump clock).
    assert trio.current_time() - start == pytest.approx(7.0)


async def test_a_full_backlog_stops_taking_more_until_the_store_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.down = True
    send, counters, actor = _open(
        store, inbox_size=0, persist_backlog_max=5, persist_retry_max_s=1.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        await send.send(tuple(artifacts(5)))  # fills the backlog
        with trio.move_on_after(30) as blocked:
            await send.send(tuple(artifacts(1)))
        assert blocked.cancelled_caught, "a full backlog must push back on the sender"
        assert counters.snapshot()["now_backlog"] == 5
        assert counters.snapshot()["now_degraded"] == 1
        store.down = False
        await send.send(tuple(artifacts(1)))
        await send.aclose()
    assert len(store.rows) == 6
    assert counters.snapshot()["now_degraded"] == 0


async def test_cancellation_still_flushes_what_was_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    store.slow_s = 1.0  # each write takes a while: cancellation lands mid-flush
    send, counters, actor = _open(store, persist_batch_size=2, persist_flush_grace_s=60)
    items = artifacts(9)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="persister-actor")
        await send.send(tuple(items[:5]))
        send.send_nowait(tuple(items[5:]))  # still in the inbox when the cancel lands
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert set(store.rows) == {a.artifact_id for a in items}
    assert counters.snapshot().get("lost", 0) == 0
    assert not tasks_named("persister-actor")


async def test_when_the_grace_runs_out_the_exact_unwritten_ids_are_logged(
    autojump_clock: trio.testing.MockClock, loguru_records: list[dict[str, Any]]
) -> None:
    store = MemoryStore()
    store.down = True
    send, counters, actor = _open(store, persist_flush_grace_s=3, persist_retry_max_s=1)
    items = artifacts(4)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor)
        await send.send(tuple(items))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert counters.snapshot()["lost"] == 4
    (record,) = [r for r in loguru_records if "were not written" in r["message"]]
    assert record["level"] == "ERROR"
    for artifact in items:
        assert artifact.artifact_id in record["message"]


async def test_age_cleanup_runs_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    import time  # noqa: PLC0415

    store = MemoryStore()
    old = Artifact(
        chat_id="c",
        message_id="m",
        item_type="reasoning",
        payload={},
        created_at=time.time() - 91 * 86400,
    )
    fresh = artifacts(1, chat="c")[0]
    await store.write([old, fresh])
    config = EngineConfig(artifact_cleanup_days=90, artifact_cleanup_interval_hours=1)
    with trio.move_on_after(3600 * 1.2):
        await artifact_cleanup(store, config, rng=random.Random(1))
    assert list(store.rows) == [fresh.artifact_id]


def test_backlog_and_retry_clock() -> None:
    backlog = Backlog(3)
    items = artifacts(4)
    backlog.add(items[:2])
    assert backlog.room == 1
    assert backlog.batch(5) == items[:2]
    backlog.written(1)
    assert backlog.ids() == [items[1].artifact_id]
    backlog.add(items[2:])  # a final drain may exceed the bound; nothing is dropped
    assert len(backlog) == 3 and backlog.peak == 3
    clock = RetryClock(0.5, 4.0)
    assert [clock.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    clock.succeeded()
    assert clock.failed() == 0.5
