"""``python -m bench run`` / ``compare`` for open-loop (research) scenarios.

Owns turning arguments into ``LabOptions`` (the scenario file, ``--set``
overrides on top of its ``[engine]`` table, ``--scale``), what is printed
(a results table and the goals on stdout, where the files went on stderr),
and exit codes: 0 done, 1 failed, 2 bad arguments, 130 interrupted.
``compare`` runs the scenario twice, A then B, into ``<out>/a`` and
``<out>/b``, and prints both side by side with B/A ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from orpipe.bench.argtypes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, parse_overrides
from orpipe.bench.lab_run import LabOptions, LabOutcome, run_lab
from orpipe.bench.lab_scenario import (
    LabScenario,
    ScenarioFileError,
    builtin_names,
    find_scenario,
    load_scenario,
)
from orpipe.bench.report import default_out_dir
from orpipe.engine import ConfigError, EngineConfig
from orpipe.engine.logs import LogSettings, setup_logging

__all__ = ["format_summary", "main_lab"]


def main_lab(prog: str, args: argparse.Namespace) -> int:
    # The engine's and the adapters' records through the engine's queued, redacted sink
    # (ORPIPE_LOG_LEVEL=DEBUG to see more; the progress line stays readable at WARNING).
    setup_logging(LogSettings(level=os.environ.get("ORPIPE_LOG_LEVEL", "WARNING").upper()))
    try:
        scenario = _scenario(args.scenario)
        if args.command == "compare":
            sides = {side: parse_overrides(getattr(args, side), f"--{side}") for side in ("a", "b")}
            for overrides in sides.values():
                _config(scenario, overrides)  # refuse a bad override before running anything
        else:
            overrides = parse_overrides(args.overrides)
            _config(scenario, overrides)
    except (ScenarioFileError, ConfigError, ValueError) as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out if args.out is not None else default_out_dir(scenario.name)
    if args.command == "compare":
        return _compare(scenario, sides, out, args.scale)
    options = LabOptions(
        scenario=scenario.with_engine(overrides),
        config=EngineConfig(),
        out_dir=out,
        time_scale=args.scale,
        progress=sys.stderr.isatty(),
        report=not args.no_report,
    )
    outcome = _run(options)
    if outcome is None:
        return EXIT_INTERRUPTED
    print(format_summary(outcome.document))
    _where(outcome)
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK


def _compare(
    scenario: LabScenario, sides: Mapping[str, dict[str, str]], out: Path, scale: float
) -> int:
    from orpipe.bench.compare_report import format_compare, write_compare_html  # noqa: PLC0415

    outcomes: dict[str, LabOutcome] = {}
    for side, overrides in sides.items():
        label = _label(side, overrides)
        print(f"compare: running {label}", file=sys.stderr)
        options = LabOptions(
            scenario=scenario.with_engine(overrides),
            config=EngineConfig(),
            out_dir=out / side,
            time_scale=scale,
            progress=sys.stderr.isatty(),
        )
        outcome = _run(options)
        if outcome is None or outcome.interrupted:
            print("compare: interrupted; the finished side's results are kept", file=sys.stderr)
            return EXIT_INTERRUPTED
        outcomes[side] = outcome
    label_a, label_b = (_label(side, sides[side]) for side in ("a", "b"))
    a, b = outcomes["a"].document, outcomes["b"].document
    print(format_compare(a, b, label_a, label_b))
    report = write_compare_html(a, b, label_a, label_b, out)
    print(f"compare {scenario.name} done; report: {report}", file=sys.stderr)
    return EXIT_OK


def _run(options: LabOptions) -> LabOutcome | None:
    try:
        return trio.run(run_lab, options)
    except KeyboardInterrupt:  # only before the run installed its own SIGINT handling
        print("bench: interrupted before anything was measured", file=sys.stderr)
        return None


def _where(outcome: LabOutcome) -> None:
    status = "interrupted" if outcome.interrupted else "done"
    files = ", ".join(f"{name}: {path}" for name, path in outcome.files.items())
    print(f"bench {outcome.document['scenario']['name']} {status}; {files}", file=sys.stderr)


def _scenario(name: str) -> LabScenario:
    path = find_scenario(name)
    if path is None:
        raise ValueError(
            f"no scenario {name!r}: use one of {', '.join(builtin_names())}, "
            "a closed-loop one (see --help), or the path of a .toml file"
        )
    return load_scenario(path)


def _config(scenario: LabScenario, overrides: Mapping[str, str]) -> EngineConfig:
    return EngineConfig().with_overrides({**scenario.engine, **overrides})


def _label(side: str, overrides: Mapping[str, str]) -> str:
    shown = " ".join(f"{k}={v}" for k, v in overrides.items()) or "the scenario's config"
    return f"{side.upper()} ({shown})"


def format_summary(document: Mapping[str, Any]) -> str:
    """The run's figures as printed: counts, rates, latency percentiles, goals."""
    s = document["summary"]
    lines = [
        f"scenario {document['scenario']['name']}: {document['scenario']['description']}",
        f"  requests  offered {s['offered']}  admitted {s['admitted']}  rejected {s['rejected']}"
        f"  completed {s['completed']}  failed {s['failed']}  cancelled {s['cancelled']}",
        f"  rates     offered {_num(s['offered_rps'])} req/s  goodput {_num(s['goodput_rps'])}"
        f" req/s  peak goodput {_num(s['peak_goodput_rps'])} req/s (best 1 s)",
        "  latency (ms)        p50      p90      p99    p99.9      max    count",
    ]
    for key, label in (
        ("ttft_ms", "time to first token"),
        ("e2e_ms", "end to end"),
        ("admission_wait_ms", "admission wait"),
        ("rejection_ms", "rejection"),
    ):
        h = s[key]
        cells = "".join(f"{_num(h[p]):>9}" for p in ("p50", "p90", "p99", "p999", "max"))
        lines.append(f"  {label:<20}{cells}{h['count']:>9}")
    if s.get("failures"):
        lines.append(
            "  failures  " + ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items()))
        )
    for goal in document.get("goals", []):
        mark = {True: "met", False: "MISSED", None: "not measured"}[goal["met"]]
        lines.append(
            f"  goal      {goal['name']}: {goal['measured']} (goal: {goal['goal']}) {mark}"
        )
    if document.get("interrupted"):
        lines.append("  (interrupted: the figures cover what ran)")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
