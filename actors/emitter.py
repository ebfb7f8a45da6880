"""The emitter: turns each request's items into outbound events for its consumer.

Owns: one ``ResponseMapper`` per request with items in flight, the
handle of each request it has heard of (from its turns' ``TurnStarted``)
until it ends that request, and the receive end of ``batch.out``. It hands events to the request's
``RequestOutbox`` (never blocking: that buffer is bounded by the request's
credit window, and the outbox keeps its rules) and ends each request
through it when its ``StreamEnded`` arrives.

Artifacts: when a request carries an ``ArtifactContext``, each finished
output item it wants stored (reasoning, function calls, ...) becomes an
``Artifact`` with a fresh id, sent to the persister (``persist.in``), and the
consumer's ``OutputItem`` carries that id so the answer can reference it.
Each artifact is noted in its request's ``ArtifactMarks`` as it is handed
over, so the request's ending (read in the consumer's task, not here) can
wait until its own artifacts are written (engine.durable_wait).
The context is read through the request's handle, which the emitter keeps
until it ends the request, so items still in flight after a cancellation
are stored all the same. A full
``persist.in`` makes the emitter wait: backpressure, not loss.

Tool loop: when a turn completes with function calls and the request
carries tools, the emitter does not end the request. It delivers the turn's
events and sends a ``ToolRound`` to the tool executor (``tools.in``), whose
intake never waits on anything, so that send is short. A request that
reaches ``max_function_call_loops`` turns while the model still asks for
tools is ended with the answer so far and a notice saying why. Every turn,
and the request's final ending (cancellation in a tool round included),
comes back here as a ``StreamEnded``: the emitter is the one place that
ends a running request.

On cancellation it stops; requests it had not finished are ended by the
engine's finaliser.
"""

from __future__ import annotations

import contextlib
import dataclasses

import trio

from orpipe.actors.draining import drain_nowait, take_each
from orpipe.actors.response_mapper import ResponseMapper
from orpipe.engine.artifacts import Artifact
from orpipe.engine.config import EngineConfig
from orpipe.engine.logs import bound
from orpipe.engine.messages import (
    Cancelled,
    Completed,
    Ending,
    Failed,
    Incomplete,
    JsonObject,
    Notice,
    OutboundEvent,
    OutputItem,
    TextDelta,
)
from orpipe.engine.persist_barrier import ArtifactMarks, PersistBarrier
from orpipe.engine.pipeline_messages import BatchOut, StreamEnded, TextRun, ToolRound, TurnStarted
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters

__all__ = ["emitter"]


class _Emitting:
    def __init__(self, counters: ActorCounters, max_turns: int | None) -> None:
        #: Announced by ``TurnStarted``; dropped when this actor ends the request.
        self.handles: dict[str, RequestHandle] = {}
        self.counters = counters
        self.max_turns = max_turns
        self.mappers: dict[str, ResponseMapper] = {}
        #: Answer characters of earlier turns, per request in a tool loop.
        self.earlier_chars: dict[str, int] = {}
        #: Tool rounds decided while handling the current bundle.
        self.rounds: list[ToolRound] = []
        #: Artifacts made while handling the current bundle, for the persister,
        #: and for each the marks of its request (its ending waits for it).
        self.artifacts: list[Artifact] = []
        self.owners: list[tuple[ArtifactMarks, str]] = []

    def mapper(self, rid: str) -> ResponseMapper:
        mapper = self.mappers.get(rid)
        if mapper is None:
            mapper = self.mappers[rid] = ResponseMapper(rid)
        return mapper

    def persisted(self, events: list[OutboundEvent]) -> list[OutboundEvent]:
        """Stored output items get an artifact (for the persister) and carry its id."""
        return [self._as_artifact(e) if isinstance(e, OutputItem) else e for e in events]

    def _as_artifact(self, event: OutputItem) -> OutputItem:
        handle = self.handles.get(event.request_id)
        context = handle.request.artifacts if handle is not None else None
        artifact = context.artifact_for(event.item) if context is not None else None
        if artifact is None or handle is None:
            return event
        self.artifacts.append(artifact)
        self.owners.append((handle.artifact_marks, artifact.artifact_id))
        self.counters.add("artifacts")
        return dataclasses.replace(event, artifact_id=artifact.artifact_id)

    def take(self, message: BatchOut, pending: dict[str, tuple[list[OutboundEvent], int]]) -> None:
        rid = message.request_id
        if isinstance(message, StreamEnded):
            self._end(message, pending.pop(rid, ([], 0)))
            return
        if isinstance(message, TurnStarted):
            self.handles[rid] = message.handle
            return
        mapper = self.mapper(rid)
        events, credits = pending.get(rid, ([], 0))
        for item in message.items:
            events.extend(self.persisted(mapper.map(item)))
            credits += item.events if isinstance(item, TextRun) else 1
        pending[rid] = (events, credits)

    def deliver(self, rid: str, events: list[OutboundEvent], credits: int) -> None:
        handle = self.handles.get(rid)
        if handle is None:
            return  # never announced (only when this actor is fed alone, as in tests)
        self.counters.add("events", handle.outbox.deliver(events, credits))

    def _end(self, ended: StreamEnded, pending: tuple[list[OutboundEvent], int]) -> None:
        rid = ended.request_id
        mapper = self.mapper(rid)
        events, credits = pending
        closing, ending = mapper.finish(ended)
        closing = self.persisted(closing)
        del self.mappers[rid]
        events += closing
        handle = self.handles.get(rid)
        if mapper.unknown_types:
            self.counters.add("unknown_events", sum(mapper.unknown_types.values()))
        if handle is not None and self._next_round(handle, ended, mapper, ending, events):
            self.earlier_chars[rid] = self.earlier_chars.get(rid, 0) + mapper.text_chars
            handle.outbox.deliver(events, credits)
            # Left without a credit to deliver them with: the tool executor takes them along.
            if carried := handle.outbox.take_held():
                self.rounds[-1] = dataclasses.replace(self.rounds[-1], carried=carried)
            return
        earlier = self.earlier_chars.pop(rid, 0)
        if isinstance(ending, Completed) and earlier:
            ending = dataclasses.replace(ending, text_chars=earlier + ending.text_chars)
        self.counters.add(f"ending_{type(ending).__name__.lower()}")
        if handle is None:
            return
        del self.handles[rid]
        _log_ending(handle, ending)
        handle.outbox.finish(ending, events, credits)

    def _next_round(
        self,
        handle: RequestHandle,
        ended: StreamEnded,
        mapper: ResponseMapper,
        ending: Ending,
        events: list[OutboundEvent],
    ) -> bool:
        """Whether the request goes on with a tool round (queued in ``rounds``).

        When the turn limit stops the loop, the notice is added to ``events``.
        """
        calls = mapper.function_calls
        if self.max_turns is None or handle.request.tools is None:
            return False  # no tool executor, or a request that only reports calls
        if ended.cancel_reason is not None or ended.failure is not None:
            return False  # stopped after its response completed: no more rounds
        if not calls or not isinstance(ending, Completed):
            return False
        rid = handle.request_id
        if ended.turn + 1 >= self.max_turns:
            self.counters.add("turn_limit_reached")
            text = (
                f"Stopped after {self.max_turns} model turns: the model still wanted to call "
                f"{_names(calls)}, but the tool-call limit (max_function_call_loops = "
                f"{self.max_turns}) was reached. Ask to continue, or raise the limit."
            )
            events.append(TextDelta(request_id=rid, text=f"\n\n*{text}*"))
            events.append(Notice(request_id=rid, message=text))
            return False
        self.rounds.append(
            ToolRound(
                handle=handle,
                turn=ended.turn,
                output=tuple(mapper.output_items),
                calls=tuple(calls),
            )
        )
        self.counters.add("tool_rounds")
        return True


def _names(calls: list[JsonObject]) -> str:
    names = sorted({str(call.get("name", "?")) for call in calls})
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


async def emitter(
    inbox: trio.MemoryReceiveChannel[tuple[BatchOut, ...]],
    persist: trio.MemorySendChannel[tuple[Artifact, ...]] | None = None,
    tools: trio.MemorySendChannel[ToolRound] | None = None,
    *,
    config: EngineConfig,
    counters: ActorCounters,
    persist_barrier: PersistBarrier | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    barrier = persist_barrier or PersistBarrier()
    max_turns = config.max_function_call_loops if tools is not None else None
    state = _Emitting(counters, max_turns)
    with inbox, persist or contextlib.nullcontext(), tools or contextlib.nullcontext():
        task_status.started()
        async for first in inbox:
            pending: dict[str, tuple[list[OutboundEvent], int]] = {}
            take_each(drain_nowait(inbox, first), state.take, pending)
            del first  # idle, hold nothing (actors.draining)
            # Artifacts first: once handed over, they are written whatever
            # happens to their request or to the consumer.
            if state.artifacts and persist is not None:
                await barrier.send(persist, tuple(state.artifacts), state.owners)
            state.artifacts.clear()
            state.owners.clear()
            for rid, (events, credits) in pending.items():
                state.deliver(rid, events, credits)
            del pending
            if state.rounds and tools is not None:
                for tool_round in state.rounds:
                    await tools.send(tool_round)  # short: the executor's intake only spawns
            state.rounds.clear()
            counters.level("open_requests", len(state.mappers))


def _log_ending(handle: RequestHandle, ending: Ending) -> None:
    """One line per request's end, in its context (failures are what operators look for)."""
    request = handle.request
    said = bound(
        request.request_id,
        user_id=request.user_id,
        chat_id=request.artifacts.chat_id if request.artifacts is not None else None,
        level=request.log_level,
    )
    match ending:
        case Failed(message=message):
            said.warning("request failed: {}", message)
        case Cancelled(reason=reason):
            said.info("request cancelled: {}", reason)
        case Incomplete(message=message):
            said.info("request incomplete: {}", message)
        case Completed(text_chars=chars):
            said.debug("request completed: {} characters", chars)
