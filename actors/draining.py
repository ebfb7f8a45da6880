"""Shared helper: take what is already waiting on a channel, without waiting.

Every shared stage forwards a *bundle*: the message it woke up for plus
whatever else arrived meanwhile (DESIGN.md §2). Under load one wake-up then
serves many requests, which is what keeps the per-event cost of a channel
hop low.

An idle stage holds nothing: a long-lived actor's loop drops its references
to the last bundle (``del``) before it waits for the next one. Otherwise the
last messages stay alive until more traffic comes, and a response's last
events are the largest of all: each of its ``.done`` events and
``response.completed`` repeat the whole answer, about 750 KB for 100,000
tokens, so an engine left idle after long answers would pin megabytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

__all__ = ["MAX_DRAIN", "drain_nowait", "take_each"]

T = TypeVar("T")
M = TypeVar("M")
S = TypeVar("S")

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


def take_each(bundles: list[Sequence[M]], take: Callable[[M, S], None], into: S) -> None:
    """``take(message, into)`` for every message of every bundle, in order.

    A function of its own so that the loop variables die with it: the caller's
    frame, waiting for the next wake-up, holds none of these messages.
    """
    for bundle in bundles:
        for message in bundle:
            take(message, into)
