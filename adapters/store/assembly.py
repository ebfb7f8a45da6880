"""The artifact store, opened from its ``StoreSettings``.

``open_store(settings)`` is an async context manager the bridge opens inside
the trio run, once per engine generation (the Open WebUI side builds the
settings from its valves and hands the bridge ``partial(open_store, settings)``).
The store is::

    CodecStore ── ArtifactCodec (LZ4, Fernet; namespace from key + pipe id)
      └── RedisWriteBehind + its flusher   when settings.redis_url is set
            └── SqlRowStore                 settings.database_url

On leaving (cancellation included) the flusher is cancelled, then the Redis
and SQL stores close in that order, each under its own shielded timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.redis_writebehind import RedisWriteBehind
from orpipe.adapters.store.rows import CodecStore, RowStore
from orpipe.adapters.store.settings import StoreSettings
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.engine.ports import ArtifactStore

__all__ = ["open_store"]

log = logging.getLogger("orpipe.persistence")

#: How long the Redis flusher waits before it is restarted after a crash.
_FLUSHER_RESTART_S = 5.0


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
                held_capacity=settings.held_max_rows,
                held_max_bytes=settings.held_max_bytes,
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
