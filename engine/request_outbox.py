"""``RequestOutbox``: the one writer of a request's outbound buffer (``request.outbox``).

Whoever adds to a request's answer (the emitter, the tool executor) or ends
it (the emitter, admission shedding it, ``Engine.cancel`` of a waiting
request, engine shutdown) goes through this object, so the buffer's rules
live here and nowhere else:

* every batch in the buffer returns at least one credit: events that come
  without one are held and go out in front of the next delivery (or the
  ending), which is what bounds the buffer by the credit window;
* credits of a delivery that puts nothing in the buffer go straight back to
  the window, so a request streaming only bookkeeping cannot stall itself;
* exactly one ending, always last; after it the buffer is closed and any
  later delivery only gives its credits back.

Nothing here waits but ``tell``, which takes its one credit first: that is
how a slow reader slows the tool executor's status lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import trio

from orpipe.engine.errors import EngineError
from orpipe.engine.flow import CreditWindow
from orpipe.engine.messages import Ending, Failed, OutboundBatch, OutboundEvent

__all__ = ["RequestOutbox"]


class RequestOutbox:
    """The send side of one request's outbound buffer, with its delivery rules."""

    def __init__(
        self,
        request_id: str,
        send: trio.MemorySendChannel[OutboundBatch],
        window: CreditWindow,
        on_finished: Callable[[Ending], None],
    ) -> None:
        self.request_id = request_id
        self.window = window
        self._send = send
        self._on_finished = on_finished
        #: Events that came without a credit, waiting for the next delivery.
        self._held: list[OutboundEvent] = []
        self.finished = False

    def deliver(self, events: Sequence[OutboundEvent], credits: int) -> int:
        """Hand events to the consumer without waiting; returns how many went into the buffer.

        With no credit the events are held for the next delivery (0 went in).
        """
        if self.finished:
            self.window.release(credits)
            return 0
        if not credits:
            self._held.extend(events)
            return 0
        batch = (*self.take_held(), *events) if self._held else tuple(events)
        if batch:
            self._put(OutboundBatch(events=batch, credits=credits))
        else:
            self.window.release(credits)
        return len(batch)

    async def tell(self, events: Sequence[OutboundEvent]) -> None:
        """Deliver ``events`` under a credit of their own, waiting for it while the reader lags."""
        await self.window.acquire(1)
        self.deliver(events, 1)

    def take_held(self) -> tuple[OutboundEvent, ...]:
        """The events still waiting for a credit; whoever takes them delivers them."""
        held = tuple(self._held)
        self._held.clear()
        return held

    def finish(self, ending: Ending, last: Sequence[OutboundEvent] = (), credits: int = 0) -> None:
        """Deliver ``last`` (and what is held), the ending, and close; later calls do nothing."""
        if self.finished:
            self.window.release(credits)
            return
        events = (*self.take_held(), *last)
        if events:
            # Possibly without a credit: the buffer keeps slots for the end.
            self._put(OutboundBatch(events=events, credits=credits))
        else:
            self.window.release(credits)
        self.finished = True
        # If the buffer is gone or full, ResponseStream synthesises an ending.
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock
        ):
            self._send.send_nowait(OutboundBatch(events=(ending,), credits=0))
        self._send.close()
        self._on_finished(ending)

    def fail(self, error: EngineError) -> None:
        """End the request with ``error``, in the words it carries for the person who asked."""
        self.finish(Failed(request_id=self.request_id, error=error, message=error.message))

    def _put(self, batch: OutboundBatch) -> None:
        try:
            self._send.send_nowait(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The consumer went away; its cancellation is on its way.
            self.window.release(batch.credits)
        except trio.WouldBlock:
            raise RuntimeError(
                f"outbound buffer of request {self.request_id} overflowed: credit accounting bug"
            ) from None
