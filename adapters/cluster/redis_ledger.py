"""``RedisAdmissionLedger``: the engine's admission limits held for every worker through Redis.

Owns this worker's permits and places (``member -> request id`` sets kept here
as well as in Redis), the heartbeat that renews them, the worker's entry in
the registry of live workers, and the fallback when Redis is out of reach.
The state in Redis and the scripts that change it: ``ledger_scripts``.

* **Global mode.** ``arrive``, ``retry`` and ``leave`` are one script call
  each (one round trip). A permit is a lease (``lease_s``, at most 10 s) that
  ``run()`` renews every ``lease_s / 3``; a worker that dies stops renewing,
  and its permits and places are purged by the next script after expiry.
* **Lost state.** When Redis comes back empty (restart without persistence,
  flush, eviction) the scripts hold new admissions back for one lease while
  every worker's heartbeat takes its permits back (``ledger_scripts``); the
  arrivals meanwhile wait in line. This ledger logs it once per loss.
* **Local share.** When a call to Redis fails, the ledger admits on its own up
  to a share of the limits (the configured worker count, else the live workers
  it last saw), logs that once on ``orpipe.cluster`` and counts it. What it
  already holds counts against that share: it admits anew only while it holds
  fewer permits than its share, and than what it held when it fell back plus
  an even part of the permits free at Redis' last answer. The heartbeat keeps
  probing; when Redis answers again it re-registers every permit and place
  this worker holds first (nothing admitted is dropped), then admits as the
  global count allows; if some of its leases expired meanwhile, that heartbeat
  starts a hold.

  The bound, honestly. During an outage the workers' caps add up to what ran
  plus what was free, i.e. to the limit, when every worker's last answer was
  current; the total exceeds the limit only by what other workers admitted
  between a worker's last answer and the outage (its count of free permits is
  that old; heartbeats make it at most ``lease_s / 3`` old), and new admissions
  never add to that excess. A worker cut off from Redis for longer than a lease
  while the others still reach it loses its leases there: the others may fill
  those permits, and its re-registration then exceeds the limit by at most
  what it held; the hold it starts keeps everyone else from adding to it.
* **Waking waiters.** A release is published on a channel; ``run()`` keeps one
  subscriber (a worker thread blocked on the socket for at most a second at a
  time) and wakes ``wait_for_change``. Releases in this worker wake it at
  once, and ``wait_for_change`` never sleeps longer than ``poll_s``: a lost
  message (Redis restarting) costs at most one poll interval.

Cancellation: every Redis call runs through ``RedisLink.call``, never abandoned,
so a call's effect is always recorded here before the caller sees the
cancellation (the bookkeeping after each call has no checkpoint). Cancelling
``run()`` stops the heartbeat and the subscriber (within a second); the leases
then expire on their own unless the requests leave first. A request that leaves
while its ``arrive`` or ``retry`` is at Redis may be released there before that
call lands: the call's answer (a permit, or a place) is then given back at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Final

import trio

from orpipe.adapters.cluster.ledger_scripts import ARRIVE, HEARTBEAT, LEAVE, RETRY, LedgerKeys
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.engine.errors import PersistenceError, UsageError
from orpipe.engine.ports import LedgerVerdict
from orpipe.engine.statistics import LedgerStats

__all__ = ["MAX_LEASE_S", "RedisAdmissionLedger"]

log = logging.getLogger("orpipe.cluster")

MAX_LEASE_S: Final = 10.0
#: A worker stays in the registry for this many leases after its last heartbeat.
_WORKER_TTL_LEASES: Final = 3
#: The subscriber's blocking read: also how long cancelling ``run()`` may wait for it.
_LISTEN_S: Final = 1.0

GLOBAL: Final = "global"
LOCAL_SHARE: Final = "local_share"


class RedisAdmissionLedger:
    """``engine.ports.AdmissionLedger`` over Redis (module doc)."""

    def __init__(
        self,
        link: RedisLink,
        *,
        prefix: str,
        limit: int,
        queue_maxsize: int,
        busy_retry_after_s: float,
        lease_s: float = MAX_LEASE_S,
        workers: int | None = None,
        poll_s: float = 0.5,
        worker_id: str | None = None,
    ) -> None:
        if not 0 < lease_s <= MAX_LEASE_S:
            raise UsageError(f"lease_s must be in (0, {MAX_LEASE_S:g}] seconds, not {lease_s}")
        if limit < 1 or queue_maxsize < 0 or (workers is not None and workers < 1):
            raise UsageError("the ledger needs limit >= 1, queue_maxsize >= 0 and workers >= 1")
        self._link = link
        self._keys = LedgerKeys(prefix)
        self._limit = limit
        self._queue_maxsize = queue_maxsize
        self._retry_after_s = busy_retry_after_s
        self._lease_ms = int(lease_s * 1000)
        self._renew_s = lease_s / 3
        self._workers = workers
        self._poll_s = poll_s
        #: Unique per process and start: a restarted worker is a new worker.
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        client = link.client
        self._scripts = {
            name: client.register_script(source)  # no I/O: the SHA is computed here
            for name, source in (
                ("arrive", ARRIVE),
                ("retry", RETRY),
                ("leave", LEAVE),
                ("heartbeat", HEARTBEAT),
            )
        }
        self._permits: set[str] = set()
        self._places: set[str] = set()
        #: Ids whose ``arrive`` is at Redis right now (``leave`` takes them out).
        self._arriving: set[str] = set()
        self._mode = GLOBAL
        self._changed = trio.Event()
        self._in_use = self._waiting = self._live_workers = -1
        #: The epoch of the Redis state last seen (0: none yet; ``ledger_scripts``).
        self._epoch = 0
        self._state_losses = 0
        #: Permits this worker may hold on its own, fixed when it falls back (``_fall_back``).
        self._fallback_cap: int | None = None
        #: Set when falling back: the next heartbeat that reaches Redis starts a hold
        #: if it finds this worker's permits gone there (``ledger_scripts``).
        self._returning = False
        self._admitted = self._rejected = self._fallbacks = self._errors = 0

    # -- the port ---------------------------------------------------------------------

    async def arrive(self, request_id: str) -> LedgerVerdict:
        if self._mode == GLOBAL:
            args = (self._member(request_id), self._limit, self._queue_maxsize, self._lease_ms)
            self._arriving.add(request_id)
            try:
                reply = await self._script("arrive", args, "admitting a request")
            finally:
                left = request_id not in self._arriving  # (leave() took it out meanwhile)
                self._arriving.discard(request_id)
            if reply is not None:
                verdict, self._in_use, self._waiting = reply
                if left and verdict >= 0:
                    await self._release(request_id)  # taken for nobody: give it back
                    return LedgerVerdict(admitted=verdict == 1)
                return self._record_arrival(request_id, verdict)
        return self._record_arrival(request_id, self._local_arrival(request_id))

    async def retry(self, request_id: str) -> bool:
        if request_id in self._permits:
            return True
        if request_id not in self._places:
            return False  # not a waiter (it never arrived here, or it left): nothing to take
        if self._mode == GLOBAL:
            args = (self._member(request_id), self._limit, self._lease_ms)
            reply = await self._script("retry", args, "admitting a waiting request")
            if reply is not None:
                admitted, self._in_use, self._waiting = reply
                if request_id not in self._places:
                    # It left while asking, and its release may have reached Redis
                    # first: what this answer holds (a permit, or a place taken
                    # again) is nobody's. Give it back.
                    await self._release(request_id)
                    return False
                return self._record_retry(request_id, admitted=admitted == 1)
        free = len(self._permits) < self._local_limits()[0]
        return self._record_retry(request_id, admitted=free)

    async def leave(self, request_id: str) -> None:
        # Arriving right now: ``arrive`` gives back what its answer holds.
        self._arriving.discard(request_id)
        held = request_id in self._permits or request_id in self._places
        self._permits.discard(request_id)
        self._places.discard(request_id)
        if held:
            self._notify()  # a waiter of this worker may go now
        if held and self._mode == GLOBAL:
            # Otherwise the lease expires on its own (a heartbeat no longer renews it).
            await self._release(request_id)

    async def wait_for_change(self, timeout_s: float) -> None:
        with trio.move_on_after(min(timeout_s, self._poll_s)):
            await self._changed.wait()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            while True:
                await self._heartbeat()
                await trio.sleep(self._renew_s)

    def statistics(self) -> LedgerStats:
        return LedgerStats(
            mode=self._mode,
            limit=self._limit,
            queue_maxsize=self._queue_maxsize,
            local_share=self._local_limits()[0],
            permits_held=len(self._permits),
            places_held=len(self._places),
            global_in_use=self._in_use,
            global_waiting=self._waiting,
            live_workers=self._live_workers,
            admitted_total=self._admitted,
            rejected_total=self._rejected,
            fallbacks_total=self._fallbacks,
            errors_total=self._errors,
            state_losses_total=self._state_losses,
        )

    # -- bookkeeping (no checkpoint: see the module doc on cancellation) --------------

    def _record_arrival(self, request_id: str, verdict: int) -> LedgerVerdict:
        if verdict == 1:
            self._permits.add(request_id)
            self._admitted += 1
            return LedgerVerdict(admitted=True)
        if verdict == 0:
            self._places.add(request_id)
            return LedgerVerdict(admitted=False)
        self._rejected += 1
        return LedgerVerdict(admitted=False, retry_after_s=self._retry_after_s)

    def _record_retry(self, request_id: str, *, admitted: bool) -> bool:
        if admitted:
            self._places.discard(request_id)
            self._permits.add(request_id)
            self._admitted += 1
        else:
            self._places.add(request_id)
        return admitted

    def _local_limits(self) -> tuple[int, int]:
        """This worker's share of (permits, places) while Redis is out of reach."""
        workers = self._workers or max(1, self._live_workers)
        share = max(1, self._limit // workers)
        if self._fallback_cap is not None:
            share = min(share, self._fallback_cap)
        return share, self._queue_maxsize // workers

    def _local_arrival(self, request_id: str) -> int:
        if request_id in self._permits:
            return 1
        share, places = self._local_limits()
        if len(self._permits) < share and not self._places:
            return 1
        return 0 if len(self._places) < places or request_id in self._places else -1

    def _member(self, request_id: str) -> str:
        return f"{self.worker_id}/{request_id}"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- Redis ------------------------------------------------------------------------

    async def _script(
        self, name: str, args: Sequence[str | int], doing: str, *, returning: bool = False
    ) -> list[int] | None:
        """One script call; None (and the fallback) when Redis is out of reach.

        The prelude's arguments go first (``ledger_scripts``); the epoch every
        script returns last is taken off the answer here.
        """
        script, keys = self._scripts[name], self._keys.for_scripts()
        full_args = [self._epoch, self._lease_ms, int(returning), *args]

        def work() -> list[int]:
            return [int(value) for value in script(keys=keys, args=full_args)]

        try:
            *reply, epoch = await self._link.call(work, doing)
        except PersistenceError as exc:
            self._fall_back(exc)
            return None
        if epoch != self._epoch:
            if self._epoch:
                self._state_losses += 1
                log.warning(
                    "admission: Redis at %s lost the admission ledger's state (restarted "
                    "without persistence, flushed or evicted). New requests wait up to %g s "
                    "while every worker registers the requests it runs again; configure Redis "
                    "persistence and maxmemory-policy noeviction to avoid this.",
                    self._link.location,
                    self._lease_ms / 1000,
                )
            self._epoch = epoch
        return reply

    async def _release(self, request_id: str) -> None:
        args = (self._member(request_id), self._keys.freed_channel)
        await self._script("leave", args, "giving back a permit or a place")

    async def _heartbeat(self) -> None:
        """Renew (or take again) what this worker holds, and register the worker."""
        permits, places = sorted(self._permits), sorted(self._places)
        ttl_ms = self._lease_ms * _WORKER_TTL_LEASES
        args: list[str | int] = [self.worker_id, ttl_ms, self._lease_ms, len(permits)]
        args += [self._member(request_id) for request_id in (*permits, *places)]
        reply = await self._script(
            "heartbeat", args, "renewing this worker's permits", returning=self._returning
        )
        if reply is None:
            return
        self._returning = False
        self._fallback_cap = None
        self._in_use, self._waiting, self._live_workers = reply
        if self._mode == LOCAL_SHARE:
            self._mode = GLOBAL
            log.info(
                "admission: Redis at %s answers again; the global limits hold again "
                "(%d permits and %d places of this worker registered)",
                self._link.location,
                len(permits),
                len(places),
            )
        # A request that left while the heartbeat was in flight may have been
        # renewed after its release: release it again (leaving is idempotent).
        for request_id in {*permits, *places} - self._permits - self._places:
            await self._release(request_id)

    async def _listen(self) -> None:
        """Wake waiters when any worker frees a permit (a hint; see the module doc)."""
        while True:
            with contextlib.suppress(PersistenceError):
                # (the heartbeat reports Redis' state: here, listen again after a while)
                await self._listen_once()
            await trio.sleep(self._renew_s)

    async def _listen_once(self) -> None:
        # ``pubsub`` is untyped in some redis-py releases this project accepts and typed
        # in others (Open WebUI's pin): the ignore must hold for both.
        pubsub = self._link.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
        channel = self._keys.freed_channel
        try:
            await self._link.call(lambda: pubsub.subscribe(channel), "subscribing to releases")
            while True:
                message = await self._link.call(
                    lambda: pubsub.get_message(timeout=_LISTEN_S), "reading releases"
                )
                if message is not None:
                    self._notify()
        finally:
            pubsub.close()

    def _fall_back(self, exc: PersistenceError) -> None:
        self._errors += 1
        if self._mode == LOCAL_SHARE:
            return
        self._mode = LOCAL_SHARE
        self._returning = True
        self._fallbacks += 1
        # What the workers may hold on their own must add up to the limit: each
        # keeps what it holds plus an even part of what was free at its last
        # answer (stale by what others admitted since), and never above its share.
        workers = self._workers or max(1, self._live_workers)
        free = self._limit - max(0, self._in_use)
        self._fallback_cap = len(self._permits) + max(0, free) // workers
        share, places = self._local_limits()
        log.warning(
            "admission: %s This worker now admits up to %d requests and %d waiting on its "
            "own (its share of MAX_CONCURRENT_REQUESTS=%d and REQUEST_QUEUE_MAXSIZE=%d) until "
            "Redis answers again; check that Redis is running.",
            exc,
            share,
            places,
            self._limit,
            self._queue_maxsize,
        )
