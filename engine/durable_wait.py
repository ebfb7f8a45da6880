"""``DurableWait``: a request's ending waits until its own artifacts are written.

Read-after-write across workers: the next turn of a conversation may land
on another worker, which can only replay what is in the shared store (the
Redis write-behind's stream and cache, or SQL). So an answer's references
to its artifacts are final only once the persister has written them. Each
request's ``ArtifactMarks`` (engine.persist_barrier) hold the sequence
numbers of the artifacts it handed over; its ending waits on the barrier
until the written count reaches the last of them, bounded by
``EngineConfig.durable_wait_s``. After the timeout, or at once while the
store's writes are failing, the ending goes out anyway and names the
artifacts not written yet (``unwritten_artifact_ids``), so the consumer
leaves their references out and the next turn takes the orphan path.

Where it runs: in the consumer's own task, when ``ResponseStream`` reads the
request's ending. No shared stage ever waits here, so one request's wait
holds up no other; nothing polls (the barrier wakes waiters after each write).

Cancellation: a ``Cancelled`` ending never waits (it only names what is not
written yet); a consumer cancelled while waiting leaves at once, holding
nothing here. Counts go to the persister's statistics: ``durable_waits``,
``durable_timeouts``, ``durable_store_failing``, ``durable_unwritten``
(artifacts named), ``durable_wait_ms`` (total) and ``now_durable_waiting`` /
``now_durable_wait_max_ms``.
"""

from __future__ import annotations

import dataclasses
import math

import trio

from orpipe.engine.messages import Cancelled, Ending
from orpipe.engine.persist_barrier import ArtifactMarks, PersistBarrier
from orpipe.engine.statistics import ActorCounters

__all__ = ["DurableWait"]


class DurableWait:
    """One per engine: settles each request's ending against the persister's progress."""

    def __init__(self, barrier: PersistBarrier, timeout_s: float, counters: ActorCounters) -> None:
        self._barrier = barrier
        self._timeout_s = timeout_s
        self._counters = counters
        self._waiting = 0
        self._max_ms = 0

    async def settle(self, ending: Ending, marks: ArtifactMarks) -> Ending:
        """``ending``, after waiting for the request's artifacts; names those not written."""
        upto = marks.last  # 0 when it handed nothing over: nothing to wait for
        waits = self._timeout_s > 0 and not isinstance(ending, Cancelled)
        if waits and self._barrier.written_count < upto:
            await self._wait(upto)
        return self.named(ending, marks)

    def named(self, ending: Ending, marks: ArtifactMarks) -> Ending:
        """``ending`` naming the request's artifacts not written yet (no wait)."""
        unwritten = marks.unwritten(self._barrier.written_count)
        if not unwritten:
            return ending
        self._counters.add("durable_unwritten", len(unwritten))
        return dataclasses.replace(ending, unwritten_artifact_ids=unwritten)

    async def _wait(self, upto: int) -> None:
        counters = self._counters
        counters.add("durable_waits")
        started = trio.current_time()
        self._waiting += 1
        counters.level("durable_waiting", self._waiting)
        try:
            written = await self._barrier.wait_written(upto, self._timeout_s)
        finally:
            self._waiting -= 1
            counters.level("durable_waiting", self._waiting)
            waited_ms = math.ceil((trio.current_time() - started) * 1000)
            counters.add("durable_wait_ms", waited_ms)
            self._max_ms = max(self._max_ms, waited_ms)
            counters.level("durable_wait_max_ms", self._max_ms)
        if not written:
            counters.add("durable_store_failing" if self._barrier.failing else "durable_timeouts")
