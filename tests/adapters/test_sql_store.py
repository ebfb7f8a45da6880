"""The SQL row store against real SQLite files and the machine's PostgreSQL.

Every store test runs on both backends (``db_url``); PostgreSQL must be up
(``pg_support``: a missing server fails the run with the command to start it).
Each test gets its own namespace (its own table), dropped afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from orpipe.adapters.store import sql as sql_store
from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.rows import CodecStore, StoredRow
from orpipe.adapters.store.sql import SqlRowStore, artifact_table
from orpipe.adapters.store.sql_backends import pg_connect_args
from orpipe.engine.artifacts import Artifact, new_artifact_id
from orpipe.engine.errors import ConfigError, PersistenceError, StoreUnavailable, UsageError
from tests.adapters import pg_support

pg_url = pg_support.pg_url

KEY = "a long random passphrase for tests"
ROOT = Path(__file__).resolve().parents[2]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'artifacts.db'}"
    return pg_support.postgres_url()


@pytest.fixture
def namespace(db_url: str) -> Iterator[str]:
    """A fresh namespace; its table is dropped after the test, whoever created it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    if db_url.startswith("sqlite"):
        return  # the file lives in tmp_path
    engine = sa.create_engine(db_url)
    try:
        artifact_table(name).drop(engine, checkfirst=True)
    finally:
        engine.dispose()


@pytest.fixture
async def store(db_url: str, namespace: str) -> AsyncIterator[SqlRowStore]:
    async with SqlRowStore(db_url, namespace=namespace, batch_size=3) as opened:
        yield opened


def row(
    *,
    chat: str = "chat-1",
    message: str = "msg-1",
    created_at: float | None = None,
    blob: bytes = b"\x10{}",
    artifact_id: str | None = None,
) -> StoredRow:
    return StoredRow(
        artifact_id=artifact_id or new_artifact_id(),
        chat_id=chat,
        message_id=message,
        item_type="function_call",
        model_id="openai/o4",
        user_id="user-1",
        created_at=time.time() if created_at is None else created_at,
        blob=blob,
        is_encrypted=False,
    )


def rows(n: int, **kwargs: Any) -> list[StoredRow]:
    return [row(**kwargs) for _ in range(n)]


async def count(store: SqlRowStore) -> int:
    def query(engine: sa.Engine) -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar_one()
            )

    return await trio.to_thread.run_sync(query, store.engine)


def on_sql(engine: sa.Engine, hook: Callable[[str], None]) -> None:
    """Call ``hook(statement)`` in the executing thread before each statement."""

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        hook(statement)

    sa.event.listen(engine, "before_cursor_execute", before)


def slow(keyword: str, seconds: float) -> Callable[[str], None]:
    def hook(statement: str) -> None:
        if statement.lstrip().upper().startswith(keyword):
            time.sleep(seconds)  # in the worker thread

    return hook


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- round trips and idempotence ----------------------------------------------------------


async def test_artifacts_round_trip_through_the_codec_store(store: SqlRowStore) -> None:
    codec = ArtifactCodec(KEY)
    artifacts = CodecStore(store, codec)
    originals = [
        Artifact(
            chat_id="chat-1",
            message_id=f"msg-{i % 2}",
            item_type=item_type,
            payload={"i": i, "text": "héllo ✓ 漢字 " * 40, "nested": [{"a": None}, 1.5]},
            model_id=None if i == 0 else "openai/o4",
            user_id=None if i == 1 else "user-1",
        )
        for i, item_type in enumerate(["reasoning", "function_call", "function_call_output"] * 3)
    ]
    await artifacts.write(originals)

    ids = [a.artifact_id for a in originals]
    assert await artifacts.fetch("chat-1", ids) == {a.artifact_id: a for a in originals}
    assert await artifacts.list_ids("chat-1") == sorted(ids)
    assert await artifacts.fetch("another-chat", ids) == {}
    stored = {r.artifact_id: r for r in await store.fetch_rows("chat-1", ids)}
    for original in originals:
        assert stored[original.artifact_id].is_encrypted is (original.item_type == "reasoning")
        if original.item_type != "reasoning":
            assert stored[original.artifact_id].blob[0] == 0x11  # plain rows are compressed too


async def test_writing_twice_keeps_one_row(store: SqlRowStore) -> None:
    batch = rows(7)
    await store.write_rows(batch)
    await store.write_rows(batch)
    await store.write_rows([*batch[:2], *batch[:2]])  # duplicates within one call too
    assert await count(store) == 7
    stats = store.statistics()
    assert stats["rows_written"] == 7
    assert stats["duplicates_skipped"] == 7 + 4
    assert stats["failures"] == 0
    assert (await store.fetch_rows("chat-1", [batch[0].artifact_id]))[0] == batch[0]


async def test_rows_are_committed_in_batches(store: SqlRowStore) -> None:
    commits: list[int] = []
    sa.event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    await store.write_rows(rows(10))
    assert len(commits) == 4  # batch_size 3: 3 + 3 + 3 + 1
    assert store.statistics()["batches"] == 4


async def test_a_failing_batch_leaves_the_earlier_ones_committed(store: SqlRowStore) -> None:
    good = rows(6)
    broken = row(artifact_id="ZZZZZZZZZZZZZZZZZZZZ")  # sorts last: the third batch
    object.__setattr__(broken, "blob", None)  # violates NOT NULL
    with pytest.raises(PersistenceError) as caught:
        await store.write_rows([broken, *good])
    assert not isinstance(caught.value, StoreUnavailable)  # the database answered: a real error
    assert "refused" in str(caught.value)
    assert await count(store) == 6
    assert store.statistics()["failures"] == 1
    # the caller's retry (without the bad row) only skips what is already there
    await store.write_rows(good)
    assert store.statistics()["duplicates_skipped"] == 6


async def test_stored_rows_come_back_exactly(store: SqlRowStore) -> None:
    original = StoredRow(
        artifact_id=new_artifact_id(),
        chat_id="c" * 64,
        message_id="m" * 64,
        item_type="reasoning",
        model_id="x" * 128,
        user_id=None,
        created_at=1_700_000_000.123456,
        blob=bytes(range(256)) * 4,
        is_encrypted=True,
    )
    await store.write_rows([original])
    assert await store.fetch_rows("c" * 64, [original.artifact_id]) == [original]


# -- reads, deletes, cleanup --------------------------------------------------------------


async def test_list_ids_by_chat_and_message_oldest_first(store: SqlRowStore) -> None:
    first, second, other_chat = rows(4, message="m1"), rows(3, message="m2"), rows(2, chat="c2")
    await store.write_rows([*reversed(second), *first, *other_chat])
    every = [r.artifact_id for r in [*first, *second]]
    assert await store.list_ids("chat-1") == every
    assert await store.list_ids("chat-1", message_ids=["m2"]) == every[4:]
    assert await store.list_ids("chat-1", message_ids=["m2", "m1", "m2"]) == every
    assert await store.list_ids("chat-1", message_ids=["none"]) == []
    assert await store.list_ids("c2") == [r.artifact_id for r in other_chat]


async def test_long_id_lists_are_chunked(
    store: SqlRowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_store, "MAX_IN_LIST", 3)
    stored = [row(message=f"m{i}") for i in range(10)]
    await store.write_rows(stored)
    ids = [r.artifact_id for r in stored]
    assert [r.artifact_id for r in await store.fetch_rows("chat-1", [*ids, "missing"])] == ids
    assert await store.list_ids("chat-1", message_ids=[f"m{i}" for i in range(10)]) == ids
    assert await store.delete("chat-1", [*ids[:7], "missing"]) == 7
    assert await store.list_ids("chat-1") == ids[7:]


async def test_known_ids_names_the_stored_ids_across_chats_in_chunks(
    store: SqlRowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write-behind's check of held rows: one query per chunk, whatever the chat.
    monkeypatch.setattr(sql_store, "MAX_IN_LIST", 3)
    mine, theirs = rows(4), rows(3, chat="c2")
    await store.write_rows([*mine, *theirs])
    asked = [r.artifact_id for r in [*mine, *theirs]]
    assert await store.known_ids([*asked, "missing", asked[0]]) == set(asked)
    assert await store.known_ids(["missing"]) == set()
    assert await store.known_ids([]) == set()


async def test_delete_counts_only_the_rows_of_that_chat(store: SqlRowStore) -> None:
    mine, theirs = rows(3), rows(2, chat="c2")
    await store.write_rows([*mine, *theirs])
    assert await store.delete("c2", [r.artifact_id for r in mine]) == 0
    assert await store.delete("chat-1", [mine[0].artifact_id, "nope"]) == 1
    assert await store.delete("chat-1", [mine[0].artifact_id]) == 0
    assert await store.delete("chat-1", []) == 0
    assert await store.fetch_rows("chat-1", []) == []
    assert await count(store) == 4


async def test_age_cleanup_removes_only_old_rows_in_chunks(
    store: SqlRowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_store, "_CLEANUP_CHUNK", 2)
    now = time.time()
    old = rows(5, created_at=now - 91 * 86400)
    young = rows(3, created_at=now - 89 * 86400)
    await store.write_rows([*old, *young])
    assert await store.delete_older_than(now - 90 * 86400) == 5
    assert await store.list_ids("chat-1") == [r.artifact_id for r in young]
    assert await store.delete_older_than(now - 90 * 86400) == 0


# -- schema creation ------------------------------------------------------------------------


async def test_schema_creation_from_many_threads_at_once(db_url: str, namespace: str) -> None:
    stores = [SqlRowStore(db_url, namespace=namespace) for _ in range(8)]
    try:
        async with trio.open_nursery() as nursery:
            for each in stores:
                nursery.start_soon(each.open)  # each its own engine, limiter and thread
        await stores[0].write_rows(rows(2))
        assert await stores[-1].list_ids("chat-1")
        assert await trio.to_thread.run_sync(schema_present, stores[0])
    finally:
        for each in stores:
            await each.aclose()


def schema_present(store: SqlRowStore) -> bool:
    with store.engine.connect() as conn:
        return store._schema_present(conn)


CREATE_IN_PROCESS = """
import os, trio
from orpipe.adapters.store.sql import SqlRowStore

async def main():
    async with SqlRowStore(os.environ["STORE_URL"], namespace=os.environ["STORE_NS"]):
        pass

trio.run(main)
"""


async def test_schema_creation_from_several_processes_at_once(db_url: str, namespace: str) -> None:
    env = {**os.environ, "STORE_URL": db_url, "STORE_NS": namespace, "PYTHONPATH": str(ROOT)}
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def create() -> None:
        command = [sys.executable, "-c", CREATE_IN_PROCESS]
        results.append(await trio.run_process(command, env=env, capture_stderr=True, check=False))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(create)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr.decode()[-500:] for r in results]
    async with SqlRowStore(db_url, namespace=namespace) as opened:
        assert await trio.to_thread.run_sync(schema_present, opened)


async def test_an_already_exists_race_is_answered_by_checking_the_schema(
    store: SqlRowStore, db_url: str, namespace: str
) -> None:
    # Make the next creator's CREATE TABLE lose a race: the table exists and its
    # statement has no IF NOT EXISTS, so the database answers "already exists".
    failed: list[str] = []

    def rewrite(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> Any:
        if statement.lstrip().startswith("CREATE TABLE IF NOT EXISTS orpipe_artifacts_"):
            failed.append(statement)
            statement = statement.replace("IF NOT EXISTS ", "", 1)
        return statement, parameters

    sa.event.listen(sa.Engine, "before_cursor_execute", rewrite, retval=True)
    try:
        async with SqlRowStore(db_url, namespace=namespace) as second:
            await second.write_rows(rows(1))
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", rewrite)
    assert len(failed) == 1
    assert await count(store) == 1


async def test_a_table_dropped_while_open_is_created_again(
    store: SqlRowStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.write_rows(rows(2))
    await trio.to_thread.run_sync(store.table.drop, store.engine)
    with caplog.at_level(logging.WARNING, logger="orpipe.persistence"):
        await store.write_rows(rows(3))
    assert await count(store) == 3
    assert any("creating it again" in r.getMessage() for r in caplog.records)


# -- concurrency ---------------------------------------------------------------------------


async def test_two_stores_writing_the_same_ids_at_once_store_each_once(
    db_url: str, namespace: str
) -> None:
    shared = rows(120)
    async with (
        SqlRowStore(db_url, namespace=namespace, batch_size=7) as one,
        SqlRowStore(db_url, namespace=namespace, batch_size=5) as two,
    ):
        async with trio.open_nursery() as nursery:
            for writer, order in [(one, shared), (two, list(reversed(shared)))]:
                for _ in range(3):
                    nursery.start_soon(writer.write_rows, order)
        assert await count(one) == 120
        written = one.statistics()["rows_written"] + two.statistics()["rows_written"]
        assert written == 120
        assert one.statistics()["failures"] == two.statistics()["failures"] == 0


async def test_database_calls_run_in_worker_threads_under_the_limiter(
    store: SqlRowStore,
) -> None:
    trio_thread = threading.get_ident()
    threads: set[int] = set()
    on_sql(store.engine, lambda _statement: threads.add(threading.get_ident()))
    on_sql(store.engine, slow("INSERT", 0.3))
    ticks = 0
    borrowed: list[int | float] = []

    async def watch() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            borrowed.append(store.statistics()["limiter_borrowed"])
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await store.write_rows(rows(2))
        await store.fetch_rows("chat-1", ["x"])
        await store.list_ids("chat-1")
        await store.delete("chat-1", ["x"])
        await store.delete_older_than(0)
        nursery.cancel_scope.cancel()
    assert threads
    assert trio_thread not in threads
    assert ticks >= 10  # the event loop kept running during the slow insert
    assert max(borrowed) == 1
    assert store.statistics()["limiter_borrowed"] == 0
    assert store.limiter_name == "sql"
    assert store.statistics()["limiter_total"] == 4


async def test_the_limiter_caps_concurrent_database_calls(db_url: str, namespace: str) -> None:
    limiter = trio.CapacityLimiter(2)
    async with SqlRowStore(db_url, namespace=namespace, limiter=limiter) as limited:
        busy, peak = 0, 0
        lock = threading.Lock()

        def hook(_statement: str) -> None:
            nonlocal busy, peak
            with lock:
                busy += 1
                peak = max(peak, busy)
            time.sleep(0.05)
            with lock:
                busy -= 1

        on_sql(limited.engine, hook)
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(limited.list_ids, "chat-1")
        assert peak == 2
        assert limited.limiter is limiter


# -- cancellation ------------------------------------------------------------------------


async def test_a_cancelled_write_finishes_its_transaction_first(store: SqlRowStore) -> None:
    on_sql(store.engine, slow("INSERT", 0.3))
    batch = rows(6)  # two batches of 3
    started = trio.current_time()
    with trio.move_on_after(0.05) as scope:
        await store.write_rows(batch)
    assert scope.cancelled_caught
    assert trio.current_time() - started >= 0.3  # waited for the commit, not abandoned
    # the batch in flight was committed; the next one never started
    assert await store.list_ids("chat-1") == [r.artifact_id for r in batch[:3]]
    assert store.statistics()["rows_written"] == 3  # the counters know it too


async def test_a_cancelled_read_returns_at_once(store: SqlRowStore) -> None:
    await store.write_rows(rows(1))
    on_sql(store.engine, slow("SELECT", 0.5))
    started = trio.current_time()
    with trio.move_on_after(0.05):
        await store.list_ids("chat-1")
    assert trio.current_time() - started < 0.3
    await trio.sleep(0.6)  # let the abandoned thread finish before teardown


# -- failures ---------------------------------------------------------------------------


async def test_a_closed_port_is_store_unavailable_without_the_password() -> None:
    url = f"postgresql+psycopg://orpipe:s3cret-Pa55word@127.0.0.1:{closed_port()}/test"
    store = SqlRowStore(url, namespace="unreachable", connect_timeout_s=2)
    assert "s3cret-Pa55word" not in repr(store)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith("The artifact database is unreachable (postgresql at 127.0.0.1:")
    assert message.endswith("; artifacts are kept and retried.")
    assert "s3cret-Pa55word" not in message
    assert "Traceback" not in message
    assert caught.value.retryable
    with pytest.raises(UsageError):
        await store.write_rows(rows(1))


async def test_an_unopenable_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x", encoding="utf-8")
    store = SqlRowStore(f"sqlite:///{blocker / 'artifacts.db'}", namespace="ns")
    with pytest.raises(StoreUnavailable, match="The artifact database is unreachable"):
        await store.open()


async def test_a_locked_sqlite_database_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SqlRowStore(f"sqlite:///{path}", namespace="ns", connect_timeout_s=0.05) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock

        async def release_later() -> None:
            await trio.sleep(0.2)
            holder.execute("COMMIT")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_later)
            await store.write_rows(rows(2))
        holder.close()
        assert await count(store) == 2
        assert store.statistics()["locked_retries"] >= 1


async def test_a_database_locked_for_too_long_is_reported_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_store, "_LOCKED_BACKOFF_S", (0.01, 0.01))
    path = tmp_path / "locked.db"
    async with SqlRowStore(f"sqlite:///{path}", namespace="ns", connect_timeout_s=0.05) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="The artifact database is busy"):
                await store.write_rows(rows(1))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.statistics()["locked_retries"] == 2


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    async with SqlRowStore(f"sqlite:///{tmp_path / 'wal.db'}", namespace="ns") as store:

        def pragmas(engine: sa.Engine) -> tuple[str, int]:
            with engine.connect() as conn:
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
                busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
            return str(mode), int(busy)

        assert await trio.to_thread.run_sync(pragmas, store.engine) == ("wal", 10_000)


async def test_in_memory_sqlite_works_across_threads() -> None:
    async with SqlRowStore("sqlite://", namespace="ns") as store:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(store.write_rows, rows(5))
        assert len(await store.list_ids("chat-1")) == 20


async def test_postgres_connections_killed_by_a_restart_are_replaced(
    pg_url: str, namespace: str
) -> None:
    async with SqlRowStore(pg_url, namespace=namespace) as store:
        await store.write_rows(rows(1))

        def backend_pid(engine: sa.Engine) -> int:
            with engine.connect() as conn:
                return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

        pid = await trio.to_thread.run_sync(backend_pid, store.engine)
        assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]

        def terminate(engine: sa.Engine) -> None:
            with engine.connect() as conn:  # only the store's own (pooled, idle) connection
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        killer = sa.create_engine(pg_url)
        try:
            await trio.to_thread.run_sync(terminate, killer)
        finally:
            killer.dispose()
        await store.write_rows(rows(1))
        assert await count(store) == 2
        assert store.statistics()["failures"] == 0


async def test_an_undecodable_row_is_skipped_with_a_warning_naming_its_id(
    store: SqlRowStore, caplog: pytest.LogCaptureFixture
) -> None:
    writer = CodecStore(store, ArtifactCodec(KEY))
    good = Artifact(chat_id="chat-1", message_id="m", item_type="function_call", payload={"a": 1})
    secret = Artifact(chat_id="chat-1", message_id="m", item_type="reasoning", payload={"r": 2})
    await writer.write([good, secret])
    corrupt = row(blob=b"\x11not lz4")
    await store.write_rows([corrupt])

    reader = CodecStore(store, ArtifactCodec("a different passphrase entirely"))
    ids = [good.artifact_id, secret.artifact_id, corrupt.artifact_id]
    with caplog.at_level(logging.WARNING, logger="orpipe.persistence"):
        found = await reader.fetch("chat-1", ids)
    assert found == {good.artifact_id: good}
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert secret.artifact_id in warnings
    assert corrupt.artifact_id in warnings
    assert KEY not in warnings


# -- configuration --------------------------------------------------------------------------


def test_unsupported_or_unparsable_urls_are_config_errors_without_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        SqlRowStore("mysql+pymysql://u:hunter2hunter2@db/x", namespace="ns")
    assert "hunter2hunter2" not in str(caught.value)
    assert "mysql" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        SqlRowStore("::not a url hunter2hunter2::", namespace="ns")
    assert "hunter2hunter2" not in str(caught.value)


def test_postgres_urls_use_psycopg_and_keep_their_own_options() -> None:
    store = SqlRowStore("postgres://u:pw@h:5433/db?connect_timeout=7", namespace="ns")
    assert store.url_for_display == "postgresql+psycopg://u:***@h:5433/db?connect_timeout=7"
    args = pg_connect_args(store._url, 10)
    assert "connect_timeout" not in args
    assert args["tcp_user_timeout"] == 30_000


@pytest.mark.parametrize("bad", ["", "UPPER", "has-dash", "x" * 41, "a;drop"])
def test_namespaces_are_checked(bad: str) -> None:
    with pytest.raises(UsageError):
        SqlRowStore("sqlite://", namespace=bad)


def test_batch_size_is_checked() -> None:
    with pytest.raises(ConfigError):
        SqlRowStore("sqlite://", namespace="ns", batch_size=0)


async def test_a_store_must_be_opened_once(tmp_path: Path) -> None:
    store = SqlRowStore(f"sqlite:///{tmp_path / 'x.db'}", namespace="ns")
    with pytest.raises(UsageError, match="not open"):
        await store.list_ids("c")
    async with store:
        with pytest.raises(UsageError, match="already open"):
            await store.open()
    await store.aclose()  # twice is fine
