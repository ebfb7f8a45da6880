"""What Redis promises about a queued row, and what the writer does about the rest.

This module owns the write-behind's durability in use: the current mode,
the server's last ``run_id``, and the rows the writer holds until their SQL
commit is known. ``RedisWriteBehind`` builds one ``DurabilityKeeper`` and
runs it next to its flusher.

Detection (``redis_guarantees.read_facts``, at open and again every
``check_every_s``): ``INFO server`` (``redis_version``; ``run_id``, new
after every restart), ``INFO persistence`` (``aof_enabled``) and ``CONFIG
GET appendfsync`` (refused on many managed services: the fsync policy is
then unknown). ``redis_guarantees.choose_mode`` picks:

* ``redis_fsync``: AOF on with ``appendfsync always``; an acknowledged
  ``MULTI/EXEC`` is on disk, Redis' own word suffices;
* ``waitaof``: AOF on and Redis >= 7.2; after each queued chunk the writer
  asks ``WAITAOF 1 0 <timeout>`` and, without that confirmation, writes the
  chunk to SQL directly (the idempotent insert keeps one row);
* ``writer_holds``: anything else (no AOF, an older server, an unknown
  policy, an unreachable server): the writer keeps each queued row in
  ``HeldRows`` (bounded in rows and payload bytes: a full buffer makes ``write_rows`` wait, so the
  persister feels backpressure and nothing is dropped) until it sees the
  row in SQL.

The keeper's round, every ``check_every_s``: read the facts (a changed
``run_id`` means the server restarted and may have lost what it had not
saved); take the held rows older than ``hold_check_after_s`` (all of them
after a restart); forget those SQL has; of the others, write straight to
SQL those no longer queued in Redis (lost with a restart, an eviction, a
``FLUSHALL``). A row still queued is left to the flusher. Held rows are
worked off whatever the current mode, so a server that gains AOF later
still sees its earlier rows through.

Cancellation: the keeper holds nothing that a cancellation could half-do.
At close the store calls ``write_out`` (shielded, bounded): every held row
SQL lacks is written there, since nothing holds it afterwards; if SQL fails
then, the rows are only in Redis and the warning says how many. A process
killed outright leaves its rows to Redis alone (the flushers of the other
processes still move what Redis kept). Redis and SQL calls are never
abandoned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, Protocol, TypedDict, runtime_checkable

import trio

from orpipe.adapters.store.redis_guarantees import (
    DurabilityMode,
    ServerFacts,
    choose_mode,
    read_facts,
)
from orpipe.adapters.store.redis_layout import RedisKeys
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.adapters.store.rows import RowStore, StoredRow
from orpipe.engine.errors import PersistenceError, StoreUnavailable, UsageError

__all__ = ["DurabilityCounts", "DurabilityKeeper", "HeldRows"]

log = logging.getLogger("orpipe.persistence")

#: Held rows checked per query (SQL) and per pipeline (Redis).
_SETTLE_SLICE: Final = 1000


class DurabilityCounts(TypedDict):
    """The durability part of ``WriteBehindStatistics``; ``*_total`` since creation."""

    durability: DurabilityMode
    #: Rows queued in Redis whose SQL commit the writer has not seen yet.
    held: int
    held_capacity: int
    #: The held rows' payload bytes, and their bound.
    held_bytes: int
    held_max_bytes: int
    #: Writes that waited for room in the held buffer (backpressure).
    held_waits_total: int
    #: Held rows forgotten because SQL had them.
    held_confirmed_total: int
    #: Held rows written to SQL by the keeper because Redis had lost them.
    held_resent_total: int
    #: Chunks ``WAITAOF`` did not confirm (written to SQL directly instead).
    waitaof_unconfirmed_total: int
    #: Times the server's ``run_id`` changed (it restarted).
    redis_restarts_total: int


@runtime_checkable
class CommitLookup(Protocol):
    """A SQL store that can say which ids it has in one query (``SqlRowStore``)."""

    async def known_ids(self, artifact_ids: Sequence[str]) -> set[str]: ...


class HeldRows:
    """Rows queued in Redis and not yet seen in SQL: at most ``capacity`` rows and
    ``max_bytes`` of payload (an empty buffer takes any one write, however large)."""

    def __init__(self, capacity: int, max_bytes: int, clock: Callable[[], float]) -> None:
        if capacity < 1 or max_bytes < 1:
            raise UsageError(f"held rows need room: capacity {capacity}, max_bytes {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._clock = clock
        self._rows: dict[str, tuple[StoredRow, float]] = {}
        #: The held payloads' size (``blob`` bytes): what the buffer costs in memory.
        self.bytes = 0
        self._room = trio.Event()
        self.waits_total = 0

    def __len__(self) -> int:
        return len(self._rows)

    async def hold(self, rows: Sequence[StoredRow]) -> None:
        """Keep these rows, first waiting until they fit (at most ``capacity`` at once)."""
        if len(rows) > self.capacity:
            raise UsageError(f"cannot hold {len(rows)} rows at once (capacity {self.capacity})")
        if not self._fits(rows):
            self.waits_total += 1
            while not self._fits(rows):
                await self._room.wait()
        now = self._clock()
        for row in rows:
            self._drop(row.artifact_id)  # a row written again is held once
            self._rows[row.artifact_id] = (row, now)
            self.bytes += len(row.blob)

    def _fits(self, rows: Sequence[StoredRow]) -> bool:
        # Empty takes anything: a write larger than max_bytes must not wait forever.
        if not self._rows:
            return True
        # Net of the rows already held (a retried write replaces them, it does not add).
        fresh = {row.artifact_id: row for row in rows if row.artifact_id not in self._rows}
        size = sum(len(row.blob) for row in fresh.values())
        return len(self._rows) + len(fresh) <= self.capacity and self.bytes + size <= self.max_bytes

    def _drop(self, artifact_id: str) -> None:
        held = self._rows.pop(artifact_id, None)
        if held is not None:
            self.bytes -= len(held[0].blob)

    def forget(self, artifact_ids: Sequence[str]) -> None:
        for artifact_id in artifact_ids:
            self._drop(artifact_id)
        # Wake every waiter: each checks whether its rows fit now.
        self._room.set()
        self._room = trio.Event()

    def forget_created_before(self, cutoff_unix_s: float) -> None:
        """Forget rows the age cleanup removes (or the keeper would write them back)."""
        old = [i for i, (row, _) in self._rows.items() if row.created_at < cutoff_unix_s]
        self.forget(old)

    def held_since(self, cutoff: float) -> list[StoredRow]:
        """Rows held since before ``cutoff`` (every row for ``inf``)."""
        return [row for row, at in self._rows.values() if at < cutoff]


class DurabilityKeeper:
    """Detects what Redis guarantees and works off the held rows (module doc)."""

    def __init__(
        self,
        link: RedisLink,
        keys: RedisKeys,
        sql: RowStore,
        *,
        held_capacity: int,
        held_max_bytes: int,
        check_every_s: float,
        hold_check_after_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._link = link
        self._keys = keys
        self._sql = sql
        self.held = HeldRows(held_capacity, held_max_bytes, clock)
        self.check_every_s = check_every_s
        self.hold_check_after_s = hold_check_after_s
        self._clock = clock
        #: Unknown until the server answers: hold rows meanwhile.
        self.mode: DurabilityMode = "writer_holds"
        self._run_id: str | None = None
        self._announced = False
        self.waitaof_unconfirmed_total = 0
        self._confirmed_total = 0
        self._resent_total = 0
        self._restarts_total = 0

    def counts(self) -> DurabilityCounts:
        return DurabilityCounts(
            durability=self.mode,
            held=len(self.held),
            held_capacity=self.held.capacity,
            held_bytes=self.held.bytes,
            held_max_bytes=self.held.max_bytes,
            held_waits_total=self.held.waits_total,
            held_confirmed_total=self._confirmed_total,
            held_resent_total=self._resent_total,
            waitaof_unconfirmed_total=self.waitaof_unconfirmed_total,
            redis_restarts_total=self._restarts_total,
        )

    async def detect(self) -> bool:
        """Read the server's facts and choose the mode; True if it restarted since last time.

        Raises ``PersistenceError`` when Redis does not answer (the mode stays).
        """
        facts = await self._link.call(partial(read_facts, self._link.client), "reading INFO")
        restarted = self._run_id is not None and facts.run_id != self._run_id
        self._run_id = facts.run_id
        mode = choose_mode(facts)
        if restarted:
            self._restarts_total += 1
            log.warning(
                "Redis at %s restarted; checking the %d artifacts this process holds against "
                "the database and writing the ones Redis lost.",
                self._link.location,
                len(self.held),
            )
        if mode != self.mode or not self._announced:
            # The first choice is news; a change later (the server was reconfigured) is a warning.
            self._announce(mode, facts, logging.WARNING if self._announced else logging.INFO)
            self._announced = True
        self.mode = mode
        return restarted

    async def run(self) -> None:
        """Every ``check_every_s``: detect, then settle the held rows due. Until cancelled."""
        while True:
            await trio.sleep(self.check_every_s)
            try:
                restarted = await self.detect()
                due = self._clock() - self.hold_check_after_s
                await self.settle(self.held.held_since(float("inf") if restarted else due))
            except PersistenceError as exc:
                # Redis or SQL down: the rows stay held and are checked next round.
                log.debug("held artifacts not checked: %s", exc.message)

    async def settle(self, rows: Sequence[StoredRow]) -> None:
        """Forget the rows SQL has; write to SQL those Redis no longer queues.

        A slice at a time: one SQL query and one Redis round trip per slice.
        """
        for start in range(0, len(rows), _SETTLE_SLICE):
            await self._settle_slice(rows[start : start + _SETTLE_SLICE])

    async def _settle_slice(self, rows: Sequence[StoredRow]) -> None:
        in_sql = await self._known_ids(rows)
        self.held.forget(list(in_sql))
        self._confirmed_total += len(in_sql)
        rest = [row for row in rows if row.artifact_id not in in_sql]
        if not rest:
            return
        queued = await self._link.call(partial(self._sync_queued, rest), "checking queued rows")
        lost = [row for row, is_queued in zip(rest, queued, strict=True) if not is_queued]
        if lost:
            await self._resend(lost)

    async def write_out(self) -> None:
        """At close: write to SQL every held row it lacks (nothing holds them afterwards).

        Rows Redis still queues are written too: the flusher that would move
        them may be this process's, and the insert is idempotent. Never raises.
        """
        rows = self.held.held_since(float("inf"))
        try:
            if rows:
                in_sql = await self._known_ids(rows)
                self.held.forget(list(in_sql))
                self._confirmed_total += len(in_sql)
                await self._resend([row for row in rows if row.artifact_id not in in_sql])
        except PersistenceError as exc:
            log.warning(
                "%d artifacts still held at close are only in Redis at %s, which may lose "
                "them if it crashes before they are flushed: %s",
                len(self.held),
                self._link.location,
                exc.message,
            )

    async def _resend(self, rows: list[StoredRow]) -> None:
        """Write rows Redis lost to SQL; a row refused for good is logged and let go."""
        if not rows:
            return
        try:
            await self._sql.write_rows(rows)
            written = rows
        except StoreUnavailable:
            raise
        except PersistenceError:
            written = []
            for row in rows:
                try:
                    await self._sql.write_rows([row])
                    written.append(row)
                except StoreUnavailable:
                    raise
                except PersistenceError as exc:
                    # The flusher dead-lettered it (or would): holding it would block the buffer.
                    log.error(
                        "artifact %s was refused by the database: %s", row.artifact_id, exc.message
                    )
                    self.held.forget([row.artifact_id])
        self.held.forget([row.artifact_id for row in written])
        self._resent_total += len(written)
        log.warning("wrote %d held artifacts directly to the database", len(written))

    async def _known_ids(self, rows: Sequence[StoredRow]) -> set[str]:
        ids = [row.artifact_id for row in rows]
        if isinstance(self._sql, CommitLookup):
            return await self._sql.known_ids(ids)
        # A store without a bulk lookup: one fetch per chat.
        by_chat: dict[str, list[str]] = {}
        for row in rows:
            by_chat.setdefault(row.chat_id, []).append(row.artifact_id)
        found: set[str] = set()
        for chat_id, chat_ids in by_chat.items():
            found.update(r.artifact_id for r in await self._sql.fetch_rows(chat_id, chat_ids))
        return found

    def _announce(self, mode: DurabilityMode, facts: ServerFacts, level: int) -> None:
        what = {
            "redis_fsync": "Redis fsyncs every write (appendfsync always)",
            "waitaof": "each queued batch waits for Redis' WAITAOF confirmation",
            "writer_holds": (
                "Redis may lose recent writes on a crash (no append-only file with a known "
                "fsync policy), so this process keeps each queued artifact until it is in "
                "the database; for less memory and work set appendonly yes with "
                "appendfsync always (or everysec on Redis 7.2+)"
            ),
        }[mode]
        version = ".".join(map(str, facts.version)) if facts.version else "unknown"
        log.log(
            level,
            "write-behind durability at %s (Redis %s): %s: %s",
            self._link.location,
            version,
            mode,
            what,
        )

    # -- units of work (worker threads) ----------------------------------------------

    def _sync_queued(self, rows: list[StoredRow]) -> list[bool]:
        pipe = self._link.client.pipeline(transaction=False)
        for row in rows:
            pipe.hexists(self._keys.queued(row.chat_id), row.artifact_id)
        return [bool(found) for found in pipe.execute()]
