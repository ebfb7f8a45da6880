"""Read-after-write across two workers sharing one Redis write-behind and one database.

Two engines in one trio run stand for two Open WebUI workers: each has its
own ``RedisWriteBehind`` (its own Redis connections and consumer) over its
own ``SqlRowStore`` connection to one SQLite file, both on the redis-server
this test starts. No flusher runs at first, so what worker A wrote is only in
Redis: worker B must read it from there (the stream's cache), not from SQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.redis_writebehind import RedisWriteBehind
from orpipe.adapters.store.rows import CodecStore
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.engine import ChatRequest, OutputItem
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.messages import Completed
from tests.engine.support import collect, mock_server, request, running_engine, wait_until

if TYPE_CHECKING:  # imported by pytest as a plugin below (so that it is assertion-rewritten)
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]

CODEC = ArtifactCodec("a long enough artifact key for tests", encrypt_all=True)
NAMESPACE = CODEC.namespace("read-after-write")


@asynccontextmanager
async def worker_store(
    redis_url: str, database: Path, consumer: str
) -> AsyncIterator[tuple[CodecStore, RedisWriteBehind]]:
    """One worker's artifact store: its own write-behind over its own SQL connection."""
    async with (
        SqlRowStore(f"sqlite:///{database}", namespace=NAMESPACE) as sql,
        RedisWriteBehind(redis_url, namespace=NAMESPACE, sql=sql, consumer=consumer) as behind,
    ):
        yield CodecStore(behind, CODEC), behind


def turn(n: int) -> ChatRequest:
    context = ArtifactContext(chat_id="chat-raw", message_id=f"msg-{n}")
    return dataclasses.replace(request("reasoning", tokens=5, seed=n), artifacts=context)


async def test_a_turn_on_worker_b_reads_what_worker_a_queued_in_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    database = tmp_path / "artifacts.db"
    async with (
        mock_server() as server,
        worker_store(redis_server.url, database, "worker-a") as (store_a, behind_a),
        worker_store(redis_server.url, database, "worker-b") as (store_b, behind_b),
        running_engine(server, artifacts=store_a) as engine_a,
        running_engine(server, artifacts=store_b) as engine_b,
    ):
        got = await collect(engine_a.submit(turn(1)))
        assert isinstance(got.ending, Completed) and got.ending.unwritten_artifact_ids == ()
        (artifact_id,) = [e.artifact_id for e in got.events if isinstance(e, OutputItem)]
        assert artifact_id is not None
        assert "durable_timeouts" not in engine_a.statistics().actors["persister"]
        assert behind_a.statistics()["pending"] == 1  # in Redis only: nothing flushed

        # Worker B, at once: what the history read does (its barrier, then the store).
        await engine_b.wait_persisted(2.0)
        assert await store_b.list_ids("chat-raw") == [artifact_id]
        assert await store_b.list_ids("chat-raw", message_ids=["msg-1"]) == [artifact_id]
        found = await store_b.fetch("chat-raw", [artifact_id])
        assert list(found) == [artifact_id] and found[artifact_id].item_type == "reasoning"

        # Flushed by B's flusher (any worker's), the row is in SQL and still readable.
        async with trio.open_nursery() as nursery:
            await nursery.start(behind_b.run_flusher)
            await wait_until(lambda: behind_b.statistics()["pending"] == 0)
            nursery.cancel_scope.cancel()
        assert list(await store_a.fetch("chat-raw", [artifact_id])) == [artifact_id]


async def test_a_worker_whose_redis_write_outlasts_the_timeout_leaves_the_reference_out(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis paused (SIGSTOP) under worker A: its ending goes out after durable_wait_s
    naming the artifact; worker B cannot find it yet; it lands once Redis resumes."""
    database = tmp_path / "artifacts.db"
    async with (
        mock_server() as server,
        worker_store(redis_server.url, database, "worker-a") as (store_a, _),
        worker_store(redis_server.url, database, "worker-b") as (store_b, _),
        running_engine(server, artifacts=store_a, durable_wait_s=0.2) as engine_a,
    ):
        redis_server.pause()
        try:
            got = await collect(engine_a.submit(turn(2)))
        finally:
            redis_server.resume()
        (artifact_id,) = [e.artifact_id for e in got.events if isinstance(e, OutputItem)]
        assert isinstance(got.ending, Completed)
        assert got.ending.unwritten_artifact_ids == (artifact_id,)
        stats = engine_a.statistics().actors["persister"]
        assert stats["durable_timeouts"] + stats.get("durable_store_failing", 0) == 1
        # Once Redis answers again, A's persister writes it: B then finds it (as an
        # orphan of A's answer, whose text does not reference it).
        await wait_until(lambda: engine_a.statistics().actors["persister"].get("written") == 1)
        assert list(await store_b.fetch("chat-raw", [artifact_id])) == [artifact_id]
