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
