"""The engine phase: the same offered load, through ``actors.open_engine``.

Owns building an engine against the mock (``open_mock_engine``: the config
with the ``--set`` overrides, the real ``OpenRouterHttpTransport``; the lab
and the telemetry demo open theirs the same way), the per-request consumer (``receive_batch``
until ``()``), and the engine-side figures kept with the phase: the final
``engine.statistics().as_dict()`` and client-side outbound counts.

Upstream events are counted by the parser pool (``actors["parser"]["events"]``,
every SSE payload it decoded, ``[DONE]`` excluded): the same set of events
the baseline counts when it decodes them.

With ``scenario.tool_calls`` the requests carry the bench's fake tool
(``bench.fake_tools``) and the model calls it; the phase's "events" are then
the tool calls completed (so events/s is tool throughput), and the phase
keeps the tool figures: calls, failures, how often a call waited for the
per-request or the global slot limit, and the tools' own latency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

from orpipe.actors import open_engine
from orpipe.adapters import OpenRouterHttpTransport
from orpipe.bench.fake_tools import FakeTools, LatencyModel
from orpipe.bench.measure import Phase, drive
from orpipe.bench.meter import Outcome, RequestRecord
from orpipe.bench.scenarios import BenchScenario
from orpipe.engine import (
    AdmissionRejected,
    ChatRequest,
    Completed,
    Engine,
    EngineConfig,
    EnginePorts,
    Failed,
    TextDelta,
)
from orpipe.engine.ports import AdmissionLedger, ArtifactStore
from orpipe.engine.tools import toolbox

__all__ = ["MOCK_API_KEY", "open_mock_engine", "run_engine_phase"]

#: The mock is started without a key; the transport still sends this header.
MOCK_API_KEY = "sk-bench-dummy"
_INPUT = ({"role": "user", "content": "bench"},)


class _Outbound:
    __slots__ = ("batches", "events")

    def __init__(self) -> None:
        self.events = 0
        self.batches = 0


async def run_engine_phase(phase: Phase, scenario: BenchScenario, config: EngineConfig) -> None:
    """Drive ``phase`` through a fresh engine talking to ``config.base_url``."""
    outbound = _Outbound()
    options = {"metadata": scenario.mock_metadata()}
    model = f"mock/{scenario.model_scenario}"
    fake = None
    if scenario.tool_calls:
        latency = LatencyModel(
            scenario.tool_median_ms / 1000, scenario.tool_p99_ms / 1000, seed=scenario.seed
        )
        fake = FakeTools(latency)
    phase.event_source = "engine: parser pool events decoded (excluding [DONE])"
    async with open_mock_engine(config) as engine:
        phase.events_now = partial(_parser_events, engine)
        if fake is not None:
            phase.event_source = "tool calls completed (events/s = tool throughput)"
            phase.events_now = lambda: fake.completed
        one = partial(_one_request, engine, model, options, outbound, fake=fake)
        try:
            await drive(phase, one)
        finally:
            # Kept even when interrupted: channel peaks and counters are the
            # most useful part of a run that went wrong.
            statistics = engine.statistics().as_dict()
            phase.extra["engine_statistics"] = statistics
            phase.extra["outbound"] = {"events": outbound.events, "batches": outbound.batches}
            if fake is not None:
                phase.extra["tools"] = _tool_figures(fake, statistics["actors"].get("tools", {}))


@asynccontextmanager
async def open_mock_engine(
    config: EngineConfig,
    *,
    artifacts: ArtifactStore | None = None,
    admission_ledger: AdmissionLedger | None = None,
) -> AsyncIterator[Engine]:
    """An engine on the real HTTP transport, talking to the mock at ``config.base_url``."""
    async with OpenRouterHttpTransport(config, api_key=MOCK_API_KEY) as transport:
        ports = EnginePorts(
            transport=transport, artifacts=artifacts, admission_ledger=admission_ledger
        )
        async with open_engine(config, ports) as engine:
            yield engine


def _tool_figures(fake: FakeTools, counters: Mapping[str, int]) -> dict[str, object]:
    calls = counters.get("calls", 0)
    return {
        "calls": calls,
        "completed": counters.get("calls_completed", 0),
        "failed_or_timed_out": calls - counters.get("calls_completed", 0),
        "rounds": counters.get("rounds", 0),
        "per_request_limit_waits": counters.get("per_request_limit_waits", 0),
        "global_limit_waits": counters.get("global_limit_waits", 0),
        # The share of calls that found the request's slots all taken.
        "per_request_saturation": (
            counters.get("per_request_limit_waits", 0) / calls if calls else None
        ),
        "global_saturation": counters.get("global_limit_waits", 0) / calls if calls else None,
        "tool_latency_ms": fake.durations.summary(),
        "latency_model": {
            "median_ms": fake.latency.median_s * 1000,
            "p99_ms": fake.latency.p99_s * 1000,
            "seed": fake.latency.seed,
        },
    }


def _parser_events(engine: Engine) -> int:
    return engine.statistics().actors.get("parser", {}).get("events", 0)


async def _one_request(
    engine: Engine,
    model: str,
    options: Mapping[str, object],
    outbound: _Outbound,
    record: RequestRecord,
    *,
    fake: FakeTools | None = None,
) -> tuple[Outcome, str]:
    tools = toolbox(fake.tool()) if fake is not None else None
    request = ChatRequest(model=model, input=_INPUT, options=options, tools=tools)
    try:
        stream = engine.submit(request)
    except AdmissionRejected as exc:
        return "rejected", type(exc).__name__
    async with stream:
        while events := await stream.receive_batch():
            outbound.events += len(events)
            outbound.batches += 1
            if record.first is None and any(isinstance(e, TextDelta) for e in events):
                record.mark_first()
    ending = stream.ending
    if isinstance(ending, Completed):
        return "completed", ""
    if isinstance(ending, Failed):
        return "failed", f"Failed: {type(ending.error).__name__}"
    return "failed", type(ending).__name__ if ending is not None else "no ending"
