"""The delta batcher: merges text deltas per request before they reach the emitter.

Owns: one ``DeltaBatcher`` per request with pending text, an idle-flush
timer heap with its alarm task (so the wait for the inbox carries no
deadline: that cost a cancel scope per event), and both ends of its
channels. The first text of each channel goes out at once
(``first_text_at_once``: time to first token). A pending run is flushed
when it reaches ``update_char_limit`` characters, when a non-text item of
the same request arrives, when the request ends, ``idle_flush_ms`` after
the run started (so a trickle of tiny deltas can never hold text back
longer than that), or when it holds half of the request's credit window
(so pending text can never be what stops the request's fetcher:
``engine.flow``). A request may carry its own limits
(``ChatRequest.update_char_limit`` / ``idle_flush_ms``); the engine's
config gives the rest.

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
        #: The alarm task's sleep, while it sleeps (``_idle_alarm``).
        self.alarm: trio.CancelScope | None = None

    def next_live_deadline(self) -> float:
        """The earliest deadline of a run still pending (stale entries dropped)."""
        timers, armed = self.timers, self.armed
        while timers and armed.get(timers[0][1]) != timers[0][0]:
            heapq.heappop(timers)
        return timers[0][0] if timers else math.inf

    def aim_alarm(self) -> None:
        """Point the sleeping alarm at the earliest live deadline, if that moved."""
        alarm = self.alarm
        if alarm is not None:
            deadline = self.next_live_deadline()
            if deadline != alarm.deadline:
                alarm.deadline = deadline

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
    # One sender at a time, the computing included, so runs leave in the order
    # they were made whether the inbox or the alarm made them.
    sending = trio.Lock()
    with inbox, outbox:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_idle_alarm, state, outbox, sending, name="batcher-alarm")
            task_status.started()
            while True:
                try:
                    first = await inbox.receive()
                except trio.EndOfChannel:
                    break
                try:
                    sending.acquire_nowait()  # free but while the alarm flushes (rare)
                except trio.WouldBlock:
                    await sending.acquire()
                try:
                    out: list[BatchOut] = []
                    take_each(drain_nowait(inbox, first), state.take, out)
                    del first  # idle, hold nothing (actors.draining)
                    state.flush_idle(out)
                    state.aim_alarm()
                    counters.level("pending_runs", len(state.armed))
                    counters.level("open_requests", len(state.batchers))
                    if out:
                        await outbox.send(tuple(out))
                    del out
                finally:
                    sending.release()
            nursery.cancel_scope.cancel()  # the inbox ended: the alarm has nothing to guard


async def _idle_alarm(
    state: _Batching,
    outbox: trio.MemorySendChannel[tuple[BatchOut, ...]],
    sending: trio.Lock,
) -> None:
    """Flushes runs that waited ``idle_flush_ms``, so the inbox wait needs no deadline.

    It sleeps until the earliest live deadline; the main loop moves that
    deadline (``_Batching.aim_alarm``) when runs start or end, so a run that
    fills up by size never wakes anyone. Waiting on the inbox with a deadline
    instead would cost a cancel scope on every event.
    """
    while True:
        with trio.CancelScope(deadline=state.next_live_deadline()) as alarm:
            state.alarm = alarm
            await trio.sleep_forever()
        state.alarm = None
        async with sending:
            out: list[BatchOut] = []
            state.flush_idle(out)
            state.counters.level("pending_runs", len(state.armed))
            if out:
                await outbox.send(tuple(out))
            del out
