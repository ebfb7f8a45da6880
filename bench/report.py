"""Presenting a run: the grid table, the phase table, and ``results.json``.

Owns the shape of the report, and what every run shares: where it writes
(``default_out_dir``) and what it hands back (``RunOutcome``: its document,
where it was written, why it stopped). The grid table has one line per row
of the grid (``bench.grid``), from the row summaries ``bench.row_summary``
makes; the phase table shows every figure of each phase of a run of one row
measured once (``tools`` by default). Every figure comes from
``Phase.result()`` dictionaries assembled by ``bench.runner``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from orpipe.bench.row_summary import CPU_RATIO_GOAL

__all__ = [
    "RunOutcome",
    "default_out_dir",
    "format_grid_table",
    "format_table",
    "goal_line",
    "machine_info",
    "pace_notes",
    "utc_now",
    "write_results",
]

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("phase", "phase"),
    ("admitted", "admitted"),
    ("rejected", "rejected"),
    ("failed", "failed"),
    ("completed", "completed"),
    ("events/s", "events_per_s"),
    ("TTFT p50 ms", "ttft_p50"),
    ("TTFT p99 ms", "ttft_p99"),
    ("e2e p50 ms", "e2e_p50"),
    ("e2e p99 ms", "e2e_p99"),
    ("CPU µs/event", "cpu_us_per_event"),
)


def _cells(result: Mapping[str, Any]) -> dict[str, str]:
    requests = result["requests"]
    ttft, e2e = result["ttft_ms"], result["e2e_ms"]
    return {
        "phase": result["phase"],
        "admitted": str(requests["admitted"]),
        "rejected": str(requests["rejected"]),
        "failed": str(requests["failed"] + requests["unfinished"]),
        "completed": str(requests["completed"]),
        "events_per_s": f"{result['events_per_s']:,.0f}",
        "ttft_p50": _ms(ttft["p50_ms"]),
        "ttft_p99": _ms(ttft["p99_ms"]),
        "e2e_p50": _ms(e2e["p50_ms"]),
        "e2e_p99": _ms(e2e["p99_ms"]),
        "cpu_us_per_event": _num(result["cpu_us_per_event"], "{:.1f}"),
    }


def _ms(value: float | None) -> str:
    return _num(value, "{:,.1f}")


def _num(value: float | None, pattern: str) -> str:
    return "-" if value is None or not math.isfinite(value) else pattern.format(value)


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Every phase's figures: an aligned plain-text table, phase left, numbers right."""
    return _aligned(_COLUMNS, [_cells(r) for r in results], left={"phase"})


_GRID_COLUMNS: tuple[tuple[str, str], ...] = (
    ("regime", "regime"),
    ("streams", "streams"),
    ("reps", "reps"),
    ("baseline µs/ev", "baseline"),
    ("engine µs/ev", "engine"),
    ("ratio (min\N{EN DASH}max)", "ratio"),
    ("goal", "goal"),
    ("verdict", "verdict"),
    ("TTFT p50 ms b/e", "ttft"),
    ("events/s b/e", "events"),
    ("failed", "failed"),
)


def format_grid_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per row of the grid: medians over its repetitions and the verdict.

    ``rows`` are ``results.json``'s rows, each with its ``summary``; "b/e" is
    baseline / engine, and "failed" counts the requests that failed, were cut
    off at the end of the drain or were rejected, in any phase of the row.
    """
    return _aligned(_GRID_COLUMNS, [_grid_cells(row) for row in rows], left={"regime", "verdict"})


def goal_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """How many rows meet the goal: ``goal: engine/baseline CPU per event ≤ 1.15 ...``."""
    verdicts = [row["summary"]["verdict"] for row in rows]
    counts = [f"{verdicts.count(v)} {v}" for v in ("ok", "OVER", "n/a") if v in verdicts]
    return (
        f"goal: engine/baseline CPU per event ≤ {CPU_RATIO_GOAL:.2f} in every row "
        f"(median of the repetitions' ratios): {', '.join(counts)}"
    )


def pace_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A line for each paced row that could not keep its pace: it measured a saturated load."""
    notes = []
    for row in rows:
        summary = row["summary"]
        if summary["pace_kept"] is not False:
            continue
        offered = summary["offered_events_per_s"]
        baseline = summary["baseline_events_per_s"] / offered
        engine = summary["engine_events_per_s"] / offered
        notes.append(
            f"note: {row['regime_label']} {row['streams']} streams offered {offered:,.0f} "
            f"events/s and got {baseline:.0%} (baseline) / {engine:.0%} (engine): this machine "
            f"cannot keep that pace, so the row measured a saturated load, not a paced one"
        )
    return notes


def _grid_cells(row: Mapping[str, Any]) -> dict[str, str]:
    summary = row["summary"]
    planned, measured = len(row["reps"]), summary["reps_measured"]
    ratio, low, high = summary["cpu_ratio"], summary["cpu_ratio_min"], summary["cpu_ratio_max"]
    ratio_text = _num(ratio, "{:.2f}")
    if ratio is not None and measured > 1:
        ratio_text += f" ({low:.2f}\N{EN DASH}{high:.2f})"
    return {
        "regime": row["regime_label"],
        "streams": str(row["streams"]),
        "reps": str(measured) if measured == planned else f"{measured}/{planned}",
        "baseline": _num(summary["baseline_cpu_us_per_event"], "{:.1f}"),
        "engine": _num(summary["engine_cpu_us_per_event"], "{:.1f}"),
        "ratio": ratio_text,
        "goal": f"≤{summary['cpu_ratio_goal']:.2f}",
        "verdict": summary["verdict"],
        "ttft": f"{_ms(summary['baseline_ttft_p50_ms'])} / {_ms(summary['engine_ttft_p50_ms'])}",
        "events": (
            f"{_num(summary['baseline_events_per_s'], '{:,.0f}')} / "
            f"{_num(summary['engine_events_per_s'], '{:,.0f}')}"
        ),
        "failed": str(summary["requests_not_completed"]),
    }


def _aligned(
    columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, str]], *, left: set[str]
) -> str:
    """Header, rule, rows, rule: ``left`` columns flush left, the others flush right."""
    widths = {
        key: max(len(title), *(len(row[key]) for row in rows)) if rows else len(title)
        for title, key in columns
    }

    def line(values: Mapping[str, str]) -> str:
        parts = [
            values[key].ljust(widths[key]) if key in left else values[key].rjust(widths[key])
            for _, key in columns
        ]
        return "  ".join(parts).rstrip()

    header = line({key: title for title, key in columns})
    rule = "-" * len(header)
    return "\n".join([header, rule, *(line(row) for row in rows), rule])


def tools_lines(phases: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The tool phase's own figures, next to the plain streaming phase; [] without tools."""
    tools_phase = phases.get("engine+tools")
    if not tools_phase or "tools" not in tools_phase:
        return []
    tools = tools_phase["tools"]
    plain = phases.get("engine", {})
    lines = [
        f"tool calls: {tools['completed']:,} completed of {tools['calls']:,} "
        f"({tools_phase['events_per_s']:.0f}/s in the window), {tools['rounds']:,} rounds",
        f"slot waits: per request {_share(tools['per_request_saturation'])} of calls, "
        f"global {_share(tools['global_saturation'])}",
        f"tool latency (in the tools): p50 {_ms(tools['tool_latency_ms']['p50_ms'])} ms, "
        f"p99 {_ms(tools['tool_latency_ms']['p99_ms'])} ms "
        f"(asked: median {tools['latency_model']['median_ms']:g} ms, "
        f"p99 {tools['latency_model']['p99_ms']:g} ms)",
    ]
    with_tools = tools_phase.get("e2e_ms", {}).get("p50_ms")
    without = plain.get("e2e_ms", {}).get("p50_ms")
    if with_tools and without:
        lines.append(
            f"end-to-end p50 with tools / without: {with_tools / without:.2f} "
            f"({with_tools:.0f} ms vs {without:.0f} ms)"
        )
    return lines


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


RESULTS_ROOT = Path(__file__).resolve().parent / "results"


def default_out_dir(name: str) -> Path:
    """``bench/results/<name>-<UTC time>``: where a run writes when ``--out`` is not given."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS_ROOT / f"{name}-{stamp}"


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


def write_results(directory: Path, document: Mapping[str, Any]) -> Path:
    """Write ``results.json`` atomically (a half-written file never replaces a good one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    temporary = directory / "results.json.tmp"
    temporary.write_text(json.dumps(_plain(document), indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)
    return path


def _plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null, unknown objects their ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def machine_info() -> dict[str, Any]:
    """Where a run happened, for ``results.json`` (every bench scenario records it)."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "trio": trio.__version__,
        "httpx": httpx.__version__,
        "executable": sys.executable,
    }


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
