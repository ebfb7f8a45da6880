"""One bench run, start to finish: mock up, baseline phase, engine phase, report.

Owns the order of a run and its ways out. The mock runs as a child process
for the whole run; the baseline is measured first, then the engine, against
the same mock and the same offered load. Ctrl-C (SIGINT) is turned into a
cancellation of the run, so the phase in progress closes its window with
what it measured, the mock is stopped, and ``results.json`` is still
written, marked ``"interrupted": true``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.baseline import run_baseline
from bench.engine_client import run_engine_phase
from bench.measure import Phase
from bench.mock_process import MockProcess, fetch_mock_stats, running_mock
from bench.report import CPU_RATIO_GOAL, cpu_ratio, machine_info, utc_now, write_results
from bench.scenarios import BenchScenario
from engine import EngineConfig

__all__ = ["RunOptions", "RunOutcome", "default_out_dir", "run_bench"]

RESULTS_ROOT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """A validated request for one run (the CLI builds it)."""

    scenario: BenchScenario
    #: Engine config with the ``--set`` overrides; ``base_url`` is replaced by the mock's.
    config: EngineConfig
    overrides: Mapping[str, str] = field(default_factory=dict)
    out_dir: Path


@dataclass(slots=True, kw_only=True)
class RunOutcome:
    """What a run produced: the JSON document and where it was written."""

    document: dict[str, Any]
    results_path: Path | None = None
    #: Why the run stopped early, if it did (also in the document as text).
    error: Exception | None = None

    @property
    def interrupted(self) -> bool:
        return bool(self.document.get("interrupted"))

    @property
    def phases(self) -> list[dict[str, Any]]:
        return list(self.document["phases"].values())


def default_out_dir(scenario: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS_ROOT / f"{scenario}-{stamp}"


async def run_bench(options: RunOptions) -> RunOutcome:
    """Run both phases and write ``results.json``; errors are returned, not raised."""
    document = _new_document(options)
    outcome = RunOutcome(document=document)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    try:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_sigint, signals, nursery.cancel_scope, document)
                try:
                    await _run_phases(options, document)
                except Exception as exc:
                    # Kept out of the nursery, so the caller sees the error itself
                    # rather than an exception group around it.
                    error = exc
                    document["error"] = f"{type(exc).__name__}: {exc}"
                nursery.cancel_scope.cancel()
    finally:
        document["finished_at"] = utc_now()
        document["cpu_ratio"] = cpu_ratio(document["phases"])
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


async def _run_phases(options: RunOptions, document: dict[str, Any]) -> None:
    scenario = options.scenario
    phases: dict[str, Any] = document["phases"]
    async with running_mock(log_path=options.out_dir / "mock.log") as mock:
        document["mock"]["pid"] = mock.pid
        config = dataclasses.replace(options.config, base_url=mock.base_url)
        document["config"] = config.as_dict()

        baseline = _phase("baseline", scenario, mock)
        try:
            # A bare client runs no tools: its baseline is the plain answer.
            bare = scenario.plain() if scenario.tool_calls else scenario
            await run_baseline(baseline, bare, mock.base_url)
        finally:
            phases["baseline"] = baseline.result()
        document["mock"]["after_baseline"] = await _mock_stats(mock)

        if scenario.tool_calls:
            # The same answers without tools first: what the tools add is the difference.
            plain = _phase("engine", scenario, mock)
            try:
                await run_engine_phase(plain, scenario.plain(), config)
            finally:
                phases["engine"] = plain.result()
            name = "engine+tools"
        else:
            name = "engine"
        engine = _phase(name, scenario, mock)
        try:
            await run_engine_phase(engine, scenario, config)
        finally:
            phases[name] = engine.result()
        document["mock"]["after_engine"] = await _mock_stats(mock)


def _phase(name: str, scenario: BenchScenario, mock: MockProcess) -> Phase:
    phase = Phase(
        name,
        concurrency=scenario.concurrency,
        warmup_s=scenario.warmup_s,
        duration_s=scenario.duration_s,
    )
    phase.mock_cpu_now = mock.cpu_seconds
    return phase


async def _mock_stats(mock: MockProcess) -> dict[str, Any] | str:
    try:
        return await fetch_mock_stats(mock)
    except httpx.HTTPError as exc:  # informative only: never fail a run over it
        return f"unavailable: {type(exc).__name__}"


def _new_document(options: RunOptions) -> dict[str, Any]:
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
        "cpu_ratio": None,
        "cpu_ratio_goal": CPU_RATIO_GOAL,
        "phases": {},
    }
