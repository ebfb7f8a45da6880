"""Redis write-behind for artifact rows: a reliable queue (a Redis Stream) and a read cache.

This module owns ``RedisWriteBehind``, the ``adapters.store.rows.RowStore``
that sits between ``CodecStore`` and the durable ``SqlRowStore``: its
settings, its write and read paths, and its statistics. It builds its parts:

* ``redis_link.RedisLink``: the redis-py client, its worker threads and the
  translation of redis errors (no redis type or password leaves it);
* ``redis_layout``: the keys and the byte format of a queued row;
* ``redis_flusher.WriteBehindFlusher``: the supervised service that moves
  queued rows to SQL, and the breaker that switches writes to ``direct``;
* ``redis_durability.DurabilityKeeper``: what the server guarantees, the
  durability mode chosen from it, and the rows held until SQL has them.

It does not own the SQL store it wraps: the caller opens and closes that.

Write path (``write_rows``): one MULTI/EXEC per chunk of rows adds a stream
entry, the cache entry and the queued marker of each row, so a row is either
fully queued or not at all. If Redis fails, the rows not yet queued are
written to SQL directly (``fallbacks_total``), and for a second after a Redis
failure writes go straight to SQL without trying Redis, so an unreachable
server costs one timeout, not one per write. While the flusher's breaker is
open (``mode == "direct"``) every write goes straight to SQL
(``direct_total``).

Read path: ``fetch_rows`` reads the cache first and SQL for the rest (then
caches it); ``list_ids`` adds the ids still queued to SQL's.

Durability (``redis_durability``): ``open`` and the keeper (every
``check_every_s``) read what the server guarantees and choose ``durability``:
``redis_fsync`` (AOF, ``appendfsync always``: nothing more to do),
``waitaof`` (AOF on Redis >= 7.2: each queued chunk waits for ``WAITAOF``,
and a chunk it does not confirm is written to SQL directly) or
``writer_holds`` (anything else: each queued row is also held here, at most
``held_capacity`` rows and ``held_max_bytes`` of payload, until the keeper
sees it in SQL; the keeper writes
to SQL the held rows Redis lost). A full held buffer makes ``write_rows``
wait: the persister feels backpressure, nothing is dropped. ``open`` still
warns when ``maxmemory-policy`` may evict queued rows. What Redis keeps, and
when, is in ``docs/redis-notes.md``.

trio-flavoured: ``open``, ``aclose``, ``async with``, ``ping``, the
``RowStore`` methods and ``run_flusher`` are async; ``statistics`` is plain.
Cancellation: Redis calls are never abandoned (``redis_link``), so a
cancelled write knows whether its transaction was applied; ``aclose`` is
shielded with a timeout.

Known limit: ``delete`` removes rows from SQL and the cache (and from the
held rows, which the keeper would otherwise write back); a row still queued
at that moment (the database was down for a whole turn) reaches SQL
afterwards and stays until the age cleanup.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from typing import Final, Literal, TypedDict, cast

import redis
import trio
from redis.typing import EncodableT

from orpipe.adapters.store import redis_layout
from orpipe.adapters.store.redis_durability import DurabilityCounts, DurabilityKeeper
from orpipe.adapters.store.redis_flusher import (
    FlushCounts,
    FlusherSettings,
    WriteBehindFlusher,
    WriteBehindMode,
)
from orpipe.adapters.store.redis_guarantees import DurabilityMode, exec_then_waitaof
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.adapters.store.rows import RowStore, StoredRow
from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.errors import ConfigError, PersistenceError, UsageError

__all__ = ["RedisWriteBehind", "StoreCounts", "WriteBehindStatistics"]

log = logging.getLogger("orpipe.persistence")


class StoreCounts(TypedDict):
    """The store's part of ``WriteBehindStatistics``: rows since creation."""

    #: Rows queued in Redis by ``write_rows``.
    queued_total: int
    #: Rows written to SQL directly because Redis failed at write time.
    fallbacks_total: int
    #: Rows written to SQL directly because the store was in direct mode.
    direct_total: int


class WriteBehindStatistics(StoreCounts, FlushCounts, DurabilityCounts):
    """``RedisWriteBehind.statistics()``; every ``*_total`` counts rows since creation."""

    mode: WriteBehindMode
    #: The queue's length (``XLEN``: rows not yet in SQL) when this store last looked.
    pending: int
    limiter_borrowed: int
    limiter_total: float


_NAMESPACE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_MAX_BATCH_SIZE: Final = 1000
#: Rows per MULTI/EXEC when queueing: bounds one transaction's size and latency.
_ENQUEUE_CHUNK: Final = 500
_CLOSE_GRACE_S: Final = 5.0
#: ``WAITAOF``'s bound: an ``everysec`` AOF fsyncs within about a second; below
#: the link's socket timeout (5 s), so a slow disk is an unconfirmed chunk, not an error.
_WAITAOF_TIMEOUT_MS: Final = 2000
_WARN_EVERY_S: Final = 60.0


class RedisWriteBehind(AsyncResource):
    """``RowStore`` that queues rows in Redis and flushes them to ``sql`` (module doc).

    Use ``async with RedisWriteBehind(url, namespace=..., sql=sql) as rows`` and
    run ``rows.run_flusher`` in a supervised task for as long as the store is
    open. ``consumer`` must be unique among live processes (the default is
    ``host:pid:random``).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        namespace: str,
        sql: RowStore,
        batch_size: int = 10,
        cache_ttl_s: int = 600,
        pending_warn_threshold: int = 100,
        flush_failure_limit: int = 5,
        consumer: str | None = None,
        limiter: trio.CapacityLimiter | None = None,
        claim_idle_s: float = 30.0,
        cooldown_s: float = 30.0,
        retry_backoff_s: float = 0.5,
        held_capacity: int = 10_000,
        held_max_bytes: int = 64 * 1024 * 1024,
        check_every_s: float = 1.0,
        hold_check_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_settings(
            namespace=namespace,
            batch_size=batch_size,
            cache_ttl_s=cache_ttl_s,
            pending_warn_threshold=pending_warn_threshold,
            flush_failure_limit=flush_failure_limit,
            consumer=consumer,
            claim_idle_s=claim_idle_s,
            cooldown_s=cooldown_s,
            retry_backoff_s=retry_backoff_s,
            held_capacity=held_capacity,
            held_max_bytes=held_max_bytes,
            check_every_s=check_every_s,
            hold_check_after_s=hold_check_after_s,
        )
        self._link = RedisLink(redis_url, limiter=limiter, clock=clock)
        self._sql = sql
        self._keys = redis_layout.RedisKeys(namespace)
        self.namespace = namespace
        self.batch_size = batch_size
        self.cache_ttl_s = cache_ttl_s
        self.pending_warn_threshold = pending_warn_threshold
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.limiter = self._link.limiter
        self.limiter_name = self._link.limiter_name
        self._clock = clock
        self._flusher = WriteBehindFlusher(
            self._link,
            self._keys,
            sql,
            FlusherSettings(
                consumer=self.consumer,
                batch_size=batch_size,
                cache_ttl_s=cache_ttl_s,
                flush_failure_limit=flush_failure_limit,
                claim_idle_s=float(claim_idle_s),
                cooldown_s=float(cooldown_s),
                retry_backoff_s=float(retry_backoff_s),
            ),
            note_pending=self._note_pending,
            clock=clock,
        )
        self._keeper = DurabilityKeeper(
            self._link,
            self._keys,
            sql,
            held_capacity=held_capacity,
            held_max_bytes=held_max_bytes,
            check_every_s=float(check_every_s),
            hold_check_after_s=float(hold_check_after_s),
            clock=clock,
        )
        self._state: Literal["new", "open", "closed"] = "new"
        self._next_warning: dict[str, float] = {}
        self._pending = 0
        self._counts = StoreCounts(queued_total=0, fallbacks_total=0, direct_total=0)

    def __repr__(self) -> str:
        return (
            f"RedisWriteBehind(redis at {self._link.location}, namespace={self.namespace}, "
            f"mode={self.mode}, durability={self.durability})"
        )

    @property
    def mode(self) -> WriteBehindMode:
        """``write_behind`` (rows go through Redis) or ``direct`` (straight to SQL)."""
        return self._flusher.mode

    @property
    def durability(self) -> DurabilityMode:
        """``redis_fsync``, ``waitaof`` or ``writer_holds`` (``redis_durability``)."""
        return self._keeper.mode

    def statistics(self) -> WriteBehindStatistics:
        """Modes, the last seen queue length (``pending``), held rows, counters, limiter use."""
        return WriteBehindStatistics(
            mode=self.mode,
            pending=self._pending,
            **self._counts,
            **self._flusher.counts,
            **self._keeper.counts(),
            limiter_borrowed=self.limiter.borrowed_tokens,
            limiter_total=self.limiter.total_tokens,
        )

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Create the consumer group, choose the durability mode, check eviction (best effort).

        Never fails because Redis is down: the store then writes directly to
        SQL, holds what it queues later until the keeper has read the
        server's guarantees, and the flusher keeps trying.
        """
        if self._state != "new":
            raise UsageError("RedisWriteBehind can be opened once")
        self._state = "open"
        try:
            await self._flusher.ensure_group()
            await self._keeper.detect()
            warnings = await self._link.call(self._sync_durability_warnings, "reading its settings")
            for warning in warnings:
                log.warning("%s", warning)
        except PersistenceError as exc:
            log.warning("%s Write-behind starts when Redis answers.", exc.message)

    async def aclose(self) -> None:
        """Write held rows out, leave the consumer group if nothing is pending for this
        consumer, close the client.

        Shielded with timeouts, so it completes inside a cancelled scope. Safe to call twice.
        """
        if self._state == "closed":
            return
        opened, self._state = self._state == "open", "closed"
        if opened:
            with trio.move_on_after(_CLOSE_GRACE_S, shield=True):
                await self._keeper.write_out()
        if opened and self._flusher.ran:
            # Best effort: a leftover consumer name costs a few bytes.
            with trio.move_on_after(_CLOSE_GRACE_S, shield=True), suppress(PersistenceError):
                await self._flusher.leave_group()
        self._link.close()

    async def ping(self) -> None:
        """Raises ``StoreUnavailable`` (password never shown) when Redis does not answer."""
        self._require_open()
        await self._link.call(self._link.client.ping, "answering a ping")

    async def run_flusher(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Move queued rows to SQL and settle held rows until cancelled. Raises only on bugs.

        Runs the flusher (``redis_flusher``) and the durability keeper
        (``redis_durability``) side by side; cancelling it stops both.
        """
        self._require_open()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keeper.run)
            await nursery.start(self._flusher.run)
            task_status.started()

    # -- RowStore ----------------------------------------------------------------

    async def write_rows(self, rows: Sequence[StoredRow]) -> None:
        """Queue rows in Redis (or write them to SQL directly: see the module doc)."""
        self._require_open()
        if not rows:
            return
        if self.mode == "direct":
            await self._sql.write_rows(rows)
            self._counts["direct_total"] += len(rows)
            return
        if self._link.suspect():
            await self._fallback(rows, None)
            return
        mode, held = self._keeper.mode, self._keeper.held
        size = min(_ENQUEUE_CHUNK, held.capacity) if mode == "writer_holds" else _ENQUEUE_CHUNK
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            if mode == "writer_holds":
                # Held before it is queued, so a full buffer stops the write here.
                await held.hold(chunk)
            try:
                enqueue = partial(self._sync_enqueue, chunk, waitaof=mode == "waitaof")
                pending, on_disk = await self._link.call(enqueue, "queueing artifacts")
            except PersistenceError as exc:
                # A chunk whose EXEC was applied but whose reply was lost is both
                # queued and written here: the idempotent insert keeps one row.
                await self._fallback(rows[start:], exc)
                held.forget([row.artifact_id for row in chunk])
                return
            self._counts["queued_total"] += len(chunk)
            self._note_pending(pending)
            if not on_disk:
                # WAITAOF timed out: Redis has the chunk, its disk may not yet.
                self._keeper.waitaof_unconfirmed_total += 1
                await self._fallback(chunk, None)

    async def fetch_rows(self, chat_id: str, artifact_ids: Sequence[str]) -> list[StoredRow]:
        """Cache first, the rest from SQL (then cached); in id order."""
        self._require_open()
        ids = list(dict.fromkeys(artifact_ids))
        if not ids:
            return []
        found = await self._cache_get(chat_id, ids)
        missing = [i for i in ids if i not in found]
        if missing:
            from_sql = await self._sql.fetch_rows(chat_id, missing)
            found.update((row.artifact_id, row) for row in from_sql)
            await self._cache_put(from_sql)
        return sorted(found.values(), key=_row_id)

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]:
        """SQL's ids plus those still queued in Redis, oldest first."""
        self._require_open()
        stored = await self._sql.list_ids(chat_id, message_ids=message_ids)
        queued = await self._queued_ids(chat_id, message_ids)
        return sorted(set(stored) | queued)

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int:
        """Delete from SQL, then the cache entries (best effort); SQL's count."""
        self._require_open()
        ids = list(dict.fromkeys(artifact_ids))
        if not ids:
            return 0
        self._keeper.held.forget(ids)  # or the keeper would write them back
        removed = await self._sql.delete(chat_id, ids)
        if not self._link.suspect():
            try:
                uncache = partial(self._sync_uncache, chat_id, ids)
                await self._link.call(uncache, "dropping cache entries")
            except PersistenceError as exc:
                # Stale entries expire after cache_ttl_s; only replays in between see them.
                self._warn(
                    "uncache",
                    "%s Deleted artifacts may be served from the cache until it expires.",
                    exc.message,
                )
        return removed

    async def delete_older_than(self, cutoff_unix_s: float) -> int:
        """Age cleanup in SQL (cache entries expire on their own)."""
        self._require_open()
        self._keeper.held.forget_created_before(cutoff_unix_s)
        return await self._sql.delete_older_than(cutoff_unix_s)

    # -- cache and queued-marker helpers ------------------------------------------

    async def _cache_get(self, chat_id: str, ids: list[str]) -> dict[str, StoredRow]:
        if self._link.suspect():
            return {}
        try:
            values = await self._link.call(
                partial(self._sync_mget, chat_id, ids), "reading the cache"
            )
        except PersistenceError as exc:
            log.debug("artifact cache unavailable, reading SQL: %s", exc.message)
            return {}
        found: dict[str, StoredRow] = {}
        for artifact_id, value in zip(ids, values, strict=True):
            row = redis_layout.unpack_row_or_none(value)
            if row is not None and row.artifact_id == artifact_id and row.chat_id == chat_id:
                found[artifact_id] = row
        return found

    async def _cache_put(self, rows: list[StoredRow]) -> None:
        if not rows or self._link.suspect():
            return
        try:
            await self._link.call(partial(self._sync_cache, rows), "caching artifacts")
        except PersistenceError as exc:
            log.debug("artifacts not cached: %s", exc.message)

    async def _queued_ids(self, chat_id: str, message_ids: Sequence[str]) -> set[str]:
        if self._link.suspect():
            return set()
        try:
            queued = await self._link.call(
                partial(self._sync_queued, chat_id), "listing queued rows"
            )
        except PersistenceError as exc:
            log.debug("queued artifacts not listed: %s", exc.message)
            return set()
        wanted = set(message_ids)
        return {i for i, message in queued.items() if not wanted or message in wanted}

    async def _fallback(self, rows: Sequence[StoredRow], exc: PersistenceError | None) -> None:
        if exc is not None:
            self._warn("fallback", "%s Writing artifacts directly to the database.", exc.message)
        await self._sql.write_rows(rows)
        self._counts["fallbacks_total"] += len(rows)

    # -- bookkeeping ---------------------------------------------------------------

    def _note_pending(self, pending: int) -> None:
        self._pending = pending
        if pending > self.pending_warn_threshold:
            self._warn(
                "pending",
                "%d artifacts are waiting in Redis for the database (warning threshold %d): "
                "the flusher is behind or the database is failing.",
                pending,
                self.pending_warn_threshold,
            )

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """A warning at most once a minute per kind."""
        now = self._clock()
        if now >= self._next_warning.get(kind, float("-inf")):
            self._next_warning[kind] = now + _WARN_EVERY_S
            log.warning(message, *args)

    def _require_open(self) -> None:
        if self._state != "open":
            raise UsageError("RedisWriteBehind is not open: use 'async with RedisWriteBehind(...)'")

    # -- the units of work (run in worker threads) ------------------------------------

    def _sync_durability_warnings(self) -> list[str]:
        # What a crash loses is the keeper's business (redis_durability); eviction is not.
        client, location = self._link.client, self._link.location
        try:
            settings = client.config_get("maxmemory-policy")
        except redis.ResponseError:
            return []  # CONFIG is disabled (managed Redis): nothing to check
        warnings = []
        if str(settings.get("maxmemory-policy", "")).startswith("allkeys"):
            warnings.append(
                f"Redis at {location} may evict any key (maxmemory-policy "
                f"{settings['maxmemory-policy']}): queued artifacts could be evicted. "
                "Use noeviction or a volatile-* policy."
            )
        return warnings

    def _sync_enqueue(self, rows: Sequence[StoredRow], *, waitaof: bool) -> tuple[int, bool]:
        """One MULTI/EXEC queueing ``rows``: the queue's length, and whether it is on disk
        (``WAITAOF`` confirmed it; always True when not asked)."""
        commands: list[tuple[EncodableT, ...]] = []
        for row in rows:
            packed = redis_layout.pack_row(row)
            fields = redis_layout.entry_fields(row, packed)
            commands.append(("XADD", self._keys.stream, "*", *_flat(fields)))
            # No TTL while queued: a replay must find the row until it is in SQL.
            commands.append(("SET", self._keys.cache(row.chat_id, row.artifact_id), packed))
            queued = self._keys.queued(row.chat_id)
            commands.append(("HSET", queued, row.artifact_id, row.message_id))
        commands.append(("XLEN", self._keys.stream))
        if waitaof:
            replies, on_disk = exec_then_waitaof(self._link.client, commands, _WAITAOF_TIMEOUT_MS)
            return int(cast("int", replies[-1])), on_disk
        pipe = self._link.client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return int(pipe.execute()[-1]), True

    def _sync_mget(self, chat_id: str, ids: list[str]) -> list[bytes | None]:
        values = self._link.client.mget([self._keys.cache(chat_id, i) for i in ids])
        return [v if isinstance(v, bytes) else None for v in values]

    def _sync_cache(self, rows: list[StoredRow]) -> None:
        pipe = self._link.client.pipeline(transaction=False)
        for row in rows:
            key = self._keys.cache(row.chat_id, row.artifact_id)
            pipe.set(key, redis_layout.pack_row(row), ex=self.cache_ttl_s)
        pipe.execute()

    def _sync_uncache(self, chat_id: str, ids: list[str]) -> None:
        self._link.client.delete(*(self._keys.cache(chat_id, i) for i in ids))

    def _sync_queued(self, chat_id: str) -> dict[str, str]:
        queued = self._link.client.hgetall(self._keys.queued(chat_id))
        return {redis_layout.text(k): redis_layout.text(v) for k, v in queued.items()}


def _check_settings(
    *,
    namespace: str,
    batch_size: int,
    cache_ttl_s: int,
    pending_warn_threshold: int,
    flush_failure_limit: int,
    consumer: str | None,
    claim_idle_s: float,
    cooldown_s: float,
    retry_backoff_s: float,
    held_capacity: int,
    held_max_bytes: int,
    check_every_s: float,
    hold_check_after_s: float,
) -> None:
    if not _NAMESPACE.fullmatch(namespace):
        raise UsageError(f"namespace must be 1-100 characters of [A-Za-z0-9_.-], not {namespace!r}")
    if consumer is not None and not consumer.strip():
        raise UsageError("consumer must be a non-empty name")
    if not 1 <= batch_size <= _MAX_BATCH_SIZE:
        allowed = f"a whole number from 1 to {_MAX_BATCH_SIZE}"
        raise ConfigError("DB_BATCH_SIZE", batch_size, allowed)
    if cache_ttl_s < 1:
        raise ConfigError("REDIS_CACHE_TTL_SECONDS", cache_ttl_s, "a whole number >= 1")
    if pending_warn_threshold < 1:
        raise ConfigError("REDIS_PENDING_WARN_THRESHOLD", pending_warn_threshold, "a number >= 1")
    if flush_failure_limit < 1:
        raise ConfigError("REDIS_FLUSH_FAILURE_LIMIT", flush_failure_limit, "a number >= 1")
    if held_capacity < 1:
        raise ConfigError("held_capacity", held_capacity, "a whole number >= 1")
    if held_max_bytes < 1:
        raise ConfigError("held_max_bytes", held_max_bytes, "a whole number of bytes >= 1")
    for name, value in (
        ("claim_idle_s", claim_idle_s),
        ("cooldown_s", cooldown_s),
        ("retry_backoff_s", retry_backoff_s),
        ("check_every_s", check_every_s),
        ("hold_check_after_s", hold_check_after_s),
    ):
        if not value > 0:
            raise ConfigError(name, value, "a positive number of seconds")


def _row_id(row: StoredRow) -> str:
    return row.artifact_id


def _flat(fields: redis_layout.WrittenFields) -> list[EncodableT]:
    """A stream entry's fields as XADD's argument list."""
    return [item for pair in fields.items() for item in pair]
