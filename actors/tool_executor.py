"""The tool executor actor: runs a turn's function calls, then gives the request its next turn.

Owns: a nursery with one task per tool round in progress (a request has at
most one), the engine-wide limits (``max_parallel_tools_global`` calls,
``tool_thread_limit`` threads for blocking tools), the breakers per user
and tool name, the runaway-thread counts, and its clone of ``persist.in``.

Each ``ToolRound`` brings its request's handle (the emitter's), so nothing
is looked up. Its intake (``tools.in``) only starts tasks and never
waits on anything, so the emitter's send is always short: that, with the
turn limit and the one-slot turn mailbox, is what keeps the
fetcher → … → emitter → tool executor → fetcher cycle from deadlocking
with bounded buffers (DESIGN.md §5).

One round (``_Round``): calls are planned into batches (``tool_plan``);
each call checks its breaker (key: user, tool name) and the tool's runaway
threads, announces itself ("Calling get_weather…"), waits for a slot under
the per-request and the global limit, and runs under ``tool_timeout_s``;
a batch shares ``max(tool_timeout_s, tool_batch_timeout_s)``; with
``tool_idle_timeout_s`` set, a round in which no call finished for that
long stops its remaining calls. Every failure (bad arguments, unknown tool,
exception, timeout, breaker skip, runaway refusal) becomes a failed output
the model reads; none fails the request. Outputs keep the model's order,
are handed to the persister (paired with their calls by ``call_id``) and
to the consumer, and go, with the turn's output items, into ``NextTurn``.

On cancellation of the request (stop button, deadline: the round runs in a
scope of the request's): running calls are cancelled, each call that did
not finish gets a "cancelled" output, every output is still handed to the
persister (shielded, within ``persist_flush_grace_s``) so calls and outputs
stay paired in storage, and the fetcher gets ``ToolsStopped``, so the
ending travels the pipeline. When the whole engine is cancelled the same
shielded hand-over runs; the engine's finaliser ends the request.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import trio

from orpipe.actors.tool_outputs import CallOutcome, Verdict, output_text
from orpipe.actors.tool_plan import Batch, PlannedCall, plan_round
from orpipe.actors.tool_threads import RunawayThreads
from orpipe.engine.artifacts import Artifact
from orpipe.engine.breaker import Breaker
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import RequestDeadlineExceeded
from orpipe.engine.logs import logger, request_context
from orpipe.engine.messages import (
    NextTurn,
    OutboundEvent,
    OutputItem,
    Status,
    ToolsStopped,
    TurnMail,
)
from orpipe.engine.persist_barrier import PersistBarrier
from orpipe.engine.pipeline_messages import ToolRound
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters
from orpipe.engine.tools import Tool

__all__ = ["tool_executor"]


class _ToolLimits:
    """What every round shares: the engine-wide limits, the breakers, counters, the persister."""

    def __init__(
        self,
        config: EngineConfig,
        counters: ActorCounters,
        persist: trio.MemorySendChannel[tuple[Artifact, ...]] | None,
        barrier: PersistBarrier,
    ) -> None:
        self.config = config
        self.counters = counters
        self.persist = persist
        self.barrier = barrier
        self.calls = trio.CapacityLimiter(config.max_parallel_tools_global)
        self.threads = trio.CapacityLimiter(config.tool_thread_limit)
        self.breakers: Breaker[tuple[str, str]] = Breaker(
            threshold=config.tool_breaker_failures,
            window_s=config.tool_breaker_window_s,
            cooldown_s=config.tool_breaker_cooldown_s,
            clock=trio.current_time,
        )
        self.runaways = RunawayThreads(config.tool_runaway_limit)
        self.runaways.on_change = self.refresh_levels

    def refresh_levels(self) -> None:
        self.counters.level("calls_running", int(self.calls.borrowed_tokens))
        self.counters.level("threads_busy", int(self.threads.borrowed_tokens))
        self.counters.level("runaway_threads", self.runaways.total())


async def tool_executor(
    inbox: trio.MemoryReceiveChannel[ToolRound],
    persist: trio.MemorySendChannel[tuple[Artifact, ...]] | None = None,
    *,
    config: EngineConfig,
    counters: ActorCounters,
    report_breaker: Callable[[str, Callable[[], Mapping[str, int]]], None] | None = None,
    persist_barrier: PersistBarrier | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    shared = _ToolLimits(config, counters, persist, persist_barrier or PersistBarrier())
    if report_breaker is not None:
        # Breaker states are computed at sampling time (half-open depends on the clock).
        report_breaker("tools", shared.breakers.statistics)
    rounds_running = 0

    async def one_round(handle: RequestHandle, tool_round: ToolRound) -> None:
        nonlocal rounds_running
        rounds_running += 1
        counters.level("rounds_running", rounds_running)
        request = handle.request
        try:
            with request_context(
                request.request_id,
                user_id=request.user_id,
                chat_id=request.artifacts.chat_id if request.artifacts is not None else None,
                level=request.log_level,
            ):
                await _Round(handle, tool_round, shared).run()
        finally:
            rounds_running -= 1
            counters.level("rounds_running", rounds_running)

    with inbox, persist if persist is not None else contextlib.nullcontext():
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for tool_round in inbox:
                handle = tool_round.handle
                if handle.finished:
                    counters.add("rounds_dropped")  # ended meanwhile (engine shutdown)
                else:
                    counters.add("rounds")
                    nursery.start_soon(
                        one_round, handle, tool_round, name=f"tools {tool_round.request_id}"
                    )
                del tool_round, handle  # idle, hold nothing (actors.draining)


class _Round:
    """One request's tool round: run its calls, store and report the outputs, mail the fetcher."""

    def __init__(self, handle: RequestHandle, tool_round: ToolRound, shared: _ToolLimits) -> None:
        self.handle = handle
        self.round = tool_round
        self.shared = shared
        self.config = shared.config
        self.tools: Mapping[str, Tool] = handle.request.tools or {}
        self.user = handle.request.user_id or ""
        self.per_request = trio.CapacityLimiter(self.config.max_parallel_tools_per_request)
        self.outcomes: dict[int, CallOutcome] = {}
        #: Around the round's calls; its deadline is the idle limit (if any).
        self.idle_scope: trio.CancelScope | None = None
        self.idle_expired = False

    async def run(self) -> None:
        config, counters = self.config, self.shared.counters
        planned, batches = plan_round(self.round.calls, config.tool_batch_cap)
        counters.add("calls", len(planned))
        for call in planned:
            if call.problem is not None:
                counters.add("calls_bad_arguments")
                self.outcomes[call.index] = call.outcome("failed", call.problem)
        stopped = True  # unless the round gets to its end
        try:
            with self.handle.cancel_scope() as scope:
                if self.round.carried:
                    await self.handle.outbox.tell(self.round.carried)
                await self._run_batches(batches)
            stopped = scope.cancelled_caught
        finally:
            # Also when the whole engine is being cancelled: every call gets
            # an output, and the outputs reach the persister (shielded).
            self._settle_unfinished(planned, cancelled=stopped)
            items = [self.outcomes[call.index].output_item() for call in planned]
            outputs = await self._hand_to_persister(items)
        if not stopped:
            with self.handle.cancel_scope() as scope:
                await self.handle.outbox.tell(outputs)
            stopped = scope.cancelled_caught
        self.handle.next_turn(self._mail(stopped, items))

    # -- running ---------------------------------------------------------------

    async def _run_batches(self, batches: Sequence[Batch]) -> None:
        # The idle limit is a deadline that every finished call pushes back.
        with trio.CancelScope() as self.idle_scope:
            self._progress()
            async with trio.open_nursery() as nursery:
                started: list[trio.Event] = []
                for batch in batches:
                    if batch.after_earlier:
                        for finished in started:
                            await finished.wait()
                    finished = trio.Event()
                    started.append(finished)
                    nursery.start_soon(self._batch, batch, finished)
        if self.idle_scope.cancelled_caught:
            self.idle_expired = True
            self.shared.counters.add("idle_timeouts")

    def _progress(self) -> None:
        idle = self.config.tool_idle_timeout_s
        if idle is not None and self.idle_scope is not None:
            self.idle_scope.deadline = trio.current_time() + idle

    async def _batch(self, batch: Batch, finished: trio.Event) -> None:
        limit = max(self.config.tool_timeout_s, self.config.tool_batch_timeout_s)
        try:
            with trio.move_on_after(limit) as timer:
                async with trio.open_nursery() as nursery:
                    for call in batch.calls:
                        nursery.start_soon(self._call, call)
            self.shared.counters.add("batches")
            if timer.cancelled_caught:
                self.shared.counters.add("batch_timeouts")
                for call in batch.calls:
                    if call.index not in self.outcomes:
                        self._failed(
                            call,
                            "timed_out",
                            f"the batch of {batch.name} calls took longer than "
                            f"{_seconds(limit)} and was stopped",
                        )
        finally:
            finished.set()

    async def _call(self, call: PlannedCall) -> None:
        shared, counters = self.shared, self.shared.counters
        tool = self.tools.get(call.name)
        if tool is None:
            counters.add("calls_unknown_tool")
            known = ", ".join(sorted(self.tools)[:20]) or "none"
            await self._settle(
                call, "failed", f"there is no tool named {call.name!r} (available: {known})"
            )
            return
        key = (self.user, call.name)
        decision = shared.breakers.check(key)
        if not decision.allowed:
            counters.add("calls_skipped_breaker")
            await self._settle(
                call,
                "skipped",
                f"failing repeatedly; paused for {math.ceil(decision.retry_after_s)} s",
            )
            return
        if tool.runs_in_thread and shared.runaways.refuses(call.name):
            shared.breakers.record_abandoned(key)
            counters.add("calls_refused_runaway")
            await self._settle(
                call,
                "refused",
                f"{shared.runaways.count(call.name)} earlier calls of this tool are still "
                "running after timing out; try again later",
            )
            return
        await self.handle.outbox.tell(
            (
                Status(
                    request_id=self.handle.request_id,
                    description=f"Calling {call.name}…",
                    done=False,
                ),
            )
        )
        async with (
            _slot(self.per_request, counters, "per_request_limit_waits"),
            _slot(shared.calls, counters, "global_limit_waits"),
        ):
            shared.refresh_levels()
            outcome = await self._attempts(tool, call)
        shared.refresh_levels()
        if outcome.verdict == "completed":
            shared.breakers.record_success(key)
            counters.add("calls_completed")
        else:
            shared.breakers.record_failure(key)
            counters.add(f"calls_{outcome.verdict}")
        await self._settle_with(call, outcome)

    async def _attempts(self, tool: Tool, call: PlannedCall) -> CallOutcome:
        """Run the call; one retry after an exception if the tool is safe to retry."""
        config = self.config
        assert call.arguments is not None
        attempts = 2 if tool.retry_safe else 1
        started = trio.current_time()
        error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                self.shared.counters.add("retries")
                await trio.sleep(config.tool_retry_delay_s)
            with trio.move_on_after(config.tool_timeout_s):
                try:
                    value = await self._invoke(tool, call.arguments)
                except Exception as exc:  # a tool's failure is the model's to read
                    error = exc
                    continue
                text = output_text(value, config.tool_output_max_chars)
                return call.outcome("completed", text, trio.current_time() - started)
            timed_out = f"timed out after {_seconds(config.tool_timeout_s)}"
            return call.outcome("timed_out", timed_out, trio.current_time() - started)
        assert error is not None
        return call.outcome("failed", _describe(error), trio.current_time() - started)

    async def _invoke(self, tool: Tool, arguments: Mapping[str, Any]) -> object:
        # A copy: a tool that changes its arguments must not change the plan.
        args = dict(arguments)
        if tool.runs_in_thread:
            return await self.shared.runaways.run(
                tool.name, tool.function, args, limiter=self.shared.threads
            )
        return await tool.function(args)

    # -- outcomes ----------------------------------------------------------------

    async def _settle(self, call: PlannedCall, verdict: Verdict, text: str) -> None:
        await self._settle_with(call, call.outcome(verdict, text))

    async def _settle_with(self, call: PlannedCall, outcome: CallOutcome) -> None:
        self.outcomes[call.index] = outcome
        self._progress()
        if outcome.verdict == "completed":
            logger.debug("tool call {}: {}", call.call_id, outcome.status_line())
        else:
            logger.warning("tool call {}: {}", call.call_id, outcome.status_line())
        done = Status(
            request_id=self.handle.request_id, description=outcome.status_line(), done=True
        )
        await self.handle.outbox.tell((done,))

    def _failed(self, call: PlannedCall, verdict: Verdict, text: str) -> None:
        """A call stopped from outside (batch or idle timeout): a failure of that tool."""
        self.outcomes[call.index] = call.outcome(verdict, text)
        if call.name in self.tools:
            self.shared.breakers.record_failure((self.user, call.name))
        self.shared.counters.add(f"calls_{verdict}")

    def _settle_unfinished(self, planned: Sequence[PlannedCall], cancelled: bool) -> None:
        idle = self.config.tool_idle_timeout_s
        for call in planned:
            if call.index in self.outcomes:
                continue
            if cancelled:
                # Not the tool's fault: free a half-open trial, count nothing.
                self.shared.breakers.record_abandoned((self.user, call.name))
                self.shared.counters.add("calls_cancelled")
                self.outcomes[call.index] = call.outcome(
                    "cancelled", "the request was stopped before this call finished"
                )
            else:  # only the idle watch stops calls without cancelling the request
                self._failed(
                    call,
                    "timed_out",
                    f"no tool call finished for {_seconds(idle or 0.0)}, so it was stopped",
                )
        self.shared.refresh_levels()

    async def _hand_to_persister(self, items: list[dict[str, Any]]) -> tuple[OutboundEvent, ...]:
        """Store the outputs (even now, during a cancellation); the events announcing them."""
        rid = self.handle.request_id
        context = self.handle.request.artifacts
        artifacts: list[Artifact] = []
        events: list[OutboundEvent] = []
        for item in items:
            artifact = context.artifact_for(item) if context is not None else None
            if artifact is not None:
                artifacts.append(artifact)
            events.append(
                OutputItem(
                    request_id=rid,
                    item=item,
                    artifact_id=artifact.artifact_id if artifact is not None else None,
                )
            )
        persist = self.shared.persist
        if artifacts and persist is not None:
            handed = False
            # Shielded and bounded (DESIGN.md §4): the request may be cancelled
            # already, and these outputs pair with calls the emitter stored.
            with trio.move_on_after(self.config.persist_flush_grace_s, shield=True):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    marks = self.handle.artifact_marks
                    owners = [(marks, a.artifact_id) for a in artifacts]
                    await self.shared.barrier.send(persist, tuple(artifacts), owners)
                    handed = True
            if handed:
                self.shared.counters.add("artifacts", len(artifacts))
            else:
                self.shared.counters.add("artifacts_lost", len(artifacts))
        return tuple(events)

    def _mail(self, stopped: bool, items: list[dict[str, Any]]) -> TurnMail:
        rid = self.handle.request_id
        if stopped:
            if self.handle.cancel_reason is not None:
                return ToolsStopped(request_id=rid, cancel_reason=self.handle.cancel_reason)
            return ToolsStopped(
                request_id=rid, failure=RequestDeadlineExceeded(self.config.request_deadline_s)
            )
        return NextTurn(
            request_id=rid,
            turn=self.round.turn + 1,
            more_input=(*self.round.output, *items),
        )


@contextlib.asynccontextmanager
async def _slot(
    limiter: trio.CapacityLimiter, counters: ActorCounters, waits: str
) -> AsyncIterator[None]:
    """Hold one token of ``limiter``; counts ``waits`` when none was free (saturation)."""
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        counters.add(waits)
        await limiter.acquire()
    try:
        yield
    finally:
        limiter.release()


def _describe(error: Exception) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:300] + "…"
    name = type(error).__name__
    return f"it raised {name}: {text}" if text else f"it raised {name}"


def _seconds(value: float) -> str:
    return f"{value:g} s"
