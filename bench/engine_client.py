"""The engine phase: the same offered load, through ``actors.open_engine``.

Owns building the engine (config with the ``--set`` overrides, the real
``OpenRouterHttpTransport``), the per-request consumer (``receive_batch``
until ``()``), and the engine-side figures kept with the phase: the final
``engine.statistics().as_dict()`` and client-side outbound counts.

Upstream events are counted by the parser pool (``actors["parser"]["events"]``,
every SSE payload it decoded, ``[DONE]`` excluded): the same set of events
the baseline counts when it decodes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from actors import open_engine
from adapters import OpenRouterHttpTransport
from bench.measure import Outcome, Phase, RequestRecord, drive
from bench.scenarios import BenchScenario
from engine import (
    AdmissionRejected,
    ChatRequest,
    Completed,
    Engine,
    EngineConfig,
    EnginePorts,
    Failed,
    TextDelta,
)

__all__ = ["run_engine_phase"]

#: The mock is started without a key; the transport still sends this header.
_DUMMY_API_KEY = "sk-bench-dummy"
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
    phase.event_source = "engine: parser pool events decoded (excluding [DONE])"
    async with (
        OpenRouterHttpTransport(config, api_key=_DUMMY_API_KEY) as transport,
        open_engine(config, EnginePorts(transport=transport)) as engine,
    ):
        phase.events_now = partial(_parser_events, engine)
        try:
            await drive(phase, partial(_one_request, engine, model, options, outbound))
        finally:
            # Kept even when interrupted: channel peaks and counters are the
            # most useful part of a run that went wrong.
            phase.extra["engine_statistics"] = engine.statistics().as_dict()
            phase.extra["outbound"] = {"events": outbound.events, "batches": outbound.batches}


def _parser_events(engine: Engine) -> int:
    return engine.statistics().actors.get("parser", {}).get("events", 0)


async def _one_request(
    engine: Engine,
    model: str,
    options: Mapping[str, object],
    outbound: _Outbound,
    record: RequestRecord,
) -> tuple[Outcome, str]:
    request = ChatRequest(model=model, input=_INPUT, options=options)
    try:
        stream = engine.submit(request)
    except AdmissionRejected as exc:
        return "rejected", type(exc).__name__
    async with stream:
        while events := await stream.receive_batch():
            outbound.events += len(events)
            outbound.batches += 1
            if record.ttft is None and any(isinstance(e, TextDelta) for e in events):
                record.first_token()
    ending = stream.ending
    if isinstance(ending, Completed):
        return "completed", ""
    if isinstance(ending, Failed):
        return "failed", f"Failed: {type(ending.error).__name__}"
    return "failed", type(ending).__name__ if ending is not None else "no ending"
