"""The reorderer: restores each request's sequence order after the parser pool.

Owns: one ``ReorderWindow`` per request with items in flight (created on its
first item, dropped when its ``StreamEnded`` is released), and both ends of
its channels. Windows are bounded by the request's credit window, so the
shared inbox is never blocked on one request (see ``engine.flow``). A
``TurnStarted`` passes at once: the fetcher sends it here directly, ahead
of the turn's items, so nothing of its turn can be before it.

On cancellation it stops; held items belong to requests that the engine
ends anyway. When its inbox ends it closes its outbox.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from orpipe.actors.draining import drain_nowait
from orpipe.actors.reorder_window import ReorderWindow
from orpipe.engine.config import EngineConfig
from orpipe.engine.pipeline_messages import ParsedBatch, ParseOut, StreamEnded, TurnStarted
from orpipe.engine.statistics import ActorCounters

__all__ = ["reorderer"]

#: What a reorder window holds: items and the ending of one request, by sequence.
Ordered = ParsedBatch | StreamEnded


async def reorderer(
    inbox: trio.MemoryReceiveChannel[tuple[ParseOut, ...]],
    outbox: trio.MemorySendChannel[tuple[ParseOut, ...]],
    *,
    config: EngineConfig,
    counters: ActorCounters,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    windows: dict[str, ReorderWindow[Ordered]] = {}
    held_events = 0  # across all windows, kept as a running total
    # Shown from the start, also while the express lane leaves this actor idle.
    counters.level("held_events", 0)
    counters.level("open_requests", 0)
    with inbox, outbox:
        task_status.started()
        async for first in inbox:
            released, held_change = _offer_all(
                windows, drain_nowait(inbox, first), config.request_window_events, counters
            )
            del first  # idle, hold nothing (actors.draining)
            held_events += held_change
            counters.level("held_events", held_events)
            counters.level("open_requests", len(windows))
            if released:
                await outbox.send(tuple(released))
            del released


def _offer_all(
    windows: dict[str, ReorderWindow[Ordered]],
    bundles: list[tuple[ParseOut, ...]],
    capacity: int,
    counters: ActorCounters,
) -> tuple[list[ParseOut], int]:
    """What a wake-up's bundles release, in order, and how the number of held events changed."""
    released: list[ParseOut] = []
    held_change = 0
    for bundle in bundles:
        for message in bundle:
            out, change = _offer(windows, message, capacity)
            held_change += change
            if not out:
                counters.add("held_out_of_order")
            released.extend(out)
    return released, held_change


def _offer(
    windows: dict[str, ReorderWindow[Ordered]], message: ParseOut, capacity: int
) -> tuple[Sequence[ParseOut], int]:
    """What ``message`` releases, and how the number of held events changed."""
    if isinstance(message, TurnStarted):
        return (message,), 0
    window = windows.get(message.request_id)
    if window is None:
        window = windows[message.request_id] = ReorderWindow(capacity)
    before = window.held_events
    if isinstance(message, StreamEnded):
        released = window.offer(message.seq, 0, message)
    else:
        released = window.offer(message.first_seq, len(message.items), message)
    if released and isinstance(released[-1], StreamEnded):
        del windows[message.request_id]
    return released, window.held_events - before
