"""The durable artifact table: SQLAlchemy 2 Core on a synchronous engine, driven from trio.

This module owns the table (``orpipe_artifacts_<namespace>``), its creation,
the row operations of ``adapters.store.rows.RowStore``, the worker threads
they run in, and the translation of every SQLAlchemy / DBAPI exception into
``engine.errors`` types. It never sees a payload in clear: rows
arrive encoded by ``adapters.store.codec``.

trio-flavoured: ``open``, ``aclose``, ``async with``, ``write_rows``,
``fetch_rows``, ``list_ids``, ``delete`` and ``delete_older_than`` are async;
``statistics`` is plain. Each unit of database work is one
``trio.to_thread.run_sync`` call holding a token of ``limiter`` (by default
a ``CapacityLimiter(4)`` of its own, named ``"sql"`` in ``limiter_name``), so
the event loop never blocks on the database and at most that many threads
(and pooled connections) are busy at once.

Backends: SQLite (the embedded default) and PostgreSQL, no others; what
differs between them is in ``adapters.store.sql_backends``.

Writes: rows are sorted by id and inserted with ``INSERT ... ON CONFLICT
(artifact_id) DO NOTHING RETURNING artifact_id`` (SQLite 3.35 or later),
``batch_size`` rows per transaction; the returned ids tell written rows from
skipped duplicates. Sorting makes two writers that insert the same ids lock
them in the same order, so they wait for each other instead of deadlocking.
A failure in batch *k* leaves batches before *k* committed; the caller
retries the whole write and the committed rows are skipped as duplicates.

Cancellation: a write (insert batch, delete, schema creation) runs with
``abandon_on_cancel=False``: when its caller is cancelled, trio waits for the
thread to end its transaction (commit or rollback) and the cancellation
takes effect at the next checkpoint, which for a multi-batch write is before
the next batch starts. A write is therefore never abandoned half-way with its
outcome unknown: the persister's flush, which runs under shield plus
timeout, knows exactly which batches were committed (the counters include
the batch in flight), and no worker thread is left committing while the
process exits. The wait is bounded by the busy timeout (SQLite) or the
socket timeouts (PostgreSQL). Reads run with ``abandon_on_cancel=True``: a
cancelled read returns at once; its thread finishes in the background (its
limiter token and connection come back when it does) and its result is
dropped. Waiting for a limiter token is cancellable in both cases.

Errors: connection-level problems (``OperationalError``, ``InterfaceError``,
pool timeouts, a database file that cannot be opened) become
``StoreUnavailable`` ("...is unreachable (...); artifacts are kept and
retried."); anything else the database rejects becomes ``PersistenceError``.
Messages carry the driver's first line of text, never the SQL parameters
(``hide_parameters``) and never the URL's password (masked wherever a URL
or driver text is shown).

Schema creation is idempotent and safe when several processes start at once:
``CREATE ... IF NOT EXISTS``, serialised on PostgreSQL by a transaction-level
advisory lock (``IF NOT EXISTS`` alone can still race there), and an "already
exists" error from any other race is answered by checking that the table and
its indexes are present. A table dropped while the store is open is created
again on the next operation.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
import trio
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from orpipe.adapters.store.rows import StoredRow
from orpipe.adapters.store.sql_backends import (
    already_exists,
    create_engine,
    insert_ignoring_duplicates,
    is_connection_problem,
    is_locked,
    is_memory,
    normalise_url,
    table_missing,
)
from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.errors import ConfigError, PersistenceError, StoreUnavailable, UsageError

__all__ = [
    "DEFAULT_SQL_THREADS",
    "MAX_IN_LIST",
    "SQL_LIMITER_NAME",
    "SqlRowStore",
    "artifact_table",
    "table_name",
]

log = logging.getLogger("orpipe.persistence")

T = TypeVar("T")

SQL_LIMITER_NAME = "sql"
DEFAULT_SQL_THREADS = 4
#: Ids per ``IN (...)`` list: far below every backend's parameter limit.
MAX_IN_LIST = 500
_MAX_BATCH_SIZE = 1000
#: Rows removed per transaction by the age cleanup (short SQLite write locks).
_CLEANUP_CHUNK = 2000
#: Waits before the retries of a SQLite "database is locked" (after the busy timeout).
_LOCKED_BACKOFF_S = (0.05, 0.25, 1.0)
_SCHEMA_ATTEMPTS = 3
_NAMESPACE = re.compile(r"[a-z0-9_]{1,40}")
_DETAIL_CHARS = 200
_DISPOSE_GRACE_S = 5.0


def table_name(namespace: str) -> str:
    return f"orpipe_artifacts_{namespace}"


def artifact_table(namespace: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """The artifact table of one namespace.

    The (chat_id, message_id) index also serves lookups by chat_id alone
    (its leading column), so no separate chat_id index slows the inserts.
    Index names are short and namespaced: PostgreSQL index names are unique
    per schema and silently cut at 63 characters.
    """
    table = sa.Table(
        table_name(namespace),
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("artifact_id", sa.String(20), primary_key=True),
        sa.Column("chat_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("item_type", sa.String(64), nullable=False),
        sa.Column("model_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        # Unix seconds as a double: exact round trip of Artifact.created_at, no time zones.
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
    )
    sa.Index(f"ix_oa_{namespace}_chat_msg", table.c.chat_id, table.c.message_id)
    sa.Index(f"ix_oa_{namespace}_created", table.c.created_at)
    return table


class SqlRowStore(AsyncResource):
    """``adapters.store.rows.RowStore`` on SQLite or PostgreSQL (see the module doc).

    Use ``async with SqlRowStore(url, namespace=...) as store`` (or ``open`` /
    ``aclose``). ``namespace`` comes from ``ArtifactCodec.namespace``.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        batch_size: int = 10,
        limiter: trio.CapacityLimiter | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise UsageError(f"namespace must be 1-40 characters of [a-z0-9_], not {namespace!r}")
        if not 1 <= batch_size <= _MAX_BATCH_SIZE:
            raise ConfigError(
                "DB_BATCH_SIZE", batch_size, f"a whole number from 1 to {_MAX_BATCH_SIZE}"
            )
        if not connect_timeout_s > 0:
            raise ConfigError(
                "connect_timeout_s", connect_timeout_s, "a positive number of seconds"
            )
        self._url = normalise_url(url)
        self._password = self._url.password or None
        self.backend = self._url.get_backend_name()
        self.namespace = namespace
        self.batch_size = batch_size
        self.connect_timeout_s = connect_timeout_s
        self.limiter = limiter if limiter is not None else trio.CapacityLimiter(DEFAULT_SQL_THREADS)
        self.limiter_name = SQL_LIMITER_NAME
        self.table = artifact_table(namespace)
        self._insert = insert_ignoring_duplicates(self.backend, self.table)
        memory = self.backend == "sqlite" and is_memory(self._url)
        # One shared in-memory connection must not interleave two threads' transactions.
        self._serial: AbstractContextManager[object] = threading.Lock() if memory else nullcontext()
        self._engine: Engine | None = None
        self._counts = dict.fromkeys(
            ("rows_written", "duplicates_skipped", "batches", "failures", "locked_retries"), 0
        )

    def __repr__(self) -> str:
        return f"SqlRowStore({self.url_for_display}, table={self.table.name})"

    @property
    def url_for_display(self) -> str:
        """The database URL with its password masked."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (synchronous: use it from a worker thread only)."""
        if self._engine is None:
            raise UsageError("SqlRowStore is not open: use 'async with SqlRowStore(...)'")
        return self._engine

    def statistics(self) -> dict[str, int | float]:
        """Counters since creation, and the limiter's current use."""
        return {
            **self._counts,
            "limiter_borrowed": self.limiter.borrowed_tokens,
            "limiter_total": self.limiter.total_tokens,
        }

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Create the engine (and a SQLite file's directory) and the schema."""
        if self._engine is not None:
            raise UsageError("SqlRowStore is already open")
        try:
            connect = partial(
                create_engine,
                self._url,
                connect_timeout_s=self.connect_timeout_s,
                pool_size=_pool_size(self.limiter),
            )
            self._engine = await trio.to_thread.run_sync(connect, limiter=self.limiter)
        except OSError as exc:  # the SQLite directory cannot be created
            raise StoreUnavailable(self._unreachable(exc)) from exc
        except sa_exc.SQLAlchemyError as exc:  # e.g. an option in the URL the driver rejects
            raise self._translate(exc) from exc
        try:
            await self._ensure_schema()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close every pooled connection (under shield plus timeout; safe to call twice)."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        with trio.move_on_after(_DISPOSE_GRACE_S, shield=True):
            # Not this store's limiter: its tokens may all be held by abandoned reads.
            await trio.to_thread.run_sync(engine.dispose, abandon_on_cancel=True)

    # -- schema ------------------------------------------------------------------

    async def _ensure_schema(self) -> None:
        await self._run(self._ensure_schema_sync, write=True, ensure_table=False)

    def _ensure_schema_sync(self, engine: Engine) -> None:
        for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
            try:
                with engine.begin() as conn:
                    self._create_schema(conn)
                return
            except sa_exc.DBAPIError as exc:
                # Another process won a race that IF NOT EXISTS did not cover: fine
                # if what it created is complete; otherwise try again.
                if not already_exists(exc) or attempt == _SCHEMA_ATTEMPTS:
                    raise
                with engine.connect() as conn:
                    if self._schema_present(conn):
                        return
                time.sleep(0.05 * attempt)  # a worker thread: the event loop is not blocked

    def _create_schema(self, conn: Connection) -> None:
        if self.backend == "postgresql":
            # Held until commit: concurrent creators run one after another.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key()})
        conn.execute(CreateTable(self.table, if_not_exists=True))
        for index in sorted(self.table.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))

    def _schema_present(self, conn: Connection) -> bool:
        inspector = sa.inspect(conn)
        if not inspector.has_table(self.table.name):
            return False
        present = {ix["name"] for ix in inspector.get_indexes(self.table.name)}
        return {ix.name for ix in self.table.indexes} <= present

    def _lock_key(self) -> int:
        digest = hashlib.sha256(self.table.name.encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    # -- RowStore ----------------------------------------------------------------

    async def write_rows(self, rows: Sequence[StoredRow]) -> None:
        """Insert rows, ``batch_size`` per transaction; existing ids are left alone."""
        unique = sorted({row.artifact_id: row for row in reversed(rows)}.values(), key=_row_id)
        self._counts["duplicates_skipped"] += len(rows) - len(unique)
        for batch in _chunks(unique, self.batch_size):
            inserted = await self._run(partial(self._insert_batch, batch), write=True)
            self._counts["rows_written"] += inserted
            self._counts["duplicates_skipped"] += len(batch) - inserted
            self._counts["batches"] += 1

    async def fetch_rows(self, chat_id: str, artifact_ids: Sequence[str]) -> list[StoredRow]:
        """The rows of ``chat_id`` with these ids that exist, in id order."""
        ids = list(dict.fromkeys(artifact_ids))
        if not ids:
            return []
        return await self._run(partial(self._select_rows, chat_id, ids), write=False)

    async def known_ids(self, artifact_ids: Sequence[str]) -> set[str]:
        """Which of these ids are stored, whatever their chat (the write-behind's check)."""
        ids = list(dict.fromkeys(artifact_ids))
        if not ids:
            return set()
        return await self._run(partial(self._select_known, ids), write=False)

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]:
        """Ids of a chat's rows (only of ``message_ids`` when given), oldest first."""
        messages = list(dict.fromkeys(message_ids))
        return await self._run(partial(self._select_ids, chat_id, messages), write=False)

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int:
        """Remove these rows of ``chat_id``; returns how many existed."""
        ids = list(dict.fromkeys(artifact_ids))
        if not ids:
            return 0
        return await self._run(partial(self._delete_ids, chat_id, ids), write=True)

    async def delete_older_than(self, cutoff_unix_s: float) -> int:
        """Remove rows created before the cutoff, a chunk per transaction; returns the count."""
        total = 0
        while True:
            removed = await self._run(partial(self._delete_chunk, cutoff_unix_s), write=True)
            total += removed
            if removed < _CLEANUP_CHUNK:
                return total

    # -- the units of work (run in worker threads) ---------------------------------

    def _insert_batch(self, batch: Sequence[StoredRow], engine: Engine) -> int:
        statement = self._insert.values([_params(row) for row in batch])
        with engine.begin() as conn:
            # RETURNING lists exactly the rows inserted (conflicts return nothing);
            # rowcount of an INSERT is not reported by every driver.
            return len(conn.execute(statement).all())

    def _select_rows(self, chat_id: str, ids: list[str], engine: Engine) -> list[StoredRow]:
        table, found = self.table, list[StoredRow]()
        with engine.connect() as conn:
            for chunk in _chunks(ids, MAX_IN_LIST):
                query = sa.select(table).where(
                    table.c.chat_id == chat_id, table.c.artifact_id.in_(chunk)
                )
                found.extend(_stored_row(row) for row in conn.execute(query).mappings())
        return sorted(found, key=_row_id)

    def _select_known(self, ids: list[str], engine: Engine) -> set[str]:
        column = self.table.c.artifact_id
        with engine.connect() as conn:
            return {
                str(found)
                for chunk in _chunks(ids, MAX_IN_LIST)
                for found in conn.execute(sa.select(column).where(column.in_(chunk))).scalars()
            }

    def _select_ids(self, chat_id: str, message_ids: list[str], engine: Engine) -> list[str]:
        table = self.table
        base = sa.select(table.c.artifact_id).where(table.c.chat_id == chat_id)
        queries = (
            [
                base.where(table.c.message_id.in_(chunk))
                for chunk in _chunks(message_ids, MAX_IN_LIST)
            ]
            if message_ids
            else [base]
        )
        with engine.connect() as conn:
            ids = [str(i) for query in queries for i in conn.execute(query).scalars()]
        return sorted(ids)  # ids are time-ordered: sorting by id is oldest first

    def _delete_ids(self, chat_id: str, ids: list[str], engine: Engine) -> int:
        table, removed = self.table, 0
        with engine.begin() as conn:
            for chunk in _chunks(ids, MAX_IN_LIST):
                statement = sa.delete(table).where(
                    table.c.chat_id == chat_id, table.c.artifact_id.in_(chunk)
                )
                removed += max(conn.execute(statement).rowcount, 0)
        return removed

    def _delete_chunk(self, cutoff_unix_s: float, engine: Engine) -> int:
        table = self.table
        oldest = (
            sa.select(table.c.artifact_id)
            .where(table.c.created_at < cutoff_unix_s)
            .limit(_CLEANUP_CHUNK)
        )
        statement = sa.delete(table).where(table.c.artifact_id.in_(oldest))
        with engine.begin() as conn:
            return max(conn.execute(statement).rowcount, 0)

    # -- running a unit of work off the event loop ---------------------------------

    async def _run(
        self, work: Callable[[Engine], T], *, write: bool, ensure_table: bool = True
    ) -> T:
        """``work(engine)`` in a worker thread, with SQLite lock retries and error translation."""
        engine = self.engine
        waits = iter(_LOCKED_BACKOFF_S if self.backend == "sqlite" else ())
        recreated = not ensure_table
        while True:
            try:
                return await trio.to_thread.run_sync(
                    self._serialised,
                    work,
                    engine,
                    limiter=self.limiter,
                    abandon_on_cancel=not write,
                )
            except sa_exc.SQLAlchemyError as exc:
                if not recreated and table_missing(exc):
                    recreated = True
                    log.warning("artifact table %s is missing; creating it again", self.table.name)
                    await self._ensure_schema()
                    continue
                wait = next(waits, None) if is_locked(exc) else None
                if wait is None:
                    self._counts["failures"] += 1
                    raise self._translate(exc) from exc
                self._counts["locked_retries"] += 1
                await trio.sleep(wait)

    def _serialised(self, work: Callable[[Engine], T], engine: Engine) -> T:
        with self._serial:
            return work(engine)

    # -- errors --------------------------------------------------------------------

    def _translate(self, exc: sa_exc.SQLAlchemyError) -> PersistenceError:
        if is_connection_problem(exc):
            return StoreUnavailable(self._unreachable(exc))
        what = "refused the operation" if isinstance(exc, sa_exc.DBAPIError) else "cannot be used"
        return PersistenceError(
            f"The artifact database {what} ({self._detail(exc)}); "
            "the artifacts concerned are not stored."
        )

    def _unreachable(self, exc: BaseException) -> str:
        what = "busy" if is_locked(exc) else "unreachable"
        return (
            f"The artifact database is {what} ({self._detail(exc)}); "
            "artifacts are kept and retried."
        )

    def _detail(self, exc: BaseException) -> str:
        """The driver's first line of text, password masked, without SQL or parameters."""
        inner = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
        lines = str(inner).strip().splitlines()
        text = lines[0].strip() if lines else ""
        if self._password:
            text = text.replace(self._password, "***")
        label = f"{self.backend} at {self._location()}: {type(inner).__name__}"
        return f"{label}: {text[:_DETAIL_CHARS]}" if text else label

    def _location(self) -> str:
        if self.backend == "sqlite":
            return self._url.database or ":memory:"
        port = f":{self._url.port}" if self._url.port else ""
        return f"{self._url.host or 'localhost'}{port}/{self._url.database or ''}"


# -- helpers ------------------------------------------------------------------------


def _pool_size(limiter: trio.CapacityLimiter) -> int:
    tokens = limiter.total_tokens
    return max(1, min(32, int(tokens) if tokens != float("inf") else 32))


def _params(row: StoredRow) -> dict[str, Any]:
    return {
        "artifact_id": row.artifact_id,
        "chat_id": row.chat_id,
        "message_id": row.message_id,
        "item_type": row.item_type,
        "model_id": row.model_id,
        "user_id": row.user_id,
        "created_at": row.created_at,
        "blob": row.blob,
        "is_encrypted": row.is_encrypted,
    }


def _stored_row(row: sa.RowMapping) -> StoredRow:
    return StoredRow(
        artifact_id=row["artifact_id"],
        chat_id=row["chat_id"],
        message_id=row["message_id"],
        item_type=row["item_type"],
        model_id=row["model_id"],
        user_id=row["user_id"],
        created_at=float(row["created_at"]),
        blob=bytes(row["blob"]),
        is_encrypted=bool(row["is_encrypted"]),
    )


def _row_id(row: StoredRow) -> str:
    return row.artifact_id


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
