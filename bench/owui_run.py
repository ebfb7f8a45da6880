"""One Open WebUI bench run, start to finish: mock up, baseline, guest, thread, report.

Owns the order of an ``owui`` run and its ways out, and what it is given:

* ``owui_options`` validates ``--set`` for this scenario: an upper-case name
  is a valve of the Function (``Valves``), a lower-case one an engine knob
  (``EngineConfig``), handed to the pipe through its ``ENGINE_OVERRIDES``
  valve, the way an administrator would. The valves the bench itself sets
  (``BASE_URL``, ``API_KEY``, ``ENGINE_BRIDGE``) cannot be overridden.
* ``run_owui`` starts the mock as a child process (``bench.mock_process``),
  then runs the phases in order, each on its own fresh loop
  (``bench.owui_load.run_phase``): ``baseline`` (bare httpx on asyncio),
  ``guest`` (the pipe, ``ENGINE_BRIDGE=guest``), ``thread`` (the pipe,
  ``ENGINE_BRIDGE=thread``). All in this process, so CPU and RSS are the
  pipe's, the mock excluded.

``results.json`` is rewritten after every phase and on every way out, so a
failed or interrupted run (Ctrl-C: ``"interrupted": true``) keeps what was
measured. The pipe's own log lines go to ``owui.log`` beside it, not to the
terminal. The artifact store is the default one (SQLite) in the run's
directory, and Redis write-behind is off unless ``--set`` turns it on.

Note on memory: the phases share one process, so a phase starts with what
the earlier ones left resident (Python rarely hands freed memory back). Each
phase's RSS is therefore read at its own start, and compared by what it
added and by its slope, not only by its absolute level.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from orpipe.adapters.openwebui.valves import ValveError, Valves
from orpipe.bench.engine_client import MOCK_API_KEY
from orpipe.bench.mock_process import MockProcess, mock_stats, running_mock_child
from orpipe.bench.owui_load import PhaseKind, PhaseSpec, loop_name, run_phase
from orpipe.bench.owui_measure import ChatMeter, phase_ratios, ratio_directions, read_rss_mib
from orpipe.bench.report import RunOutcome, machine_info, utc_now, write_results
from orpipe.bench.scenarios import BenchScenario
from orpipe.engine import EngineConfig

__all__ = ["PHASES", "OwuiOptions", "owui_options", "run_owui"]

PHASES: tuple[PhaseKind, ...] = ("baseline", "guest", "thread")
_BENCH_VALVES = frozenset({"BASE_URL", "API_KEY", "ENGINE_BRIDGE"})
_CLIENTS: Mapping[PhaseKind, tuple[str, str]] = {
    "baseline": (
        "bare httpx streaming on the same loop, SSE split, one JSON decode per event",
        "SSE event decoded (excluding [DONE])",
    ),
    "guest": (
        "Pipe.pipe() of adapters/owui_pipe.py, ENGINE_BRIDGE=guest (trio guest mode on the loop)",
        "item yielded by the pipe's answer generator",
    ),
    "thread": (
        "Pipe.pipe() of adapters/owui_pipe.py, ENGINE_BRIDGE=thread (a dedicated trio thread)",
        "item yielded by the pipe's answer generator",
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class OwuiOptions:
    """A validated request for one ``owui`` run (the CLI builds it with ``owui_options``)."""

    scenario: BenchScenario
    #: ``--set`` as given.
    overrides: Mapping[str, str] = field(default_factory=dict)
    #: Valves of the Function from ``--set`` (upper-case names), as text.
    valves: Mapping[str, str] = field(default_factory=dict)
    out_dir: Path


def owui_options(
    scenario: BenchScenario, overrides: Mapping[str, str], out_dir: Path
) -> OwuiOptions:
    """Validated options, or ``ValueError``/``ConfigError`` with a one-line reason."""
    valves: dict[str, str] = {}
    knobs: dict[str, str] = {}
    for name, value in overrides.items():
        if name in _BENCH_VALVES:
            raise ValueError(f"--set {name} is not allowed: the bench sets it for each phase")
        if name in Valves.model_fields:
            valves[name] = value
        else:
            knobs[name] = value
    EngineConfig().with_overrides(knobs)  # unknown names and bad values, with the known ones
    if knobs:
        given = valves.get("ENGINE_OVERRIDES", "")
        pairs = [given] if given.strip() else []
        valves["ENGINE_OVERRIDES"] = ", ".join([*pairs, *(f"{k}={v}" for k, v in knobs.items())])
    options = OwuiOptions(
        scenario=scenario, overrides=dict(overrides), valves=valves, out_dir=out_dir
    )
    _check_valves(options)
    return options


def _check_valves(options: OwuiOptions) -> None:
    try:
        Valves(**_phase_valves(options, "http://127.0.0.1:9/api/v1", "guest")).engine_config()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ValueError(f"Invalid valve setting: {problems}") from None
    except ValveError as exc:
        raise ValueError(exc.message) from None


def _phase_valves(options: OwuiOptions, base_url: str, kind: PhaseKind) -> dict[str, Any]:
    return {
        # The default store (SQLite), kept in the run's directory; no Redis unless asked.
        "ARTIFACT_DATABASE_URL": f"sqlite:///{options.out_dir / 'orpipe-artifacts.db'}",
        "ENABLE_REDIS_CACHE": False,
        **options.valves,
        "BASE_URL": base_url,
        "API_KEY": MOCK_API_KEY,
        "ENGINE_BRIDGE": kind if kind != "baseline" else "guest",
    }


def run_owui(options: OwuiOptions) -> RunOutcome:
    """Run the phases and write ``results.json``; errors are returned, not raised. Blocking."""
    document = _new_document(options)
    outcome = RunOutcome(document=document)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (
            _pipe_log(options.out_dir / "owui.log"),
            running_mock_child(log_path=options.out_dir / "mock.log") as mock,
        ):
            document["mock"]["pid"] = mock.pid
            for kind in PHASES:
                if _run_one(options, document, mock, kind):
                    document["interrupted"] = True
                    break
    except KeyboardInterrupt:  # between phases, or before a phase took over SIGINT
        document["interrupted"] = True
    except Exception as exc:
        outcome.error = exc
        document["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        document["finished_at"] = utc_now()
        outcome.results_path = _write(options, document)
    return outcome


def _run_one(
    options: OwuiOptions, document: dict[str, Any], mock: MockProcess, kind: PhaseKind
) -> bool:
    """One phase, recorded whatever happens; True if Ctrl-C stopped it."""
    scenario = options.scenario
    client, unit = _CLIENTS[kind]
    meter = ChatMeter(
        kind,
        client=client,
        chunk_unit=unit,
        concurrency=scenario.concurrency,
        warmup_s=scenario.warmup_s,
        duration_s=scenario.duration_s,
        mock_cpu_now=mock.cpu_seconds,
    )
    meter.rss_start_mib = read_rss_mib()
    spec = PhaseSpec(
        kind=kind,
        base_url=mock.base_url,
        mock_params=_mock_params(scenario),
        model_scenario=scenario.model_scenario,
        valves=_phase_valves(options, mock.base_url, kind) if kind != "baseline" else {},
    )
    interrupted = True  # unless the phase returns
    try:
        interrupted = run_phase(spec, meter)
    except KeyboardInterrupt:
        pass
    finally:
        meter.rss_after_close_mib = read_rss_mib()
        document["phases"][kind] = meter.result()
        document["mock"][f"after_{kind}"] = mock_stats(mock)
        _write(options, document)
    return interrupted


def _mock_params(scenario: BenchScenario) -> dict[str, str]:
    return {key.removeprefix("mock."): value for key, value in scenario.mock_metadata().items()}


def _write(options: OwuiOptions, document: dict[str, Any]) -> Path:
    document["ratios"] = phase_ratios(document["phases"])
    return write_results(options.out_dir, document)


@contextmanager
def _pipe_log(path: Path) -> Iterator[None]:
    """The pipe's log lines (``orpipe.*``) to a file, written by a listener thread."""
    logger = logging.getLogger("orpipe")
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    file_handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    listener = logging.handlers.QueueListener(records, file_handler)
    handler = logging.handlers.QueueHandler(records)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    listener.start()
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        listener.stop()
        file_handler.close()


def _new_document(options: OwuiOptions) -> dict[str, Any]:
    valves = _phase_valves(options, "<the mock>", "guest")
    config = Valves(**{**valves, "BASE_URL": "http://127.0.0.1:9/api/v1"}).engine_config()
    return {
        "scenario": options.scenario.as_dict(),
        "overrides": dict(options.overrides),
        "valves": {
            k: v for k, v in valves.items() if k not in {"API_KEY", "ENGINE_BRIDGE", "BASE_URL"}
        },
        "config": {k: v for k, v in config.as_dict().items() if k != "base_url"},
        "loop": loop_name(),
        "machine": machine_info(),
        "started_at": utc_now(),
        "finished_at": None,
        "interrupted": False,
        "mock": {"processes": 1, "command": "python -m bench.mock_openrouter --port 0"},
        "phase_order": list(PHASES),
        "cpu_measure": (
            "time.process_time() of the bench process (every thread, the mock excluded), "
            "across the counted window"
        ),
        "rss_measure": "resident set of the bench process, /proc/self/statm, read in a thread",
        "ratio_basis": (
            "CPU is compared per chat (each chat is the same upstream stream); per chunk only "
            "between the pipe phases, whose chunks are the same thing"
        ),
        "ratio_better": ratio_directions(),
        "phases": {},
        "ratios": {},
    }
