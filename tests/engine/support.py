"""Helpers for end-to-end tests: run an engine against the mock OpenRouter over loopback."""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from orpipe.actors import open_engine
from orpipe.adapters import OpenRouterHttpTransport
from orpipe.bench.mock_openrouter import MockServer, serve_mock
from orpipe.engine import (
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
from orpipe.engine.artifacts import Artifact
from orpipe.engine.errors import StoreUnavailable
from orpipe.engine.ports import AdmissionLedger, ArtifactStore

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
async def running_engine(
    server: MockServer,
    *,
    artifacts: ArtifactStore | None = None,
    admission_ledger: AdmissionLedger | None = None,
    **overrides: object,
) -> AsyncIterator[Engine]:
    config = EngineConfig(base_url=server.base_url, **overrides)  # type: ignore[arg-type]
    async with (
        OpenRouterHttpTransport(config, api_key=API_KEY) as transport,
        open_engine(
            config,
            EnginePorts(
                transport=transport, artifacts=artifacts, admission_ledger=admission_ledger
            ),
        ) as engine,
    ):
        yield engine


class MemoryStore:
    """An ``ArtifactStore`` in memory that counts writes per id and can fail on demand.

    ``down`` makes every call raise ``StoreUnavailable`` until cleared; ``fail_next``
    fails that many writes; ``slow_s`` makes each write take that long (trio time).
    """

    def __init__(self) -> None:
        self.rows: dict[str, Artifact] = {}
        self.writes_per_id: collections.Counter[str] = collections.Counter()
        self.write_calls = 0
        self.down = False
        self.fail_next = 0
        self.slow_s = 0.0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the test store is down")
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("the test store failed once")

    async def write(self, artifacts: Sequence[Artifact]) -> None:
        self.write_calls += 1
        if self.slow_s:
            await trio.sleep(self.slow_s)
        self._check()
        for artifact in artifacts:
            self.writes_per_id[artifact.artifact_id] += 1
            self.rows.setdefault(artifact.artifact_id, artifact)

    async def fetch(self, chat_id: str, artifact_ids: Sequence[str]) -> dict[str, Artifact]:
        self._check()
        found = {i: self.rows[i] for i in artifact_ids if i in self.rows}
        return {i: a for i, a in found.items() if a.chat_id == chat_id}

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]:
        self._check()
        return sorted(
            a.artifact_id
            for a in self.rows.values()
            if a.chat_id == chat_id and (not message_ids or a.message_id in message_ids)
        )

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int:
        self._check()
        gone = [i for i in artifact_ids if i in self.rows and self.rows[i].chat_id == chat_id]
        for i in gone:
            del self.rows[i]
        return len(gone)

    async def delete_older_than(self, cutoff_unix_s: float) -> int:
        self._check()
        old = [i for i, a in self.rows.items() if a.created_at < cutoff_unix_s]
        for i in old:
            del self.rows[i]
        return len(old)


async def wait_until(predicate: Callable[[], bool], *, limit_s: float = 10.0) -> None:
    """Poll a condition (no fixed sleeps): fails the test if it never holds.

    Polling, because the conditions are read from statistics and another
    process's counters, which have no event to wait on.
    """
    with trio.fail_after(limit_s):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


INF = math.inf
