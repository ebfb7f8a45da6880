"""``PersistBarrier``: "flushed up to here" for what was sent to the persister.

A sequence number on each side of ``persist.in``: senders count what they
hand to it (``send``), the persister counts what it wrote (``written``).
``wait_flushed`` takes the count sent at the moment of the call and waits
until that many have been written, woken by the persister after each write
or change of its store's health; nothing polls. It returns early when the
store is failing (the persister then holds its backlog and retries; an
artifact held for retry is not written), and in any case within its timeout.

Trio-flavoured; one per engine (``Engine.persist_barrier``). Without a
persister nothing is ever sent, so a wait returns at once.
"""

from __future__ import annotations

from typing import TypeVar

import trio

__all__ = ["PersistBarrier"]

_T = TypeVar("_T")


class PersistBarrier:
    """Counts sent and written artifacts; waits for "written up to what was sent"."""

    def __init__(self) -> None:
        self._sent = 0
        self._written = 0
        self._failing = False
        self._changed = trio.Event()

    @property
    def sent(self) -> int:
        """Artifacts handed to the persister (or being handed over right now)."""
        return self._sent

    @property
    def written_count(self) -> int:
        """Artifacts the persister has written to the store."""
        return self._written

    @property
    def failing(self) -> bool:
        """True while the store's writes fail (the persister retries them)."""
        return self._failing

    async def send(
        self, channel: trio.MemorySendChannel[tuple[_T, ...]], bundle: tuple[_T, ...]
    ) -> None:
        """``channel.send(bundle)``, counted as sent before it can be received.

        Counted first, so the persister can never write more than was counted;
        if the send raises (cancelled, channel closed) nothing was delivered,
        and the count is taken back.
        """
        self._sent += len(bundle)
        try:
            await channel.send(bundle)
        except BaseException:
            self._sent -= len(bundle)
            raise

    def written(self, count: int) -> None:
        """The persister wrote ``count`` more artifacts (wakes waiters)."""
        self._written += count
        self._wake()

    def set_failing(self, failing: bool) -> None:
        """The persister's store began or stopped failing (wakes waiters on a change)."""
        if failing != self._failing:
            self._failing = failing
            self._wake()

    async def wait_flushed(self, timeout_s: float) -> bool:
        """Wait until everything sent before this call is written; True if writes are failing.

        Returns at once when nothing is pending or the store is failing, and
        after at most ``timeout_s`` otherwise. Cancellation leaves nothing
        behind (a waiter holds no state here but the shared event).
        """
        target = self._sent
        with trio.move_on_after(timeout_s):
            while self._written < target and not self._failing:
                await self._changed.wait()
        return self._failing

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
