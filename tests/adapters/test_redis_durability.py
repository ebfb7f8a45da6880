"""The write-behind's durability modes against real redis-servers this test starts.

Covers ``adapters/store/redis_durability.py`` and ``redis_guarantees.py``: which mode each server
configuration gets, that nothing accepted is lost when Redis runs with its
default persistence and dies by ``kill -9``, and that the held buffer is
bounded (a full buffer makes the writer wait) and shows in ``statistics()``,
the store's and ``Engine.statistics().store``.
The helpers (``FakeSql``, ``make_rows``, ``wait_for`` ...) are the write-behind
tests'; conditions are polled with a bound, never waited for by sleeping.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import sqlalchemy as sa
import trio
import trio.testing

from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.redis_guarantees import (
    ServerFacts,
    choose_mode,
    exec_then,
    exec_then_waitaof,
    read_facts,
)
from orpipe.adapters.store.rows import CodecStore
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.bench.services import redis_server as bench_redis_server
from tests.adapters.test_redis_writebehind import (
    LOGGER,
    NS,
    FakeSql,
    flushing,
    make_rows,
    messages,
    on_redis,
    store_for,
    stream,
    wait_for,
)
from tests.engine.support import collect, mock_server, request, running_engine, wait_until
from tests.engine.test_persistence import with_context

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]

#: The keeper checks often and soon, so the tests do not wait for the defaults (1 s, 5 s).
FAST = {"check_every_s": 0.02, "hold_check_after_s": 0.1, "retry_backoff_s": 0.02}


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'artifacts.db'}"


def stored_ids(sql: SqlRowStore) -> list[str]:
    """Every artifact id in the table, repeats included (the table's own view)."""
    with sql.engine.connect() as conn:
        return [str(i) for i in conn.execute(sa.select(sql.table.c.artifact_id)).scalars()]


# -- the mode each server gets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "mode"),
    [
        (ServerFacts((7, 0), "a", aof_enabled=True, appendfsync="always"), "redis_fsync"),
        (ServerFacts((7, 2), "a", aof_enabled=True, appendfsync="everysec"), "waitaof"),
        (ServerFacts((8, 0), "a", aof_enabled=True, appendfsync=None), "waitaof"),
        (ServerFacts((7, 0), "a", aof_enabled=True, appendfsync="everysec"), "writer_holds"),
        (ServerFacts((7, 0), "a", aof_enabled=True, appendfsync=None), "writer_holds"),
        (ServerFacts((7, 4), "a", aof_enabled=False, appendfsync="always"), "writer_holds"),
        (ServerFacts(None, None, aof_enabled=None, appendfsync=None), "writer_holds"),
    ],
)
def test_the_mode_follows_what_the_server_guarantees(facts: ServerFacts, mode: str) -> None:
    assert choose_mode(facts) == mode


def _version(server: RedisServer) -> tuple[int, int]:
    with server.client() as client:
        facts = read_facts(client)
    assert facts.version is not None
    return facts.version


@pytest.mark.parametrize(
    ("options", "fsync_policy", "expected"),
    [
        ({"durable": True}, "always", "redis_fsync"),
        ({"extra": ["--appendonly", "yes", "--appendfsync", "everysec"]}, "everysec", None),
        ({"redis_defaults": True}, "everysec", "writer_holds"),
        (
            {"durable": True, "extra": ["--rename-command", "CONFIG", ""]},
            None,  # CONFIG refused: the policy is unknown, even though it is "always"
            None,
        ),
    ],
    ids=["aof-always", "aof-everysec", "redis-defaults", "config-refused"],
)
async def test_each_server_configuration_gets_its_mode(
    redis_factory: Callable[..., RedisServer],
    options: dict[str, object],
    fsync_policy: str | None,
    expected: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_factory(**options)
    # None: WAITAOF where the server has it (>= 7.2), else the writer holds.
    waitaof = _version(server) >= (7, 2)
    expected = expected or ("waitaof" if waitaof else "writer_holds")
    caplog.set_level(logging.INFO, logger=LOGGER)
    facts = await on_redis(server, read_facts)
    assert facts.appendfsync == fsync_policy
    assert facts.aof_enabled is (options.get("redis_defaults") is not True)
    async with store_for(server.url, FakeSql()) as store:
        assert store.durability == expected
        assert store.statistics()["durability"] == expected
    assert len(messages(caplog, f": {expected}: ")) == 1


async def test_a_reconfigured_server_changes_the_mode_and_held_rows_still_settle(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sql, rows = FakeSql(), make_rows(10)
    async with store_for(redis_server.url, sql, **FAST) as store:
        await store.write_rows(rows)
        assert store.statistics()["held"] == 10

        def make_durable(client: redis.Redis) -> None:
            client.config_set("appendonly", "yes")
            client.config_set("appendfsync", "always")

        await on_redis(redis_server, make_durable)
        async with flushing(store):
            await wait_for(lambda: store.durability == "redis_fsync", "the new mode")
            await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
        await store.write_rows(make_rows(3))
        assert store.statistics()["held"] == 0  # Redis' word suffices now
    (change,) = [r for r in caplog.records if ": redis_fsync: " in r.getMessage()]
    assert change.levelno == logging.WARNING
    assert set(sql.rows) >= {row.artifact_id for row in rows}


def test_the_bench_starts_redis_with_its_persistence_defaults_too() -> None:
    # The bench's own servers (chaos, workers) can run a stock Redis as well.
    with bench_redis_server(appendfsync=None) as server, redis.Redis.from_url(server.url) as client:
        facts = read_facts(client)
    assert facts.aof_enabled is False
    assert choose_mode(facts) == "writer_holds"


# -- kill -9 with Redis' default persistence -------------------------------------------------


async def test_kill_9_with_default_persistence_leaves_every_accepted_row_in_sql_once(
    redis_factory: Callable[..., RedisServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis' defaults: RDB snapshots, no AOF. A snapshot is taken after the first
    # half was queued; the second half is acknowledged by Redis and then lost by
    # the kill. The flusher runs only after the restart: it finds the first half
    # in the restored stream, and the writer, which still holds every row, writes
    # the second half to SQL itself.
    server = redis_factory(redis_defaults=True)
    rows = make_rows(400, chats=7)
    first, second = rows[:200], rows[200:]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with (
        SqlRowStore(sqlite_url(tmp_path), namespace=NS) as sql,
        store_for(server.url, sql, batch_size=50, **FAST) as store,
    ):
        assert store.durability == "writer_holds"
        for part in (first[:100], first[100:]):
            await store.write_rows(part)
        await on_redis(server, lambda client: client.save())
        for part in (second[:100], second[100:]):
            await store.write_rows(part)
        assert store.statistics()["queued_total"] == 400
        assert store.statistics()["held"] == 400  # nothing in SQL yet

        await trio.to_thread.run_sync(server.kill)
        await trio.to_thread.run_sync(server.restart)
        assert await on_redis(server, lambda client: client.xlen(stream())) == 200

        async with flushing(store):
            await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
            await wait_for(lambda: store.statistics()["pending"] == 0, "an empty queue")
        statistics = store.statistics()
        ids = stored_ids(sql)

    assert sorted(ids) == sorted(row.artifact_id for row in rows)  # each exactly once
    assert statistics["redis_restarts_total"] == 1
    assert statistics["held_resent_total"] == 200  # the half the kill lost
    assert statistics["held_confirmed_total"] == 200  # the half the flusher moved
    assert statistics["flushed_total"] == 200
    assert len(messages(caplog, "restarted; checking the 400 artifacts")) == 1
    assert len(messages(caplog, "wrote 200 held artifacts directly")) == 1


async def test_kill_9_while_the_flusher_is_mid_batch_loses_nothing(
    redis_factory: Callable[..., RedisServer],
) -> None:
    # No snapshot this time: the restarted server is empty. The flusher is inside
    # its first SQL write when Redis dies; that batch commits afterwards (its ack
    # goes nowhere), and the writer writes every other row itself.
    server = redis_factory(redis_defaults=True)
    sql, rows = FakeSql(), make_rows(300, chats=4)
    sql.gate = trio.Event()
    async with store_for(server.url, sql, batch_size=50, **FAST) as store:
        await store.write_rows(rows)
        async with flushing(store):
            await wait_for(lambda: sql.write_calls == 1, "the flusher inside its first batch")
            await trio.to_thread.run_sync(server.kill)
            await trio.to_thread.run_sync(server.restart)
            sql.gate.set()
            await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
        statistics = store.statistics()
    assert set(sql.rows) == {row.artifact_id for row in rows}
    assert all(sql.rows[row.artifact_id] == row for row in rows)
    assert statistics["redis_restarts_total"] == 1
    # The in-flight batch is confirmed or (if the keeper looked first) written again.
    assert statistics["held_resent_total"] >= 250
    assert statistics["held_resent_total"] + statistics["held_confirmed_total"] == 300


async def test_rows_lost_without_a_restart_are_written_too(redis_server: RedisServer) -> None:
    # A queue emptied under the writer (FLUSHALL, an eviction): same run_id, so the
    # keeper finds the loss by age: held a while, not in SQL, not queued.
    sql, rows = FakeSql(), make_rows(30, chats=2)
    async with store_for(redis_server.url, sql, **FAST) as store:
        await store.write_rows(rows)
        await on_redis(redis_server, lambda client: client.flushall())
        async with flushing(store):
            await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
        assert store.statistics()["held_resent_total"] == 30
        assert store.statistics()["redis_restarts_total"] == 0
    assert set(sql.rows) == {row.artifact_id for row in rows}


async def test_rows_the_flusher_moved_are_forgotten_not_resent(redis_server: RedisServer) -> None:
    sql, rows = FakeSql(), make_rows(60, chats=3)
    async with store_for(redis_server.url, sql, **FAST) as store:
        await store.write_rows(rows)
        async with flushing(store):
            await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
        assert store.statistics()["held_confirmed_total"] == 60
        assert store.statistics()["held_resent_total"] == 0
    assert max(sql.commits.values()) == 1


# -- the held buffer -------------------------------------------------------------------------


async def test_a_full_held_buffer_makes_the_writer_wait_and_drops_nothing(
    redis_server: RedisServer,
) -> None:
    sql, rows = FakeSql(), make_rows(12, chats=2)
    async with store_for(redis_server.url, sql, held_capacity=5, **FAST) as store:
        await store.write_rows(rows[:5])
        assert store.statistics()["held"] == 5
        assert store.statistics()["held_capacity"] == 5
        done = trio.Event()

        async def write_more() -> None:
            await store.write_rows(rows[5:])  # more than the whole buffer: in pieces
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_more)
            await trio.testing.wait_all_tasks_blocked()
            # No flusher, no keeper: nothing can confirm a row, so the writer waits.
            assert not done.is_set()
            assert store.statistics()["held"] == 5
            assert store.statistics()["held_waits_total"] == 1
            assert store.statistics()["queued_total"] == 5
            async with flushing(store):
                await done.wait()
                await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
    assert set(sql.rows) == {row.artifact_id for row in rows}
    assert store.statistics()["queued_total"] == 12


# -- one connection for the transaction and its confirmation --------------------------------


def test_exec_then_runs_the_transaction_and_the_confirmation_on_one_connection(
    redis_server: RedisServer,
) -> None:
    with redis_server.client() as client:
        commands = [("SET", "k", "v"), ("INCR", "n"), ("XLEN", "absent")]
        replies, confirmed = exec_then(client, commands, ("WAIT", 0, 0), lambda reply: reply == 0)
        assert replies == [b"OK", 1, 0]  # EXEC's raw replies
        assert confirmed
        with pytest.raises(redis.ResponseError):  # INCR of a string fails inside EXEC
            exec_then(client, [("INCR", "k")], ("WAIT", 0, 0), lambda reply: True)
        assert client.get("k") == b"v"  # the pool's connections still answer correctly
        if _version(redis_server) < (7, 2):
            # No WAITAOF: the transaction is applied, then the error is raised (the
            # writer then writes the chunk to SQL too; the insert is idempotent).
            with pytest.raises(redis.ResponseError, match="WAITAOF"):
                exec_then_waitaof(client, [("SET", "w", "1")], 100)
            assert client.get("w") == b"1"
        assert client.ping()


# -- Engine.statistics() ---------------------------------------------------------------------


async def test_the_engine_shows_the_durability_mode_and_held_rows(
    redis_server: RedisServer,
) -> None:
    sql = FakeSql()
    async with (
        store_for(redis_server.url, sql, **FAST) as rows,
        mock_server() as server,
        running_engine(server, artifacts=CodecStore(rows, ArtifactCodec(None))) as engine,
    ):
        await collect(engine.submit(with_context(request("reasoning", tokens=5))))
        await wait_until(lambda: engine.statistics().actors["persister"].get("written") == 1)
        figures = engine.statistics().store
        # No flusher yet: the row is queued in Redis and held by the writer.
        assert figures["durability"] == "writer_holds"
        assert figures["held"] == 1
        assert figures["held_capacity"] == 10_000
        async with flushing(rows):
            await wait_for(lambda: engine.statistics().store["held"] == 0, "no row held")
        assert engine.statistics().store["held_confirmed_total"] == 1
    assert len(sql.rows) == 1


# -- close -----------------------------------------------------------------------------------


async def test_close_writes_out_held_rows_except_deleted_ones(redis_server: RedisServer) -> None:
    # Nothing holds a row once this process is gone, so close writes to SQL what
    # SQL lacks; a row the user deleted meanwhile is not written back.
    sql, rows = FakeSql(), make_rows(20, chats=1)
    async with store_for(redis_server.url, sql, **FAST) as store:
        await store.write_rows(rows)
        assert await store.delete("chat-0", [row.artifact_id for row in rows[:5]]) == 0
        assert store.statistics()["held"] == 15
    assert set(sql.rows) == {row.artifact_id for row in rows[5:]}
    assert store.statistics()["held"] == 0


async def test_close_with_the_database_down_says_what_is_left_in_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    sql, rows = FakeSql(), make_rows(7)
    sql.up = trio.Event()  # down
    async with store_for(redis_server.url, sql, **FAST) as store:
        await store.write_rows(rows)
    assert not sql.rows
    (warning,) = messages(caplog, "still held at close")
    assert warning.startswith("7 artifacts still held at close are only in Redis")


async def test_the_held_buffer_is_bounded_in_bytes_too(redis_server: RedisServer) -> None:
    sql, rows = FakeSql(), make_rows(6)
    payload = sum(len(row.blob) for row in rows[:3])
    options = {**FAST, "held_max_bytes": payload}
    async with store_for(redis_server.url, sql, **options) as store:
        await store.write_rows(rows[:3])
        await store.write_rows(rows[:3])  # written again: held once, counted once
        assert store.statistics()["held_bytes"] == payload
        assert store.statistics()["held_max_bytes"] == payload
        done = trio.Event()

        async def write_more() -> None:
            await store.write_rows(rows[3:4])
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_more)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # the bytes are full, though rows are not
            assert store.statistics()["held_waits_total"] == 1
            async with flushing(store):
                await done.wait()
                await wait_for(lambda: store.statistics()["held_bytes"] == 0, "no bytes held")
        # An empty buffer takes a write larger than its bound rather than wait forever.
        big = dataclasses.replace(make_rows(1)[0], blob=b"x" * (payload + 1))
        await store.write_rows([big])
        assert store.statistics()["held_bytes"] == payload + 1


async def test_a_row_the_database_refuses_is_let_go_not_held_forever(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The flusher dead-letters it; the keeper then finds it neither in SQL nor
    # queued, tries once itself, is refused too, and stops holding it.
    sql, rows = FakeSql(), make_rows(5)
    sql.reject = {rows[2].artifact_id}
    async with store_for(redis_server.url, sql, **FAST) as store:
        await store.write_rows(rows)
        async with flushing(store):
            await wait_for(lambda: store.statistics()["held"] == 0, "no row held")
        assert store.statistics()["dead_lettered_total"] == 1
    assert set(sql.rows) == {row.artifact_id for row in rows} - sql.reject
    assert len(messages(caplog, f"artifact {rows[2].artifact_id} was refused")) == 1
