"""Fake tools for the tool-heavy bench: async functions with a seeded latency distribution.

``LatencyModel`` draws each call's latency from a log-normal distribution
given by its median and 99th percentile (sigma = ln(p99 / median) / 2.326, the
99th percentile of a standard normal), from a seeded ``random.Random``, so a
run is reproducible and its tail is what was asked for. ``FakeTools`` is the
tool the bench's requests carry: each call sleeps for its drawn latency (in
trio) and counts itself, so the phase can report tool throughput and the
latency the tools really had.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import trio

from orpipe.bench.meter import Latency
from orpipe.engine.tools import Tool

__all__ = ["FakeTools", "LatencyModel"]

#: The 99th percentile of the standard normal distribution.
_Z99 = 2.326347874


@dataclass(slots=True)
class LatencyModel:
    """Log-normal latencies with the given median and p99, in seconds."""

    median_s: float
    p99_s: float
    seed: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.median_s <= self.p99_s:
            raise ValueError("tool latency: need 0 < median <= p99")
        self._rng = random.Random(self.seed)

    @property
    def sigma(self) -> float:
        return math.log(self.p99_s / self.median_s) / _Z99

    def draw(self) -> float:
        return self._rng.lognormvariate(math.log(self.median_s), self.sigma)


class FakeTools:
    """The bench's tool: ``get_weather`` that takes a drawn time and answers."""

    name = "get_weather"
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
    }

    def __init__(self, latency: LatencyModel) -> None:
        self.latency = latency
        self.started = 0
        self.completed = 0
        self.durations = Latency()

    def tool(self) -> Tool:
        return Tool(name=self.name, function=self._call, parameters=self.parameters)

    async def _call(self, args: dict[str, Any]) -> dict[str, Any]:
        self.started += 1
        began = trio.current_time()
        await trio.sleep(self.latency.draw())
        self.completed += 1
        self.durations.record(trio.current_time() - began)
        return {"location": args.get("location"), "temperature": 21}
