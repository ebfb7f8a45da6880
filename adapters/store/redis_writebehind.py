"""Redis write-behind for artifact rows: a reliable queue (a Redis Stream) and a read cache.

This module owns ``RedisWriteBehind``, the ``adapters.store.rows.RowStore``
that sits between ``CodecStore`` and the durable ``SqlRowStore``; the layout
of its Redis keys; its flusher loop and that loop's breaker; and the
translation of every redis-py exception into ``engine.errors`` types (no
redis type leaves this module, and no message carries the URL's password).
It does not own the SQL store it wraps: the caller opens and closes that.

Keys, all under ``orpipe:<ns>:`` (``<ns>`` is the codec's namespace, which
carries the pipe id and the key fingerprint; it may not contain ``:``, so two
namespaces never share a key)::

    orpipe:<ns>:artifacts              Stream, one entry per queued row; group "flushers"
    orpipe:<ns>:artifacts:dead         Stream of rows the database rejected for good
    orpipe:<ns>:artifact:<chat>:<id>   the row (read cache): no TTL while it is queued,
                                       ``cache_ttl_s`` once it is in SQL or read from SQL
    orpipe:<ns>:queued:<chat>          Hash id -> message id of rows queued, not yet in SQL

Write path (``write_rows``): one MULTI/EXEC per chunk of rows adds a stream
entry, the cache entry and the queued marker of each row, so a row is either
fully queued or not at all. Rows arrive already encoded (and encrypted where
the codec says so), so Redis never holds a plaintext payload that was meant
to be encrypted. If Redis fails, the rows not yet queued are written to SQL
directly (``fallbacks_total``), and for a second after a Redis failure
writes go straight to SQL without trying Redis, so an unreachable server
costs one timeout, not one per write.

Flusher (``run_flusher``, a long-lived loop run as a supervised service):
``XREADGROUP`` up to ``batch_size`` entries (blocking about a second), write
the rows to SQL, and only after that commit ``XACK`` + ``XDEL`` them (and
start their cache TTL) in one transaction. A SQL failure leaves the entries
pending in the group; nothing ever expires them, and the same flusher reads
its own pending entries again (``XREADGROUP ... 0``) before new ones.
``XAUTOCLAIM`` moves entries idle longer than ``claim_idle_s`` from dead
consumers (a crashed process) to this one. Several flusher processes on one
stream share the work through the consumer group; inserts are idempotent by
artifact id, so an entry that is flushed twice (a claim of a slow consumer's
entries, or a crash between commit and ack) still leaves one row. A row the
database rejects for good (``PersistenceError``, not ``StoreUnavailable``)
is moved to the dead-letter stream with the reason, so it cannot block the
queue forever; it is logged with its id.

Breaker: consecutive failed flush rounds (SQL or Redis) are counted; after
``flush_failure_limit`` of them the store switches to DIRECT mode: writes go
straight to SQL (so the persister sees the database's real errors and its
own breaker and retry take over), the operator is told once, and the
flusher keeps draining what is queued. Every ``cooldown_s`` it probes
(half-open); the first round that succeeds switches write-behind back on.

Durability: a queued row survives a Redis crash only as far as Redis
persists it. With ``appendonly yes`` and ``appendfsync always`` an
acknowledged ``XADD`` and the group's pending list survive ``kill -9``:
after the restart the flusher re-reads its pending entries and flushes them
(at worst a second time: idempotent). ``everysec`` can lose the last second;
no persistence at all loses the whole queue on a crash. ``open`` checks the
server's settings where ``CONFIG`` is allowed and warns; a vanished queue is
detected (the consumer group is gone) and reported as possible loss.

trio-flavoured: ``open``, ``aclose``, ``async with``, ``ping``, the
``RowStore`` methods and ``run_flusher`` are async; ``statistics`` is plain.
The redis-py *synchronous* client is used (its asyncio client does not run
under trio), every call inside ``trio.to_thread.run_sync`` holding a token of
``limiter`` (by default a ``CapacityLimiter(4)`` of its own, named
``"redis"`` in ``limiter_name``). The flusher's blocking read holds one token
for up to a second.

Cancellation: every Redis call runs with ``abandon_on_cancel=False``: a
cancelled caller waits until its thread returns (at most the socket timeout,
5 s; the blocking read returns within a second), and trio raises
``Cancelled`` at the next checkpoint. Never abandoning a call matters here:
an abandoned enqueue or ack would leave the caller not knowing whether its
transaction was applied, a thread would still use a pooled connection while
``aclose`` closes the pool, and the limiter would no longer bound the
threads really talking to Redis. The ack after a SQL commit runs under shield
plus timeout, so a cancelled flusher does not throw away a finished flush;
if the flusher is cancelled anywhere else, its entries stay pending and are
flushed again later (idempotent). ``aclose`` is shielded with a timeout too.

Known limit: ``delete`` removes rows from SQL and the cache; a row still
queued at that moment (the database was down for a whole turn) reaches SQL
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
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypedDict, TypeVar, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

import msgspec
import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from orpipe.adapters.store.rows import RowStore, StoredRow
from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.backoff import capped_backoff
from orpipe.engine.errors import ConfigError, PersistenceError, StoreUnavailable, UsageError

__all__ = [
    "DEFAULT_REDIS_THREADS",
    "REDIS_LIMITER_NAME",
    "RedisWriteBehind",
    "WriteBehindMode",
    "WriteBehindStatistics",
]

log = logging.getLogger("orpipe.persistence")

T = TypeVar("T")

WriteBehindMode = Literal["write_behind", "direct"]

REDIS_LIMITER_NAME = "redis"
DEFAULT_REDIS_THREADS = 4
GROUP = "flushers"

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_MAX_BATCH_SIZE = 1000
#: Rows per MULTI/EXEC when queueing: bounds one transaction's size and latency.
_ENQUEUE_CHUNK = 500
_BLOCK_MS = 1000
#: Must exceed the blocking read, or every idle read would look like a timeout.
_SOCKET_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 2.0
#: After a Redis failure, writes and reads skip Redis for this long.
_HOLDOFF_S = 1.0
_ACK_GRACE_S = 10.0
_CLOSE_GRACE_S = 5.0
_WARN_EVERY_S = 60.0
_CLAIM_PAGE = 100
_CLAIM_PAGES_PER_ROUND = 10
_DEAD_LETTER_MAXLEN = 10_000
_DETAIL_CHARS = 200
_FORMAT = 1

#: The serialised row: format, id, chat, message, type, model, user, created, blob, encrypted.
_Packed = tuple[int, str, str, str, str, str | None, str | None, float, bytes, bool]
_Fields = dict[bytes, bytes]


class WriteBehindStatistics(TypedDict):
    """``RedisWriteBehind.statistics()``; every ``*_total`` counts rows since creation."""

    mode: WriteBehindMode
    #: The queue's length (``XLEN``: rows not yet in SQL) when this store last looked.
    pending: int
    #: Rows queued in Redis by ``write_rows``.
    queued_total: int
    #: Rows the flusher wrote to SQL and acknowledged.
    flushed_total: int
    #: Rows written to SQL directly because Redis failed at write time.
    fallbacks_total: int
    #: Rows written to SQL directly because the store was in direct mode.
    direct_total: int
    flush_failures_consecutive: int
    flush_failures_total: int
    #: Entries taken over from idle consumers.
    claims_total: int
    dead_lettered_total: int
    limiter_borrowed: int
    limiter_total: float


class _Counts(TypedDict):
    queued_total: int
    flushed_total: int
    fallbacks_total: int
    direct_total: int
    flush_failures_consecutive: int
    flush_failures_total: int
    claims_total: int
    dead_lettered_total: int


class _QueueMissing(StoreUnavailable):
    """The consumer group (or the whole stream) is not in Redis."""


@dataclass(frozen=True, slots=True)
class _Keys:
    """Every key of one namespace (see the module doc)."""

    namespace: str

    @property
    def stream(self) -> str:
        return f"orpipe:{self.namespace}:artifacts"

    @property
    def dead(self) -> str:
        return f"orpipe:{self.namespace}:artifacts:dead"

    def cache(self, chat_id: str, artifact_id: str) -> str:
        return f"orpipe:{self.namespace}:artifact:{chat_id}:{artifact_id}"

    def queued(self, chat_id: str) -> str:
        return f"orpipe:{self.namespace}:queued:{chat_id}"


@dataclass(slots=True)
class _Batch:
    """Entries read from the stream, parsed."""

    entry_ids: list[bytes] = field(default_factory=list)
    rows: list[StoredRow] = field(default_factory=list)
    #: Entries to move to the dead-letter stream: their fields and why.
    dead: list[tuple[_Fields, str]] = field(default_factory=list)


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
        )
        self._secrets, self._location = _url_secrets(redis_url)
        self._client = _make_client(redis_url)
        self._sql = sql
        self._keys = _Keys(namespace)
        self.namespace = namespace
        self.batch_size = batch_size
        self.cache_ttl_s = cache_ttl_s
        self.pending_warn_threshold = pending_warn_threshold
        self.flush_failure_limit = flush_failure_limit
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.limiter = limiter or trio.CapacityLimiter(DEFAULT_REDIS_THREADS)
        self.limiter_name = REDIS_LIMITER_NAME
        self.claim_idle_s = float(claim_idle_s)
        self.cooldown_s = float(cooldown_s)
        self.retry_backoff_s = float(retry_backoff_s)
        self._clock = clock
        self._mode: WriteBehindMode = "write_behind"
        self._state: Literal["new", "open", "closed"] = "new"
        self._group_ready = False
        self._flusher_ran = False
        #: Whether this consumer may have entries delivered but not acknowledged.
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim_at = clock()
        self._redis_failed_at: float | None = None
        self._next_warning: dict[str, float] = {}
        self._pending = 0
        self._counts = _Counts(
            queued_total=0,
            flushed_total=0,
            fallbacks_total=0,
            direct_total=0,
            flush_failures_consecutive=0,
            flush_failures_total=0,
            claims_total=0,
            dead_lettered_total=0,
        )

    def __repr__(self) -> str:
        return (
            f"RedisWriteBehind(redis at {self._location}, namespace={self.namespace}, "
            f"mode={self._mode})"
        )

    @property
    def mode(self) -> WriteBehindMode:
        """``write_behind`` (rows go through Redis) or ``direct`` (straight to SQL)."""
        return self._mode

    def statistics(self) -> WriteBehindStatistics:
        """Mode, the last seen queue length (``pending``), counters of rows, limiter use."""
        return WriteBehindStatistics(
            mode=self._mode,
            pending=self._pending,
            **self._counts,
            limiter_borrowed=self.limiter.borrowed_tokens,
            limiter_total=self.limiter.total_tokens,
        )

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Create the consumer group and check Redis's durability settings (best effort).

        Never fails because Redis is down: the store then writes directly to
        SQL and the flusher keeps trying.
        """
        if self._state != "new":
            raise UsageError("RedisWriteBehind can be opened once")
        self._state = "open"
        try:
            await self._ensure_group()
            for warning in await self._call(self._sync_durability_warnings, "reading its settings"):
                log.warning("%s", warning)
        except PersistenceError as exc:
            log.warning("%s Write-behind starts when Redis answers.", exc.message)

    async def aclose(self) -> None:
        """Leave the consumer group if nothing is pending for this consumer; close the client.

        Shielded with a timeout, so it completes inside a cancelled scope. Safe to call twice.
        """
        if self._state == "closed":
            return
        opened, self._state = self._state == "open", "closed"
        if opened and self._flusher_ran:
            # Best effort: a leftover consumer name costs a few bytes.
            with trio.move_on_after(_CLOSE_GRACE_S, shield=True), suppress(PersistenceError):
                await self._call(self._sync_leave_group, "leaving the consumer group")
        self._client.close()  # only closes sockets: no thread needed

    async def ping(self) -> None:
        """Raises ``StoreUnavailable`` (password never shown) when Redis does not answer."""
        self._require_open()
        await self._call(self._client.ping, "answering a ping")

    # -- RowStore ----------------------------------------------------------------

    async def write_rows(self, rows: Sequence[StoredRow]) -> None:
        """Queue rows in Redis (or write them to SQL directly: see the module doc)."""
        self._require_open()
        if not rows:
            return
        if self._mode == "direct":
            await self._sql.write_rows(rows)
            self._counts["direct_total"] += len(rows)
            return
        if self._redis_suspect():
            await self._fallback(rows, None)
            return
        for start in range(0, len(rows), _ENQUEUE_CHUNK):
            chunk = rows[start : start + _ENQUEUE_CHUNK]
            try:
                pending = await self._call(partial(self._sync_enqueue, chunk), "queueing artifacts")
            except PersistenceError as exc:
                # A chunk whose EXEC was applied but whose reply was lost is both
                # queued and written here: the idempotent insert keeps one row.
                await self._fallback(rows[start:], exc)
                return
            self._counts["queued_total"] += len(chunk)
            self._note_pending(pending)

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
        removed = await self._sql.delete(chat_id, ids)
        if not self._redis_suspect():
            try:
                uncache = partial(self._sync_uncache, chat_id, ids)
                await self._call(uncache, "dropping cache entries")
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
        return await self._sql.delete_older_than(cutoff_unix_s)

    # -- the flusher -------------------------------------------------------------

    async def run_flusher(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Move queued rows to SQL until cancelled (module doc). Raises only on bugs."""
        self._require_open()
        self._flusher_ran = True
        self._own_pending = True  # a restarted flusher first finishes what it had read
        task_status.started()
        while True:
            try:
                await self._flush_round()
            except PersistenceError as exc:
                self._flush_failed(exc)
                await trio.sleep(self._retry_delay())
            else:
                self._flush_succeeded()

    async def _flush_round(self) -> None:
        """Claim (when due), read one batch, flush it; or note the queue length when idle."""
        try:
            if not self._group_ready:
                await self._ensure_group()
            if self._clock() >= self._next_claim_at:
                await self._claim_idle()
            entries = await self._read_batch()
            if entries:
                await self._flush(_parse(entries))
            else:
                self._note_pending(await self._call(self._sync_length, "reading the queue length"))
        except _QueueMissing:
            self._report_lost_queue()
            await self._ensure_group()

    async def _read_batch(self) -> list[tuple[bytes, _Fields]]:
        """This consumer's unacknowledged entries first, then new ones (blocking ~1 s)."""
        if self._own_pending:
            entries = await self._call(partial(self._sync_read, "0", None), "reading the queue")
            if entries:
                return entries
            self._own_pending = False
        return await self._call(partial(self._sync_read, ">", _BLOCK_MS), "reading the queue")

    async def _flush(self, batch: _Batch) -> None:
        """Rows to SQL, then (after the commit) acknowledge every entry of the batch."""
        rejected = await self._write_to_sql(batch.rows) if batch.rows else []
        for row, reason in rejected:
            log.error(
                "artifact %s was rejected by the database (%s); it is kept in Redis stream %s",
                row.artifact_id,
                reason,
                self._keys.dead,
            )
            batch.dead.append((_fields(row), reason))
        # Shield plus timeout: a cancellation now must not waste a committed flush.
        with trio.move_on_after(_ACK_GRACE_S, shield=True):
            pending = await self._call(partial(self._sync_ack, batch), "acknowledging a flush")
            self._note_pending(pending)
            self._counts["flushed_total"] += len(batch.rows) - len(rejected)
            self._counts["dead_lettered_total"] += len(batch.dead)

    async def _write_to_sql(self, rows: list[StoredRow]) -> list[tuple[StoredRow, str]]:
        """Write rows; on a permanent rejection, find the rows at fault one by one.

        ``StoreUnavailable`` propagates (everything stays pending); the rows
        returned were refused for good and are dead-lettered by the caller.
        """
        try:
            await self._sql.write_rows(rows)
            return []
        except StoreUnavailable:
            raise
        except PersistenceError as exc:
            if len(rows) == 1:
                return [(rows[0], exc.message)]
        rejected: list[tuple[StoredRow, str]] = []
        for row in rows:
            try:
                await self._sql.write_rows([row])
            except StoreUnavailable:
                raise
            except PersistenceError as exc:
                rejected.append((row, exc.message))
        return rejected

    async def _claim_idle(self) -> None:
        """Take over entries idle longer than ``claim_idle_s`` (their consumer died)."""
        cursor, claimed = await self._call(
            partial(self._sync_claim, self._claim_cursor), "claiming idle entries"
        )
        self._claim_cursor = cursor
        if cursor == "0-0":  # a full pass: wait before the next one
            self._next_claim_at = self._clock() + self.claim_idle_s / 2
        if claimed:
            self._counts["claims_total"] += claimed
            self._own_pending = True
            log.info(
                "took over %d queued artifacts idle for more than %.0f s (a flusher died?)",
                claimed,
                self.claim_idle_s,
            )

    def _flush_failed(self, exc: PersistenceError) -> None:
        self._counts["flush_failures_consecutive"] += 1
        self._counts["flush_failures_total"] += 1
        self._own_pending = True
        failures = self._counts["flush_failures_consecutive"]
        if self._mode == "direct":
            log.debug("write-behind probe failed: %s", exc.message)
        elif failures >= self.flush_failure_limit:
            self._mode = "direct"
            log.warning(
                "Redis write-behind disabled after %d failed flushes; writing directly to the "
                "database (last error: %s). Queued artifacts stay in Redis; probing again "
                "every %.0f s.",
                failures,
                exc.message,
                self.cooldown_s,
            )
        elif failures == 1:
            log.warning(
                "artifact flush failed; the rows stay queued and are retried: %s", exc.message
            )

    def _flush_succeeded(self) -> None:
        self._counts["flush_failures_consecutive"] = 0
        if self._mode == "direct":
            self._mode = "write_behind"
            log.warning("Redis write-behind re-enabled: a probe flush succeeded.")

    def _retry_delay(self) -> float:
        """Doubling waits while write-behind is on; the cool-down between probes once off."""
        if self._mode == "direct":
            return self.cooldown_s
        failures = self._counts["flush_failures_consecutive"]
        return capped_backoff(failures - 1, base_s=self.retry_backoff_s, cap_s=self.cooldown_s)

    def _report_lost_queue(self) -> None:
        if self._group_ready:
            log.error(
                "The write-behind queue vanished from Redis at %s (restarted without "
                "persistence, flushed or evicted?): artifacts queued there and not yet in the "
                "database are lost. Run Redis with appendonly yes.",
                self._location,
            )
        self._group_ready = False
        self._own_pending = False
        self._claim_cursor = "0-0"

    # -- cache and queued-marker helpers ------------------------------------------

    async def _cache_get(self, chat_id: str, ids: list[str]) -> dict[str, StoredRow]:
        if self._redis_suspect():
            return {}
        try:
            values = await self._call(partial(self._sync_mget, chat_id, ids), "reading the cache")
        except PersistenceError as exc:
            log.debug("artifact cache unavailable, reading SQL: %s", exc.message)
            return {}
        found: dict[str, StoredRow] = {}
        for artifact_id, value in zip(ids, values, strict=True):
            row = _unpack_or_none(value)
            if row is not None and row.artifact_id == artifact_id and row.chat_id == chat_id:
                found[artifact_id] = row
        return found

    async def _cache_put(self, rows: list[StoredRow]) -> None:
        if not rows or self._redis_suspect():
            return
        try:
            await self._call(partial(self._sync_cache, rows), "caching artifacts")
        except PersistenceError as exc:
            log.debug("artifacts not cached: %s", exc.message)

    async def _queued_ids(self, chat_id: str, message_ids: Sequence[str]) -> set[str]:
        if self._redis_suspect():
            return set()
        try:
            queued = await self._call(partial(self._sync_queued, chat_id), "listing queued rows")
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

    async def _ensure_group(self) -> None:
        created = await self._call(self._sync_ensure_group, "creating the consumer group")
        if created:
            log.info("created the write-behind queue %s in Redis", self._keys.stream)
        self._group_ready = True

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

    def _redis_suspect(self) -> bool:
        failed_at = self._redis_failed_at
        return failed_at is not None and self._clock() - failed_at < _HOLDOFF_S

    def _require_open(self) -> None:
        if self._state != "open":
            raise UsageError("RedisWriteBehind is not open: use 'async with RedisWriteBehind(...)'")

    # -- running a Redis call off the event loop ------------------------------------

    async def _call(self, work: Callable[[], T], doing: str) -> T:
        """``work()`` in a worker thread (never abandoned: module doc); errors translated."""
        try:
            result = await trio.to_thread.run_sync(
                work, limiter=self.limiter, abandon_on_cancel=False
            )
        except (redis.RedisError, OSError) as exc:
            self._redis_failed_at = self._clock()
            raise self._translate(exc, doing) from exc
        self._redis_failed_at = None
        return result

    def _translate(self, exc: BaseException, doing: str) -> PersistenceError:
        detail = self._detail(exc)
        where = f"Redis at {self._location}"
        if isinstance(exc, redis.AuthenticationError):
            return StoreUnavailable(
                f"{where} refused the credentials while {doing} ({detail}); "
                "check the password in REDIS_URL."
            )
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            return StoreUnavailable(f"{where} is unreachable while {doing} ({detail}).")
        if isinstance(exc, redis.ResponseError) and str(exc).startswith("NOGROUP"):
            return _QueueMissing(f"{where} has no write-behind queue ({detail}).")
        return StoreUnavailable(f"{where} failed while {doing} ({detail}).")

    def _detail(self, exc: BaseException) -> str:
        """The error's first line, with every form of the URL's secrets masked."""
        lines = str(exc).strip().splitlines()
        text = lines[0].strip() if lines else ""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = text[:_DETAIL_CHARS]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    # -- the units of work (run in worker threads) ------------------------------------

    def _sync_ensure_group(self) -> bool:
        try:
            # From id 0: entries queued before the group existed are flushed too;
            # flushed entries are deleted, so nothing is delivered twice this way.
            self._client.xgroup_create(self._keys.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    def _sync_durability_warnings(self) -> list[str]:
        try:
            settings = self._client.config_get("appendonly")
            settings.update(self._client.config_get("maxmemory-policy"))
        except redis.ResponseError:
            return []  # CONFIG is disabled (managed Redis): nothing to check
        warnings = []
        if str(settings.get("appendonly", "yes")) == "no":
            warnings.append(
                f"Redis at {self._location} runs without an append-only file: artifacts queued "
                "for the database are lost if Redis crashes. Set appendonly yes "
                "(appendfsync always or everysec) for durable write-behind."
            )
        if str(settings.get("maxmemory-policy", "")).startswith("allkeys"):
            warnings.append(
                f"Redis at {self._location} may evict any key (maxmemory-policy "
                f"{settings['maxmemory-policy']}): queued artifacts could be evicted. "
                "Use noeviction or a volatile-* policy."
            )
        return warnings

    def _sync_enqueue(self, rows: Sequence[StoredRow]) -> int:
        pipe = self._client.pipeline(transaction=True)
        for row in rows:
            packed = _pack(row)
            pipe.xadd(self._keys.stream, {b"id": row.artifact_id.encode(), b"row": packed})
            # No TTL while queued: a replay must find the row until it is in SQL.
            pipe.set(self._keys.cache(row.chat_id, row.artifact_id), packed)
            pipe.hset(self._keys.queued(row.chat_id), row.artifact_id, row.message_id)
        pipe.xlen(self._keys.stream)
        return int(pipe.execute()[-1])

    def _sync_read(self, start: str, block_ms: int | None) -> list[tuple[bytes, _Fields]]:
        reply = self._client.xreadgroup(
            GROUP,
            self.consumer,
            {self._keys.stream: start},
            count=self.batch_size,
            block=block_ms,
        )
        return _entries_of(reply)

    def _sync_ack(self, batch: _Batch) -> int:
        stream, pipe = self._keys.stream, self._client.pipeline(transaction=True)
        if batch.entry_ids:
            pipe.xack(stream, GROUP, *batch.entry_ids)
            pipe.xdel(stream, *batch.entry_ids)
        for fields, reason in batch.dead:
            dead: dict[FieldT, EncodableT] = dict(fields.items())
            dead[b"reason"] = reason.encode()
            pipe.xadd(self._keys.dead, dead, maxlen=_DEAD_LETTER_MAXLEN, approximate=True)
        for row in batch.rows:
            pipe.expire(self._keys.cache(row.chat_id, row.artifact_id), self.cache_ttl_s)
            pipe.hdel(self._keys.queued(row.chat_id), row.artifact_id)
        pipe.xlen(stream)
        return int(pipe.execute()[-1])

    def _sync_claim(self, cursor: str) -> tuple[str, int]:
        claimed = 0
        for _ in range(_CLAIM_PAGES_PER_ROUND):
            reply = self._client.xautoclaim(
                self._keys.stream,
                GROUP,
                self.consumer,
                int(self.claim_idle_s * 1000),
                start_id=cursor,
                count=_CLAIM_PAGE,
            )
            cursor = _text(reply[0])
            claimed += len(reply[1])
            if cursor == "0-0":
                break
        return cursor, claimed

    def _sync_length(self) -> int:
        return int(self._client.xlen(self._keys.stream))

    def _sync_mget(self, chat_id: str, ids: list[str]) -> list[bytes | None]:
        values = self._client.mget([self._keys.cache(chat_id, i) for i in ids])
        return [v if isinstance(v, bytes) else None for v in values]

    def _sync_cache(self, rows: list[StoredRow]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for row in rows:
            key = self._keys.cache(row.chat_id, row.artifact_id)
            pipe.set(key, _pack(row), ex=self.cache_ttl_s)
        pipe.execute()

    def _sync_uncache(self, chat_id: str, ids: list[str]) -> None:
        self._client.delete(*(self._keys.cache(chat_id, i) for i in ids))

    def _sync_queued(self, chat_id: str) -> dict[str, str]:
        queued = self._client.hgetall(self._keys.queued(chat_id))
        return {_text(k): _text(v) for k, v in queued.items()}

    def _sync_leave_group(self) -> None:
        stream = self._keys.stream
        mine = self._client.xpending_range(
            stream, GROUP, min="-", max="+", count=1, consumername=self.consumer
        )
        if not mine:  # deleting a consumer with pending entries would orphan them
            self._client.xgroup_delconsumer(stream, GROUP, self.consumer)


# -- helpers ----------------------------------------------------------------------


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
    for name, value in (
        ("claim_idle_s", claim_idle_s),
        ("cooldown_s", cooldown_s),
        ("retry_backoff_s", retry_backoff_s),
    ):
        if not value > 0:
            raise ConfigError(name, value, "a positive number of seconds")


def _make_client(redis_url: str) -> redis.Redis:
    """The synchronous client: RESP2, short timeouts, one immediate retry (a stale
    pooled connection after a Redis restart costs a reconnect, not an error)."""
    try:
        return redis.Redis.from_url(
            redis_url,
            protocol=2,
            decode_responses=False,
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError:
        raise ConfigError(
            "REDIS_URL", "(not shown)", "a redis://, rediss:// or unix:// URL"
        ) from None


def _url_secrets(redis_url: str) -> tuple[list[str], str]:
    """The URL's secrets in every spelling that may show up in a message, and its location."""
    try:
        parts = urlsplit(redis_url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(
            "REDIS_URL", "(not shown)", "a redis://, rediss:// or unix:// URL"
        ) from None
    raw = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    # As written, as redis-py sees it (percent-decoded), and encoded again.
    spellings = (lambda v: v, unquote, lambda v: quote(unquote(v), safe=""))
    secrets_ = {spell(value) for value in raw if value for spell in spellings}
    if parts.scheme == "unix":
        location = parts.path or "(unix socket)"
    else:
        location = f"{host or 'localhost'}:{port or 6379}{parts.path or '/0'}"
    # Longest first: a secret that contains another is masked whole.
    return sorted(secrets_, key=len, reverse=True), location


def _pack(row: StoredRow) -> bytes:
    packed: _Packed = (
        _FORMAT,
        row.artifact_id,
        row.chat_id,
        row.message_id,
        row.item_type,
        row.model_id,
        row.user_id,
        row.created_at,
        row.blob,
        row.is_encrypted,
    )
    return msgspec.msgpack.encode(packed)


def _unpack(data: bytes) -> StoredRow:
    """Raises ``ValueError`` for anything that is not a row of a known format."""
    try:
        fmt, aid, chat, message, item_type, model, user, created, blob, encrypted = (
            msgspec.msgpack.decode(data, type=_Packed)
        )
    except msgspec.MsgspecError as exc:
        raise ValueError(f"not a stored row: {exc}") from None
    if fmt != _FORMAT:
        raise ValueError(f"unknown row format {fmt}")
    return StoredRow(
        artifact_id=aid,
        chat_id=chat,
        message_id=message,
        item_type=item_type,
        model_id=model,
        user_id=user,
        created_at=created,
        blob=blob,
        is_encrypted=encrypted,
    )


def _unpack_or_none(value: bytes | None) -> StoredRow | None:
    if value is None:
        return None
    try:
        return _unpack(value)
    except ValueError:
        return None  # a foreign or corrupt cache entry is a miss; SQL answers instead


def _fields(row: StoredRow) -> _Fields:
    return {b"id": row.artifact_id.encode(), b"row": _pack(row)}


def _parse(entries: list[tuple[bytes, _Fields]]) -> _Batch:
    batch = _Batch()
    for entry_id, fields in entries:
        batch.entry_ids.append(entry_id)
        if not fields:
            continue  # deleted after another flusher acknowledged it: only the ack is left
        try:
            batch.rows.append(_unpack(fields[b"row"]))
        except (KeyError, ValueError) as exc:
            log.error(
                "queued entry %s cannot be read (%s); moved to the dead-letter stream",
                _text(entry_id),
                exc,
            )
            batch.dead.append((fields, f"unreadable entry: {exc}"))
    return batch


def _entries_of(reply: object) -> list[tuple[bytes, _Fields]]:
    """``[[stream, [(id, fields), ...]]]`` (RESP2) as a flat list; ``[]`` on a timeout."""
    entries: list[tuple[bytes, _Fields]] = []
    for _stream, items in cast(
        "list[tuple[object, list[tuple[bytes, _Fields | None]]]]", reply or []
    ):
        entries.extend((entry_id, dict(fields or {})) for entry_id, fields in items)
    return entries


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _row_id(row: StoredRow) -> str:
    return row.artifact_id
