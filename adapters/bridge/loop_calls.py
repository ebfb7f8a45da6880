"""trio → asyncio: await a coroutine that must run on Open WebUI's event loop.

Open WebUI's tools (``__tools__``), its ``__event_call__`` and everything they
touch belong to its asyncio loop; the engine runs in trio, either as a guest
on that same loop (same thread) or in a thread of its own. ``run_on_loop``
covers both: it schedules the coroutine on the loop with
``call_soon_threadsafe`` (never blocking trio), and the asyncio task's done
callback wakes the waiting trio task through its ``TrioToken``.

Cancellation goes both ways. A trio cancellation (a tool timeout, the stop
button) cancels the asyncio task, and the trio side then waits, within a
short shielded grace, for that task to finish, so a tool call never
outlives its caller unnoticed; a task that ignores cancellation is left
behind after the grace and logged. If the loop is closed, the call fails
with ``LoopGone``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["LoopGone", "run_on_loop"]

T = TypeVar("T")

log = logging.getLogger("orpipe.bridge")

#: How long a cancelled call waits for its asyncio task to acknowledge.
_CANCEL_GRACE_S = 5.0


class LoopGone(RuntimeError):
    """Open WebUI's event loop is closed: nothing can run on it any more."""

    def __init__(self) -> None:
        super().__init__(
            "Open WebUI's event loop has closed, so its tools cannot run; "
            "this happens only while the server shuts down."
        )


async def run_on_loop(loop: asyncio.AbstractEventLoop, afn: Callable[[], Awaitable[T]]) -> T:
    """``await afn()`` as a task on ``loop``; its result, or its exception, in trio."""
    token = trio.lowlevel.current_trio_token()
    finished = trio.Event()
    box: list[asyncio.Task[T]] = []
    # Read on the loop thread, set in trio (another thread with ThreadBridge).
    given_up = threading.Event()

    def wake(_: asyncio.Future[T]) -> None:
        # Runs on the loop; the run may be over if the engine stopped meanwhile.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(finished.set)

    def start() -> None:
        if given_up.is_set():
            return  # cancelled before the loop got to it
        task = asyncio.ensure_future(_call(afn), loop=loop)
        box.append(task)
        task.add_done_callback(wake)
        if given_up.is_set():  # (thread bridge) cancelled while this ran
            task.cancel()

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:
        raise LoopGone() from None
    try:
        await finished.wait()
    except trio.Cancelled:
        given_up.set()
        if box:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(box[0].cancel)
            with trio.move_on_after(_CANCEL_GRACE_S, shield=True):
                await finished.wait()
            if not finished.is_set():
                log.warning("a tool call on Open WebUI's loop ignored its cancellation")
        raise
    return box[0].result()


async def _call(afn: Callable[[], Awaitable[T]]) -> T:
    return await afn()
