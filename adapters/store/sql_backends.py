"""What differs between the artifact table's two backends, SQLite and PostgreSQL.

This module owns opening a SQLAlchemy engine for a database URL (the driver
this store uses, the connection options, the pool), the backend's
``INSERT ... ON CONFLICT DO NOTHING RETURNING``, and reading the backend's
errors (connection problem, lock, missing table, lost creation race). It is
plain and synchronous: ``create_engine`` touches the disk (a SQLite file's
directory) and belongs in a worker thread.

Backends (no others: ``ON CONFLICT DO NOTHING`` is what makes writes idempotent):

* SQLite, ``sqlite:///<path>`` (the embedded default; the directory is
  created). Each new connection gets ``PRAGMA busy_timeout`` and WAL mode
  (readers never wait for the writer). Transactions are a single statement
  or a short batch, and "database is locked" is retried a few times with
  backoff before it becomes ``StoreUnavailable``. ``sqlite://`` (in memory)
  works through one shared connection, serialised.
* PostgreSQL, ``postgresql+psycopg://...`` (``postgresql://`` and other
  PostgreSQL drivers are switched to psycopg 3). Connections are checked
  before use (a restarted server costs one round trip, not an error) and get
  TCP keep-alives and a TCP user timeout, so a silent network cannot hold a
  thread for longer than about half a minute; options in the URL win.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import ReturningInsert

from orpipe.engine.errors import ConfigError

__all__ = [
    "already_exists",
    "create_engine",
    "insert_ignoring_duplicates",
    "is_connection_problem",
    "is_locked",
    "is_memory",
    "normalise_url",
    "pg_connect_args",
    "table_missing",
]


def create_engine(url: URL, *, connect_timeout_s: float, pool_size: int) -> Engine:
    """The engine for a URL from ``normalise_url`` (see the module doc for each backend)."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, connect_timeout_s)
    return sa.create_engine(
        url,
        connect_args=pg_connect_args(url, connect_timeout_s),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=2,
        pool_timeout=connect_timeout_s,
        hide_parameters=True,
    )


def _sqlite_engine(url: URL, connect_timeout_s: float) -> Engine:
    memory = is_memory(url)
    extra: dict[str, Any] = {}
    if memory:
        extra = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    elif url.database and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, hide_parameters=True, **extra)
    busy_ms = int(connect_timeout_s * 1000)
    sa.event.listen(engine, "connect", partial(_sqlite_on_connect, busy_ms, not memory))
    return engine


def normalise_url(raw: str) -> URL:
    """The URL with the synchronous driver this store uses; ConfigError (URL not shown) if bad."""
    try:
        url = sa.make_url(raw)
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigError(
            "ARTIFACT_DATABASE_URL", "(not shown)", "a sqlite:///<path> or postgresql://... URL"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite")  # e.g. sqlite+aiosqlite from Open WebUI
    if backend in {"postgresql", "postgres"}:
        return url.set(drivername="postgresql+psycopg")
    raise ConfigError(
        "ARTIFACT_DATABASE_URL", f"{backend}://...", "a SQLite or PostgreSQL database URL"
    )


def is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in {"", ":memory:"} or "mode=memory" in database


def pg_connect_args(url: URL, connect_timeout_s: float) -> dict[str, int]:
    """libpq socket options (see the module doc); those set in the URL are kept."""
    wanted: dict[str, int] = {
        "connect_timeout": max(2, round(connect_timeout_s)),  # libpq: whole seconds, ≥ 2
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,  # ms of unacknowledged data before the socket gives up
    }
    return {key: value for key, value in wanted.items() if key not in url.query}


def _sqlite_on_connect(busy_ms: int, wal: bool, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # Busy timeout first: switching to WAL itself needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def insert_ignoring_duplicates(backend: str, table: sa.Table) -> ReturningInsert[tuple[str]]:
    """``INSERT ... ON CONFLICT (artifact_id) DO NOTHING RETURNING artifact_id`` for the backend."""
    insert = pg_dialect.insert if backend == "postgresql" else sqlite_dialect.insert
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=[table.c.artifact_id])
        .returning(table.c.artifact_id)
    )


def _driver_text(exc: BaseException) -> str:
    inner = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
    return str(inner).lower()


def is_connection_problem(exc: sa_exc.SQLAlchemyError) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.TimeoutError
        | sa_exc.DisconnectionError,
    )


def is_locked(exc: BaseException) -> bool:
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    text = _driver_text(exc)
    return "database is locked" in text or "database table is locked" in text


def table_missing(exc: sa_exc.SQLAlchemyError) -> bool:
    text = _driver_text(exc)
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def already_exists(exc: sa_exc.DBAPIError) -> bool:
    text = _driver_text(exc)
    return "already exists" in text or "duplicate key" in text
