"""The write-behind's flusher: a supervised service that moves queued rows from Redis to SQL.

This module owns ``WriteBehindFlusher``: this process's consumer in the
consumer group (creating the group, reading, claiming, acknowledging,
leaving), the dead-letter stream, and the breaker that decides whether the
store writes behind or directly (``mode``). ``RedisWriteBehind`` builds one
and runs it as ``run_flusher``; the Redis keys are in ``redis_layout``.

One round: ``XREADGROUP`` up to ``batch_size`` entries (blocking about a
second), write the rows to SQL, and only after that commit ``XACK`` +
``XDEL`` them (and start their cache TTL) in one transaction. A SQL failure
leaves the entries pending in the group; nothing ever expires them, and the
same flusher reads its own pending entries again (``XREADGROUP ... 0``)
before new ones. ``XAUTOCLAIM`` moves entries idle longer than
``claim_idle_s`` from dead consumers (a crashed process) to this one.
Several flusher processes on one stream share the work through the group;
inserts are idempotent by artifact id, so an entry flushed twice (a claim of
a slow consumer's entries, or a crash between commit and ack) still leaves
one row. A row the database rejects for good (``PersistenceError``, not
``StoreUnavailable``) is moved to the dead-letter stream with the reason, so
it cannot block the queue forever; it is logged with its id.

Breaker: consecutive failed rounds (SQL or Redis) are counted; after
``flush_failure_limit`` of them ``mode`` turns ``direct``: the store writes
straight to SQL (so the persister sees the database's real errors and its
own breaker and retry take over), the operator is told once, and the
flusher keeps draining what is queued. Every ``cooldown_s`` it probes
(half-open); the first round that succeeds turns write-behind back on.

Cancellation: ``run`` ends only by cancellation (or a bug). The ack after a
SQL commit runs under shield plus timeout, so a cancelled flusher does not
throw away a finished flush; cancelled anywhere else, its entries stay
pending and are flushed again later by this or another consumer
(idempotent). Redis calls are never abandoned (``redis_link``).

How consumer groups behave (claims, pending entries, a vanished group) is
in ``docs/redis-notes.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, TypedDict

import redis
import trio

from orpipe.adapters.store.redis_layout import (
    GROUP,
    ReadFields,
    RedisKeys,
    WrittenFields,
    entries_of,
    entry_fields,
    pack_row,
    text,
    unpack_row,
)
from orpipe.adapters.store.redis_link import QueueMissing, RedisLink
from orpipe.adapters.store.rows import RowStore, StoredRow
from orpipe.engine.backoff import capped_backoff
from orpipe.engine.errors import PersistenceError, StoreUnavailable

__all__ = ["FlushCounts", "FlusherSettings", "WriteBehindFlusher", "WriteBehindMode"]

log = logging.getLogger("orpipe.persistence")

#: ``write_behind``: rows go through Redis; ``direct``: straight to SQL (the breaker is open).
WriteBehindMode = Literal["write_behind", "direct"]

_BLOCK_MS: Final = 1000
_ACK_GRACE_S: Final = 10.0
_CLAIM_PAGE: Final = 100
_CLAIM_PAGES_PER_ROUND: Final = 10
_DEAD_LETTER_MAXLEN: Final = 10_000


class FlushCounts(TypedDict):
    """The flusher's part of ``WriteBehindStatistics``; ``*_total`` count rows since creation."""

    #: Rows the flusher wrote to SQL and acknowledged.
    flushed_total: int
    flush_failures_consecutive: int
    flush_failures_total: int
    #: Entries taken over from idle consumers.
    claims_total: int
    dead_lettered_total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FlusherSettings:
    """The flusher's knobs (checked by ``RedisWriteBehind``)."""

    #: Unique among live processes.
    consumer: str
    batch_size: int
    cache_ttl_s: int
    flush_failure_limit: int
    claim_idle_s: float
    cooldown_s: float
    retry_backoff_s: float


@dataclass(slots=True)
class _Batch:
    """Entries read from the stream, parsed."""

    entry_ids: list[bytes] = field(default_factory=list)
    rows: list[StoredRow] = field(default_factory=list)
    #: Entries to move to the dead-letter stream: their fields and why.
    dead: list[tuple[WrittenFields, str]] = field(default_factory=list)


class WriteBehindFlusher:
    """This process's consumer of the queue; ``run`` it in a supervised task (module doc)."""

    def __init__(
        self,
        link: RedisLink,
        keys: RedisKeys,
        sql: RowStore,
        settings: FlusherSettings,
        *,
        note_pending: Callable[[int], None],
        clock: Callable[[], float],
    ) -> None:
        self._link = link
        self._keys = keys
        self._sql = sql
        self.settings = settings
        #: Told the queue's length after each acknowledged batch and each idle read.
        self._note_pending = note_pending
        self._clock = clock
        self.mode: WriteBehindMode = "write_behind"
        #: Whether ``run`` was ever started (then ``leave_group`` is worth trying).
        self.ran = False
        self._group_ready = False
        #: Whether this consumer may have entries delivered but not acknowledged.
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim_at = clock()
        self.counts = FlushCounts(
            flushed_total=0,
            flush_failures_consecutive=0,
            flush_failures_total=0,
            claims_total=0,
            dead_lettered_total=0,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move queued rows to SQL until cancelled (module doc). Raises only on bugs."""
        self.ran = True
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

    async def ensure_group(self) -> None:
        """Create the consumer group unless another process did (best started by ``open``)."""
        created = await self._link.call(self._sync_ensure_group, "creating the consumer group")
        if created:
            log.info("created the write-behind queue %s in Redis", self._keys.stream)
        self._group_ready = True

    async def leave_group(self) -> None:
        """Leave the group if nothing is pending for this consumer (a leftover name costs bytes)."""
        await self._link.call(self._sync_leave_group, "leaving the consumer group")

    # -- one round -----------------------------------------------------------------

    async def _flush_round(self) -> None:
        """Claim (when due), read one batch, flush it; or note the queue length when idle."""
        try:
            if not self._group_ready:
                await self.ensure_group()
            if self._clock() >= self._next_claim_at:
                await self._claim_idle()
            entries = await self._read_batch()
            if entries:
                await self._flush(_parse(entries))
            else:
                length = await self._link.call(self._sync_length, "reading the queue length")
                self._note_pending(length)
        except QueueMissing:
            self._report_lost_queue()
            await self.ensure_group()

    async def _read_batch(self) -> list[tuple[bytes, ReadFields]]:
        """This consumer's unacknowledged entries first, then new ones (blocking ~1 s)."""
        call = self._link.call
        if self._own_pending:
            entries = await call(partial(self._sync_read, "0", None), "reading the queue")
            if entries:
                return entries
            self._own_pending = False
        return await call(partial(self._sync_read, ">", _BLOCK_MS), "reading the queue")

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
            batch.dead.append((entry_fields(row, pack_row(row)), reason))
        # Shield plus timeout: a cancellation now must not waste a committed flush.
        with trio.move_on_after(_ACK_GRACE_S, shield=True):
            ack = partial(self._sync_ack, batch)
            self._note_pending(await self._link.call(ack, "acknowledging a flush"))
            self.counts["flushed_total"] += len(batch.rows) - len(rejected)
            self.counts["dead_lettered_total"] += len(batch.dead)

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
        claim_idle_s = self.settings.claim_idle_s
        cursor, claimed = await self._link.call(
            partial(self._sync_claim, self._claim_cursor), "claiming idle entries"
        )
        self._claim_cursor = cursor
        if cursor == "0-0":  # a full pass: wait before the next one
            self._next_claim_at = self._clock() + claim_idle_s / 2
        if claimed:
            self.counts["claims_total"] += claimed
            self._own_pending = True
            log.info(
                "took over %d queued artifacts idle for more than %.0f s (a flusher died?)",
                claimed,
                claim_idle_s,
            )

    # -- the breaker -----------------------------------------------------------------

    def _flush_failed(self, exc: PersistenceError) -> None:
        self.counts["flush_failures_consecutive"] += 1
        self.counts["flush_failures_total"] += 1
        self._own_pending = True
        failures = self.counts["flush_failures_consecutive"]
        if self.mode == "direct":
            log.debug("write-behind probe failed: %s", exc.message)
        elif failures >= self.settings.flush_failure_limit:
            self.mode = "direct"
            log.warning(
                "Redis write-behind disabled after %d failed flushes; writing directly to the "
                "database (last error: %s). Queued artifacts stay in Redis; probing again "
                "every %.0f s.",
                failures,
                exc.message,
                self.settings.cooldown_s,
            )
        elif failures == 1:
            log.warning(
                "artifact flush failed; the rows stay queued and are retried: %s", exc.message
            )

    def _flush_succeeded(self) -> None:
        self.counts["flush_failures_consecutive"] = 0
        if self.mode == "direct":
            self.mode = "write_behind"
            log.warning("Redis write-behind re-enabled: a probe flush succeeded.")

    def _retry_delay(self) -> float:
        """Doubling waits while write-behind is on; the cool-down between probes once off."""
        cooldown_s = self.settings.cooldown_s
        if self.mode == "direct":
            return cooldown_s
        failures = self.counts["flush_failures_consecutive"]
        return capped_backoff(failures - 1, base_s=self.settings.retry_backoff_s, cap_s=cooldown_s)

    def _report_lost_queue(self) -> None:
        if self._group_ready:
            log.error(
                "The write-behind queue vanished from Redis at %s (restarted without "
                "persistence, flushed or evicted?): artifacts queued there and not yet in the "
                "database are lost, except those the writers still hold (durability "
                "writer_holds), which they write to the database. Run Redis with appendonly yes.",
                self._link.location,
            )
        self._group_ready = False
        self._own_pending = False
        self._claim_cursor = "0-0"

    # -- the units of work (run in worker threads) ------------------------------------

    def _sync_ensure_group(self) -> bool:
        try:
            # From id 0: entries queued before the group existed are flushed too;
            # flushed entries are deleted, so nothing is delivered twice this way.
            self._link.client.xgroup_create(self._keys.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    def _sync_read(self, start: str, block_ms: int | None) -> list[tuple[bytes, ReadFields]]:
        reply = self._link.client.xreadgroup(
            GROUP,
            self.settings.consumer,
            {self._keys.stream: start},
            count=self.settings.batch_size,
            block=block_ms,
        )
        return entries_of(reply)

    def _sync_ack(self, batch: _Batch) -> int:
        stream, pipe = self._keys.stream, self._link.client.pipeline(transaction=True)
        if batch.entry_ids:
            pipe.xack(stream, GROUP, *batch.entry_ids)
            pipe.xdel(stream, *batch.entry_ids)
        for fields, reason in batch.dead:
            dead = {**fields, b"reason": reason.encode()}
            pipe.xadd(self._keys.dead, dead, maxlen=_DEAD_LETTER_MAXLEN, approximate=True)
        for row in batch.rows:
            pipe.expire(self._keys.cache(row.chat_id, row.artifact_id), self.settings.cache_ttl_s)
            pipe.hdel(self._keys.queued(row.chat_id), row.artifact_id)
        pipe.xlen(stream)
        return int(pipe.execute()[-1])

    def _sync_claim(self, cursor: str) -> tuple[str, int]:
        claimed = 0
        for _ in range(_CLAIM_PAGES_PER_ROUND):
            reply = self._link.client.xautoclaim(
                self._keys.stream,
                GROUP,
                self.settings.consumer,
                int(self.settings.claim_idle_s * 1000),
                start_id=cursor,
                count=_CLAIM_PAGE,
            )
            cursor = text(reply[0])
            claimed += len(reply[1])
            if cursor == "0-0":
                break
        return cursor, claimed

    def _sync_length(self) -> int:
        return int(self._link.client.xlen(self._keys.stream))

    def _sync_leave_group(self) -> None:
        stream, client, consumer = self._keys.stream, self._link.client, self.settings.consumer
        mine = client.xpending_range(
            stream, GROUP, min="-", max="+", count=1, consumername=consumer
        )
        if not mine:  # deleting a consumer with pending entries would orphan them
            client.xgroup_delconsumer(stream, GROUP, consumer)


def _parse(entries: list[tuple[bytes, ReadFields]]) -> _Batch:
    batch = _Batch()
    for entry_id, fields in entries:
        batch.entry_ids.append(entry_id)
        if not fields:
            continue  # deleted after another flusher acknowledged it: only the ack is left
        try:
            batch.rows.append(unpack_row(fields[b"row"]))
        except (KeyError, ValueError) as exc:
            log.error(
                "queued entry %s cannot be read (%s); moved to the dead-letter stream",
                text(entry_id),
                exc,
            )
            batch.dead.append((dict(fields.items()), f"unreadable entry: {exc}"))
    return batch
