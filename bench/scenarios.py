"""Bench scenarios as data: what load a ``python -m bench run NAME`` offers.

Owns ``BenchScenario`` (one frozen dataclass per scenario) and the built-in
table ``SCENARIOS``. Everything here is plain values so a later change can
load the same fields from TOML without touching the runner. ``driver`` says
which runner measures it: ``engine`` (``bench.runner``: bare baseline, then
the engine on trio) or ``owui`` (``bench.owui_run``: the Open WebUI pipe on
asyncio, both bridges, against a bare asyncio baseline).

An engine scenario also names the grid it measures by default (``rows`` and
``reps``, see ``bench.grid``): ``demo`` and ``streaming`` measure several
loads in one run; an empty ``rows`` is one row, the scenario's own
``concurrency`` and ``tps``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FRAMING_EVENTS", "SCENARIOS", "BenchScenario", "Driver", "Regime"]

Driver = Literal["engine", "owui"]
#: How a row's streams are paced: ``paced`` at a tokens/s rate, or ``flat`` out.
Regime = Literal["paced", "flat"]
#: Events of a text stream besides its deltas: created, in_progress, output_item.added,
#: content_part.added, output_text.done, content_part.done, output_item.done, completed.
FRAMING_EVENTS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchScenario:
    """One offered load: the mock's stream shape and the closed-loop size."""

    name: str
    description: str
    #: The mock scenario, sent as ``model="mock/<model_scenario>"``.
    model_scenario: str = "text"
    #: Text deltas per stream (the mock adds ``FRAMING_EVENTS`` per stream).
    tokens: int = 200
    #: Tokens per second per stream; 0 sends as fast as the mock can (``--tps``
    #: paces it; note a paced run's streams last ``tokens / tps`` seconds and the
    #: drain waits for them).
    tps: float = 0.0
    #: SSE events per socket write; 1 is the worst case for a client.
    events_per_write: int = 1
    #: Closed-loop workers: each starts a new stream when its last one ends.
    concurrency: int = 200
    #: Counted seconds per phase, after the warm-up.
    duration_s: float = 15.0
    #: Seconds per phase run but not counted (connection setup, caches).
    warmup_s: float = 2.0
    #: Which runner measures it (see the module docstring).
    driver: Driver = "engine"
    #: Tool-heavy load: function calls per model turn (0: no tools), turns that
    #: call tools before the answer, and the tools' latency (log-normal).
    tool_calls: int = 0
    tool_rounds: int = 1
    tool_median_ms: float = 50.0
    tool_p99_ms: float = 400.0
    seed: int = 0
    #: The grid measured when the command line names none: (regime, streams) rows,
    #: paced ones at ``paced_tps``; empty: one row, ``concurrency`` at ``tps``.
    rows: tuple[tuple[Regime, int], ...] = ()
    paced_tps: float = 50.0
    #: Repetitions of every row (baseline and engine each time).
    reps: int = 1

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.events_per_write < 1 or self.concurrency < 1:
            raise ValueError("tokens, events_per_write and concurrency must be at least 1")
        if self.tps < 0 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("tps and warmup_s must be ≥ 0 and duration_s > 0")
        if self.tool_calls < 0 or self.tool_rounds < 1:
            raise ValueError("tool_calls must be ≥ 0 and tool_rounds ≥ 1")
        if not 0 < self.tool_median_ms <= self.tool_p99_ms:
            raise ValueError("need 0 < tool_median_ms <= tool_p99_ms")
        if self.paced_tps <= 0 or self.reps < 1:
            raise ValueError("paced_tps must be > 0 and reps ≥ 1")

    def replace(self, **changes: Any) -> BenchScenario:
        return dataclasses.replace(self, **changes)

    def mock_metadata(self) -> dict[str, str]:
        """The request ``metadata`` that tells the mock how to stream (values are text)."""
        metadata = {
            "mock.tokens": str(self.tokens),
            "mock.tps": f"{self.tps:g}",
            "mock.events_per_write": str(self.events_per_write),
            "mock.seed": str(self.seed),
        }
        if self.tool_calls:
            metadata["mock.calls"] = str(self.tool_calls)
            metadata["mock.rounds"] = str(self.tool_rounds)
        return metadata

    def plain(self) -> BenchScenario:
        """The same load without tools: the streaming phase a tool phase is compared to."""
        return self.replace(tool_calls=0, model_scenario="text")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SCENARIOS: dict[str, BenchScenario] = {
    s.name: s
    for s in (
        BenchScenario(
            name="demo",
            description=(
                "`make demo`: 64 streams paced at 50 tokens/s, then 200 streams flat out; "
                "1 event per write, one repetition, 10 s counted a phase (about a minute)"
            ),
            rows=(("paced", 64), ("flat", 200)),
            duration_s=10.0,
        ),
        BenchScenario(
            name="streaming",
            description=(
                "16, 64 and 200 streams, paced at 50 tokens/s and flat out; "
                "3 repetitions of each, 10 s counted a phase (about 10 minutes)"
            ),
            rows=(
                ("paced", 16),
                ("paced", 64),
                ("paced", 200),
                ("flat", 16),
                ("flat", 64),
                ("flat", 200),
            ),
            reps=3,
            duration_s=10.0,
            warmup_s=3.0,
        ),
        BenchScenario(
            name="tools",
            description=(
                "tool-heavy: each request's model calls 8 tools per turn for 2 turns, tool "
                "latency log-normal (median 50 ms, p99 400 ms); bare baseline, the engine "
                "streaming the same answers without tools, then with tools; 100 streams, 10 s"
            ),
            model_scenario="tools",
            concurrency=100,
            duration_s=10.0,
            warmup_s=2.0,
            tool_calls=8,
            tool_rounds=2,
        ),
        BenchScenario(
            name="owui",
            description=(
                "the Open WebUI pipe driven as Open WebUI drives it, on uvloop: bare asyncio "
                "baseline, then ENGINE_BRIDGE=guest, then thread; 50 chats, 10 s a phase"
            ),
            concurrency=50,
            duration_s=10.0,
            warmup_s=2.0,
            driver="owui",
        ),
    )
}
