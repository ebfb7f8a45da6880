"""The asyncio side of the engine: run trio next to an asyncio loop (Open WebUI).

Two ways to run trio, one request hand-off shared by both (DESIGN.md §6):

* ``GuestModeBridge`` runs trio with ``trio.lowlevel.start_guest_run`` on the
  *running* asyncio loop (asyncio or uvloop): trio code runs on the loop
  thread, between asyncio callbacks. One guest run per thread, so one bridge
  per loop.
* ``ThreadBridge`` runs ``trio.run`` in a dedicated daemon thread; the
  fallback, and the comparison point for the bench.

Flavours:

* asyncio-flavoured (await them from asyncio code on the bridge's loop):
  ``EngineBridge.start / submit / statistics / wait_persisted / aclose`` of both bridges, and
  ``BridgedStream.__anext__ / receive_batch / aclose``.
* trio-flavoured (run inside the trio run only): ``_Run.main`` (the trio main:
  transport + engine + pumps) and ``_Pump.run`` (one per request).
* Synchronous hand-offs: functions given to ``TrioToken.run_sync_soon`` run
  in trio context (``_Pump.give_credits``, ``_Pump.cancel``, the submit and
  statistics callbacks); functions given to ``loop.call_soon_threadsafe`` run
  on the asyncio loop (``BridgedStream._post``, future resolution).

asyncio → trio happens only through those synchronous, non-blocking
``run_sync_soon`` calls (never ``trio.from_thread``, which would block the
loop). trio → asyncio goes through ``call_soon_threadsafe``, per request
bounded by credits: a pump holds at most ``window_batches`` batches on the
asyncio side, so a slow consumer stops its pump, which stops reading the
engine stream, which (through the engine's own credit window) stops the
upstream read.

Reconfiguration: ``reconfigure(config, transport_factory)`` starts a new
engine *generation* (transport + engine) inside the same trio run and sends
new requests to it; the previous generation takes no new work and closes
once its last request has ended (each is bounded by its deadline), so a
change of settings never drops an answer in flight. One trio run per loop
hosts them all, which guest mode requires anyway (one guest run per thread).

Lifetime: ``aclose()`` ends the trio run (guest: its done callback fires;
thread: the thread is joined). If the loop is closed *without* ``aclose()``:

* guest mode: the guest run is abandoned mid-flight. Its tasks never run
  again, its sockets stay open until the process exits, trio's I/O thread
  fails to post to the closed loop, and the loop thread keeps trio's
  "inside a run" marker, so no other trio run can start on that thread.
* thread mode: the engine goes on idling in its daemon thread until the
  process exits; pumps notice the closed loop at their next post and cancel
  their requests.

Open WebUI's loop lives as long as the worker process, so neither matters
there; tests and short-lived scripts must call ``aclose()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import outcome
import trio

from orpipe.actors import open_engine
from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport
from orpipe.engine import (
    Cancelled,
    ChannelStats,
    ChatRequest,
    Completed,
    Ending,
    Engine,
    EngineClosed,
    EngineConfig,
    EngineCrashed,
    EnginePorts,
    EngineStatistics,
    Failed,
    Incomplete,
    OutboundEvent,
    RequestDeadlineExceeded,
    ResponseStream,
    UpstreamTransport,
    UsageError,
)
from orpipe.engine.ports import ArtifactStore

__all__ = [
    "BRIDGE_CHANNEL",
    "BridgedStream",
    "EngineBridge",
    "GuestModeBridge",
    "StoreFactory",
    "ThreadBridge",
    "TransportFactory",
]

T = TypeVar("T")

_ENDINGS = (Completed, Incomplete, Failed, Cancelled)

#: After the engine has stopped, pumps get this long to hand what the engine
#: already produced to their consumers; then they are cancelled, so a
#: consumer that stopped reading cannot hold the shutdown.
_HANDOVER_GRACE_S = 0.5

#: The pump outlives the engine-side request deadline by this much, so the
#: engine's own deadline ending normally arrives first.
_PUMP_DEADLINE_SLACK_S = 1.0

_SUBMIT_GONE = "the submitting asyncio task was cancelled"

#: The name under which the asyncio-side per-request queues appear in statistics.
BRIDGE_CHANNEL = "bridge.to_asyncio"

#: Builds the upstream transport inside the trio run (tests inject faults here).
TransportFactory = Callable[[EngineConfig], AbstractAsyncContextManager[UpstreamTransport]]

#: Opens the artifact store inside the trio run (None: artifacts are not stored).
StoreFactory = Callable[[], AbstractAsyncContextManager[ArtifactStore]]


@contextlib.asynccontextmanager
async def _no_store() -> AsyncIterator[None]:
    yield None


class EngineBridge(Protocol):
    """What an asyncio host (the Open WebUI pipe) needs from the engine.

    Every method is asyncio-flavoured and must be awaited on the loop the
    bridge was started on. No trio exception type crosses: failures are
    ``engine`` errors (``AdmissionRejected``, ``EngineClosed``, ``EngineCrashed``,
    ``UsageError``).
    """

    async def start(self) -> None:
        """Start the engine if it is not running (idempotent; also restarts after a crash)."""

    async def submit(self, request: ChatRequest) -> BridgedStream:
        """Submit a request, starting the engine lazily; raises as ``Engine.submit`` would."""

    async def statistics(self) -> EngineStatistics:
        """A snapshot of the engine's statistics (taken inside the trio run)."""

    async def wait_persisted(self, timeout_s: float) -> bool:
        """Wait (bounded) until the artifacts sent to the persister before the call are
        written; returns whether the store's writes are failing (``Engine.wait_persisted``)."""

    async def aclose(self) -> None:
        """Graceful shutdown, waiting until the trio run has ended (idempotent)."""


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

    def __init__(self, run: _Run, request_id: str) -> None:
        self._run = run
        self.request_id = request_id
        self._batches: collections.deque[tuple[OutboundEvent, ...]] = collections.deque()
        self._current: collections.deque[OutboundEvent] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pump: _Pump | None = None
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

    def _attach(self, pump: _Pump) -> None:
        self._pump = pump
        self._run.open_streams.add(self)

    def _post(self, events: tuple[OutboundEvent, ...]) -> None:
        """A batch from the pump (scheduled with ``call_soon_threadsafe``)."""
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


class _Pump:
    """The trio half of one request's hand-off: engine stream → asyncio queue.

    Owns the request's ``ResponseStream``, a credit semaphore and a cancel
    scope bounded by the request deadline. Its methods run in trio context.
    On cancellation (consumer closed, deadline, engine stopped or crashed) it
    cancels the request in the engine and posts one ending the consumer has
    not seen yet, so an asyncio reader never waits forever.
    """

    def __init__(
        self,
        generation: _Generation,
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


class _Generation:
    """One engine and its upstream transport, inside a run.

    Trio-flavoured. Runs as a task of the run's engine nursery from
    ``open`` until it is told to leave: ``retire()`` (a newer generation
    takes new requests; leave once the last pump of this one has ended) or
    ``close_now()`` (the run is stopping; leave at once, which closes the
    engine gracefully and gives every open request an ending). A crash is
    handed to the run, never raised into the nursery.
    """

    def __init__(
        self,
        run: _Run,
        config: EngineConfig,
        factory: TransportFactory,
        store_factory: StoreFactory | None = None,
    ) -> None:
        self.run = run
        self.config = config
        self._factory = factory
        self._store_factory = store_factory
        #: The artifact store this generation's engine writes to (None: not stored).
        self.store: ArtifactStore | None = None
        self._engine: Engine | None = None
        self._pumps: set[_Pump] = set()
        self._retiring = False
        self._leave = trio.Event()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise self.run.closed_error()
        return self._engine

    @property
    def pumps(self) -> frozenset[_Pump]:
        return frozenset(self._pumps)

    def pump_started(self, pump: _Pump) -> None:
        self._pumps.add(pump)

    def pump_ended(self, pump: _Pump) -> None:
        self._pumps.discard(pump)
        if self._retiring and not self._pumps:
            self._leave.set()

    def retire(self) -> None:
        self._retiring = True
        if not self._pumps:
            self._leave.set()

    def close_now(self) -> None:
        self._leave.set()

    async def open(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            store_cm = self._store_factory() if self._store_factory else _no_store()
            # The store outlives the engine: the persister flushes into it on exit.
            async with (
                self._factory(self.config) as transport,
                store_cm as store,
                open_engine(
                    self.config, EnginePorts(transport=transport, artifacts=store)
                ) as engine,
            ):
                self.store = store
                self._engine = engine
                started = True
                task_status.started()
                await self._leave.wait()
        except EngineCrashed as exc:
            if not started:
                raise  # to whoever is starting this generation
            self.run.crashed(exc)
        finally:
            self.run.generations.discard(self)


class _Run:
    """One trio run hosting the engine generations, and its asyncio-side bookkeeping.

    Shared by both bridges; only how ``main`` is started differs. Attributes
    ``current``, ``generations``, ``tasks``, ``engines`` and ``stop`` belong
    to the trio side; ``ready``, ``done``, ``pending`` and ``open_streams``
    to the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: EngineConfig,
        transport_factory: TransportFactory,
        window_batches: int,
        store_factory: StoreFactory | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.window_batches = window_batches
        self._transport_factory = transport_factory
        self.store_factory = store_factory
        self.ready: asyncio.Future[trio.lowlevel.TrioToken] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.pending: set[asyncio.Future[Any]] = set()
        #: Streams handed to asyncio whose ending has not been read yet.
        self.open_streams: set[BridgedStream] = set()
        #: The most batches one request ever had queued on the asyncio side.
        self.peak_queued = 0
        #: Hand-offs between the loops (each one a callback scheduled on the other
        #: side; in guest mode a trio-bound one also wakes trio's run loop).
        self.handoffs_to_loop = 0
        self.handoffs_to_trio = 0
        #: Guest mode: trio code runs on the loop's own thread (see ``to_loop``).
        self.on_loop_thread = False
        self.token: trio.lowlevel.TrioToken | None = None
        self.current: _Generation | None = None
        self.generations: set[_Generation] = set()
        self.tasks: trio.Nursery | None = None
        self.engines: trio.Nursery | None = None
        self.stop: trio.Event | None = None
        self.crash: EngineCrashed | None = None

    @property
    def engine(self) -> Engine | None:
        """The engine that takes new requests (None before start and after a crash)."""
        return self.current.engine if self.current is not None else None

    # -- crossing over ------------------------------------------------------

    def to_loop(self, fn: Callable[..., object], *args: object) -> bool:
        """Schedule ``fn(*args)`` on the loop (any thread); False if the loop is closed."""
        try:
            if self.on_loop_thread:
                # Guest mode: trio runs between the loop's callbacks on the loop's
                # thread, so the plain call is safe, and it skips the self-pipe
                # write (a syscall, then a selector wake-up) that the thread-safe
                # one pays on every hand-off.
                self.loop.call_soon(fn, *args)
            else:
                self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        self.handoffs_to_loop += 1
        return True

    def to_trio(self, fn: Callable[[], object]) -> bool:
        """Schedule ``fn()`` in trio context (any thread); False if the run has ended."""
        if self.token is None:
            return False
        try:
            self.token.run_sync_soon(fn)
        except trio.RunFinishedError:
            return False
        self.handoffs_to_trio += 1
        return True

    async def call_in_trio(self, fn: Callable[[], T]) -> T:
        """asyncio: run ``fn`` synchronously in trio context and await its result."""
        future: asyncio.Future[T] = self.loop.create_future()

        def in_trio() -> None:
            try:
                result = fn()
            except BaseException as exc:
                self.to_loop(_set_exception, future, exc)
            else:
                self.to_loop(_set_result, future, result)

        self.pending.add(future)
        try:
            if self.done.done() or not self.to_trio(in_trio):
                raise self.closed_error()
            return await future
        finally:
            self.pending.discard(future)

    def closed_error(self) -> EngineCrashed | EngineClosed:
        if self.crash is not None:
            crashed = EngineCrashed(self.crash.message)
            crashed.__cause__ = self.crash
            return crashed
        return EngineClosed()

    # -- asyncio side ---------------------------------------------------------

    async def submit(self, request: ChatRequest) -> BridgedStream:
        target = BridgedStream(self, request.request_id)

        def in_trio() -> _Pump:
            generation = self.current
            if generation is None or self.tasks is None or self.crash is not None:
                raise self.closed_error()
            # AdmissionRejected / EngineClosed pass through to the caller.
            stream = generation.engine.submit(request)
            pump = _Pump(generation, stream, target, self.window_batches)
            generation.pump_started(pump)
            self.tasks.start_soon(pump.run, name=f"pump {request.request_id}")
            return pump

        try:
            pump = await self.call_in_trio(in_trio)
        except asyncio.CancelledError:
            # The submitting task was cancelled while the engine took the
            # request: cancel it there too (if it got in), so nothing leaks.
            rid = request.request_id
            self.to_trio(lambda: self._cancel_everywhere(rid, _SUBMIT_GONE))
            raise
        target._attach(pump)
        return target

    def request_stop(self) -> None:
        """Ask the trio main to leave (any thread); harmless if it already has."""
        if self.stop is not None:
            self.to_trio(self.stop.set)

    def finished(self, result: outcome.Outcome[None]) -> None:
        """On the loop: the trio run has ended; fail whatever still waits on it."""
        error: BaseException | None = None
        if isinstance(result, outcome.Error):
            error = result.error
        if not self.ready.done():
            self.ready.set_exception(error if error is not None else self.closed_error())
        elif error is not None:
            # A bug in the bridge itself; nobody is waiting on the run, so say it here.
            self.loop.call_exception_handler(
                {"message": "orpipe: the trio run of the engine bridge failed", "exception": error}
            )
        for future in list(self.pending):
            if not future.done():
                future.set_exception(self.closed_error())
        if not self.done.done():
            self.done.set_result(None)

    async def call_async_in_trio(self, afn: Callable[[], Awaitable[T]]) -> T:
        """asyncio: run ``await afn()`` as a task of the trio run and await its result.

        A trio cancellation (the run stopping) reaches asyncio as the run's
        closed error, never as a trio exception.
        """
        future: asyncio.Future[T] = self.loop.create_future()

        async def in_trio() -> None:
            result = await outcome.acapture(afn)
            if isinstance(result, outcome.Value):
                self.to_loop(_set_result, future, result.value)
                return
            error = result.error
            if isinstance(error, Exception):
                self.to_loop(_set_exception, future, error)
                return
            self.to_loop(_set_exception, future, self.closed_error())
            raise error  # Cancelled and friends belong to trio

        def spawn() -> None:
            if self.tasks is None or self.stop is None or self.stop.is_set():
                self.to_loop(_set_exception, future, self.closed_error())
            else:
                self.tasks.start_soon(in_trio)

        self.pending.add(future)
        try:
            if self.done.done() or not self.to_trio(spawn):
                raise self.closed_error()
            return await future
        finally:
            self.pending.discard(future)

    # -- trio side ------------------------------------------------------------

    def _cancel_everywhere(self, request_id: str, reason: str) -> None:
        for generation in list(self.generations):
            if generation._engine is not None:
                generation._engine.cancel(request_id, reason)

    def crashed(self, exc: EngineCrashed) -> None:
        """trio: an engine crashed; report it and stop the run (the run ends cleanly)."""
        if self.crash is None:
            self.crash = exc
        if self.stop is not None:
            self.stop.set()

    async def start_generation(
        self,
        config: EngineConfig,
        factory: TransportFactory,
        store_factory: StoreFactory | None = None,
    ) -> None:
        """trio: open a new engine generation and send new requests to it."""
        assert self.engines is not None
        generation = _Generation(self, config, factory, store_factory)
        self.generations.add(generation)
        await self.engines.start(generation.open)
        previous, self.current = self.current, generation
        self.config = config
        if previous is not None:
            previous.retire()

    async def main(self) -> None:
        """trio: engine generations + pumps, until ``stop`` is set or an engine crashes."""
        self.stop = trio.Event()
        async with trio.open_nursery() as tasks:
            self.tasks = tasks
            try:
                async with trio.open_nursery() as engines:
                    self.engines = engines
                    try:
                        await self.start_generation(
                            self.config, self._transport_factory, self.store_factory
                        )
                    except EngineCrashed as exc:
                        self.crashed(exc)
                        return
                    self.token = trio.lowlevel.current_trio_token()
                    self.to_loop(_set_result, self.ready, self.token)
                    await self.stop.wait()
                    # Close every engine now: each gives its open requests an ending.
                    for generation in list(self.generations):
                        generation.close_now()
            finally:
                if self.crash is not None:
                    tasks.cancel_scope.cancel()
                else:
                    # Every request has its ending by now; let the pumps hand
                    # it over, but never wait on a consumer that stopped reading.
                    tasks.cancel_scope.deadline = trio.current_time() + _HANDOVER_GRACE_S

    # -- asyncio side, again ------------------------------------------------------

    def bridge_statistics(self) -> ChannelStats:
        """On the loop: the asyncio-side queues of open requests, as one named buffer."""
        streams = list(self.open_streams)
        return ChannelStats(
            current_buffer_used=sum(s.queued_batches for s in streams),
            max_buffer_size=self.window_batches * len(streams),
            # A pump that has used its whole window waits for the consumer.
            tasks_waiting_send=sum(s.pump_waiting for s in streams),
            tasks_waiting_receive=sum(s.consumer_waiting for s in streams),
            peak_buffer_used=self.peak_queued,
            instances=len(streams),
        )


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _BridgeBase:
    """The asyncio API shared by both bridges; subclasses say how trio runs."""

    def __init__(
        self,
        config: EngineConfig,
        api_key: str,
        *,
        window_batches: int = 8,
        transport_factory: TransportFactory | None = None,
        store_factory: StoreFactory | None = None,
    ) -> None:
        if window_batches < 1:
            raise UsageError(f"window_batches must be at least 1, not {window_batches}")
        self.config = config
        self.window_batches = window_batches
        self._transport_factory: TransportFactory = transport_factory or _http_transport(api_key)
        self._store_factory = store_factory
        self._run: _Run | None = None

    @property
    def running(self) -> bool:
        """True while a trio run of this bridge exists (started and not yet ended)."""
        return self._run is not None and not self._run.done.done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        run = self._run
        if run is not None and not run.done.done():
            if run.loop is not loop:
                raise UsageError(
                    "this bridge already runs on another event loop; use one bridge per loop"
                )
            await asyncio.shield(run.ready)
            return
        run = _Run(
            loop, self.config, self._transport_factory, self.window_batches, self._store_factory
        )
        self._run = run
        self._launch(run)
        await asyncio.shield(run.ready)

    async def submit(self, request: ChatRequest) -> BridgedStream:
        run = self._run
        if run is not None and run.done.done() and run.crash is not None:
            # Report the crash until someone decides to start() again.
            raise run.closed_error()
        await self.start()
        assert self._run is not None
        return await self._run.submit(request)

    async def statistics(self) -> EngineStatistics:
        run = self._run
        if run is None or not run.ready.done() or run.ready.exception() is not None:
            raise EngineClosed("The engine is not running; submit a request to start it.")

        def in_trio() -> EngineStatistics:
            engine = run.engine
            if engine is None:
                raise run.closed_error()
            return engine.statistics()

        stats = await run.call_in_trio(in_trio)
        # The asyncio side's per-request queues are a buffer like any other.
        channels = {**stats.channels, BRIDGE_CHANNEL: run.bridge_statistics()}
        actors = {
            **stats.actors,
            "bridge": {
                "handoffs_to_loop": run.handoffs_to_loop,
                "handoffs_to_trio": run.handoffs_to_trio,
            },
        }
        return dataclasses.replace(stats, channels=channels, actors=actors)

    @property
    def open_streams(self) -> int:
        """Requests handed to asyncio whose ending has not been read (on the loop)."""
        return len(self._run.open_streams) if self._run is not None else 0

    async def reconfigure(
        self,
        config: EngineConfig,
        *,
        api_key: str | None = None,
        transport_factory: TransportFactory | None = None,
        store_factory: StoreFactory | None = None,
    ) -> None:
        """Use a new config (and key, transport, store) for new requests, dropping none in flight.

        Not running: the next start uses it. Running: a new engine generation
        starts in the same trio run and takes new requests; the previous one
        closes once its last request has ended.
        """
        if transport_factory is None and api_key is not None:
            transport_factory = _http_transport(api_key)
        self.config = config
        if transport_factory is not None:
            self._transport_factory = transport_factory
        self._store_factory = store_factory
        run = self._run
        if run is None or run.done.done():
            return
        await asyncio.shield(run.ready)
        factory = self._transport_factory
        await run.call_async_in_trio(lambda: run.start_generation(config, factory, store_factory))

    async def wait_persisted(self, timeout_s: float) -> bool:
        """asyncio: ``Engine.wait_persisted`` of the current engine, in one crossing.

        Raises ``EngineClosed`` when the engine is not running (as ``statistics``).
        """
        run = self._run
        if run is None or not run.ready.done() or run.ready.exception() is not None:
            raise EngineClosed("The engine is not running; submit a request to start it.")

        async def in_trio() -> bool:
            generation = run.current
            if generation is None:
                raise run.closed_error()
            return await generation.engine.wait_persisted(timeout_s)

        return await run.call_async_in_trio(in_trio)

    async def call_store(self, fn: Callable[[ArtifactStore], Awaitable[T]]) -> T | None:
        """asyncio: ``await fn(store)`` inside the trio run with the current engine's
        artifact store; None when that engine stores no artifacts."""
        await self.start()
        run = self._run
        assert run is not None

        async def in_trio() -> T | None:
            store = run.current.store if run.current is not None else None
            return None if store is None else await fn(store)

        return await run.call_async_in_trio(in_trio)

    async def aclose(self) -> None:
        run = self._run
        if run is None:
            return
        if run.loop is not asyncio.get_running_loop():
            raise UsageError("aclose() must be awaited on the loop the bridge was started on")
        # If it never started, ``done`` is (or will be) set all the same.
        with contextlib.suppress(Exception):
            await asyncio.shield(run.ready)
        run.request_stop()
        await asyncio.shield(run.done)
        await self._after_done()

    def _launch(self, run: _Run) -> None:
        raise NotImplementedError

    async def _after_done(self) -> None:
        """Hook: what is left once the trio run has reported it ended."""


class GuestModeBridge(_BridgeBase):
    """trio as a guest on the running asyncio loop (``trio.lowlevel.start_guest_run``).

    Trio code runs on the loop thread; only trio's I/O wait happens in a
    helper thread. One guest run per thread, so one bridge per loop.
    """

    #: The outcome the last guest run's done callback reported (None before).
    last_outcome: outcome.Outcome[None] | None = None

    def _launch(self, run: _Run) -> None:
        def done(result: outcome.Outcome[None]) -> None:
            self.last_outcome = result
            run.finished(result)

        run.on_loop_thread = True
        try:
            trio.lowlevel.start_guest_run(
                run.main,
                run_sync_soon_threadsafe=run.loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=run.loop.call_soon,
                done_callback=done,
                # Never take over the process-wide signal wakeup fd: uvloop
                # (and asyncio with signal handlers) already owns it, and the
                # engine handles no signals.
                host_uses_signal_set_wakeup_fd=True,
            )
        except RuntimeError as exc:
            self._run = None
            raise UsageError(
                "a trio run is already active on this event loop's thread "
                "(another GuestModeBridge?); use one bridge per loop"
            ) from exc


class ThreadBridge(_BridgeBase):
    """trio in a dedicated daemon thread (``trio.run``); same behaviour as guest mode."""

    #: The thread of the current (or last) trio run.
    thread: threading.Thread | None = None

    def _launch(self, run: _Run) -> None:
        def thread_main() -> None:
            result: outcome.Outcome[None] = outcome.capture(trio.run, run.main)
            # If the loop is already closed there is nobody left to tell.
            run.to_loop(run.finished, result)

        self.thread = threading.Thread(target=thread_main, name="orpipe-trio", daemon=True)
        self.thread.start()

    async def _after_done(self) -> None:
        thread = self.thread
        if thread is not None:
            # ``finished`` is the thread's last act, so this join is immediate;
            # still done off the loop, as a join must never block it.
            await asyncio.to_thread(thread.join)


def _http_transport(api_key: str) -> TransportFactory:
    """The real transport's factory. A closure, not ``functools.partial``: a
    partial's repr would print the key."""

    def open_transport(config: EngineConfig) -> AbstractAsyncContextManager[UpstreamTransport]:
        return OpenRouterHttpTransport(config, api_key=api_key)

    return open_transport
