"""Shared helper: take what is already waiting on a channel, without waiting.

Every shared stage forwards a *bundle*: the message it woke up for plus
whatever else arrived meanwhile (DESIGN.md §2). Under load one wake-up then
serves many requests, which is what keeps the per-event cost of a channel
hop low.
"""

from __future__ import annotations

from typing import TypeVar

import trio

__all__ = ["MAX_DRAIN", "drain_nowait"]

T = TypeVar("T")

#: Upper bound on one bundle, so one stage cannot monopolise the scheduler.
MAX_DRAIN = 256


def drain_nowait(inbox: trio.MemoryReceiveChannel[T], first: T) -> list[T]:
    items = [first]
    while len(items) < MAX_DRAIN:
        try:
            items.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return items
