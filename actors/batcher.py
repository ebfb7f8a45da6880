"""The delta batcher: merges text deltas per request before they reach the emitter.

Owns: one ``DeltaBatcher`` per request with pending text, the idle-flush
timers (``actors.idle_flush``: one alarm task, in this actor's nursery, for
the runs held here and for those held by the fetcher's express lane), and
both ends of its channels. The first text of each channel goes out at once
(``first_text_at_once``: time to first token). A pending run is flushed
when it reaches ``update_char_limit`` characters, when a non-text item of
the same request arrives, when the request ends, ``idle_flush_ms`` after
the run started (so a trickle of tiny deltas can never hold text back
longer than that), or when it holds half of the request's credit window
(so pending text can never be what stops the request's fetcher:
``engine.flow``). A request may carry its own limits
(``ChatRequest.update_char_limit`` / ``idle_flush_ms``), read from the
handle in the turn's ``TurnStarted`` (passed on to the emitter); the
engine's config gives the rest (``open_request_batcher``).

With the express lane (the default) the fetcher runs this role's
synchronous core for its own request, so this actor's inbox only carries
the shared stages' traffic (``express_lane=False``); its alarm still keeps
every request's idle flushes.

On cancellation it stops; pending text belongs to requests the engine ends
anyway. When its inbox ends it closes its outbox.
"""

from __future__ import annotations

import trio

from orpipe.actors.delta_batching import DeltaBatcher
from orpipe.actors.draining import drain_nowait, take_each
from orpipe.actors.idle_flush import IdleFlushes
from orpipe.engine.config import EngineConfig
from orpipe.engine.pipeline_messages import (
    BatchedItem,
    BatchOut,
    ParseOut,
    RequestBatch,
    StreamEnded,
    TurnStarted,
)
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters

__all__ = ["delta_batcher", "open_request_batcher"]


def open_request_batcher(
    config: EngineConfig, request_id: str, handle: RequestHandle | None
) -> tuple[DeltaBatcher, float]:
    """A request's batcher and its idle flush in seconds, with its own limits if it set any."""
    request = handle.request if handle is not None else None
    char_limit, idle_ms = config.update_char_limit, config.idle_flush_ms
    if request is not None and request.update_char_limit is not None:
        char_limit = request.update_char_limit
    if request is not None and request.idle_flush_ms is not None:
        idle_ms = request.idle_flush_ms
    window = handle.window.capacity if handle is not None else config.request_window_events
    # A pending run holds at most half the window's credits (at least one).
    batcher = DeltaBatcher(
        request_id, char_limit, max(1, window // 2), first_at_once=config.first_text_at_once
    )
    return batcher, idle_ms / 1000


class _Batching:
    """The shell's bookkeeping: the batchers of the requests this actor sees."""

    def __init__(self, config: EngineConfig, flushes: IdleFlushes) -> None:
        self.config = config
        self.flushes = flushes
        self.batchers: dict[str, tuple[DeltaBatcher, float]] = {}

    def take(self, message: ParseOut, out: list[BatchOut]) -> None:
        rid = message.request_id
        if isinstance(message, TurnStarted):
            self.batchers[rid] = open_request_batcher(self.config, rid, message.handle)
            out.append(message)
            return
        if isinstance(message, StreamEnded):
            entry = self.batchers.pop(rid, None)
            self.flushes.disarm(rid)
            if entry is not None:
                _emit(rid, list(entry[0].flush(final=True)), out)
            out.append(message)
            return
        entry = self.batchers.get(rid)
        if entry is None:
            # Never without its TurnStarted in the graph; fed alone (tests): the config's limits.
            entry = self.batchers[rid] = open_request_batcher(self.config, rid, None)
        batcher, idle_s = entry
        items: list[BatchedItem] = []
        for item in message.items:
            items.extend(batcher.push(item))
        _emit(rid, items, out)
        self.flushes.settle(batcher, idle_s)


def _emit(rid: str, items: list[BatchedItem], out: list[BatchOut]) -> None:
    if items:
        out.append(RequestBatch(request_id=rid, items=tuple(items)))


async def delta_batcher(
    inbox: trio.MemoryReceiveChannel[tuple[ParseOut, ...]],
    outbox: trio.MemorySendChannel[tuple[BatchOut, ...]],
    *,
    config: EngineConfig,
    counters: ActorCounters,
    flushes: IdleFlushes | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    flushes = flushes if flushes is not None else IdleFlushes(counters)
    state = _Batching(config, flushes)
    counters.level("open_requests", 0)
    with inbox, outbox:
        async with trio.open_nursery() as nursery:
            # Its own send end: the alarm may outlive a closed inbox only until cancelled below.
            nursery.start_soon(flushes.alarm, outbox, name="batcher-alarm")
            task_status.started()
            while True:
                try:
                    first = await inbox.receive()
                except trio.EndOfChannel:
                    break
                # Taken and sent in one step: bundles leave in the order they
                # were made, the alarm's included (see actors.idle_flush).
                out: list[BatchOut] = []
                take_each(drain_nowait(inbox, first), state.take, out)
                del first  # idle, hold nothing (actors.draining)
                flushes.due(out)
                counters.level("open_requests", len(state.batchers))
                if out:
                    await outbox.send(tuple(out))
                del out
            nursery.cancel_scope.cancel()  # the inbox ended: the alarm has nothing to guard
