"""The grid a closed-loop bench run measures: rows of (regime, streams), and their order.

A row is one offered load: a regime, ``paced`` (every stream at ``tps``
tokens/s, the regime users live in) or ``flat`` out (as fast as the mock
sends), and a number of concurrent streams. A run measures every row
``reps`` times; one repetition of a row (a ``Step``) runs its phases back to
back, baseline then engine, and the next repetition the other way round, so
a slow drift of the machine (heat, other work, the mock's caches) does not
always land on the same side. Rows are interleaved: repetition 1 of every
row, then repetition 2, and so on, so a noisy minute spoils one repetition
of several rows rather than every repetition of one row.

Everything here is pure: the runner asks for the steps and runs them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from orpipe.bench.scenarios import FRAMING_EVENTS, BenchScenario, Regime

__all__ = [
    "REGIMES",
    "Grid",
    "Row",
    "Step",
    "estimated_seconds",
    "parse_regimes",
    "phase_names",
    "plan_steps",
    "resolve_grid",
]

#: The regimes, in the order a grid lists them.
REGIMES: tuple[Regime, ...] = ("paced", "flat")
_LABELS: dict[Regime, str] = {"paced": "paced", "flat": "flat out"}
#: What a phase costs besides its warm-up, window and drain (an engine opened and closed).
_PHASE_OVERHEAD_S = 1.0
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Row:
    """One offered load of the grid: ``streams`` concurrent streams, paced or flat out."""

    regime: Regime
    streams: int
    #: Tokens/s per stream; 0 for flat out.
    tps: float

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ValueError(f"streams must be at least 1, got {self.streams}")
        if (self.regime == "paced") != (self.tps > 0):
            raise ValueError(f"a {self.regime} row cannot have tps {self.tps:g}")

    @property
    def regime_label(self) -> str:
        return _LABELS[self.regime]

    @property
    def label(self) -> str:
        """``paced 16 streams`` or ``flat out 200 streams``, for progress lines."""
        return f"{self.regime_label} {self.streams} streams"

    def stream_s(self, tokens: int) -> float:
        """How long one paced stream of ``tokens`` lasts; 0 flat out (as fast as it goes)."""
        return tokens / self.tps if self.tps > 0 else 0.0

    def offered_events_per_s(self, tokens: int) -> float | None:
        """The events/s a paced row asks of the machine (every stream at its pace); None
        flat out, which asks for as many as there can be."""
        if self.tps <= 0:
            return None
        return self.streams * (tokens + FRAMING_EVENTS) / self.stream_s(tokens)

    def scenario(self, base: BenchScenario) -> BenchScenario:
        """``base`` offered at this row's load.

        A paced row's workers start spread over one stream's length (users do
        not all arrive in the same millisecond), so its warm-up lasts at least
        that long: the window opens on the steady state, every worker mid-stream.
        """
        return base.replace(
            concurrency=self.streams,
            tps=self.tps,
            warmup_s=max(base.warmup_s, self.stream_s(base.tokens)),
        )

    def as_dict(self, base: BenchScenario) -> dict[str, object]:
        scenario = self.scenario(base)
        return {
            "regime": self.regime,
            "regime_label": self.regime_label,
            "streams": self.streams,
            "tps": self.tps,
            "warmup_s": scenario.warmup_s,
            "stagger_s": self.stream_s(base.tokens),
            "offered_events_per_s": self.offered_events_per_s(base.tokens),
        }


@dataclass(frozen=True, slots=True)
class Grid:
    """The rows of a run and how many times each is measured."""

    rows: tuple[Row, ...]
    reps: int

    def __post_init__(self) -> None:
        if not self.rows or self.reps < 1:
            raise ValueError("a grid needs at least one row and one repetition")


@dataclass(frozen=True, slots=True)
class Step:
    """One repetition of one row: its phases, in the order they run."""

    row_index: int
    row: Row
    #: 0-based; shown 1-based.
    rep: int
    phases: tuple[str, ...]


def phase_names(scenario: BenchScenario) -> tuple[str, ...]:
    """The phases of one repetition in their forward order.

    With tools, the engine streams the same answers without tools first: what
    the tools add is the difference between the two engine phases.
    """
    if scenario.tool_calls:
        return ("baseline", "engine", "engine+tools")
    return ("baseline", "engine")


def plan_steps(grid: Grid, names: Sequence[str]) -> list[Step]:
    """Every step in the order run: repetitions outermost, rows inside; odd
    repetitions (the 2nd, the 4th, ...) run the phases in reverse order."""
    steps: list[Step] = []
    for rep in range(grid.reps):
        order = tuple(names) if rep % 2 == 0 else tuple(reversed(names))
        steps += [Step(index, row, rep, order) for index, row in enumerate(grid.rows)]
    return steps


def estimated_seconds(grid: Grid, base: BenchScenario, phases_per_step: int) -> float:
    """Roughly how long the run takes: per phase its warm-up, window, a paced
    stream's drain and the engine's start and stop."""
    per_rep = 0.0
    for row in grid.rows:
        scenario = row.scenario(base)
        phase_s = scenario.warmup_s + scenario.duration_s + row.stream_s(base.tokens)
        per_rep += phases_per_step * (phase_s + _PHASE_OVERHEAD_S)
    return per_rep * grid.reps


def resolve_grid(
    scenario: BenchScenario,
    *,
    levels: tuple[int, ...] | None = None,
    regimes: tuple[Regime, ...] | None = None,
    reps: int | None = None,
    concurrency: int | None = None,
    tps: float | None = None,
) -> Grid:
    """The grid a command line asks for; ``ValueError`` says what does not fit.

    Nothing given: the scenario's own rows. ``concurrency`` / ``tps`` without
    ``levels`` and ``regimes`` select one row, as they did before the grid:
    that many streams (default the scenario's ``concurrency``) at that rate
    (default the scenario's ``tps``; 0 is flat out). Otherwise every level
    (``levels``, or the one level ``concurrency``, or the scenario's) in every
    regime (``regimes``, or the scenario's), paced rows at ``tps`` (default the
    scenario's ``paced_tps``), regime by regime.
    """
    repetitions = scenario.reps if reps is None else reps
    defaults = scenario.rows or ((_regime_of(scenario.tps), scenario.concurrency),)
    if levels is None and regimes is None:
        if concurrency is None and tps is None:
            rows = tuple(_row(regime, streams, scenario.paced_tps) for regime, streams in defaults)
            return Grid(rows, repetitions)
        rate = scenario.tps if tps is None else tps
        streams = scenario.concurrency if concurrency is None else concurrency
        return Grid((_row(_regime_of(rate), streams, rate),), repetitions)
    if levels is not None and concurrency is not None:
        raise ValueError("--concurrency is one level: give --levels or --concurrency, not both")
    if levels is None:
        levels = (concurrency,) if concurrency is not None else _unique(s for _, s in defaults)
    if regimes is None:
        regimes = _unique(regime for regime, _ in defaults)
    if tps is not None and tps <= 0 and "paced" in regimes:
        raise ValueError(
            "with --levels or --regimes, --tps is the paced rows' rate and must be more "
            "than 0 (flat out rows are --regimes flat)"
        )
    rate = scenario.paced_tps if tps is None or tps <= 0 else tps
    rows = tuple(_row(regime, streams, rate) for regime in regimes for streams in levels)
    return Grid(rows, repetitions)


def _regime_of(tps: float) -> Regime:
    return "paced" if tps > 0 else "flat"


def _row(regime: Regime, streams: int, paced_tps: float) -> Row:
    return Row(regime, streams, paced_tps if regime == "paced" else 0.0)


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    """The items in first-seen order, each once."""
    return tuple(dict.fromkeys(items))


def parse_regimes(text: str) -> tuple[Regime, ...]:
    """``--regimes paced,flat``: which regimes, in the order given; argparse type."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in REGIMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected paced and/or flat, comma-separated, got {text!r}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a regime is named twice in {text!r}")
    return tuple(cast(Regime, name) for name in names)
