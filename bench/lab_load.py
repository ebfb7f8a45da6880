"""The open-loop load of a research-bench run: the arrival plan and what each request records.

``plan_arrivals`` decides every request up front from the scenario's seed:
when it is sent (constant or Poisson gaps, the rate ramping linearly across
a phase), its kind (from the mix), its stream length, whether a fault
window sends it to an error scenario, whether it is cancelled. The same seed
gives the same plan, whatever the engine does.

``Recorder`` keeps what the run measured: per-interval counts (offered,
goodput, rejected, failed, cancelled), HDR histograms (time to first token,
end to end, admission wait, rejection), and totals that must add up
(``offered == admitted + rejected``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from orpipe.bench.lab_scenario import KINDS, LabScenario
from orpipe.bench.meter import Latency

__all__ = ["Arrival", "Recorder", "capacity_rps", "plan_arrivals"]

#: Percentiles the latency CDFs are drawn from.
CDF_PERCENTILES = (
    *range(1, 100),
    99.5,
    99.9,
    99.95,
    99.99,
    100.0,
)


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float
    phase: int
    kind: str
    tokens: int
    #: The mock's error scenario when a fault window caught this request.
    fault: str | None = None
    retry_after: int = 1
    fail_times: int = 1
    cancel_after_s: float | None = None
    #: Position in the plan: names the request to the mock (its attempt counter).
    index: int = 0


def capacity_rps(scenario: LabScenario, max_concurrent: int) -> float:
    """Requests per second the engine can finish: its slots over one stream's length."""
    stream_s = scenario.stream_s()
    if stream_s is None:
        raise ValueError(
            f"{scenario.name}: capacity_x needs a paced stream (stream.tps > 0) to know "
            "how long a request holds its slot; give rate_rps instead"
        )
    return max_concurrent / stream_s


def plan_arrivals(
    scenario: LabScenario, *, capacity: float | None, time_scale: float = 1.0
) -> list[Arrival]:
    """Every request of the run, in time order (``time_scale`` shortens phases for tests)."""
    rng = random.Random(scenario.seed)
    kinds = [k for k in KINDS if scenario.mix.get(k, 0) > 0]
    weights = [scenario.mix[k] for k in kinds]
    arrivals: list[Arrival] = []
    start = 0.0
    for index, phase in enumerate(scenario.phases):
        duration = phase.duration_s * time_scale
        first, last = phase.rates(capacity or 0.0)
        t = start
        while True:
            fraction = (t - start) / duration if duration else 1.0
            rate = first + (last - first) * min(fraction, 1.0)
            if rate <= 0:
                break
            gap = rng.expovariate(rate) if phase.arrival == "poisson" else 1.0 / rate
            t += gap
            if t >= start + duration:
                break
            arrivals.append(
                _arrival(
                    scenario, rng, phase=index, at_s=t, kinds=kinds, weights=weights,
                    tokens=phase.tokens, time_scale=time_scale, position=len(arrivals),
                )
            )  # fmt: skip
        start += duration
    return arrivals


def _arrival(
    scenario: LabScenario,
    rng: random.Random,
    *,
    phase: int,
    at_s: float,
    kinds: list[str],
    weights: list[float],
    tokens: int | None,
    time_scale: float,
    position: int,
) -> Arrival:
    kind = rng.choices(kinds, weights)[0]
    fault = None
    scenario_time = at_s / time_scale  # fault windows are written in scenario time
    for window in scenario.faults:
        if window.start_s <= scenario_time < window.end_s and rng.random() < window.fraction:
            fault = window
            break
    cancel = None
    if scenario.cancel_fraction and rng.random() < scenario.cancel_fraction:
        cancel = scenario.cancel_after_ms / 1000
    return Arrival(
        at_s=at_s,
        phase=phase,
        kind=kind,
        tokens=tokens or scenario.tokens,
        fault=None if fault is None else fault.scenario,
        retry_after=1 if fault is None else fault.retry_after,
        fail_times=1 if fault is None else fault.fail_times,
        cancel_after_s=cancel,
        index=position,
    )


@dataclass
class Recorder:
    """What the run measured (see the module docstring)."""

    interval_s: float
    offered: int = 0
    admitted: int = 0
    rejected: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    ttft: Latency = field(default_factory=Latency)
    e2e: Latency = field(default_factory=Latency)
    admission_wait: Latency = field(default_factory=Latency)
    rejection: Latency = field(default_factory=Latency)
    #: Per phase: TTFT of requests that arrived in it (the goals compare phases).
    phase_ttft: dict[int, Latency] = field(default_factory=dict)
    phase_goodput: dict[int, int] = field(default_factory=dict)
    buckets: dict[str, list[int]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def count(self, series: str, at_s: float) -> None:
        bucket = max(0, int(at_s / self.interval_s))
        values = self.buckets.setdefault(series, [])
        if len(values) <= bucket:
            values.extend([0] * (bucket + 1 - len(values)))
        values[bucket] += 1

    def on_offered(self, at_s: float) -> None:
        self.offered += 1
        self.count("offered", at_s)

    def on_rejected(self, at_s: float, latency_s: float) -> None:
        self.rejected += 1
        self.rejection.record(latency_s)
        self.count("rejected", at_s)

    def on_admitted(self, wait_s: float | None) -> None:
        self.admitted += 1
        if wait_s is not None:
            self.admission_wait.record(wait_s)

    def on_completed(
        self, arrival: Arrival, at_s: float, e2e_s: float, ttft_s: float | None
    ) -> None:
        self.completed += 1
        self.e2e.record(e2e_s)
        if ttft_s is not None:
            self.ttft.record(ttft_s)
            self.phase_ttft.setdefault(arrival.phase, Latency()).record(ttft_s)
        self.phase_goodput[arrival.phase] = self.phase_goodput.get(arrival.phase, 0) + 1
        self.count("goodput", at_s)

    def on_failed(self, at_s: float, why: str) -> None:
        self.failed += 1
        self.failures[why] = self.failures.get(why, 0) + 1
        self.count("failed", at_s)

    def on_cancelled(self, at_s: float) -> None:
        self.cancelled += 1
        self.count("cancelled", at_s)

    def series(self, name: str, length: int) -> list[int]:
        values = self.buckets.get(name, [])
        return (values + [0] * length)[:length]

    def peak_goodput_rps(self, window_s: float = 1.0) -> float:
        """The best goodput over any ``window_s`` (sliding over the intervals)."""
        values = self.buckets.get("goodput", [])
        width = max(1, round(window_s / self.interval_s))
        if not values:
            return 0.0
        best = max(sum(values[i : i + width]) for i in range(max(1, len(values) - width + 1)))
        return best / (width * self.interval_s)


def latency_summary(latency: Latency) -> dict[str, Any]:
    return {
        "count": latency.count,
        "p50": latency.percentile_ms(50),
        "p90": latency.percentile_ms(90),
        "p99": latency.percentile_ms(99),
        "p999": latency.percentile_ms(99.9),
        "max": latency.percentile_ms(100),
    }


def latency_cdf(latency: Latency) -> list[list[float]]:
    if latency.count == 0:
        return []
    points = []
    for percentile in CDF_PERCENTILES:
        value = latency.percentile_ms(float(percentile))
        if value is not None and math.isfinite(value):
            points.append([float(percentile), value])
    return points
