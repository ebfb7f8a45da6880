"""Helpers for end-to-end tests: run an engine against the mock OpenRouter over loopback."""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from actors import open_engine
from adapters import OpenRouterHttpTransport
from bench.mock_openrouter import MockServer, serve_mock
from engine import (
    ChatRequest,
    Ending,
    Engine,
    EngineConfig,
    EnginePorts,
    OutboundEvent,
    ReasoningDelta,
    ResponseStream,
    TextDelta,
)

API_KEY = "sk-or-v1-test-secret-0123456789abcdef"


@dataclass
class Collected:
    """Everything one consumer read from its stream."""

    text: str = ""
    reasoning: str = ""
    events: list[OutboundEvent] = field(default_factory=list)
    ending: Ending | None = None

    def of_type(self, kind: type) -> list[OutboundEvent]:
        return [e for e in self.events if isinstance(e, kind)]


def request(scenario: str, **params: object) -> ChatRequest:
    """A ChatRequest for one mock scenario, ``mock.<key>`` parameters as keywords."""
    metadata = {f"mock.{k}": str(v) for k, v in params.items()}
    return ChatRequest(
        model=f"mock/{scenario}",
        input=({"type": "message", "role": "user", "content": "hello"},),
        options={"metadata": metadata},
    )


def metadata(req: ChatRequest) -> Mapping[str, str]:
    return req.options["metadata"]  # type: ignore[no-any-return]


async def collect(stream: ResponseStream) -> Collected:
    out = Collected()
    async for event in stream:
        out.events.append(event)
        if isinstance(event, TextDelta):
            out.text += event.text
        elif isinstance(event, ReasoningDelta):
            out.reasoning += event.text
    out.ending = stream.ending
    return out


@asynccontextmanager
async def mock_server(*, api_key: str | None = None) -> AsyncIterator[MockServer]:
    async with trio.open_nursery() as nursery:
        server: MockServer = await nursery.start(functools.partial(serve_mock, api_key=api_key))
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_engine(server: MockServer, **overrides: object) -> AsyncIterator[Engine]:
    config = EngineConfig(base_url=server.base_url, **overrides)  # type: ignore[arg-type]
    async with (
        OpenRouterHttpTransport(config, api_key=API_KEY) as transport,
        open_engine(config, EnginePorts(transport=transport)) as engine,
    ):
        yield engine


async def wait_until(predicate: Callable[[], bool], *, limit_s: float = 10.0) -> None:
    """Poll a condition (no fixed sleeps): fails the test if it never holds.

    Polling, because the conditions are read from statistics and another
    process's counters, which have no event to wait on.
    """
    with trio.fail_after(limit_s):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


INF = math.inf
