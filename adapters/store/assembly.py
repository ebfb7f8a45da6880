"""The artifact store the Open WebUI pipe uses, assembled from its valves.

``store_factory_for(valves, pipe_id)`` returns a ``StoreFactory`` (opened
inside the trio run by each engine generation) and a key saying what it
was built from, so the bridge reconfigures only when that changes. The
store is::

    CodecStore ── ArtifactCodec (LZ4, Fernet; namespace from key + pipe id)
      └── RedisWriteBehind + its flusher   when REDIS_URL is set and ENABLE_REDIS_CACHE
            └── SqlRowStore                 ARTIFACT_DATABASE_URL, else Open WebUI's
                                            DATABASE_URL, else SQLite in DATA_DIR

trio-flavoured inside the factory; ``store_factory_for`` itself is plain.
Secrets (the encryption key, database and Redis passwords) enter the key
only as a keyed hash, never as text.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from orpipe.adapters.bridge.protocol import StoreFactory
from orpipe.adapters.openwebui.valves import Valves
from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.redis_writebehind import RedisWriteBehind
from orpipe.adapters.store.rows import CodecStore, RowStore
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.engine.ports import ArtifactStore

__all__ = ["StoreSettings", "default_database_url", "store_factory_for"]

log = logging.getLogger("orpipe.persistence")

#: How long the Redis flusher waits before it is restarted after a crash.
_FLUSHER_RESTART_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """Everything the store is built from (secrets included: never printed)."""

    pipe_id: str
    database_url: str
    encryption_key: str
    encrypt_all: bool
    lz4: bool
    min_compress_bytes: int
    batch_size: int
    db_threads: int
    redis_url: str | None
    cache_ttl_s: int
    pending_warn_threshold: int
    flush_failure_limit: int

    def key(self) -> tuple[object, ...]:
        secret = hashlib.blake2b(
            "\x00".join([self.database_url, self.encryption_key, self.redis_url or ""]).encode(),
            key=b"orpipe-store",
            digest_size=16,
        ).hexdigest()
        return (
            self.pipe_id,
            secret,
            self.encrypt_all,
            self.lz4,
            self.min_compress_bytes,
            self.batch_size,
            self.db_threads,
            self.cache_ttl_s,
            self.pending_warn_threshold,
            self.flush_failure_limit,
        )

    def __repr__(self) -> str:
        return f"StoreSettings(pipe_id={self.pipe_id!r}, redis={self.redis_url is not None})"


def default_database_url() -> str:
    """Open WebUI's own DATABASE_URL (with a driver SQLAlchemy can load here), else a
    SQLite file in DATA_DIR (Open WebUI's data directory), else in ./data."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        # Open WebUI may name its async driver; the store uses the synchronous one.
        return url.replace("sqlite+aiosqlite", "sqlite", 1)
    if url:
        return url
    data_dir = Path(os.environ.get("DATA_DIR", "data"))
    return f"sqlite:///{data_dir / 'orpipe-artifacts.db'}"


def _redis_url(valves: Valves) -> str | None:
    """Write-behind only where Open WebUI itself runs on Redis (its multi-worker setup)."""
    if not valves.ENABLE_REDIS_CACHE:
        return None
    url = os.environ.get("REDIS_URL", "").strip()
    return url or None


def settings_from(valves: Valves, *, pipe_id: str) -> StoreSettings | None:
    """The store's settings, or None when nothing would be stored."""
    if valves.PERSIST_REASONING_TOKENS == "disabled" and not valves.PERSIST_TOOL_RESULTS:
        return None
    return StoreSettings(
        pipe_id=pipe_id,
        database_url=valves.artifact_database_url() or default_database_url(),
        encryption_key=valves.artifact_key(),
        encrypt_all=valves.ENCRYPT_ALL,
        lz4=valves.ENABLE_LZ4_COMPRESSION,
        min_compress_bytes=valves.MIN_COMPRESS_BYTES,
        batch_size=valves.DB_BATCH_SIZE,
        db_threads=valves.ARTIFACT_DB_THREADS,
        redis_url=_redis_url(valves),
        cache_ttl_s=valves.REDIS_CACHE_TTL_SECONDS,
        pending_warn_threshold=valves.REDIS_PENDING_WARN_THRESHOLD,
        flush_failure_limit=valves.REDIS_FLUSH_FAILURE_LIMIT,
    )


def store_factory_for(valves: Valves, *, pipe_id: str) -> tuple[StoreFactory | None, object]:
    """A factory for the store these valves describe, and the key it was built from."""
    settings = settings_from(valves, pipe_id=pipe_id)
    if settings is None:
        return None, None

    def factory() -> AbstractAsyncContextManager[ArtifactStore]:
        return open_store(settings)

    return factory, settings.key()


@asynccontextmanager
async def open_store(settings: StoreSettings) -> AsyncIterator[ArtifactStore]:
    """trio: the codec over SQL, with Redis write-behind (and its flusher) when configured."""
    codec = ArtifactCodec(
        settings.encryption_key or None,
        encrypt_all=settings.encrypt_all,
        lz4=settings.lz4,
        min_compress_bytes=settings.min_compress_bytes,
    )
    if not settings.encryption_key:
        log.warning("%s", codec.no_key_warning())
    namespace = codec.namespace(settings.pipe_id)
    async with SqlRowStore(
        settings.database_url,
        namespace=namespace,
        batch_size=settings.batch_size,
        limiter=trio.CapacityLimiter(settings.db_threads),
    ) as sql:
        if settings.redis_url is None:
            yield CodecStore(sql, codec)
            return
        async with (
            RedisWriteBehind(
                settings.redis_url,
                namespace=namespace,
                sql=sql,
                batch_size=settings.batch_size,
                cache_ttl_s=settings.cache_ttl_s,
                pending_warn_threshold=settings.pending_warn_threshold,
                flush_failure_limit=settings.flush_failure_limit,
            ) as rows,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_keep_flushing, rows)
            try:
                yield CodecStore(rows, codec)
            finally:
                nursery.cancel_scope.cancel()


async def _keep_flushing(rows: RowStore) -> None:
    """The write-behind flusher, restarted if it ever fails (it should not)."""
    assert isinstance(rows, RedisWriteBehind)
    while True:
        try:
            await rows.run_flusher()
        except Exception:
            log.exception("the Redis flusher failed; restarting in %.0f s", _FLUSHER_RESTART_S)
        await trio.sleep(_FLUSHER_RESTART_S)
