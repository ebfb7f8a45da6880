"""Per-request credit windows: how a slow consumer slows its own upstream read.

The pipeline actors after the fetcher are shared by every request, so none
of them may block on one request's consumer (that would stall everyone).
Instead each request has a window of ``request_window_events`` credits. The
fetcher takes one credit per upstream event before forwarding it; the
consumer gives them back when it takes the events out of its outbound
buffer. A consumer that stops reading therefore stops its own fetcher, which
stops reading the socket, and TCP flow control tells OpenRouter to wait.

Because at most ``capacity`` events of a request are in flight, that
request's reorder window and outbound buffer can never hold more than that.

The fetcher takes *what is free* (``acquire_some``), never waits for a
whole batch's worth: credits held elsewhere in the pipeline (the delta
batcher's unfinished text run, which gives its credits back only when the
run is flushed) must never be what stops the next event from being read.
Together with the batcher's rule that a run holds at most half a window
(``actors.delta_batching``), the fetcher always has a credit to wait for
that a reading consumer will give back, whatever the streaming settings.
"""

from __future__ import annotations

import trio

__all__ = ["CreditWindow"]


class CreditWindow:
    """A counting window: ``acquire(n)`` waits until ``n`` more may be in flight."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a credit window needs a capacity of at least 1")
        self.capacity = capacity
        self.in_flight = 0
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def waiting(self) -> int:
        """Tasks waiting for credit (the fetcher, when the consumer is slow)."""
        return len(self._lot)

    def try_acquire(self, count: int) -> bool:
        """Take ``count`` credits if they are free now; never waits."""
        if self.in_flight + count > self.capacity or len(self._lot):
            return False  # (waiters first: no overtaking a parked fetcher)
        self.in_flight += count
        return True

    def try_acquire_some(self, wanted: int) -> int:
        """Take up to ``wanted`` credits that are free now (0 if none); never waits."""
        free = self.capacity - self.in_flight
        if free <= 0 or wanted <= 0 or len(self._lot):
            return 0
        taken = min(free, wanted)
        self.in_flight += taken
        return taken

    async def acquire_some(self, wanted: int) -> int:
        """Take between 1 and ``wanted`` credits, waiting only while none is free."""
        if wanted < 1:
            raise ValueError(f"cannot acquire {wanted} credits")
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.in_flight >= self.capacity:
            await self._lot.park()
        taken = min(self.capacity - self.in_flight, wanted)
        self.in_flight += taken
        return taken

    async def acquire(self, count: int) -> None:
        """Take ``count`` credits (1..capacity), waiting while the window is full."""
        if not 1 <= count <= self.capacity:
            raise ValueError(f"cannot acquire {count} credits from a window of {self.capacity}")
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.in_flight + count > self.capacity:
            await self._lot.park()
        self.in_flight += count

    def release(self, count: int) -> None:
        """Give ``count`` credits back and wake whoever waits for them."""
        if count <= 0:
            return
        if count > self.in_flight:
            raise RuntimeError(
                f"credit accounting bug: releasing {count} with only {self.in_flight} in flight"
            )
        self.in_flight -= count
        self._lot.unpark_all()
