"""The core both bridges share: one trio run next to an asyncio loop, and the crossings.

A ``TrioRun`` hosts the engine generations, the pumps and the bookkeeping of
both sides; ``GuestModeBridge`` and ``ThreadBridge`` differ only in how they
start ``main``. The crossings between the loops are all here:

* asyncio → trio only through synchronous, non-blocking ``run_sync_soon``
  calls (``to_trio``; never ``trio.from_thread``, which would block the loop);
  ``call_in_trio`` and ``call_async_in_trio`` await a result that way.
* trio → asyncio through ``to_loop``: ``call_soon`` in guest mode (trio runs on
  the loop's thread), ``call_soon_threadsafe`` from trio's own thread.

Stopping: ``request_stop`` sets ``stop``; ``main`` then closes every engine,
which gives each open request an ending, and gives the pumps a short grace to
hand it over, never waiting on a consumer that stopped reading. An engine
crash stops the run at once and is reported to whoever waits (``closed_error``).
When the run has ended, ``finished`` fails every asyncio future still waiting.
If the loop closes first, pumps notice at their next post and cancel their
requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

from orpipe.adapters.bridge.generation import EngineSetup, Generation
from orpipe.adapters.bridge.stream import BridgedStream, Pump
from orpipe.engine import ChannelStats, ChatRequest, Engine, EngineClosed, EngineCrashed

__all__ = ["TrioRun"]

T = TypeVar("T")

#: After the engine has stopped, pumps get this long to hand what the engine
#: already produced to their consumers; then they are cancelled, so a
#: consumer that stopped reading cannot hold the shutdown.
_HANDOVER_GRACE_S = 0.5

_SUBMIT_GONE = "the submitting asyncio task was cancelled"


class TrioRun:
    """One trio run hosting the engine generations, and its asyncio-side bookkeeping.

    Shared by both bridges; only how ``main`` is started differs. Attributes
    ``current``, ``generations``, ``tasks``, ``engines`` and ``stop`` belong
    to the trio side; ``ready``, ``done``, ``pending`` and ``open_streams``
    to the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        setup: EngineSetup,
        window_batches: int,
    ) -> None:
        self.loop = loop
        #: What the first generation is opened from (``reconfigure`` brings later ones).
        self.setup = setup
        self.window_batches = window_batches
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
        self.current: Generation | None = None
        self.generations: set[Generation] = set()
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

        return await self._settled(future, in_trio)

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

        return await self._settled(future, spawn)

    async def _settled(self, future: asyncio.Future[T], in_trio: Callable[[], object]) -> T:
        """Hand ``in_trio`` (which settles ``future``) to trio and await the future;
        the run's closed error if the run has ended or ends meanwhile (``finished``)."""
        self.pending.add(future)
        try:
            if self.done.done() or not self.to_trio(in_trio):
                raise self.closed_error()
            return await future
        finally:
            self.pending.discard(future)

    def closed_error(self) -> EngineCrashed | EngineClosed:
        """What a caller meets once the run has ended: the crash, if one stopped it."""
        if self.crash is not None:
            crashed = EngineCrashed(self.crash.message)
            crashed.__cause__ = self.crash
            return crashed
        return EngineClosed()

    # -- asyncio side ---------------------------------------------------------

    async def submit(self, request: ChatRequest) -> BridgedStream:
        target = BridgedStream(self, request.request_id)

        def in_trio() -> Pump:
            generation = self.current
            if generation is None or self.tasks is None or self.crash is not None:
                raise self.closed_error()
            # AdmissionRejected / EngineClosed pass through to the caller.
            stream = generation.engine.submit(request)
            pump = Pump(generation, stream, target, self.window_batches)
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
        target.attach(pump)
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

    # -- trio side ------------------------------------------------------------

    def _cancel_everywhere(self, request_id: str, reason: str) -> None:
        for generation in list(self.generations):
            generation.cancel(request_id, reason)

    def crashed(self, exc: EngineCrashed) -> None:
        """trio: an engine crashed; report it and stop the run (the run ends cleanly)."""
        if self.crash is None:
            self.crash = exc
        if self.stop is not None:
            self.stop.set()

    async def start_generation(self, setup: EngineSetup) -> None:
        """trio: open a new engine generation and send new requests to it."""
        assert self.engines is not None
        generation = Generation(self, setup)
        self.generations.add(generation)
        await self.engines.start(generation.open)
        previous, self.current = self.current, generation
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
                        await self.start_generation(self.setup)
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


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
