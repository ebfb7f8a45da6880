"""One answer's hand-off across the loops: ``BridgedStream`` (asyncio) and its ``Pump`` (trio).

The pump reads the request's engine stream in trio and posts batches to the
stream's queue on the loop; the reader takes them from asyncio. Credits bound
the hand-off: the pump posts only while it holds one, and a credit comes back
only when the reader has taken a batch (half a window at a time). So a slow
consumer stops its pump, which stops reading the engine stream, which
(through the engine's own credit window) stops the upstream read.

Cancellation and close: closing the stream early (``aclose``, leaving
``async with``, the reading task cancelled) cancels the request in the
engine at once, with one hand-off into trio and nothing awaited. The pump,
when cancelled (consumer gone, deadline, engine stopped or crashed), cancels
the request in the engine and posts one ending the reader has not seen yet,
so an asyncio reader never waits forever.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import TYPE_CHECKING

import trio

from orpipe.engine import (
    Cancelled,
    Completed,
    Ending,
    EngineClosed,
    EngineCrashed,
    Failed,
    Incomplete,
    OutboundEvent,
    RequestDeadlineExceeded,
    ResponseStream,
)

if TYPE_CHECKING:
    from orpipe.adapters.bridge.generation import Generation
    from orpipe.adapters.bridge.trio_run import TrioRun

__all__ = ["BridgedStream", "Pump"]

#: The pump outlives the engine-side request deadline by this much, so the
#: engine's own deadline ending normally arrives first.
_PUMP_DEADLINE_SLACK_S = 1.0

#: ``Ending``'s members, as a tuple: ``isinstance`` with it is the fastest check per batch.
_ENDINGS = (Completed, Incomplete, Failed, Cancelled)


class BridgedStream:
    """One request's events, read from asyncio: ``async for event in stream``.

    Ends after the ending event (``Completed`` / ``Incomplete`` / ``Failed`` /
    ``Cancelled``). Owns the asyncio half of the request's hand-off: the
    queue of batches posted by the trio pump (at most ``window_batches``,
    because the pump posts only while it holds a credit, and a credit comes
    back only when a batch is taken here).

    Closing early cancels the request in the engine, promptly (one
    ``run_sync_soon``, nothing awaited): ``aclose()``, leaving ``async with``,
    or the consuming task being cancelled while it waits here (what Open
    WebUI's stop button does). A pipe's async generator should still call
    ``aclose()`` in its ``finally``, for a cancellation that lands elsewhere.
    """

    def __init__(self, run: TrioRun, request_id: str) -> None:
        self._run = run
        self.request_id = request_id
        self._batches: collections.deque[tuple[OutboundEvent, ...]] = collections.deque()
        self._current: collections.deque[OutboundEvent] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pump: Pump | None = None
        self._ending: Ending | None = None
        self._closed = False
        #: The most batches ever queued here at once (never above the window).
        self.queued_high_water = 0
        #: Batches taken whose credits are not given back yet (``receive_batch``).
        self._taken = 0
        self._credit_every = max(1, run.window_batches // 2)

    @property
    def ending(self) -> Ending | None:
        """The ending, once read (or the ``Cancelled`` recorded by an early close)."""
        return self._ending

    @property
    def queued_batches(self) -> int:
        """Batches posted by the pump and not yet taken."""
        return len(self._batches)

    @property
    def consumer_waiting(self) -> bool:
        """The asyncio reader waits for the pump."""
        return self._waiter is not None

    @property
    def pump_waiting(self) -> bool:
        """The pump has used its whole window and waits for the reader."""
        return self._pump is not None and self._pump.waiting_credit

    def __aiter__(self) -> BridgedStream:
        return self

    async def __anext__(self) -> OutboundEvent:
        if not self._current:
            batch = await self.receive_batch()
            if not batch:
                raise StopAsyncIteration
            self._current.extend(batch)
        return self._current.popleft()

    async def receive_batch(self) -> tuple[OutboundEvent, ...]:
        """Everything available now (at least one event); ``()`` after the ending."""
        if self._current:
            rest = tuple(self._current)
            self._current.clear()
            return rest
        while not self._batches:
            if self._ending is not None or self._closed:
                return ()
            waiter = self._run.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            except BaseException:
                # The consuming task was cancelled (Open WebUI's stop button):
                # cancel the request now, not when the engine deadline hits.
                self._close_now("the consuming asyncio task was cancelled")
                raise
            finally:
                self._waiter = None
        # Every batch already here, in one: at load the pump posts faster than
        # one reader's turn, and each batch handed on costs the pipe a chunk.
        taken: list[OutboundEvent] = []
        while self._batches:
            events = self._batches.popleft()
            taken.extend(events)
            if isinstance(events[-1], _ENDINGS):
                self._ending = events[-1]
                self._run.open_streams.discard(self)
                break
            self._took_one()
        return tuple(taken)

    def _took_one(self) -> None:
        """A batch was taken: its credit goes back to the pump, in bulk."""
        if self._pump is None:
            return
        # Credits go back half a window at a time: each return is a hand-off
        # into trio (in guest mode a wake-up of its run loop). The pump can
        # only be waiting once it posted the whole window, and a reader that
        # took all of that has half a window to give back, so nobody waits on
        # a credit kept here.
        self._taken += 1
        if self._taken >= self._credit_every:
            taken, self._taken = self._taken, 0
            self._run.to_trio(functools.partial(self._pump.give_credits, taken))

    async def aclose(self) -> None:
        """Stop reading; an unfinished request is cancelled (does not wait for the engine)."""
        self._close_now("the consumer closed the stream")

    def cancel(self, reason: str) -> None:
        """Synchronous ``aclose`` with a reason, on the loop's thread (e.g. from a finaliser)."""
        self._close_now(reason)

    async def __aenter__(self) -> BridgedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- called on the loop ------------------------------------------------

    def attach(self, pump: Pump) -> None:
        """The engine took the request: the stream is open, and its credits go to ``pump``."""
        self._pump = pump
        self._run.open_streams.add(self)

    def _post(self, events: tuple[OutboundEvent, ...]) -> None:
        """A batch from the pump (scheduled on the loop by ``TrioRun.to_loop``)."""
        if self._closed:
            return
        self._batches.append(events)
        self.queued_high_water = max(self.queued_high_water, len(self._batches))
        self._run.peak_queued = max(self._run.peak_queued, self.queued_high_water)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _close_now(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._batches.clear()
        self._current.clear()
        self._run.open_streams.discard(self)
        if self._ending is None:
            self._ending = Cancelled(request_id=self.request_id, reason=reason)
            if self._pump is not None:
                self._run.to_trio(functools.partial(self._pump.cancel, reason))


class Pump:
    """The trio half of one request's hand-off: engine stream → asyncio queue.

    Owns the request's ``ResponseStream``, a credit semaphore and a cancel
    scope bounded by the request deadline. Its methods run in trio context.
    On cancellation (consumer closed, deadline, engine stopped or crashed) it
    cancels the request in the engine and posts one ending the consumer has
    not seen yet, so an asyncio reader never waits forever.
    """

    def __init__(
        self,
        generation: Generation,
        stream: ResponseStream,
        target: BridgedStream,
        window: int,
    ) -> None:
        self._run = generation.run
        self._generation = generation
        self._engine = generation.engine
        self._stream = stream
        self._target = target
        self._credits = trio.Semaphore(window)
        deadline_s = generation.config.request_deadline_s + _PUMP_DEADLINE_SLACK_S
        self._scope = trio.CancelScope(deadline=trio.current_time() + deadline_s)
        self._reason: str | None = None
        #: The pump holds every credit it was given and waits for one more.
        self.waiting_credit = False

    def give_credits(self, count: int) -> None:
        for _ in range(count):
            self._credits.release()

    def cancel(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        # At once, not when the pump next runs: the engine frees the slot and
        # closes the upstream connection in this same trio tick.
        self._engine.cancel(self._stream.request_id, reason)
        self._scope.cancel()

    async def run(self) -> None:
        delivered = False
        try:
            with self._scope:
                while not delivered:
                    self.waiting_credit = self._credits.value == 0
                    await self._credits.acquire()
                    self.waiting_credit = False
                    events = await self._stream.receive_batch()
                    if not events:
                        break
                    delivered = isinstance(events[-1], _ENDINGS)
                    if not self._run.to_loop(self._target._post, events):
                        self._reason = "the asyncio event loop closed"
                        break
        finally:
            if not delivered:
                ending = self._substitute_ending()
                if isinstance(ending, Cancelled):
                    self._engine.cancel(self._stream.request_id, ending.reason)
                self._run.to_loop(self._target._post, (ending,))
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
            self._generation.pump_ended(self)

    def _substitute_ending(self) -> Ending:
        rid = self._stream.request_id
        if self._reason is not None:
            return Cancelled(request_id=rid, reason=self._reason)
        error: EngineCrashed | EngineClosed | RequestDeadlineExceeded
        if self._run.crash is not None:
            error = EngineCrashed(self._run.crash.message)
        elif self._scope.cancelled_caught:
            error = RequestDeadlineExceeded(self._generation.config.request_deadline_s)
        else:
            error = EngineClosed("The engine stopped before this answer finished; retry.")
        return Failed(request_id=rid, error=error, message=error.message)
