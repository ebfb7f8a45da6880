"""One request's engine-side state, and the stream its consumer reads.

``RequestHandle`` owns the request's cancel scopes, its credit window, its
``RequestOutbox`` (the only way into its outbound buffer: every delivery and
the one ending go through it, whoever makes them) and its turn mailbox,
which the outbox's ending closes too.

A request may run in several phases (upstream turns, tool rounds), each in
its own task and its own cancel scope (``cancel_scope()``): a trio scope
can be entered once, and ``cancel()`` must reach whichever phase runs.

``ResponseStream`` is what ``Engine.submit`` returns: an async iterator of
``OutboundEvent`` that always ends with exactly one ``Ending``. Closing it
early cancels the request. Before handing out the ending it waits, in the
consumer's task, until the request's artifacts are written
(engine.durable_wait); a consumer cancelled during that wait gets, if it
reads on, the ending with the artifacts not written yet named in it.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio

from orpipe.engine.durable_wait import DurableWait
from orpipe.engine.errors import EngineClosed
from orpipe.engine.flow import CreditWindow
from orpipe.engine.messages import (
    Cancelled,
    ChatRequest,
    Completed,
    Ending,
    Failed,
    Incomplete,
    OutboundBatch,
    OutboundEvent,
    TurnMail,
)
from orpipe.engine.persist_barrier import ArtifactMarks
from orpipe.engine.request_outbox import RequestOutbox

if TYPE_CHECKING:
    from orpipe.engine.channels import ChannelRegistry

__all__ = ["RequestHandle", "ResponseStream"]

_ENDINGS = (Completed, Incomplete, Failed, Cancelled)

#: Outbound slots beyond the credit window: the ending, plus slack for the
#: few batches that carry no credit (a held-back half surrogate pair).
_OUTBOX_RESERVE = 4


class RequestHandle:
    """Engine-side state of one submitted request."""

    def __init__(
        self,
        request: ChatRequest,
        *,
        window_events: int,
        deadline: float,
        channels: ChannelRegistry,
        on_finished: Callable[[RequestHandle, Ending], None],
    ) -> None:
        self.request = request
        self.request_id = request.request_id
        self.submitted_at = trio.current_time()
        self.admitted_at: float | None = None
        #: trio time by which the request ends, whatever phase it is in.
        self.deadline = deadline
        self._scopes: set[trio.CancelScope] = set()
        self.window = CreditWindow(window_events)
        self.cancel_reason: str | None = None
        #: The artifacts it handed to the persister, for its ending's durable wait.
        self.artifact_marks = ArtifactMarks()
        # Bounded by construction: every batch but the ending holds at least
        # one credit, and at most ``window_events`` credits are out at once.
        outbox_send: trio.MemorySendChannel[OutboundBatch]
        self.outbox_receive: trio.MemoryReceiveChannel[OutboundBatch]
        outbox_send, self.outbox_receive = channels.open(
            "request.outbox", window_events + _OUTBOX_RESERVE
        )
        self.outbox = RequestOutbox(self.request_id, outbox_send, self.window, self._ended)
        self._on_finished = on_finished
        # One slot: a request has at most one next step pending (the tool
        # executor's answer to the turn that just ended).
        self._turns_send: trio.MemorySendChannel[TurnMail]
        self.turns_receive: trio.MemoryReceiveChannel[TurnMail]
        self._turns_send, self.turns_receive = channels.open("request.turns", 1)

    @property
    def finished(self) -> bool:
        return self.outbox.finished

    @contextlib.contextmanager
    def cancel_scope(self) -> Iterator[trio.CancelScope]:
        """A scope for one phase of the request: its deadline, and ``cancel()`` reaches it.

        Entered after a cancellation, it is cancelled from the start.
        """
        scope = trio.CancelScope(deadline=self.deadline)
        if self.cancel_reason is not None:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def cancel(self, reason: str) -> None:
        """Cancel the running request; the first reason given is the one reported."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        for scope in self._scopes:
            scope.cancel()

    def next_turn(self, mail: TurnMail) -> None:
        """Tell the request's fetcher task what comes after its last turn (never waits)."""
        try:
            self._turns_send.send_nowait(mail)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the request already ended; nobody waits for a next turn
        except trio.WouldBlock:
            raise RuntimeError(
                f"request {self.request_id} got a second next turn: tool loop bug"
            ) from None

    def _ended(self, ending: Ending) -> None:
        self._turns_send.close()  # a fetcher waiting for a next turn stops waiting
        self._on_finished(self, ending)


class ResponseStream:
    """The consumer's side of one request: ``async for event in stream``.

    The last event is always an ``Ending``. ``aclose()`` (or leaving
    ``async with``) before that cancels the request.
    """

    def __init__(
        self,
        handle: RequestHandle,
        cancel: Callable[[str, str], object],
        durable: DurableWait | None = None,
    ) -> None:
        self._handle = handle
        self._cancel = cancel
        self._durable = durable
        self._settled = False
        self._pending: collections.deque[OutboundEvent] = collections.deque()
        self._ending: Ending | None = None

    @property
    def request_id(self) -> str:
        return self._handle.request_id

    @property
    def ending(self) -> Ending | None:
        """The ending, once it has been read."""
        return self._ending

    @property
    def admission_wait_s(self) -> float | None:
        """How long the request waited for a slot (None while it is still waiting)."""
        admitted = self._handle.admitted_at
        return None if admitted is None else admitted - self._handle.submitted_at

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> OutboundEvent:
        if not self._pending:
            if self._ending is not None:
                raise StopAsyncIteration
            await self._refill()
        if len(self._pending) == 1:
            await self._settle()  # the ending is always last: settled when it is next
        event = self._pending.popleft()
        if isinstance(event, _ENDINGS):
            self._ending = event
        return event

    async def receive_batch(self) -> tuple[OutboundEvent, ...]:
        """Everything available now (at least one event); ``()`` after the ending.

        For consumers that handle events in bulk (the bench, adapters).
        """
        if not self._pending:
            if self._ending is not None:
                return ()
            await self._refill()
        if len(self._pending) == 1:
            await self._settle()
        elif self._unsettled(self._pending[-1]):
            # What came before the ending goes out now; the ending, next time.
            ending = self._pending.pop()
            events = tuple(self._pending)
            self._pending.clear()
            self._pending.append(ending)
            return events
        events = tuple(self._pending)
        self._pending.clear()
        if events and isinstance(events[-1], _ENDINGS):
            self._ending = events[-1]
        return events

    async def _refill(self) -> None:
        while not self._pending:
            await self._receive_more()

    def _unsettled(self, event: OutboundEvent) -> bool:
        return self._durable is not None and not self._settled and isinstance(event, _ENDINGS)

    async def _settle(self) -> None:
        """If the one event pending is the ending: wait for the request's artifacts
        (engine.durable_wait), and put the ending that names what is not written yet."""
        ending = self._pending[0]
        if self._durable is None or not self._unsettled(ending):
            return
        assert isinstance(ending, _ENDINGS)
        self._settled = True
        marks = self._handle.artifact_marks
        try:
            self._pending[0] = await self._durable.settle(ending, marks)
        except BaseException:
            self._pending[0] = self._durable.named(ending, marks)
            raise

    async def _receive_more(self) -> None:
        try:
            batch = await self._handle.outbox_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            # Closed without an ending: only possible if the engine died.
            self._pending.append(
                Failed(
                    request_id=self.request_id,
                    error=EngineClosed(),
                    message="The engine stopped before this answer finished; retry.",
                )
            )
            return
        self._handle.window.release(batch.credits)
        self._pending.extend(batch.events)
        # Take whatever else is already waiting: one wake-up, many batches.
        while True:
            try:
                more = self._handle.outbox_receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self._handle.window.release(more.credits)
            self._pending.extend(more.events)

    async def aclose(self) -> None:
        """Stop reading; an unfinished request is cancelled."""
        if self._ending is None:
            reason = "the consumer closed the stream"
            if not self._handle.finished:
                self._cancel(self.request_id, reason)
            # The consumer will not read the engine's ending any more; record
            # the one that applies, and make further iteration stop.
            self._ending = Cancelled(request_id=self.request_id, reason=reason)
            self._pending.clear()
        self._handle.outbox_receive.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ResponseStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
