"""The command line: ``python -m bench run SCENARIO [options]``.

Owns argument parsing and validation (scenario names, ``--set`` engine
overrides through ``EngineConfig.with_overrides``, the grid of ``--levels``,
``--regimes`` and ``--reps`` through ``bench.grid.resolve_grid``), exit
codes, and what is printed: the grid table on stdout (with every phase's
figures above it when one row is measured once), a line per phase while it
runs and one summary line at the end on stderr. A bad argument is one line
on stderr and exit code 2, never a traceback.

A scenario whose ``driver`` is ``owui`` (``python -m bench run owui``) is
run by ``bench.owui_run`` instead of ``bench.runner``: the Open WebUI pipe on
asyncio loops, so no ``trio.run`` here; its ``--set`` also takes the
Function's valves (upper-case names).

Exit codes: 0 done, 1 the run failed, 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from orpipe.bench.argtypes import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OneLineParser,
    non_negative_float,
    parse_overrides,
    positive_float,
    positive_int,
    positive_int_list,
)
from orpipe.bench.grid import Grid, parse_regimes, phase_names, resolve_grid
from orpipe.bench.lab_scenario import builtin_names
from orpipe.bench.report import (
    RunOutcome,
    default_out_dir,
    format_grid_table,
    format_table,
    goal_line,
    pace_notes,
    tools_lines,
)
from orpipe.bench.runner import GridOutcome, RunOptions, run_bench
from orpipe.bench.scenarios import SCENARIOS, BenchScenario
from orpipe.engine import ConfigError, EngineConfig

if TYPE_CHECKING:
    from orpipe.bench.owui_run import OwuiOptions

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m bench", description="orpipe load bench (loopback only)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = commands.add_parser(
        "run", help="run a scenario: baseline and engine phases for each row of its grid"
    )
    run.add_argument(
        "scenario",
        help=(
            "a scenario: closed-loop "
            + ", ".join(sorted(SCENARIOS))
            + "; open-loop (research) "
            + ", ".join(builtin_names())
            + "; or the path of a scenario .toml file"
        ),
    )
    run.add_argument(
        "--scale",
        type=positive_float,
        default=1.0,
        help="open-loop scenarios: multiply every phase's duration (e.g. 0.2 for a quick look)",
    )
    run.add_argument(
        "--no-report", action="store_true", help="open-loop scenarios: results.json only"
    )
    run.add_argument(
        "--concurrency",
        type=positive_int,
        help="concurrent streams; alone (or with --tps) one row instead of the grid",
    )
    run.add_argument("--duration", type=positive_float, help="counted seconds per phase")
    run.add_argument("--warmup", type=non_negative_float, help="uncounted seconds per phase")
    run.add_argument("--tokens", type=positive_int, help="text deltas per stream")
    run.add_argument(
        "--tps",
        type=non_negative_float,
        help=(
            "tokens/s per stream: alone one row (0: flat out); with --levels or --regimes "
            "the paced rows' rate (default 50)"
        ),
    )
    run.add_argument(
        "--levels",
        type=positive_int_list,
        help="demo, streaming, tools: concurrent streams of the grid's rows, e.g. 16,64,200",
    )
    run.add_argument(
        "--regimes",
        type=parse_regimes,
        help="demo, streaming, tools: paced (at --tps) and/or flat (out), e.g. paced,flat",
    )
    run.add_argument(
        "--reps",
        type=positive_int,
        help=(
            "demo, streaming, tools: repetitions of every row, baseline and engine back to "
            "back, alternating which goes first (streaming 3, demo 1)"
        ),
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=(
            "override an EngineConfig field (repeatable), e.g. --set parser_workers=2; "
            "for owui also a valve of the Function, e.g. --set STREAMING_UPDATE_CHAR_LIMIT=50"
        ),
    )
    run.add_argument("--out", type=Path, help="output directory (default bench/results/...)")
    compare = commands.add_parser(
        "compare", help="run an open-loop scenario under two configurations, side by side"
    )
    compare.add_argument("scenario", help="an open-loop scenario name or .toml path")
    for side in ("a", "b"):
        compare.add_argument(
            f"--{side}",
            dest=side,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"an EngineConfig override of configuration {side.upper()} (repeatable)",
        )
    compare.add_argument("--scale", type=positive_float, default=1.0, help="as for run")
    compare.add_argument("--out", type=Path, help="output directory (default bench/results/...)")
    # Listed here for --help; main() hands its arguments to bench.telemetry_run unparsed.
    commands.add_parser(
        "telemetry",
        add_help=False,
        help="live telemetry: the engine under a demo load, a dashboard, /ws and /metrics "
        "(python -m bench telemetry --help)",
    )
    commands.add_parser(
        "fuzz",
        add_help=False,
        help="hostile upstream streams against real engines over loopback "
        "(python -m bench fuzz --seconds N; see --help)",
    )
    commands.add_parser(
        "owui-real",
        add_help=False,
        help="the pipes inside real Open WebUI 0.12.4 servers under load, against its "
        "built-in connection (python -m bench owui-real --help; not in CI)",
    )
    return parser


def _scenario(args: argparse.Namespace) -> BenchScenario:
    scenario: BenchScenario = SCENARIOS[args.scenario]
    changes = {
        key: value
        for key, value in (
            ("concurrency", args.concurrency),
            ("duration_s", args.duration),
            ("warmup_s", args.warmup),
            ("tokens", args.tokens),
            ("tps", args.tps),
        )
        if value is not None
    }
    return scenario.replace(**changes)


def _grid(args: argparse.Namespace) -> Grid:
    return resolve_grid(
        SCENARIOS[args.scenario],
        levels=args.levels,
        regimes=args.regimes,
        reps=args.reps,
        concurrency=args.concurrency,
        tps=args.tps,
    )


def _options(args: argparse.Namespace) -> RunOptions:
    """Validated options, or ``ValueError``/``ConfigError`` with a one-line reason."""
    overrides = parse_overrides(args.overrides)
    config = EngineConfig().with_overrides(overrides)
    scenario = _scenario(args)
    grid = _grid(args)
    out_dir = args.out if args.out is not None else default_out_dir(scenario.name)
    return RunOptions(
        scenario=scenario, grid=grid, config=config, overrides=overrides, out_dir=out_dir
    )


def _grid_flags(args: argparse.Namespace) -> list[str]:
    """The grid's flags this command line gives (``run`` only)."""
    names = ("levels", "regimes", "reps")
    return [f"--{name}" for name in names if getattr(args, name, None) is not None]


def _owui_options(args: argparse.Namespace) -> OwuiOptions:
    """Validated options of an ``owui`` run, or ``ValueError``/``ConfigError``."""
    from orpipe.bench.owui_run import owui_options  # noqa: PLC0415 - see _main_owui

    scenario = _scenario(args)
    out_dir = args.out if args.out is not None else default_out_dir(scenario.name)
    return owui_options(scenario, parse_overrides(args.overrides), out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["telemetry"]:
        from orpipe.bench.telemetry_run import main as telemetry_main  # noqa: PLC0415

        return telemetry_main(argv[1:], prog="python -m bench telemetry")
    if argv[:1] == ["fuzz"]:
        from orpipe.bench.fuzz import main as fuzz_main  # noqa: PLC0415

        return fuzz_main(argv[1:], prog="python -m bench fuzz")
    if argv[:1] == ["owui-real"]:
        from orpipe.bench.owui_real import main as owui_real_main  # noqa: PLC0415

        return owui_real_main(argv[1:], prog="python -m bench owui-real")
    if argv[:2] == ["run", "workers"]:
        from orpipe.bench.workers_run import main as workers_main  # noqa: PLC0415

        return workers_main(argv[2:], prog="python -m bench run workers")
    parser = _build_parser()
    args = parser.parse_args(argv)
    grid_flags = _grid_flags(args)
    if grid_flags and (
        args.scenario not in SCENARIOS or SCENARIOS[args.scenario].driver != "engine"
    ):
        # Said rather than ignored: the owui and open-loop runs have no grid.
        engine_scenarios = ", ".join(n for n, s in SCENARIOS.items() if s.driver == "engine")
        print(
            f"{parser.prog}: error: {' and '.join(grid_flags)} only apply to "
            f"{engine_scenarios}, not {args.scenario}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.command == "compare" or args.scenario not in SCENARIOS:
        from orpipe.bench.lab_cli import main_lab  # noqa: PLC0415 - matplotlib is heavy

        return main_lab(parser.prog, args)
    if SCENARIOS[args.scenario].driver == "owui":
        return _main_owui(parser.prog, args)
    try:
        options = _options(args)
    except (ConfigError, ValueError) as exc:
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = trio.run(run_bench, options)
    except KeyboardInterrupt:  # only before the run installed its own SIGINT handling
        print(f"{parser.prog}: interrupted before anything was measured", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _report(outcome, options)


def _report(outcome: GridOutcome, options: RunOptions) -> int:
    rows = outcome.rows
    if any(row["reps"] for row in rows):
        print(f"scenario {options.scenario.name}: {_shape(options)}")
        if phases := outcome.only_phases:
            # One row measured once: every figure of its phases, as before the grid.
            print(format_table(phases))
            for line in tools_lines({phase["phase"]: phase for phase in phases}):
                print(line)
            print()
        print(format_grid_table(rows))
        print(goal_line(rows))
        for line in pace_notes(rows):
            print(line)
    return _exit_status(outcome, options.scenario.name)


def _main_owui(prog: str, args: argparse.Namespace) -> int:
    # Imported here: the Function and its dependencies take ~0.4 s to import,
    # which the other scenarios need not pay.
    from orpipe.bench.owui_load import loop_name  # noqa: PLC0415
    from orpipe.bench.owui_run import run_owui  # noqa: PLC0415

    try:
        options = _owui_options(args)
    except (ConfigError, ValueError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    loop = loop_name()
    if not loop.startswith("uvloop"):
        print("note: uvloop is not installed; the phases run on plain asyncio", file=sys.stderr)
    try:
        outcome = run_owui(options)
    except KeyboardInterrupt:  # only before the run took over
        print(f"{prog}: interrupted before anything was measured", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _report_owui(outcome, options)


def _report_owui(outcome: RunOutcome, options: OwuiOptions) -> int:
    from orpipe.bench.owui_report import format_owui_report, owui_shape  # noqa: PLC0415

    document = outcome.document
    if document["phases"]:
        print(f"scenario {options.scenario.name}: {owui_shape(document)}")
        print(format_owui_report(document))
    return _exit_status(outcome, options.scenario.name)


def _exit_status(outcome: RunOutcome, name: str) -> int:
    """Say how the run ended and where its results are; the exit code that goes with it."""
    status = "interrupted" if outcome.interrupted else "failed" if outcome.error else "done"
    print(f"bench {name} {status}; results: {outcome.results_path}", file=sys.stderr)
    if outcome.error is not None:
        print(f"bench: error: {_one_line(outcome.error)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK


def _shape(options: RunOptions) -> str:
    """What every row shares: the streams, the phases' lengths, the repetitions (two lines)."""
    scenario, grid = options.scenario, options.grid
    paced = [row for row in grid.rows if row.regime == "paced"]
    rates = sorted({row.tps for row in paced})
    pacing = f"; paced rows at {', '.join(f'{r:g}' for r in rates)} tokens/s" if rates else ""
    warmup = f"{scenario.warmup_s:g} s warm-up"
    if paced:
        longest = max(row.scenario(scenario).warmup_s for row in paced)
        if longest > scenario.warmup_s:
            # Their workers start spread over one stream, so the window opens on the steady state.
            warmup += f" (paced rows up to {longest:g} s: one stream's length)"
    order = ", alternating which goes first" if grid.reps > 1 else ""
    return (
        f"{scenario.tokens} tokens a stream, {scenario.events_per_write} event(s) per write"
        f"{pacing}\nper phase {warmup} + {scenario.duration_s:g} s counted; {grid.reps} "
        f"repetition(s) of {', '.join(phase_names(scenario))} back to back{order}"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
