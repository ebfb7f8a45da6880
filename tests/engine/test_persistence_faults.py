"""Persistence against a real PostgreSQL of the test's own that is stopped under load."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
import trio

from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.rows import CodecStore
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.engine import ChatRequest
from orpipe.engine.artifacts import ArtifactContext
from tests.engine.support import collect, mock_server, request, running_engine, wait_until
from tests.pg_instance import PgInstance, pg_instance

KEY = "a long enough artifact key for tests"


def with_context(req: ChatRequest) -> ChatRequest:
    context = ArtifactContext(chat_id="chat-pg", message_id=f"m-{req.request_id}")
    return dataclasses.replace(req, artifacts=context)


@asynccontextmanager
async def pg_store(pg: PgInstance) -> AsyncIterator[tuple[CodecStore, SqlRowStore]]:
    codec = ArtifactCodec(KEY, encrypt_all=True)
    async with SqlRowStore(pg.url, namespace=codec.namespace("faults"), connect_timeout_s=2) as sql:
        yield CodecStore(sql, codec), sql


def count_rows(pg: PgInstance, sql: SqlRowStore) -> tuple[int, int]:
    engine = sa.create_engine(pg.url)
    try:
        with engine.connect() as db:
            table = sql.table.name
            total = db.execute(sa.text(f'select count(*) from "{table}"')).scalar_one()
            distinct = db.execute(
                sa.text(f'select count(distinct artifact_id) from "{table}"')
            ).scalar_one()
            return int(total), int(distinct)
    finally:
        engine.dispose()


async def test_postgres_stopped_under_load_loses_nothing() -> None:
    with pg_instance() as pg:
        async with mock_server() as server, pg_store(pg) as (store, sql):
            async with running_engine(
                server,
                artifacts=store,
                persist_retry_initial_s=0.05,
                persist_retry_max_s=0.2,
                persist_flush_grace_s=30,
            ) as engine:

                async def chats(n: int, first: int) -> None:
                    async with trio.open_nursery() as nursery:
                        for i in range(first, first + n):
                            req = with_context(request("reasoning", tokens=5, seed=i))
                            nursery.start_soon(collect, engine.submit(req))

                await chats(40, 0)
                await trio.to_thread.run_sync(pg.stop)
                await chats(40, 40)  # answers still stream while the database is down

                def degraded() -> bool:
                    return engine.statistics().actors["persister"].get("now_degraded") == 1

                await wait_until(degraded)
                await trio.to_thread.run_sync(pg.start)

                def drained() -> bool:
                    stats = engine.statistics()
                    held = stats.actors["persister"]["now_backlog"]
                    return held == 0 and stats.channels["persist.in"].current_buffer_used == 0

                await wait_until(drained, limit_s=30)
                persister = engine.statistics().actors["persister"]
            assert persister["accepted"] == 80
            assert persister["written"] == 80 and persister.get("lost", 0) == 0
            assert persister["write_failures"] >= 1
            total, distinct = await trio.to_thread.run_sync(count_rows, pg, sql)
            assert total == distinct == 80
