"""``python -m bench owui-real``: the pipes inside a real Open WebUI 0.12.4, under load.

Every claim about speed inside Open WebUI is measured here. Not part of CI: it needs the
Open WebUI virtualenv ``make owui-smoke`` creates (``--venv``, default
``~/.cache/orpipe-owui-venv``), and it takes a while.

What one run does, each step printed as it happens:

1. puts this project into Open WebUI's virtualenv as a wheel would be
   (``bench.owui_real_install``), so the orpipe
   Function runs the code measured: the working tree, or with ``--ref REF`` the tree of a
   commit (``git archive``), which keeps a baseline clean of edits in progress; the
   Function's source comes from the same tree. ``--no-install`` keeps what is installed
   (the Function's source is then still read from the tree). The virtualenv itself, with
   Open WebUI, is ``make owui-smoke``'s;
2. starts the mock OpenRouter with one *variant* per pacing (``--variant d20=tokens=200&
   tps=50``: model ``mock/text:d20`` answers 200 tokens, one every 20 ms; ``d0`` flat out);
3. starts one ``open-webui serve`` per pipe (``bench.owui_real_servers``), same environment,
   each its own data directory, and sets each up through Open WebUI's HTTP API: **orpipe**
   (``adapters/owui_pipe.py``, valves at their defaults but BASE_URL and API_KEY), **bare**
   (``bench/owui_real_bare_pipe.py``: one shared httpx client, SSE split, each delta
   yielded), **floor** (``bench/owui_real_floor_pipe.py``: the same tokens, same pacing, no
   network), and **builtin** (no Function: Open WebUI's own OpenAI connection pointed at
   the mock's ``/chat/completions``, which streams the same tokens with the same pacing);
   then adds one user per concurrent chat to each server;
4. warms every server up (a few chats per pacing and mode, not counted), reads each
   server's idle CPU;
5. runs the cells (``plan_cells``): for each repetition, pacing, concurrency and mode, every
   pipe in turn, the starting pipe rotating, so drift on the machine falls on all of them
   alike. A cell is ``level`` users chatting at once, ``per_worker`` chats each, back to
   back (``bench.owui_real_driver``); the server's process tree is read from ``/proc``
   before and after;
6. prints the tables (``bench.owui_real_report``) and writes ``results.json`` (every chat
   of every cell, the summaries, the setup) and ``tables.md`` under ``--out``.

``--max-minutes`` bounds the run: no new cell starts once it has passed (the cell running
then still finishes), and the tables cover what was measured. Ctrl-C does the same at once.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from orpipe.bench.argtypes import non_negative_float, positive_float, positive_int
from orpipe.bench.mock_catalogue import parse_variant
from orpipe.bench.mock_process import running_mock
from orpipe.bench.mock_scenarios import plan
from orpipe.bench.owui_real_driver import CellSpec, ChatDriver
from orpipe.bench.owui_real_install import REPO, code_state, install_measured
from orpipe.bench.owui_real_proc import sample_tree
from orpipe.bench.owui_real_report import format_memory, format_tables, pacing_label, summarize
from orpipe.bench.owui_real_servers import (
    PIPES,
    PIPES_BY_NAME,
    Server,
    SetupError,
    model_id,
    running_servers,
    set_up,
)
from orpipe.bench.report import default_out_dir, machine_info, utc_now, write_results

__all__ = ["CellPlan", "RealOptions", "main", "per_worker", "plan_cells", "render", "variant_name"]

MODES = ("socket", "http")
_IDLE_S = 5.0
#: Before each group of cells: a pause for the last cell's stragglers, then every server's
#: idle CPU read over the same seconds.
_IDLE_PAUSE_S = 0.5
_IDLE_SAMPLE_S = 2.0
_WARMUP_LEVEL = 2
_PROGRESS_EVERY_S = 10.0


def say(message: str) -> None:
    print(f"[owui-real] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class RealOptions:
    """A validated request for one run (``main`` builds it from the command line)."""

    levels: tuple[int, ...] = (1, 16, 64, 200)
    delays: tuple[float, ...] = (0.0, 20.0)
    reps: int = 3
    pipes: tuple[str, ...] = tuple(pipe.name for pipe in PIPES)
    modes: tuple[str, ...] = MODES
    tokens: int = 200
    chats_per_worker: int = 2
    min_chats: int = 8
    chat_timeout_s: float = 300.0
    max_minutes: float = 90.0
    venv: Path = field(default_factory=lambda: Path.home() / ".cache" / "orpipe-owui-venv")
    install: bool = True
    #: A git ref whose tree is installed and measured; None: the working tree.
    ref: str | None = None
    out_dir: Path = field(default_factory=lambda: default_out_dir("owui-real"))


@dataclass(frozen=True, slots=True)
class CellPlan:
    """One cell to run: which repetition, pacing, concurrency, mode and pipe."""

    rep: int
    delay_ms: float
    level: int
    mode: str
    pipe: str
    per_worker: int


def variant_name(delay_ms: float) -> str:
    """The mock variant of a pacing: ``d0``, ``d20``, ``d2p5``."""
    return "d" + f"{delay_ms:g}".replace(".", "p")


def variant_params(delay_ms: float, tokens: int) -> dict[str, str]:
    tps = 0.0 if delay_ms <= 0 else 1000.0 / delay_ms
    return {"tokens": str(tokens), "tps": f"{tps:g}"}


def per_worker(level: int, chats_per_worker: int, min_chats: int) -> int:
    """Chats each worker runs: ``chats_per_worker``, more when ``level`` is small, so a cell
    has at least ``min_chats`` chats."""
    return max(chats_per_worker, math.ceil(min_chats / level))


def plan_cells(options: RealOptions) -> list[CellPlan]:
    """Every cell in the order run: repetition, pacing, concurrency, mode, then each pipe,
    the first pipe rotating from one group to the next (and from one repetition to the
    next), so no pipe always runs first or right after another's heavy cell."""
    cells: list[CellPlan] = []
    group = 0
    pipes = list(options.pipes)
    for rep in range(options.reps):
        for delay_ms in options.delays:
            for level in options.levels:
                for mode in options.modes:
                    shift = (group + rep) % len(pipes)
                    order = pipes[shift:] + pipes[:shift]
                    each = per_worker(level, options.chats_per_worker, options.min_chats)
                    cells += [CellPlan(rep, delay_ms, level, mode, pipe, each) for pipe in order]
                    group += 1
    return cells


# -- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    options: RealOptions
    document: dict[str, Any]
    expect: dict[float, str]
    #: Where the orpipe Function's source is read from (the measured tree).
    orpipe_root: Path = REPO
    #: Temporary directories removed when the run ends.
    cleanup: list[Path] = field(default_factory=list)
    servers: dict[str, Server] = field(default_factory=dict)


async def _run(run: _Run) -> None:
    options, document = run.options, run.document
    work = options.out_dir
    variants = {variant_name(d): variant_params(d, options.tokens) for d in options.delays}
    upstream = {name: f"mock/text:{name}" for name in variants}
    floor_plans = {
        f"mock/text:{variant_name(d)}": {
            "tps": float(variant_params(d, options.tokens)["tps"]),
            "deltas": list(_plan(d, options.tokens).text_deltas),
        }
        for d in options.delays
    }
    pipes = [PIPES_BY_NAME[name] for name in options.pipes]
    users = max(*options.levels, _WARMUP_LEVEL)
    async with running_mock(variants=variants, log_path=work / "mock.log") as mock:
        mock_base = mock.base_url
        say(f"mock OpenRouter at {mock_base} (variants: {', '.join(upstream.values())})")
        document["mock"] = {"base_url": mock_base, "variants": variants}
        async with running_servers(options.venv, pipes, work, say=say) as servers:
            run.servers = {server.pipe.name: server for server in servers}
            say(f"setting up each server through its HTTP API ({users} users each)")
            async with trio.open_nursery() as nursery:
                for server in servers:
                    set_up_one = partial(
                        set_up,
                        server,
                        mock_base=mock_base,
                        variants=upstream,
                        floor_plans=floor_plans,
                        users=users,
                        say=say,
                        orpipe_root=run.orpipe_root,
                    )
                    nursery.start_soon(set_up_one)
            async with trio.open_nursery() as nursery:
                driver = ChatDriver(nursery)
                await _warm_up(run, driver, upstream)
                await _idle(run)
                await _cells(run, driver, upstream)
                nursery.cancel_scope.cancel()
            for name, server in run.servers.items():
                final = sample_tree(server.pid)
                entry = document["servers"].setdefault(name, {})
                entry.update(rss_end_mib=final.rss_mib, cpu_total_s=final.cpu_s)
        document["mock"]["cpu_total_s"] = sample_tree(mock.pid).cpu_s


def _plan(delay_ms: float, tokens: int) -> Any:
    params = variant_params(delay_ms, tokens)
    return plan("text", {f"mock.{k}": v for k, v in params.items()})


def _spec(run: _Run, cell: CellPlan, upstream: dict[str, str], *, label: str) -> CellSpec:
    server = run.servers[cell.pipe]
    return CellSpec(
        label=label,
        base=server.base,
        pid=server.pid,
        users=server.users,
        model=model_id(server.pipe, upstream[variant_name(cell.delay_ms)]),
        mode=cell.mode,
        level=cell.level,
        per_worker=cell.per_worker,
        expect=run.expect[cell.delay_ms],
        timeout_s=run.options.chat_timeout_s,
    )


async def _warm_up(run: _Run, driver: ChatDriver, upstream: dict[str, str]) -> None:
    """A few uncounted chats per server, pacing and mode, all servers at once."""
    say("warming up (uncounted chats on every server, every pacing and mode)")
    problems: list[str] = []

    async def one(pipe: str) -> None:
        for delay_ms in run.options.delays:
            for mode in run.options.modes:
                cell = CellPlan(-1, delay_ms, _WARMUP_LEVEL, mode, pipe, 1)
                result = await driver.run_cell(_spec(run, cell, upstream, label="warm-up"))
                bad = [r["error"] for r in result["chats"] if not r["ok"]]
                if bad:
                    problems.append(f"{pipe} {mode} {pacing_label(delay_ms)}: {bad[0]}")

    async with trio.open_nursery() as nursery:
        for pipe in run.options.pipes:
            nursery.start_soon(one, pipe)
    if problems:
        raise SetupError("warm-up chats failed: " + "; ".join(problems))


async def _idle(run: _Run) -> None:
    """Each server's CPU while nobody chats (all read over the same seconds)."""
    before = {name: sample_tree(server.pid) for name, server in run.servers.items()}
    await trio.sleep(_IDLE_S)
    for name, server in run.servers.items():
        after = sample_tree(server.pid)
        idle = (after.cpu_s - before[name].cpu_s) / _IDLE_S * 100.0
        run.document["servers"][name] = {
            "base": server.base,
            "pid": server.pid,
            "log": str(server.log),
            "idle_cpu_percent": idle,
            "rss_start_mib": after.rss_mib,
            "users": len(server.users),
        }
        say(f"  {name}: idle CPU {idle:.1f} %, RSS {after.rss_mib:.0f} MiB after warm-up")


async def _idle_rates(run: _Run) -> dict[str, float]:
    """Every server's CPU seconds per second while no chat runs, read over the same time."""
    await trio.sleep(_IDLE_PAUSE_S)
    before = {name: sample_tree(server.pid).cpu_s for name, server in run.servers.items()}
    await trio.sleep(_IDLE_SAMPLE_S)
    return {
        name: (sample_tree(server.pid).cpu_s - before[name]) / _IDLE_SAMPLE_S
        for name, server in run.servers.items()
    }


async def _cells(run: _Run, driver: ChatDriver, upstream: dict[str, str]) -> None:
    options, document = run.options, run.document
    cells = plan_cells(options)
    deadline = time.monotonic() + options.max_minutes * 60.0
    started = time.monotonic()
    group: tuple[int, float, int, str] | None = None
    idle: dict[str, float] = {}
    for index, cell in enumerate(cells, start=1):
        if time.monotonic() > deadline:
            document["stopped_early"] = f"--max-minutes {options.max_minutes:g} reached"
            say(f"time budget reached: {len(cells) - index + 1} of {len(cells)} cells not run")
            return
        if group != (cell.rep, cell.delay_ms, cell.level, cell.mode):
            group = (cell.rep, cell.delay_ms, cell.level, cell.mode)
            idle = await _idle_rates(run)
        label = (
            f"rep {cell.rep + 1}/{options.reps} · {pacing_label(cell.delay_ms)} · "
            f"{cell.level} chats · {cell.mode} · {cell.pipe}"
        )
        say(f"cell {index}/{len(cells)}: {label} ({cell.level * cell.per_worker} chats)")
        result = await driver.run_cell(
            _spec(run, cell, upstream, label=label), progress=_Progress(time.monotonic())
        )
        record = {
            **asdict(cell),
            "tokens": options.tokens,
            "idle_cpu_per_s": idle.get(cell.pipe),
            **result,
        }
        document["cells"].append(record)
        _say_cell(record, time.monotonic() - started, index, len(cells))
        _write(run)


@dataclass(slots=True)
class _Progress:
    """A line every ``_PROGRESS_EVERY_S`` while a long cell runs."""

    started: float
    last: float = 0.0

    def __call__(self, done: int, total: int, failed: int) -> None:
        now = time.monotonic()
        if now - max(self.last, self.started) >= _PROGRESS_EVERY_S and done < total:
            self.last = now
            say(f"    {done}/{total} chats, {failed} failed, {now - self.started:.0f} s")


def _say_cell(record: dict[str, Any], elapsed: float, index: int, total: int) -> None:
    chats = record["chats"]
    good = [r for r in chats if r["ok"]]
    tokens = len(good) * record["tokens"]
    cpu = f"{record['cpu_s'] * 1e6 / tokens:.0f} µs/token" if tokens else "no tokens"
    ttft = sorted(r["ttft_s"] for r in good if r["ttft_s"] is not None)
    median = f"{ttft[len(ttft) // 2] * 1000:.0f} ms" if ttft else "-"
    first_error = next((r["error"] for r in chats if not r["ok"]), "")
    failed = f", {len(chats) - len(good)} FAILED ({first_error[:100]})" if first_error else ""
    span = record["window_s"] + record["settle_s"]
    others = f", others {record['others_cpu_s'] * 100 / span:.0f} % CPU" if span > 0 else ""
    say(
        f"  → {cpu}, TTFT p50 {median}, {len(good)}/{len(chats)} ok{failed}, "
        f"{record['window_s']:.1f} s{others} "
        f"(elapsed {elapsed / 60:.1f} min, cell {index}/{total})"
    )


def _write(run: _Run) -> Path:
    document = run.document
    summaries = summarize(document["cells"])
    document["summaries"] = [s.as_dict() for s in summaries]
    path = write_results(run.options.out_dir, document)
    (run.options.out_dir / "tables.md").write_text(render(document), encoding="utf-8")
    return path


def render(document: Mapping[str, Any]) -> str:
    """The tables of a run's document (what is printed at the end and kept in tables.md)."""
    summaries = summarize(document["cells"])
    if not summaries:
        return ""
    titles = {pipe.name: pipe.title for pipe in PIPES}
    pipes = document["options"]["pipes"]
    tables = format_tables(summaries, pipes, titles)
    return tables + "\n" + format_memory(document["servers"], document["cells"], pipes, titles)


def _new_document(options: RealOptions) -> dict[str, Any]:
    return {
        "bench": "owui-real",
        "options": {
            **{k: v for k, v in asdict(options).items() if k not in {"venv", "out_dir"}},
            "venv": str(options.venv),
        },
        "code": code_state(),
        "machine": machine_info(),
        "started_at": utc_now(),
        "finished_at": None,
        "interrupted": False,
        "method": {
            "cpu": "utime+stime of the Open WebUI server's process tree (/proc, all threads) "
            "from just before the first POST to 0.5 s after the last answer ended, over "
            "the tokens of complete, correct answers",
            "servers": "one open-webui serve per pipe, same environment "
            "(bench.owui_real_servers.server_env): title, tags, follow-up, autocomplete, "
            "search and retrieval query generation off; model access control bypassed; "
            "no Redis; one uvicorn worker",
            "chats": "one user and one socket.io connection per concurrent chat; socket mode "
            "posts as Open WebUI's page does for a new chat and reads the answer from "
            "socket.io events; http mode reads the POST's SSE stream",
            "order": "per repetition, pacing, concurrency and mode, every pipe in turn, the "
            "first pipe rotating",
        },
        "servers": {},
        "cells": [],
        "summaries": [],
    }


def run_real(options: RealOptions) -> tuple[dict[str, Any], Exception | None]:
    """Install, run everything; returns the document and the error that stopped it, if any."""
    options.out_dir.mkdir(parents=True, exist_ok=True)
    document = _new_document(options)
    expect = {d: _plan(d, options.tokens).text for d in options.delays}
    run = _Run(options=options, document=document, expect=expect)
    try:
        return _install_and_run(run)
    finally:
        for directory in run.cleanup:
            shutil.rmtree(directory, ignore_errors=True)


def _install_and_run(run: _Run) -> tuple[dict[str, Any], Exception | None]:
    document = run.document
    error: Exception | None = None
    options = run.options
    try:
        run.orpipe_root = install_measured(
            ref=options.ref,
            venv=options.venv if options.install else None,
            code=document["code"],
            cleanup=run.cleanup,
            say=say,
        )
    except (SetupError, subprocess.CalledProcessError) as exc:
        document["error"] = f"{type(exc).__name__}: {exc}"
        document["finished_at"] = utc_now()
        _write(run)
        return document, exc

    async def main_task() -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def on_sigint() -> None:
                    async for _ in signals:
                        document["interrupted"] = True
                        say("interrupted: stopping, keeping what was measured")
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(on_sigint)
                await _run(run)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main_task)
    except Exception as exc:
        error = exc
        document["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        document["finished_at"] = utc_now()
        _write(run)
    return document, error


# -- command line --------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(positive_int(part) for part in text.split(",") if part.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(non_negative_float(part) for part in text.split(",") if part.strip())


def _names(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)}, got {text!r}")
        return names

    return parse


#: The numeric options: flag, type, the ``RealOptions`` field it sets, help.
_NUMBERS: tuple[tuple[str, Callable[[str], float], str, str], ...] = (
    ("--tokens", positive_int, "tokens", "tokens per answer (200)"),
    (
        "--chats-per-worker",
        positive_int,
        "chats_per_worker",
        "chats each concurrent user runs per cell (2)",
    ),
    (
        "--min-chats",
        positive_int,
        "min_chats",
        "at least this many chats per cell, at low concurrency (8)",
    ),
    ("--chat-timeout", positive_float, "chat_timeout_s", "seconds one chat may take (300)"),
    (
        "--max-minutes",
        positive_float,
        "max_minutes",
        "start no new cell after this many minutes (90)",
    ),
)


def _parser(prog: str) -> argparse.ArgumentParser:
    defaults = RealOptions(out_dir=Path("."))
    parser = argparse.ArgumentParser(
        prog=prog, description="The pipes inside real Open WebUI 0.12.4 servers, under load."
    )
    parser.add_argument(
        "--levels", type=_ints, default=defaults.levels, help="concurrent chats (1,16,64,200)"
    )
    parser.add_argument(
        "--delays", type=_floats, default=defaults.delays, help="ms per token, 0 = flat out"
    )
    parser.add_argument("--reps", type=positive_int, default=defaults.reps, help="repetitions")
    parser.add_argument(
        "--pipes",
        type=_names([pipe.name for pipe in PIPES]),
        default=defaults.pipes,
        help="columns (orpipe,orpipe_guest,builtin,bare,floor)",
    )
    parser.add_argument("--modes", type=_names(MODES), default=defaults.modes, help="socket,http")
    for flag, kind, name, help_text in _NUMBERS:
        parser.add_argument(flag, type=kind, default=getattr(defaults, name), help=help_text)
    parser.add_argument("--venv", type=Path, default=defaults.venv, help="Open WebUI's virtualenv")
    parser.add_argument(
        "--ref",
        help="measure this commit (git archive, e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not reinstall this project into the virtualenv first",
    )
    parser.add_argument("--out", type=Path, help="output directory (bench/results/owui-real-…)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench owui-real") -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if "builtin" not in args.pipes:
        say("note: without the builtin column there are no ratios")
    for delay in args.delays:  # the mock takes each pacing as a variant: check it here
        params = variant_params(delay, args.tokens)
        parse_variant(f"{variant_name(delay)}=" + "&".join(f"{k}={v}" for k, v in params.items()))
    options = RealOptions(
        levels=args.levels,
        delays=args.delays,
        reps=args.reps,
        pipes=args.pipes,
        modes=args.modes,
        tokens=args.tokens,
        chats_per_worker=args.chats_per_worker,
        min_chats=args.min_chats,
        chat_timeout_s=args.chat_timeout,
        max_minutes=args.max_minutes,
        venv=args.venv.expanduser().resolve(),
        install=not args.no_install,
        ref=args.ref,
        out_dir=args.out if args.out is not None else default_out_dir("owui-real"),
    )
    if REPO in options.venv.parents:
        parser.error("the Open WebUI virtualenv must live outside the repository")
    cells = plan_cells(options)
    say(
        f"{len(cells)} cells: levels {list(options.levels)}, pacing "
        f"{[pacing_label(d) for d in options.delays]}, modes {list(options.modes)}, "
        f"pipes {list(options.pipes)}, {options.reps} rep(s); at most "
        f"{options.max_minutes:g} min; results in {options.out_dir}"
    )
    document, error = run_real(options)
    tables = render(document)
    if tables:
        print(tables)
    status = "interrupted" if document["interrupted"] else "failed" if error else "done"
    say(f"{status}; results: {options.out_dir / 'results.json'}")
    if error is not None:
        say(f"error: {error}")
        return 1
    return 130 if document["interrupted"] else 0
