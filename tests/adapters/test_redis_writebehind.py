"""RedisWriteBehind against a real redis-server this test starts (and kills).

Most tests use ``FakeSql``, an in-memory ``RowStore`` that can be taken down
and counts every commit per id; one uses the real ``SqlRowStore`` on SQLite.
Conditions are polled with a bound (``wait_for``), never waited for by sleeping.
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
import redis
import trio

from orpipe.adapters.store.redis_layout import GROUP
from orpipe.adapters.store.redis_writebehind import RedisWriteBehind
from orpipe.adapters.store.rows import RowStore, StoredRow
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.engine.artifacts import new_artifact_id
from orpipe.engine.errors import ConfigError, PersistenceError, StoreUnavailable, UsageError

if TYPE_CHECKING:  # imported by pytest as a plugin below (so that it is assertion-rewritten)
    from tests.redis_support import RedisServer

# The fixtures redis_server and redis_factory (a plugin: importing them here would
# make every test parameter shadow an import).
pytest_plugins = ["tests.redis_support"]

T = TypeVar("T")
NS = "pipe_test_0123abcd"
LOGGER = "orpipe.persistence"


# -- doubles and helpers ---------------------------------------------------------------


class FakeSql:
    """An idempotent in-memory ``RowStore`` that can fail on command and counts commits."""

    def __init__(self) -> None:
        self.rows: dict[str, StoredRow] = {}
        #: Committed writes per id, repeats included (the store keeps the first row).
        self.commits: Counter[str] = Counter()
        self.write_calls = 0
        self.failed_writes = 0
        self.fetch_calls = 0
        #: While this event exists and is not set, every write fails (database down).
        self.up: trio.Event | None = None
        #: Writes wait for this event before committing (to catch a flush mid-write).
        self.gate: trio.Event | None = None
        #: Ids the database refuses for good.
        self.reject: set[str] = set()
        #: Awaited once, right after the first commit that brings the table to
        #: ``after_commit_at`` rows (to crash something between commit and ack).
        self.after_commit: Callable[[], Awaitable[None]] | None = None
        self.after_commit_at = 0

    async def write_rows(self, rows: Sequence[StoredRow]) -> None:
        self.write_calls += 1
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        if self.up is not None and not self.up.is_set():
            self.failed_writes += 1
            raise StoreUnavailable("The fake database is down; artifacts are kept and retried.")
        refused = [row.artifact_id for row in rows if row.artifact_id in self.reject]
        if refused:
            self.failed_writes += 1
            raise PersistenceError(f"The fake database refused {refused}.")
        for row in rows:
            self.commits[row.artifact_id] += 1
            self.rows.setdefault(row.artifact_id, row)
        if self.after_commit is not None and len(self.rows) >= self.after_commit_at:
            hook, self.after_commit = self.after_commit, None
            await hook()

    async def fetch_rows(self, chat_id: str, artifact_ids: Sequence[str]) -> list[StoredRow]:
        self.fetch_calls += 1
        await trio.lowlevel.checkpoint()
        found = [self.rows[i] for i in artifact_ids if i in self.rows]
        return [row for row in found if row.chat_id == chat_id]

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(
            i
            for i, row in self.rows.items()
            if row.chat_id == chat_id and (not message_ids or row.message_id in message_ids)
        )

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int:
        await trio.lowlevel.checkpoint()
        gone = [i for i in artifact_ids if i in self.rows and self.rows[i].chat_id == chat_id]
        for i in gone:
            del self.rows[i]
        return len(gone)

    async def delete_older_than(self, cutoff_unix_s: float) -> int:
        await trio.lowlevel.checkpoint()
        old = [i for i, row in self.rows.items() if row.created_at < cutoff_unix_s]
        for i in old:
            del self.rows[i]
        return len(old)


class FakeClock:
    """A monotonic clock the test moves (only where a test needs to skip a hold-off)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_rows(
    count: int, *, chats: int = 1, message: str = "m1", created_at: float = 1.7e9
) -> list[StoredRow]:
    return [
        StoredRow(
            artifact_id=new_artifact_id(),
            chat_id=f"chat-{i % chats}",
            message_id=message,
            item_type="reasoning" if i % 2 else "function_call",
            model_id="openai/gpt-test" if i % 3 else None,
            user_id=None if i % 5 else "user-1",
            created_at=created_at + i,
            blob=b"\x01" + i.to_bytes(4, "big") + b"\x00\xff" * (i % 7),
            is_encrypted=bool(i % 2),
        )
        for i in range(count)
    ]


def chunks(rows: list[StoredRow], size: int) -> list[list[StoredRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@asynccontextmanager
async def store_for(url: str, sql: RowStore, **options: Any) -> AsyncIterator[RedisWriteBehind]:
    options.setdefault("namespace", NS)
    async with RedisWriteBehind(url, sql=sql, **options) as store:
        yield store


@asynccontextmanager
async def flushing(*stores: RedisWriteBehind) -> AsyncIterator[None]:
    """The stores' flushers run inside the block and are cancelled at its end."""
    async with trio.open_nursery() as nursery:
        for store in stores:
            await nursery.start(store.run_flusher)
        yield
        nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll a condition with a bound: the conditions read counters and another
    process's state, which have no event to wait on."""
    with trio.move_on_after(timeout_s):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.005)
        return
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


async def on_redis(server: RedisServer, work: Callable[[redis.Redis], T]) -> T:
    """``work(client)`` with a fresh synchronous client, in a worker thread."""

    def run() -> T:
        with server.client() as client:
            return work(client)

    return await trio.to_thread.run_sync(run)


def stream(namespace: str = NS) -> str:
    return f"orpipe:{namespace}:artifacts"


def cache_key(row: StoredRow, namespace: str = NS) -> str:
    return f"orpipe:{namespace}:artifact:{row.chat_id}:{row.artifact_id}"


def group_pending(client: redis.Redis, namespace: str = NS) -> int:
    return int(client.xpending(stream(namespace), GROUP)["pending"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def dead_letters(client: redis.Redis, key: str) -> list[dict[bytes, bytes]]:
    return [cast("dict[bytes, bytes]", fields) for _, fields in client.xrange(key) or []]


def messages(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


# -- queue and flush -------------------------------------------------------------------


async def test_rows_are_queued_in_redis_then_flushed_to_sql(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sql, rows = FakeSql(), make_rows(25, chats=3)
    async with store_for(redis_server.url, sql) as store:
        # This server keeps nothing on disk: the writer holds its rows, and says why.
        assert store.durability == "writer_holds"
        assert len(messages(caplog, "keeps each queued artifact until it is in")) == 1
        await store.write_rows(rows)
        assert sql.write_calls == 0
        assert store.statistics()["queued_total"] == 25
        assert store.statistics()["pending"] == 25
        assert await on_redis(redis_server, lambda r: r.xlen(stream())) == 25
        # While queued, the cache entry does not expire (a replay must find the row).
        assert await on_redis(redis_server, lambda r: r.ttl(cache_key(rows[0]))) == -1

        async with flushing(store):
            await wait_for(lambda: len(sql.rows) == 25, "all rows in SQL")
            await wait_for(lambda: store.statistics()["pending"] == 0, "an empty queue")

        assert store.statistics()["flushed_total"] == 25
    assert sql.rows == {row.artifact_id: row for row in rows}
    assert set(sql.commits.values()) == {1}
    assert await on_redis(redis_server, lambda r: r.xlen(stream())) == 0
    assert await on_redis(redis_server, group_pending) == 0
    # Flushed: the cache entry now expires, and no "queued" marker is left.
    assert 0 < await on_redis(redis_server, lambda r: r.ttl(cache_key(rows[0]))) <= 600
    assert await on_redis(redis_server, lambda r: r.keys(f"orpipe:{NS}:queued:*")) == []


async def test_sql_failure_leaves_entries_pending_and_nothing_expires(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sql, rows = FakeSql(), make_rows(30)
    sql.up = trio.Event()
    options = {"flush_failure_limit": 1000, "retry_backoff_s": 0.01, "cooldown_s": 0.05}
    async with store_for(redis_server.url, sql, pending_warn_threshold=5, **options) as store:
        await store.write_rows(rows)
        async with flushing(store):
            await wait_for(lambda: sql.failed_writes >= 5, "five failed flushes")
            # Delivered to the flusher, not acknowledged, still in the stream, no TTL anywhere.
            assert await on_redis(redis_server, group_pending) == store.batch_size
            assert await on_redis(redis_server, lambda r: r.xlen(stream())) == 30
            assert await on_redis(redis_server, lambda r: r.ttl(stream())) == -1
            assert await on_redis(redis_server, lambda r: r.ttl(cache_key(rows[0]))) == -1
            assert sql.rows == {}
            assert store.statistics()["flush_failures_consecutive"] >= 5
            assert store.mode == "write_behind"

            sql.up.set()
            await wait_for(lambda: len(sql.rows) == 30, "all rows after the database returned")
            await wait_for(lambda: store.statistics()["pending"] == 0, "an empty queue")
        assert store.statistics()["flush_failures_consecutive"] == 0
    assert set(sql.commits.values()) == {1}
    assert await on_redis(redis_server, group_pending) == 0
    # 30 > 5 waiting: said once (rate-limited), not on every enqueue and flush.
    assert len(messages(caplog, "artifacts are waiting in Redis")) == 1
    assert len(messages(caplog, "artifact flush failed")) == 1


async def test_kill_9_of_redis_mid_flush_loses_nothing_and_duplicates_nothing(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    # Durable server (appendonly yes, appendfsync always): every XADD, delivery and
    # XACK Redis acknowledged is on disk before the kill. Redis dies right after a
    # batch was committed to SQL and before its XACK: that batch is still pending
    # after the restart, is read again and written again (the insert is idempotent,
    # so SQL holds each row once). Rows written while Redis is down go to SQL directly.
    server = redis_factory(durable=True)
    sql, rows = FakeSql(), make_rows(10_000, chats=20)
    before, during, after = rows[:6000], rows[6000:8000], rows[8000:]
    killed = trio.Event()

    async def kill_redis() -> None:
        await trio.to_thread.run_sync(server.kill)
        killed.set()

    sql.after_commit, sql.after_commit_at = kill_redis, 1500
    options = {"batch_size": 50, "retry_backoff_s": 0.02, "cooldown_s": 0.1}
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with store_for(server.url, sql, **options) as store:
        assert store.durability == "redis_fsync"  # durable: Redis' word suffices
        for chunk in chunks(before, 500):
            await store.write_rows(chunk)
        assert store.statistics()["queued_total"] == 6000

        async with flushing(store):
            await killed.wait()
            flushed_at_kill = len(sql.rows)
            assert 1500 <= flushed_at_kill < 6000, "the kill must land in the middle of the flush"

            for chunk in chunks(during, 500):  # Redis is down: straight to SQL
                await store.write_rows(chunk)
            assert all(row.artifact_id in sql.rows for row in during)
            assert store.statistics()["fallbacks_total"] == 2000
            await wait_for(
                lambda: store.statistics()["flush_failures_total"] >= 1, "a failed flush"
            )

            await trio.to_thread.run_sync(server.restart)
            await wait_for(
                lambda: (
                    store.mode == "write_behind"
                    and store.statistics()["flush_failures_consecutive"] == 0
                ),
                "the flusher back on the restarted server",
            )
            for chunk in chunks(after, 500):
                await store.write_rows(chunk)
            assert store.statistics()["queued_total"] == 8000
            await wait_for(lambda: len(sql.rows) == 10_000, "every row in SQL")
            await wait_for(lambda: store.statistics()["pending"] == 0, "an empty queue")
            assert store.statistics()["flushed_total"] == 8000  # counted at the ack that landed

    assert set(sql.rows) == {row.artifact_id for row in rows}
    assert all(sql.rows[row.artifact_id] == row for row in rows)
    written_twice = sorted(i for i, n in sql.commits.items() if n > 1)
    # Exactly the batch whose ack the kill swallowed, and each of its rows only twice.
    assert len(written_twice) == 50
    assert max(sql.commits.values()) == 2
    assert await on_redis(server, lambda r: r.xlen(stream())) == 0
    assert await on_redis(server, group_pending) == 0


async def test_redis_down_at_write_time_writes_directly_to_sql(redis_server: RedisServer) -> None:
    sql, clock = FakeSql(), FakeClock()
    async with store_for(redis_server.url, sql, clock=clock) as store:
        await trio.to_thread.run_sync(redis_server.kill)
        rows = make_rows(5)
        await store.write_rows(rows)
        assert set(sql.rows) == {row.artifact_id for row in rows}
        stats = store.statistics()
        assert (stats["fallbacks_total"], stats["queued_total"]) == (5, 0)
        assert store.mode == "write_behind"  # one failed write is not a flusher breaker trip
        # Reads still work (from SQL) while Redis is down.
        assert len(await store.fetch_rows("chat-0", [r.artifact_id for r in rows])) == 5

        await trio.to_thread.run_sync(redis_server.restart)
        clock.advance(2)  # past the short hold-off after a Redis failure
        await store.write_rows(make_rows(3))
        assert store.statistics()["queued_total"] == 3


async def test_a_store_opened_while_redis_is_down_still_works(redis_server: RedisServer) -> None:
    await trio.to_thread.run_sync(redis_server.kill)
    sql = FakeSql()
    async with store_for(redis_server.url, sql, retry_backoff_s=0.01) as store:
        rows = make_rows(4)
        await store.write_rows(rows)
        assert len(sql.rows) == 4
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await store.ping()

        await trio.to_thread.run_sync(redis_server.restart)
        async with flushing(store):
            # The flusher creates the group once Redis answers.
            await wait_for(lambda: store.statistics()["flush_failures_consecutive"] == 0, "a ping")
            await store.ping()


# -- the breaker -------------------------------------------------------------------------


async def test_flush_failures_past_the_limit_switch_to_direct_mode_and_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sql = FakeSql()
    sql.up = trio.Event()
    options = {"flush_failure_limit": 3, "retry_backoff_s": 0.01, "cooldown_s": 0.05}
    async with store_for(redis_server.url, sql, **options) as store:
        queued = make_rows(5)
        await store.write_rows(queued)
        async with flushing(store):
            await wait_for(lambda: store.mode == "direct", "direct mode")
            # Half-open probes keep failing while the database is down: still direct.
            await wait_for(lambda: store.statistics()["flush_failures_total"] >= 6, "failed probes")
            assert store.mode == "direct"
            assert len(messages(caplog, "Redis write-behind disabled after 3 failed")) == 1

            # Direct mode: writes no longer hide the database's errors behind Redis.
            with pytest.raises(StoreUnavailable):
                await store.write_rows(make_rows(1))
            sql.up.set()
            direct = make_rows(2)
            await store.write_rows(direct)  # still direct until a probe succeeds
            assert all(row.artifact_id in sql.rows for row in direct)
            assert store.statistics()["direct_total"] == 2

            await wait_for(lambda: store.mode == "write_behind", "a successful probe")
            await wait_for(lambda: all(r.artifact_id in sql.rows for r in queued), "the backlog")
            later = make_rows(3)
            await store.write_rows(later)
            assert store.statistics()["queued_total"] == 5 + 3
            await wait_for(lambda: all(r.artifact_id in sql.rows for r in later), "later rows")

    assert len(messages(caplog, "Redis write-behind disabled")) == 1
    assert len(messages(caplog, "Redis write-behind re-enabled")) == 1
    assert set(sql.commits.values()) == {1}


async def test_redis_errors_in_the_flusher_count_toward_the_breaker(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sql = FakeSql()
    options = {"flush_failure_limit": 2, "retry_backoff_s": 0.01, "cooldown_s": 0.05}
    async with store_for(redis_server.url, sql, **options) as store, flushing(store):
        await trio.to_thread.run_sync(redis_server.kill)
        await wait_for(lambda: store.mode == "direct", "direct mode")
        rows = make_rows(3)
        await store.write_rows(rows)  # direct: Redis is not even tried
        assert store.statistics()["direct_total"] == 3

        await trio.to_thread.run_sync(redis_server.restart)  # empty: it had no persistence
        await wait_for(lambda: store.mode == "write_behind", "a successful probe")
    assert len(messages(caplog, "Redis write-behind disabled after 2 failed")) == 1
    # The restarted server had lost the consumer group; the store says so and recreates it.
    assert len(messages(caplog, "vanished from Redis")) == 1


# -- several flushers --------------------------------------------------------------------


async def test_two_flushers_on_one_stream_lose_nothing_and_write_nothing_twice(
    redis_server: RedisServer,
) -> None:
    sql, rows = FakeSql(), make_rows(2000, chats=7)
    async with (
        store_for(redis_server.url, sql, consumer="flusher-a") as a,
        store_for(redis_server.url, sql, consumer="flusher-b") as b,
        flushing(a, b),
    ):
        for i, chunk in enumerate(chunks(rows, 100)):
            await (a if i % 2 else b).write_rows(chunk)
        await wait_for(lambda: len(sql.rows) == 2000, "all rows in SQL")
        await wait_for(
            lambda: a.statistics()["flushed_total"] + b.statistics()["flushed_total"] == 2000,
            "both flushers done",
        )
    assert set(sql.rows) == {row.artifact_id for row in rows}
    assert set(sql.commits.values()) == {1}, "a row was written twice"
    assert a.statistics()["flushed_total"] > 0
    assert b.statistics()["flushed_total"] > 0
    assert await on_redis(redis_server, group_pending) == 0


async def test_entries_of_a_dead_consumer_are_claimed(redis_server: RedisServer) -> None:
    sql, rows = FakeSql(), make_rows(40)
    # The writer's own database: what it writes out of its held rows at close
    # (redis_durability) must not hide the claim this test is about.
    async with store_for(redis_server.url, FakeSql(), consumer="writer") as writer:
        await writer.write_rows(rows)
    # A flusher that read everything and died before writing it to SQL.
    delivered = await on_redis(
        redis_server,
        lambda r: r.xreadgroup(GROUP, "dead-process", {stream(): ">"}, count=100),
    )
    assert isinstance(delivered, list)
    assert len(delivered[0][1]) == 40
    async with (
        store_for(redis_server.url, sql, consumer="survivor", claim_idle_s=0.05) as survivor,
        flushing(survivor),
    ):
        await wait_for(lambda: len(sql.rows) == 40, "the dead consumer's rows in SQL")
        assert survivor.statistics()["claims_total"] >= 40
    assert set(sql.commits.values()) == {1}
    assert await on_redis(redis_server, group_pending) == 0


async def test_a_cancelled_flush_is_finished_by_the_next_flusher(redis_server: RedisServer) -> None:
    sql, rows = FakeSql(), make_rows(10)
    sql.gate = trio.Event()  # SQL writes hang: the flusher is cancelled mid-write
    async with store_for(redis_server.url, sql, consumer="same-name") as first:
        await first.write_rows(rows)
        async with flushing(first):
            await wait_for(lambda: sql.write_calls == 1, "a flush in progress")
    # Not acknowledged, and the consumer (with its pending entries) was not deleted on close.
    consumers = await on_redis(redis_server, lambda r: r.xinfo_consumers(stream(), GROUP))
    assert [(c["name"], c["pending"]) for c in consumers] == [(b"same-name", 10)]

    sql.gate.set()
    async with (
        store_for(redis_server.url, sql, consumer="same-name") as second,
        flushing(second),
    ):
        await wait_for(lambda: len(sql.rows) == 10, "the rows of the cancelled flush")
    assert set(sql.commits.values()) == {1}
    # Nothing pending for it any more: the consumer left the group on close.
    assert await on_redis(redis_server, lambda r: r.xinfo_consumers(stream(), GROUP)) == []


async def test_a_row_the_database_refuses_is_dead_lettered_not_blocking(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    sql, rows = FakeSql(), make_rows(10)
    sql.reject = {rows[3].artifact_id}
    async with store_for(redis_server.url, sql) as store, flushing(store):
        await store.write_rows(rows)
        await wait_for(lambda: store.statistics()["pending"] == 0, "an empty queue")
        await wait_for(lambda: len(sql.rows) == 9, "the other rows in SQL")
        assert store.statistics()["dead_lettered_total"] == 1
    dead = await on_redis(redis_server, lambda r: dead_letters(r, f"{stream()}:dead"))
    assert [fields[b"id"].decode() for fields in dead] == [rows[3].artifact_id]
    assert b"refused" in dead[0][b"reason"]
    assert messages(caplog, rows[3].artifact_id)


# -- reads, deletes, keys ------------------------------------------------------------------


async def test_the_cache_serves_fetches_without_touching_sql(redis_server: RedisServer) -> None:
    sql = FakeSql()
    async with store_for(redis_server.url, sql) as store:
        queued = make_rows(5)
        await store.write_rows(queued)  # no flusher: only Redis has them
        ids = [row.artifact_id for row in queued]
        assert await store.fetch_rows("chat-0", ids) == queued
        assert sql.fetch_calls == 0
        # Queued rows are listed too (a later turn must find a cancelled turn's artifacts).
        assert await store.list_ids("chat-0") == ids
        assert await store.list_ids("chat-0", message_ids=["other"]) == []

        in_sql_only = make_rows(3)
        await sql.write_rows(in_sql_only)
        sql_ids = [row.artifact_id for row in in_sql_only]
        assert await store.fetch_rows("chat-0", sql_ids) == in_sql_only
        assert sql.fetch_calls == 1
        assert await store.fetch_rows("chat-0", sql_ids) == in_sql_only  # cached back
        assert sql.fetch_calls == 1
        assert await on_redis(redis_server, lambda r: r.ttl(cache_key(in_sql_only[0]))) > 0

        unknown = new_artifact_id()
        assert await store.fetch_rows("chat-0", [*ids, unknown]) == queued
        assert sql.fetch_calls == 2  # only the unknown id was asked for
        assert await store.fetch_rows("another-chat", ids) == []  # cache keys carry the chat


async def test_delete_removes_rows_and_cache_entries(redis_server: RedisServer) -> None:
    sql, rows = FakeSql(), make_rows(6, created_at=100.0)
    async with store_for(redis_server.url, sql) as store:
        await store.write_rows(rows)
        async with flushing(store):
            await wait_for(lambda: len(sql.rows) == 6, "all rows in SQL")
        ids = [row.artifact_id for row in rows]
        assert await store.delete("chat-0", ids[:2]) == 2
        assert await on_redis(redis_server, lambda r: r.exists(cache_key(rows[0]))) == 0
        assert await store.fetch_rows("chat-0", ids[:2]) == []
        assert await store.list_ids("chat-0") == ids[2:]
        assert await store.delete_older_than(103.0) == 1  # created 102 (103 and later stay)
        assert await store.list_ids("chat-0") == ids[3:]


async def test_two_namespaces_never_share_keys(redis_server: RedisServer) -> None:
    sql_a, sql_b = FakeSql(), FakeSql()
    rows = make_rows(4)
    async with (
        store_for(redis_server.url, sql_a, namespace="pipe_a_00ff") as a,
        store_for(redis_server.url, sql_b, namespace="pipe_b_00ff") as b,
    ):
        await a.write_rows(rows)
        await b.write_rows(rows)  # the very same ids and chats
        keys = await on_redis(redis_server, lambda r: [_text(k) for k in r.keys("*")])
        keys_a = {k for k in keys if k.startswith("orpipe:pipe_a_00ff:")}
        keys_b = {k for k in keys if k.startswith("orpipe:pipe_b_00ff:")}
        assert keys_a and keys_b
        assert keys_a | keys_b == set(keys)
        assert not keys_a & keys_b

        async with flushing(a):
            await wait_for(lambda: len(sql_a.rows) == 4, "namespace a flushed")
        assert sql_b.rows == {}
        assert await on_redis(redis_server, lambda r: r.xlen(stream("pipe_b_00ff"))) == 4


# -- secrets and settings ---------------------------------------------------------------------


async def test_the_redis_password_never_appears(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    password, wrong = "Corr3ct-h0rse-battery", "Wr0ng-staple-9876"
    server = redis_factory(password=password)
    sql = FakeSql()
    seen: list[str] = []

    async with store_for(server.url.replace(password, wrong), sql, retry_backoff_s=0.01) as bad:
        seen.append(repr(bad))
        with pytest.raises(StoreUnavailable) as refused:
            await bad.ping()
        assert "check the password in REDIS_URL" in refused.value.message
        seen.append("".join(traceback.format_exception(refused.value)))
        await bad.write_rows(make_rows(2))  # falls back to SQL
        assert len(sql.rows) == 2
        async with flushing(bad):
            await wait_for(lambda: bad.statistics()["flush_failures_total"] >= 2, "failures")
        seen.append(str(bad.statistics()))

    async with store_for(server.url, sql) as good:
        await good.ping()
        await good.write_rows(make_rows(2))
        assert good.statistics()["queued_total"] == 2
        seen.append(repr(good))
        await trio.to_thread.run_sync(server.kill)
        with pytest.raises(StoreUnavailable) as down:
            await good.ping()
        seen.append("".join(traceback.format_exception(down.value)))
        await good.write_rows(make_rows(1))  # fallback, logged

    seen.append(caplog.text)
    assert "Wr0ng-staple" in server.url.replace(password, wrong)  # the test itself is sound
    for text in seen:
        assert password not in text
        assert wrong not in text


def test_settings_are_checked() -> None:
    sql = FakeSql()
    with pytest.raises(UsageError, match="namespace"):
        RedisWriteBehind("redis://127.0.0.1:1/0", namespace="a:b", sql=sql)
    with pytest.raises(ConfigError, match="DB_BATCH_SIZE"):
        RedisWriteBehind("redis://127.0.0.1:1/0", namespace=NS, sql=sql, batch_size=0)
    with pytest.raises(ConfigError, match="REDIS_FLUSH_FAILURE_LIMIT"):
        RedisWriteBehind("redis://127.0.0.1:1/0", namespace=NS, sql=sql, flush_failure_limit=0)
    with pytest.raises(ConfigError, match="REDIS_URL") as bad_url:
        RedisWriteBehind("http://user:s3cret@example/0", namespace=NS, sql=sql)
    assert "s3cret" not in str(bad_url.value)


async def test_use_before_open_or_after_close_is_a_usage_error(redis_server: RedisServer) -> None:
    store = RedisWriteBehind(redis_server.url, namespace=NS, sql=FakeSql())
    with pytest.raises(UsageError):
        await store.write_rows(make_rows(1))
    async with store:
        pass
    with pytest.raises(UsageError):
        await store.fetch_rows("chat-0", ["x"])
    await store.aclose()  # twice is fine


# -- with the real SQL store -------------------------------------------------------------------


async def test_through_write_behind_into_sqlite(redis_server: RedisServer, tmp_path: Path) -> None:
    namespace = "pipe_sqlite_0123abcd"
    rows = make_rows(300, chats=3)
    async with SqlRowStore(f"sqlite:///{tmp_path / 'artifacts.db'}", namespace=namespace) as sql:
        async with store_for(redis_server.url, sql, namespace=namespace) as store:
            await store.write_rows(rows)
            await store.write_rows(rows[:50])  # a repeated write is harmless
            async with flushing(store):
                await wait_for(lambda: store.statistics()["pending"] == 0, "an empty queue")
            assert store.statistics()["flushed_total"] == 350

            chat0 = [row for row in rows if row.chat_id == "chat-0"]
            ids = [row.artifact_id for row in chat0]
            assert await sql.fetch_rows("chat-0", ids) == chat0  # in SQL, byte for byte
            assert await sql.list_ids("chat-0") == ids
            assert await store.delete("chat-0", ids[:10]) == 10
            assert await store.fetch_rows("chat-0", ids) == chat0[10:]
        assert sql.statistics()["rows_written"] == 300
