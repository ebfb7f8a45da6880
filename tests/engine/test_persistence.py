"""Artifacts through the whole engine: stored, referenced, and never lost to a cancellation."""

from __future__ import annotations

import dataclasses
import random

import trio

from orpipe.engine import ChatRequest, OutputItem
from orpipe.engine.artifacts import ArtifactContext
from tests.engine.support import (
    MemoryStore,
    collect,
    mock_server,
    request,
    running_engine,
    wait_until,
)


def with_context(req: ChatRequest, **kw: object) -> ChatRequest:
    context = ArtifactContext(chat_id="chat-1", message_id=f"msg-{req.request_id}", **kw)  # type: ignore[arg-type]
    return dataclasses.replace(req, artifacts=context)


async def test_a_reasoning_item_is_stored_and_its_id_reaches_the_consumer() -> None:
    store = MemoryStore()
    async with mock_server() as server, running_engine(server, artifacts=store) as engine:
        got = await collect(engine.submit(with_context(request("reasoning", tokens=5))))
        stats = engine.statistics()
    items = [e for e in got.of_type(OutputItem) if isinstance(e, OutputItem)]
    assert [i.item["type"] for i in items] == ["reasoning"]
    (artifact_id,) = [i.artifact_id for i in items]
    assert artifact_id is not None and artifact_id in store.rows
    stored = store.rows[artifact_id]
    assert stored.item_type == "reasoning" and stored.chat_id == "chat-1"
    assert dict(stored.payload)["type"] == "reasoning"
    assert stats.channels["persist.in"].max_buffer_size == 100
    assert stats.actors["persister"]["written"] == 1


async def test_retention_disabled_stores_no_reasoning_and_no_context_stores_nothing() -> None:
    store = MemoryStore()
    async with mock_server() as server, running_engine(server, artifacts=store) as engine:
        off = with_context(request("reasoning", tokens=5), reasoning="disabled")
        got = await collect(engine.submit(off))
        plain = await collect(engine.submit(request("reasoning", tokens=5)))
    assert not store.rows
    for result in (got, plain):
        items = [e for e in result.of_type(OutputItem) if isinstance(e, OutputItem)]
        assert items and all(i.artifact_id is None for i in items)


async def test_cancellation_fuzz_every_accepted_artifact_is_stored_exactly_once() -> None:
    """200 requests cancelled at seeded random points; whatever reached the persister lands."""
    rng = random.Random(20261128)
    store = MemoryStore()
    store.slow_s = 0.002  # writes overlap the cancellations
    async with mock_server() as server:
        async with running_engine(server, artifacts=store, persist_batch_size=7) as engine:

            async def one(i: int) -> None:
                req = with_context(request("reasoning", tokens=40, tps=400, seed=i))
                stop_after = rng.randint(0, 12)  # events read before the client goes away
                async with engine.submit(req) as stream:
                    seen = 0
                    async for _ in stream:
                        seen += 1
                        if seen >= stop_after:
                            break

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
            await wait_until(lambda: engine.statistics().flow.open_requests == 0)
        persister = engine.statistics().actors["persister"]
    # Some cancellations land before the reasoning item, some after.
    assert 20 < persister["accepted"] < 200, persister
    assert persister["accepted"] == persister["written"] == len(store.rows)
    assert persister.get("lost", 0) == 0
    assert max(store.writes_per_id.values()) == 1


async def test_engine_shutdown_flushes_artifacts_held_while_the_store_was_down() -> None:
    store = MemoryStore()
    store.down = True
    async with mock_server() as server:
        async with running_engine(
            server, artifacts=store, persist_retry_initial_s=0.05, persist_retry_max_s=0.1
        ) as engine:
            for i in range(5):
                await collect(engine.submit(with_context(request("reasoning", tokens=3, seed=i))))
            stats = engine.statistics()
            held = stats.actors["persister"]
            # One batch held by the persister, the rest waiting in its inbox.
            assert held["now_backlog"] + stats.channels["persist.in"].current_buffer_used == 5
            assert held["now_degraded"] == 1
            assert not store.rows

            async def store_returns() -> None:
                await trio.sleep(0.3)
                store.down = False

            async with trio.open_nursery() as nursery:
                nursery.start_soon(store_returns)
                # Leaving running_engine shuts the engine down while the store is still down.
        persister = engine.statistics().actors["persister"]
    assert len(store.rows) == 5
    assert persister["written"] == 5 and persister.get("lost", 0) == 0


async def test_cancellation_fuzz_into_postgresql_every_accepted_artifact_is_in_sql() -> None:
    """The same fuzz through the real codec and SQL store: what was accepted is in the table."""
    import sqlalchemy as sa  # noqa: PLC0415

    from orpipe.adapters.store.codec import ArtifactCodec  # noqa: PLC0415
    from orpipe.adapters.store.rows import CodecStore  # noqa: PLC0415
    from orpipe.adapters.store.sql import SqlRowStore  # noqa: PLC0415
    from tests.adapters.pg_support import postgres_url  # noqa: PLC0415

    rng = random.Random(7)
    codec = ArtifactCodec("cancellation fuzz key, long enough", encrypt_all=True)
    namespace = codec.namespace(f"fuzz{rng.randrange(10**9)}")
    url = postgres_url()
    async with SqlRowStore(url, namespace=namespace) as sql:
        table = sql.table.name
        try:
            async with mock_server() as server:
                async with running_engine(server, artifacts=CodecStore(sql, codec)) as engine:

                    async def one(i: int) -> None:
                        req = with_context(request("reasoning", tokens=40, tps=400, seed=i))
                        stop_after = rng.randint(0, 12)
                        async with engine.submit(req) as stream:
                            seen = 0
                            async for _ in stream:
                                seen += 1
                                if seen >= stop_after:
                                    break

                    async with trio.open_nursery() as nursery:
                        for i in range(200):
                            nursery.start_soon(one, i)
                persister = engine.statistics().actors["persister"]

            def count() -> tuple[int, int]:
                engine_ = sa.create_engine(url)
                try:
                    with engine_.connect() as db:
                        total = db.execute(sa.text(f'select count(*) from "{table}"')).scalar_one()
                        distinct = db.execute(
                            sa.text(f'select count(distinct artifact_id) from "{table}"')
                        ).scalar_one()
                        return int(total), int(distinct)
                finally:
                    engine_.dispose()

            total, distinct = await trio.to_thread.run_sync(count)
        finally:

            def drop() -> None:
                engine_ = sa.create_engine(url)
                try:
                    with engine_.begin() as db:
                        db.execute(sa.text(f'drop table if exists "{table}"'))
                finally:
                    engine_.dispose()

            await trio.to_thread.run_sync(drop)
    assert 20 < persister["accepted"] < 200, persister
    assert total == distinct == persister["accepted"] == persister["written"]
    assert persister.get("lost", 0) == 0
