"""The delta batcher: merges text deltas per request before they reach the emitter.

Owns: one ``DeltaBatcher`` per request with pending text, an idle-flush
timer heap, and both ends of its channels. The first text of each channel
goes out at once (``first_text_at_once``: time to first token). A pending
run is flushed when it reaches ``update_char_limit`` characters, when a
non-text item of the same request arrives, when the request ends, or
``idle_flush_ms`` after the run
started (so a trickle of tiny deltas can never hold text back longer than
that), or when it holds half of the request's credit window (so pending
text can never be what stops the request's fetcher: ``engine.flow``). A
request may carry its own limits (``ChatRequest.update_char_limit`` /
``idle_flush_ms``); the engine's config gives the rest.

On cancellation it stops; pending text belongs to requests the engine ends
anyway. When its inbox ends it closes its outbox.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

import trio

from actors.delta_batching import DeltaBatcher
from actors.draining import drain_nowait, take_each
from engine.config import EngineConfig
from engine.messages import (
    BatchedItem,
    BatchOut,
    ChatRequest,
    ParsedBatch,
    RequestBatch,
    StreamEnded,
)
from engine.request import RequestHandle
from engine.statistics import ActorCounters

__all__ = ["delta_batcher"]


class _Batching:
    """The shell's bookkeeping: per-request batchers and their flush timers."""

    def __init__(
        self,
        config: EngineConfig,
        counters: ActorCounters,
        requests: Mapping[str, RequestHandle],
    ) -> None:
        self.char_limit = config.update_char_limit
        self.idle_ms = config.idle_flush_ms
        self.window_events = config.request_window_events
        self.first_at_once = config.first_text_at_once
        self.counters = counters
        self.requests = requests
        self.batchers: dict[str, DeltaBatcher] = {}
        self.idle_s: dict[str, float] = {}
        self.timers: list[tuple[float, str]] = []  # lazy-deletion heap
        self.armed: dict[str, float] = {}

    def next_wakeup(self) -> float:
        return self.timers[0][0] if self.timers else math.inf

    def take(self, message: ParsedBatch | StreamEnded, out: list[BatchOut]) -> None:
        rid = message.request_id
        if isinstance(message, StreamEnded):
            batcher = self.batchers.pop(rid, None)
            self.armed.pop(rid, None)
            self.idle_s.pop(rid, None)
            if batcher is not None:
                self._emit(rid, list(batcher.flush(final=True)), out)
            out.append(message)
            return
        batcher = self.batchers.get(rid)
        if batcher is None:
            batcher = self._open(rid)
        items: list[BatchedItem] = []
        for item in message.items:
            items.extend(batcher.push(item))
        self._emit(rid, items, out)
        if not batcher.has_pending:
            self.armed.pop(rid, None)
        elif self.idle_s[rid] > 0 and rid not in self.armed:
            deadline = trio.current_time() + self.idle_s[rid]
            self.armed[rid] = deadline
            heapq.heappush(self.timers, (deadline, rid))

    def _open(self, rid: str) -> DeltaBatcher:
        """A batcher for a request's first items, with the request's own limits if it set any."""
        handle = self.requests.get(rid)
        request: ChatRequest | None = handle.request if handle is not None else None
        char_limit, idle_ms = self.char_limit, self.idle_ms
        if request is not None and request.update_char_limit is not None:
            char_limit = request.update_char_limit
        if request is not None and request.idle_flush_ms is not None:
            idle_ms = request.idle_flush_ms
        self.idle_s[rid] = idle_ms / 1000
        window = handle.window.capacity if handle is not None else self.window_events
        batcher = self.batchers[rid] = DeltaBatcher(
            rid, char_limit, _run_event_limit(window), first_at_once=self.first_at_once
        )
        return batcher

    def flush_idle(self, out: list[BatchOut]) -> None:
        now = trio.current_time()
        while self.timers and self.timers[0][0] <= now:
            deadline, rid = heapq.heappop(self.timers)
            if self.armed.get(rid) != deadline:
                continue  # stale: flushed or ended since
            del self.armed[rid]
            batcher = self.batchers.get(rid)
            if batcher is not None:
                self.counters.add("idle_flushes")
                self._emit(rid, list(batcher.flush(final=False)), out)

    def _emit(self, rid: str, items: list[BatchedItem], out: list[BatchOut]) -> None:
        if items:
            out.append(RequestBatch(request_id=rid, items=tuple(items)))


def _run_event_limit(window_events: int) -> int:
    """Most credits one pending run may hold: half the window, at least one."""
    return max(1, window_events // 2)


async def delta_batcher(
    inbox: trio.MemoryReceiveChannel[tuple[ParsedBatch | StreamEnded, ...]],
    outbox: trio.MemorySendChannel[tuple[BatchOut, ...]],
    *,
    config: EngineConfig,
    counters: ActorCounters,
    requests: Mapping[str, RequestHandle] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    state = _Batching(config, counters, requests if requests is not None else {})
    with inbox, outbox:
        task_status.started()
        while True:
            out: list[BatchOut] = []
            with trio.move_on_at(state.next_wakeup()):
                try:
                    first = await inbox.receive()
                except trio.EndOfChannel:
                    return
                take_each(drain_nowait(inbox, first), state.take, out)
                del first  # idle, hold nothing (actors.draining)
            state.flush_idle(out)
            counters.level("pending_runs", len(state.armed))
            counters.level("open_requests", len(state.batchers))
            if out:
                await outbox.send(tuple(out))
            del out
