"""The baseline phase: the least a client must do to consume the same streams.

Owns the bare client: httpx clients with keep-alive laid out exactly as the
engine's transport lays them out (``adapters.openrouter.pool``), one trio task per
stream, a minimal inline SSE splitter, and ``msgspec`` decoding of each event into a dict. Nothing
else: no validation, no batching, no per-request state beyond the stream.
It is the yardstick the engine's CPU per event is divided by, so it must
be a *fair* minimum: same HTTP library, same raw body reads, full decode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import httpx
import msgspec

from orpipe.adapters.openrouter.pool import ShardedClients
from orpipe.bench.measure import Phase, drive
from orpipe.bench.meter import Outcome, RequestRecord
from orpipe.bench.scenarios import BenchScenario

__all__ = ["read_stream", "run_baseline"]

_TEXT_DELTA = "response.output_text.delta"
_COMPLETED = "response.completed"


class _Counter:
    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 0

    def add(self) -> None:
        self.events += 1


async def run_baseline(phase: Phase, scenario: BenchScenario, base_url: str) -> None:
    """Drive ``phase`` with bare httpx streams against the mock at ``base_url``."""
    connections = phase.concurrency + 8
    counter = _Counter()
    phase.events_now = lambda: counter.events
    phase.event_source = "client: SSE events decoded (excluding [DONE])"
    body = {
        "model": f"mock/{scenario.model_scenario}",
        "input": [{"role": "user", "content": "bench"}],
        "stream": True,
        "metadata": scenario.mock_metadata(),
    }
    # The same pool layout as the engine's transport (see adapters.openrouter.pool).
    async with ShardedClients(
        connections,
        base_url=base_url.rstrip("/") + "/",
        headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"},
        timeout=httpx.Timeout(10.0, read=300.0),
    ) as clients:
        await drive(phase, partial(read_stream, clients, body, on_event=counter.add))


async def read_stream(
    clients: ShardedClients,
    body: Mapping[str, Any],
    record: RequestRecord,
    *,
    on_event: Callable[[], None],
) -> tuple[Outcome, str]:
    """One bare streaming request: split SSE, decode every event; no other work.

    Runs under trio or asyncio alike (httpx picks its backend), so the Open
    WebUI bench uses the same yardstick. ``on_event`` is called per decoded
    event; the first text delta marks ``record``'s first token.
    """
    decode = _decode
    completed = False
    try:
        # Encoded per request, as any client building a fresh request would.
        content = _encode(body)
        async with clients.next().stream(
            "POST", "responses", content=content, headers={"Content-Type": "application/json"}
        ) as response:
            if response.status_code != 200:
                return "failed", f"http {response.status_code}"
            pending = b""
            async for chunk in response.aiter_raw():
                blocks = (pending + chunk).split(b"\n\n")
                pending = blocks.pop()
                for block in blocks:
                    if not block.startswith(b"data: ") or block == b"data: [DONE]":
                        continue  # keep-alive comments and the end marker
                    event = decode(block[6:])
                    on_event()
                    kind = event["type"]
                    if kind == _TEXT_DELTA:
                        record.mark_first()
                    elif kind == _COMPLETED:
                        completed = True
    except (httpx.HTTPError, msgspec.DecodeError, KeyError) as exc:
        return "failed", type(exc).__name__
    return ("completed", "") if completed else ("failed", "no response.completed")


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
