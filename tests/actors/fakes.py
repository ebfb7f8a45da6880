"""Fakes and helpers for actor tests: a scripted UpstreamTransport, handles, task trees."""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from orpipe.engine.channels import ChannelRegistry
from orpipe.engine.errors import UpstreamError
from orpipe.engine.messages import ChatRequest, Ending, OutboundBatch
from orpipe.engine.request import RequestHandle


@dataclass
class Stall:
    """A point in a body where the fake stops until ``resume`` is set (or forever)."""

    reached: trio.Event = field(default_factory=trio.Event)
    resume: trio.Event = field(default_factory=trio.Event)


Chunk = bytes | UpstreamError | Stall


@dataclass
class Attempt:
    """What the fake answers to one ``stream()`` call."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    #: Raised on entering ``stream()`` (connect error, connect timeout).
    enter_error: UpstreamError | None = None
    #: Stall before the headers arrive.
    enter_stall: Stall | None = None
    #: Error body read by ``read_limited``.
    body: bytes = b""


class FakeResponse:
    def __init__(self, attempt: Attempt, transport: FakeTransport) -> None:
        self._attempt = attempt
        self._transport = transport

    @property
    def status_code(self) -> int:
        return self._attempt.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._attempt.headers  # lowercase names, like httpx.Headers lookups

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        self._transport.iterators_open += 1
        try:
            for chunk in self._attempt.chunks:
                await trio.lowlevel.checkpoint()
                if isinstance(chunk, Stall):
                    chunk.reached.set()
                    await chunk.resume.wait()
                elif isinstance(chunk, UpstreamError):
                    raise chunk
                else:
                    self._transport.chunks_read += 1
                    yield chunk
        finally:
            self._transport.iterators_open -= 1

    async def read_limited(self, limit: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._attempt.body[:limit]


class FakeTransport:
    """Answers each ``stream()`` call with the next scripted ``Attempt``."""

    def __init__(self, attempts: Iterable[Attempt]) -> None:
        self.attempts = deque(attempts)
        self.calls: list[tuple[float, bytes]] = []  # (trio time, request body)
        self.open_responses = 0
        self.iterators_open = 0
        self.chunks_read = 0

    @asynccontextmanager
    async def stream(self, body: bytes) -> AsyncIterator[FakeResponse]:
        self.calls.append((trio.current_time(), body))
        if not self.attempts:
            raise AssertionError("the fetcher made more attempts than the test scripted")
        attempt = self.attempts.popleft()
        await trio.lowlevel.checkpoint()
        if attempt.enter_stall is not None:
            attempt.enter_stall.reached.set()
            await attempt.enter_stall.resume.wait()
        if attempt.enter_error is not None:
            raise attempt.enter_error
        self.open_responses += 1
        try:
            yield FakeResponse(attempt, self)
        finally:
            self.open_responses -= 1


def sse(*payloads: bytes | str) -> bytes:
    """Events as an SSE body fragment."""
    out = bytearray()
    for payload in payloads:
        raw = payload.encode() if isinstance(payload, str) else payload
        out += b"data: " + raw + b"\n\n"
    return bytes(out)


DONE = b"data: [DONE]\n\n"


def delta(text: str) -> str:
    return json.dumps({"type": "response.output_text.delta", "delta": text})


@dataclass
class Finished:
    """Records ``on_finished`` calls."""

    endings: list[tuple[RequestHandle, Ending]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # trio time of each call
    called: trio.Event = field(default_factory=trio.Event)

    def __call__(self, handle: RequestHandle, ending: Ending) -> None:
        self.endings.append((handle, ending))
        self.times.append(trio.current_time())
        self.called.set()


def make_handle(
    *,
    window_events: int = 8,
    deadline: float = math.inf,
    request: ChatRequest | None = None,
    channels: ChannelRegistry | None = None,
    finished: Finished | None = None,
) -> RequestHandle:
    """A RequestHandle (call inside a trio run)."""
    return RequestHandle(
        request or ChatRequest(model="m", input=()),
        window_events=window_events,
        deadline=deadline,
        channels=channels or ChannelRegistry(),
        on_finished=finished if finished is not None else (lambda h, e: None),
    )


def drain_outbound(handle: RequestHandle) -> list[OutboundBatch]:
    """Every outbound batch already buffered for ``handle`` (without waiting)."""
    out = []
    while True:
        try:
            out.append(handle.outbox_receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


def task_names() -> list[str]:
    """Names of every live task in this trio run (walking the task tree)."""
    names: list[str] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return names


def tasks_named(fragment: str) -> list[str]:
    return [name for name in task_names() if fragment in name]
