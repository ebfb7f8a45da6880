"""``python -m bench fuzz``: the hostile-upstream fuzz harness, run for as long as you like.

Plays generated streams (random splits, line ends, junk events, cuts,
stalls, oversized and deeply nested events, in-band and HTTP errors,
connections left open, ...) from a byte-level server on 127.0.0.1 against
real engines, several at once, and checks every stream's properties: no
engine crash, no ending later than the configured timeouts allow, exactly
one ending, the exact text whenever the stream was well-formed, and a
canary after each batch. The harness lives in ``tests/fuzz`` (the CI test
runs a short fixed-seed version of the same thing); this module is its
command line, so it runs from a checkout of the repository.

Prints a progress line about every 10 s, then a table by class and every
failure with its class, seed and a replay command
(``--case CLASS:SEED@CONFIG``). Exit codes: 0 no failure, 1 failures,
2 bad arguments, 130 interrupted.
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
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from tests.fuzz.runner import Summary

__all__ = ["main"]


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Fuzz a real engine with hostile upstream streams over loopback.",
    )
    parser.add_argument(
        "--seconds", type=positive_float, default=60.0, help="how long to run (default 60)"
    )
    parser.add_argument("--streams", type=positive_int, help="stop after this many streams instead")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    parser.add_argument(
        "--concurrency", type=positive_int, default=16, help="streams at once (default 16)"
    )
    parser.add_argument(
        "--batches-per-engine",
        type=positive_int,
        default=4,
        help="batches played on one engine before the next configuration (default 4)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CLASS",
        help="play only this class of stream (repeatable)",
    )
    parser.add_argument(
        "--case",
        metavar="CLASS:SEED@CONFIG",
        help="replay one stream alone, as a failure report names it",
    )
    parser.add_argument(
        "--read-idle",
        type=positive_float,
        default=2.0,
        help="the engines' read_idle_timeout_s (default 2)",
    )
    parser.add_argument(
        "--slack",
        type=positive_float,
        default=1.5,
        help="seconds an ending may come after the upstream's end (default 1.5)",
    )
    parser.add_argument(
        "--prompt",
        type=positive_float,
        default=1.0,
        help="seconds an ending may come after a terminal event on a held connection "
        "(default 1; keep it below --read-idle)",
    )
    parser.add_argument(
        "--list-classes", action="store_true", help="print the classes of stream and exit"
    )
    return parser


def _parse_case(text: str) -> tuple[str, int, int]:
    cls, sep, rest = text.partition(":")
    seed, sep2, config = rest.partition("@")
    if not (sep and sep2 and cls):
        raise ValueError(f"--case expects CLASS:SEED@CONFIG, got {text!r}")
    return cls, int(seed), int(config)


def _import_harness() -> None:
    """The harness is in tests/, beside this package in a checkout."""
    try:
        import tests.fuzz  # noqa: F401, PLC0415
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bench fuzz") -> int:
    args = _parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    _import_harness()
    from tests.fuzz.generator import CLASS_NAMES  # noqa: PLC0415
    from tests.fuzz.runner import FuzzOptions, run_fuzz  # noqa: PLC0415

    if args.list_classes:
        print("\n".join(CLASS_NAMES))
        return EXIT_OK
    try:
        case = _parse_case(args.case) if args.case else None
        unknown = [c for c in [*args.only, *([case[0]] if case else [])] if c not in CLASS_NAMES]
        if unknown and unknown != ["canary"]:
            raise ValueError(f"unknown class {unknown[0]!r} (see --list-classes)")
        if args.prompt >= args.read_idle:
            raise ValueError("--prompt must be below --read-idle, or a held connection goes unseen")
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = FuzzOptions(
        seed=args.seed,
        seconds=None if case is not None or args.streams is not None else args.seconds,
        streams=args.streams,
        concurrency=args.concurrency,
        batches_per_engine=args.batches_per_engine,
        only=tuple(args.only),
        case=case,
        read_idle_timeout_s=args.read_idle,
        slack_s=args.slack,
        prompt_s=args.prompt,
    )
    what = f"case {args.case}" if case else f"seed {args.seed}"
    limit = f"{args.streams} streams" if args.streams else f"{args.seconds:g} s"
    print(
        f"fuzz: {what}, {limit if not case else 'one stream'}, "
        f"{args.concurrency} streams at once, read idle timeout {args.read_idle:g} s",
        flush=True,
    )
    try:
        summary = trio.run(run_fuzz, options, _progress)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _report(summary)


def _progress(summary: Summary) -> None:
    print(summary.progress_line(), flush=True)


def _report(summary: Summary) -> int:
    print()
    print(summary.table())
    report = summary.report()
    if report:
        print()
        print(report)
    return EXIT_OK if summary.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
