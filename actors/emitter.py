"""The emitter: turns each request's items into outbound events for its consumer.

Owns: one ``ResponseMapper`` per request with items in flight, and the
receive end of ``batch.out``. It hands events to the request's outbound
buffer with ``RequestHandle.deliver`` (never blocking: that buffer is
bounded by the request's credit window) and ends each request with
``RequestHandle.finish`` when its ``StreamEnded`` arrives.

Events that produce nothing for the consumer give their credits back at
once, so a request streaming only bookkeeping events cannot stall itself.

Artifacts: when a request carries an ``ArtifactContext``, each finished
output item it wants stored (reasoning, function calls, ...) becomes an
``Artifact`` with a fresh id, sent to the persister (``persist.in``), and the
consumer's ``OutputItem`` carries that id so the answer can reference it.
The context is taken when the request's first item arrives, so items still
in flight after a cancellation are stored all the same. A full
``persist.in`` makes the emitter wait: backpressure, not loss.

On cancellation it stops; requests it had not finished are ended by the
engine's finaliser.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping

import trio

from actors.draining import drain_nowait
from actors.response_mapper import ResponseMapper
from engine.artifacts import Artifact, ArtifactContext
from engine.messages import BatchOut, OutboundEvent, OutputItem, StreamEnded, TextRun
from engine.request import RequestHandle
from engine.statistics import ActorCounters

__all__ = ["emitter"]


class _Emitting:
    def __init__(self, requests: Mapping[str, RequestHandle], counters: ActorCounters) -> None:
        self.requests = requests
        self.counters = counters
        self.mappers: dict[str, ResponseMapper] = {}
        self.contexts: dict[str, ArtifactContext] = {}
        #: Artifacts made while handling the current bundle, for the persister.
        self.artifacts: list[Artifact] = []
        # Events that carry no credit wait for the request's next delivery,
        # so every batch in an outbound buffer returns at least one credit.
        self.carry: dict[str, list[OutboundEvent]] = {}

    def mapper(self, rid: str) -> ResponseMapper:
        mapper = self.mappers.get(rid)
        if mapper is None:
            mapper = self.mappers[rid] = ResponseMapper(rid)
            handle = self.requests.get(rid)
            if handle is not None and handle.request.artifacts is not None:
                self.contexts[rid] = handle.request.artifacts
        return mapper

    def persisted(self, events: list[OutboundEvent]) -> list[OutboundEvent]:
        """Stored output items get an artifact (for the persister) and carry its id."""
        return [self._as_artifact(e) if isinstance(e, OutputItem) else e for e in events]

    def _as_artifact(self, event: OutputItem) -> OutputItem:
        context = self.contexts.get(event.request_id)
        item_type = str(event.item.get("type", ""))
        if context is None or not context.wants(item_type):
            return event
        artifact = Artifact(
            chat_id=context.chat_id,
            message_id=context.message_id,
            model_id=context.model_id,
            user_id=context.user_id,
            item_type=item_type,
            payload=event.item,
        )
        self.artifacts.append(artifact)
        self.counters.add("artifacts")
        return dataclasses.replace(event, artifact_id=artifact.artifact_id)

    def take(self, message: BatchOut, pending: dict[str, tuple[list[OutboundEvent], int]]) -> None:
        rid = message.request_id
        if isinstance(message, StreamEnded):
            self._end(message, pending.pop(rid, ([], 0)))
            return
        mapper = self.mapper(rid)
        events, credits = pending.get(rid, ([], 0))
        for item in message.items:
            events.extend(self.persisted(mapper.map(item)))
            credits += item.events if isinstance(item, TextRun) else 1
        pending[rid] = (events, credits)

    def deliver(self, rid: str, events: list[OutboundEvent], credits: int) -> None:
        handle = self.requests.get(rid)
        if handle is None:
            return  # already ended by the engine (shutdown); nobody is reading
        carried = self.carry.pop(rid, None)
        if carried:
            events = carried + events
        if credits == 0:
            if events:
                self.carry[rid] = events
            return
        self.counters.add("events", len(events))
        if events:
            handle.deliver(tuple(events), credits)
        else:
            handle.window.release(credits)

    def _end(self, ended: StreamEnded, pending: tuple[list[OutboundEvent], int]) -> None:
        rid = ended.request_id
        mapper = self.mapper(rid)
        events, credits = pending
        closing, ending = mapper.finish(ended)
        closing = self.persisted(closing)
        del self.mappers[rid]
        self.contexts.pop(rid, None)
        events = self.carry.pop(rid, []) + events + closing
        handle = self.requests.get(rid)
        if mapper.unknown_types:
            self.counters.add("unknown_events", sum(mapper.unknown_types.values()))
        self.counters.add(f"ending_{type(ending).__name__.lower()}")
        if handle is None:
            return
        if events:
            handle.deliver(tuple(events), credits)
        else:
            handle.window.release(credits)
        handle.finish(ending)


async def emitter(
    inbox: trio.MemoryReceiveChannel[tuple[BatchOut, ...]],
    persist: trio.MemorySendChannel[tuple[Artifact, ...]] | None = None,
    *,
    requests: Mapping[str, RequestHandle],
    counters: ActorCounters,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    state = _Emitting(requests, counters)
    with inbox, persist if persist is not None else _nothing():
        task_status.started()
        async for first in inbox:
            pending: dict[str, tuple[list[OutboundEvent], int]] = {}
            for bundle in drain_nowait(inbox, first):
                for message in bundle:
                    state.take(message, pending)
            # Artifacts first: once handed over, they are written whatever
            # happens to their request or to the consumer.
            if state.artifacts and persist is not None:
                await persist.send(tuple(state.artifacts))
            state.artifacts.clear()
            for rid, (events, credits) in pending.items():
                state.deliver(rid, events, credits)
            counters.level("open_requests", len(state.mappers))


def _nothing() -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()
