"""Blocking tool functions in worker threads, and the threads that outlive their call.

A thread cannot be cancelled. When a blocking tool's call times out (or its
request is cancelled) the executor stops waiting (``abandon_on_cancel``),
but the thread runs on until the function returns. ``RunawayThreads``
counts those threads per tool, so ``statistics()`` shows them and the
executor refuses new calls of a tool that already has ``limit`` of them
(the original kept starting more: seed §K.2.4). Every thread still holds a
token of the executor's thread limiter until it really ends (trio releases
it then), so runaways also bound how many threads can exist in total.

Owns: the per-tool counts, behind a lock because threads report their own
end. ``on_change`` is called in trio (through the trio token) whenever a
runaway thread finishes, so the executor can refresh its statistics.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

__all__ = ["RunawayThreads"]

T = TypeVar("T")


class _Ticket:
    __slots__ = ("abandoned", "done", "started", "tool")

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.started = False
        self.done = False
        self.abandoned = False


class RunawayThreads:
    """Threads of each tool that are still running after their call stopped waiting."""

    def __init__(self, limit: int, on_change: Callable[[], object] | None = None) -> None:
        self.limit = limit
        #: Called in trio when a runaway thread ends (statistics refresh).
        self.on_change = on_change
        self._lock = threading.Lock()
        self._running: collections.Counter[str] = collections.Counter()
        self._token: trio.lowlevel.TrioToken | None = None

    def count(self, tool: str) -> int:
        with self._lock:
            return self._running[tool]

    def total(self) -> int:
        with self._lock:
            return sum(self._running.values())

    def refuses(self, tool: str) -> bool:
        """Whether ``tool`` has as many runaway threads as allowed."""
        return self.count(tool) >= self.limit

    def _thread_done(self, ticket: _Ticket) -> None:
        with self._lock:
            ticket.done = True
            if not ticket.abandoned:
                return
            self._running[ticket.tool] -= 1
            if self._running[ticket.tool] <= 0:
                del self._running[ticket.tool]
        if self.on_change is not None and self._token is not None:
            # After the run ended nobody reads the statistics any more.
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self.on_change)

    def _thread_started(self, ticket: _Ticket) -> bool:
        """False when the call was given up before its thread got going: do not run it."""
        with self._lock:
            if ticket.abandoned:
                return False
            ticket.started = True
            return True

    def _abandon(self, ticket: _Ticket) -> None:
        with self._lock:
            if ticket.done or not ticket.started:
                # Finished just as the wait was cancelled, or cancelled while
                # waiting for a thread token: no thread runs on for it.
                ticket.abandoned = True
                return
            ticket.abandoned = True
            self._running[ticket.tool] += 1

    async def run(
        self, tool: str, function: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter
    ) -> T:
        """``function(*args)`` in a worker thread; a cancelled wait leaves a counted runaway."""
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        ticket = _Ticket(tool)

        def work() -> T:
            if not self._thread_started(ticket):
                # Given up before it began: nobody reads the result, and the tool never runs.
                raise RuntimeError("tool call abandoned before its thread started")
            try:
                return function(*args)
            finally:
                self._thread_done(ticket)

        try:
            return await trio.to_thread.run_sync(
                work, abandon_on_cancel=True, limiter=limiter, thread_name=f"tool {tool}"
            )
        except trio.Cancelled:
            self._abandon(ticket)
            raise
