"""Idle-flush timers for pending text runs, kept by one alarm for every request.

Owns: a deadline per request whose ``DeltaBatcher`` holds a pending run, a
lazy-deletion heap of those deadlines, and the alarm that sleeps until the
earliest one. When a deadline passes, that batcher's run is flushed (not
final: a trailing half of a surrogate pair keeps waiting for its partner) and
sent down ``batch.out`` as one bundle, so a trickle of tiny deltas never holds
text back longer than ``idle_flush_ms``.

The timers are the batcher role's wherever its synchronous core runs: the
delta batcher actor arms them for the runs it holds, and each request task of
the fetcher's express lane arms them for its own (``actors.upstream_fetcher``). The
alarm task runs in the batcher actor's nursery.

Why no lock keeps runs in order: every producer of ``batch.out`` takes what it
sends and sends it in one step (no checkpoint in between), as one bundle. A
trio memory channel queues blocked senders first-in first-out and keeps its
buffer full while any sender is queued, so bundles arrive in the order they
were taken. A run the alarm flushes was started after everything its request
already sent, so it can never overtake it.

Why an alarm task instead of a deadline on each wait: the batcher's inbox wait
and the fetcher's socket read would each need a cancel scope per event, and at
paced load that was half the batcher's cost. A run that fills up by size never
wakes the alarm: disarming the earliest deadline moves the alarm on.

On cancellation the alarm stops; runs still pending belong to requests the
engine ends anyway.
"""

from __future__ import annotations

import heapq
import math

import trio

from orpipe.actors.delta_batching import DeltaBatcher
from orpipe.engine.pipeline_messages import BatchOut, RequestBatch
from orpipe.engine.statistics import ActorCounters

__all__ = ["IdleFlushes"]


class IdleFlushes:
    """The pending runs' idle deadlines (counted in the batcher's statistics)."""

    def __init__(self, counters: ActorCounters) -> None:
        self.counters = counters
        self._armed: dict[str, tuple[float, DeltaBatcher]] = {}
        self._timers: list[tuple[float, str]] = []  # lazy deletion: checked against _armed
        self._alarm: trio.CancelScope | None = None  # the alarm's sleep, while it sleeps
        counters.level("pending_runs", 0)

    @property
    def pending(self) -> int:
        """Requests with a run waiting for its idle flush."""
        return len(self._armed)

    def settle(self, batcher: DeltaBatcher, idle_s: float) -> None:
        """After a push: start the run's clock if one is pending, else stop it."""
        if batcher.has_pending:
            self.arm(batcher, idle_s)
        else:
            self.disarm(batcher.request_id)

    def arm(self, batcher: DeltaBatcher, idle_s: float) -> None:
        """Start the clock on ``batcher``'s pending run, unless it already runs (or is off)."""
        rid = batcher.request_id
        if idle_s <= 0 or rid in self._armed:
            return
        deadline = trio.current_time() + idle_s
        self._armed[rid] = (deadline, batcher)
        heapq.heappush(self._timers, (deadline, rid))
        self.counters.level("pending_runs", len(self._armed))
        alarm = self._alarm
        if alarm is not None and deadline < alarm.deadline:
            alarm.deadline = deadline

    def disarm(self, rid: str) -> None:
        """The request's run left (or the request ended): its clock stops."""
        entry = self._armed.pop(rid, None)
        if entry is None:
            return
        self.counters.level("pending_runs", len(self._armed))
        alarm = self._alarm
        if alarm is not None and entry[0] == alarm.deadline:
            alarm.deadline = self._next_deadline()

    def due(self, out: list[BatchOut]) -> None:
        """Flush every run whose deadline has passed into ``out``."""
        now = trio.current_time()
        timers, armed = self._timers, self._armed
        while timers and timers[0][0] <= now:
            deadline, rid = heapq.heappop(timers)
            entry = armed.get(rid)
            if entry is None or entry[0] != deadline:
                continue  # stale: flushed or ended since
            del armed[rid]
            self.counters.add("idle_flushes")
            runs = entry[1].flush(final=False)
            if runs:
                out.append(RequestBatch(request_id=rid, items=tuple(runs)))
        self.counters.level("pending_runs", len(armed))

    def _next_deadline(self) -> float:
        timers, armed = self._timers, self._armed
        while timers:
            deadline, rid = timers[0]
            entry = armed.get(rid)
            if entry is not None and entry[0] == deadline:
                return deadline
            heapq.heappop(timers)
        return math.inf

    async def alarm(self, outbox: trio.MemorySendChannel[tuple[BatchOut, ...]]) -> None:
        """Sleep until the earliest deadline, flush what is due, send it; forever."""
        while True:
            with trio.CancelScope(deadline=self._next_deadline()) as sleep:
                self._alarm = sleep
                await trio.sleep_forever()
            self._alarm = None
            out: list[BatchOut] = []
            self.due(out)
            if out:
                await outbox.send(tuple(out))
            del out
