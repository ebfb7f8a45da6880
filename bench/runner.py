"""One bench run, start to finish: mock up, every row's phases, summaries, report.

Owns the run and its ways out. The mock runs as one child process for the
whole run; the steps of the grid (``bench.grid``: every repetition of every
row, baseline and engine back to back, alternating which goes first) run
against it one phase at a time, each phase against the same offered load
as its partner. A line on stderr reports each phase as it finishes.
Ctrl-C (SIGINT) is turned into a cancellation of the run, so the phase in
progress closes its window with what it measured, the mock is stopped, and
``results.json`` is still written, with the summaries of what was measured,
marked ``"interrupted": true``.
"""

from __future__ import annotations

import dataclasses
import gc
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from orpipe.bench.baseline import run_baseline
from orpipe.bench.engine_client import run_engine_phase
from orpipe.bench.grid import Grid, Row, Step, estimated_seconds, phase_names, plan_steps
from orpipe.bench.measure import Phase
from orpipe.bench.mock_process import MockProcess, mock_stats, running_mock
from orpipe.bench.report import RunOutcome, machine_info, utc_now, write_results
from orpipe.bench.row_summary import CPU_RATIO_GOAL, cpu_ratio, summarize_row
from orpipe.bench.scenarios import BenchScenario
from orpipe.engine import EngineConfig

__all__ = ["GridOutcome", "RunOptions", "run_bench"]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """A validated request for one run (the CLI builds it)."""

    #: The load every row shares (tokens, events per write, phase lengths).
    scenario: BenchScenario
    #: The rows and repetitions (``bench.grid.resolve_grid``).
    grid: Grid
    #: Engine config with the ``--set`` overrides; ``base_url`` is replaced by the mock's.
    config: EngineConfig
    overrides: Mapping[str, str] = field(default_factory=dict)
    out_dir: Path
    #: Where the per-phase progress lines go (stderr; tests collect them).
    say: Callable[[str], None] = _to_stderr


@dataclass(slots=True, kw_only=True)
class GridOutcome(RunOutcome):
    """A grid run's outcome, with its rows and (for one row measured once) its phases."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.document["rows"])

    @property
    def only_phases(self) -> list[dict[str, Any]]:
        """The phases of a run of one row measured once (shown in full); else []."""
        rows = self.rows
        if len(rows) != 1 or len(rows[0]["reps"]) != 1:
            return []
        return list(rows[0]["reps"][0]["phases"].values())


async def run_bench(options: RunOptions) -> GridOutcome:
    """Run every step of the grid and write ``results.json``; errors are returned, not raised."""
    document = _new_document(options)
    outcome = GridOutcome(document=document)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    try:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_sigint, signals, nursery.cancel_scope, document)
                try:
                    await _run_grid(options, document)
                except Exception as exc:
                    # Kept out of the nursery, so the caller sees the error itself
                    # rather than an exception group around it.
                    error = exc
                    document["error"] = f"{type(exc).__name__}: {exc}"
                nursery.cancel_scope.cancel()
    finally:
        document["finished_at"] = utc_now()
        _summarize(document)
        # Written on every way out, so a failed or interrupted run keeps its figures.
        outcome.results_path = write_results(options.out_dir, document)
    outcome.error = error
    return outcome


async def _cancel_on_sigint(
    signals: Any, scope: trio.CancelScope, document: dict[str, Any]
) -> None:
    async for _ in signals:
        document["interrupted"] = True
        scope.cancel()
        return


async def _run_grid(options: RunOptions, document: dict[str, Any]) -> None:
    scenario = options.scenario
    names = phase_names(scenario)
    steps = plan_steps(options.grid, names)
    total = len(steps) * len(names)
    seconds = estimated_seconds(options.grid, scenario, len(names))
    about = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    options.say(
        f"bench {scenario.name}: {len(options.grid.rows)} row(s) x {options.grid.reps} rep(s), "
        f"{total} phases, about {about}"
    )
    async with running_mock(log_path=options.out_dir / "mock.log") as mock:
        document["mock"]["pid"] = mock.pid
        config = dataclasses.replace(options.config, base_url=mock.base_url)
        document["config"] = config.as_dict()
        done = 0
        for step in steps:
            rep: dict[str, Any] = {"rep": step.rep + 1, "order": list(step.phases), "phases": {}}
            document["rows"][step.row_index]["reps"].append(rep)
            for name in step.phases:
                await _run_phase(name, step, options.scenario, mock, config, into=rep["phases"])
                done += 1
                options.say(_progress_line(f"[{done}/{total}]", step, options.grid.reps, name, rep))
            rep["cpu_ratio"] = cpu_ratio(rep["phases"])
        document["mock"]["stats_at_end"] = await trio.to_thread.run_sync(mock_stats, mock)


async def _run_phase(
    name: str,
    step: Step,
    base: BenchScenario,
    mock: MockProcess,
    config: EngineConfig,
    *,
    into: dict[str, Any],
) -> None:
    """Measure one phase of ``step`` and store its result in ``into``, even when cut short."""
    scenario = step.row.scenario(base)
    # A bare client runs no tools, and the plain engine phase streams the same
    # answers without them: what the tools add is the third phase's difference.
    plain = scenario.plain() if scenario.tool_calls else scenario
    phase = _phase(name, step, scenario, mock)
    # Garbage left by the previous phase (an engine torn down) is collected
    # here, outside every window, rather than charged to whichever phase's
    # window the collector happens to run in.
    gc.collect()
    try:
        if name == "baseline":
            await run_baseline(phase, plain, mock.base_url)
        elif name == "engine":
            await run_engine_phase(phase, plain, config)
        else:
            await run_engine_phase(phase, scenario, config)
    finally:
        into[name] = phase.result()


def _phase(name: str, step: Step, scenario: BenchScenario, mock: MockProcess) -> Phase:
    phase = Phase(
        name,
        concurrency=scenario.concurrency,
        warmup_s=scenario.warmup_s,
        duration_s=scenario.duration_s,
        stagger_s=step.row.stream_s(scenario.tokens),
        title=f"{step.row.label} rep {step.rep + 1} {name}",
    )
    phase.mock_cpu_now = mock.cpu_seconds
    return phase


def _progress_line(count: str, step: Step, reps: int, name: str, rep: Mapping[str, Any]) -> str:
    """``[3/36] paced 16 streams rep 1/3 engine: 250.1 µs/event, 836 events/s; ...``"""
    result = rep["phases"][name]
    cpu = result["cpu_us_per_event"]
    line = (
        f"{count} {step.row.label} rep {step.rep + 1}/{reps} {name}: "
        + ("- µs/event" if cpu is None else f"{cpu:.1f} µs/event")
        + f", {result['events_per_s']:,.0f} events/s"
    )
    requests = result["requests"]
    missing = requests["failed"] + requests["unfinished"] + requests["rejected"]
    if missing:
        line += f", {missing} request(s) not completed"
    ratio = cpu_ratio(rep["phases"])
    if ratio is not None and name in ("baseline", "engine"):
        line += f"; engine/baseline {ratio:.2f}"
    return line


def _summarize(document: dict[str, Any]) -> None:
    """Each row's summary, and how many rows meet the goal, from what was measured."""
    verdicts: dict[str, int] = {"ok": 0, "OVER": 0, "n/a": 0}
    for row in document["rows"]:
        row["summary"] = summarize_row(row["reps"], row["offered_events_per_s"])
        verdicts[row["summary"]["verdict"]] += 1
    document["verdicts"] = verdicts


def _new_document(options: RunOptions) -> dict[str, Any]:
    names = phase_names(options.scenario)
    return {
        "scenario": options.scenario.as_dict(),
        "overrides": dict(options.overrides),
        "config": options.config.as_dict(),
        "machine": machine_info(),
        "started_at": utc_now(),
        "finished_at": None,
        "interrupted": False,
        "mock": {"processes": 1, "command": "python -m bench.mock_openrouter --port 0"},
        "cpu_measure": "time.process_time() of the bench process (the mock excluded)",
        "cpu_ratio_goal": CPU_RATIO_GOAL,
        "grid": {
            "reps": options.grid.reps,
            "phases": list(names),
            "order": (
                "repetition 1 of every row, then repetition 2, ...; phases in this order "
                "in odd repetitions, reversed in even ones"
            ),
            "summary": (
                "per row: medians over the repetitions; cpu_ratio is the median of each "
                "repetition's engine/baseline CPU per event, judged against cpu_ratio_goal"
            ),
        },
        "rows": [_new_row(row, options.scenario) for row in options.grid.rows],
        "verdicts": None,
    }


def _new_row(row: Row, scenario: BenchScenario) -> dict[str, Any]:
    return {**row.as_dict(scenario), "reps": [], "summary": None}
