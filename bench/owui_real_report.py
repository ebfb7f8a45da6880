"""The ``owui-real`` bench's figures: cells summed up over repetitions, and the printed tables.

Pure functions over the raw cells ``bench.owui_real`` records (one dict per cell and
repetition, with one record per chat): no I/O, no clock, so tests can feed them by hand.

Per (mode, pacing, chats, pipe) ``summarize`` gives:

* **CPU µs per token**: the Open WebUI server's CPU across the window (its process tree,
  ``utime + stime`` from ``/proc``, every thread) over the tokens delivered in complete,
  correct answers; the median over repetitions, with the lowest and highest;
* **CPU µs per token above idle**: the same, less what the server used while idle (read
  over 2 s before each group of cells: socket.io pings of connected pages, periodic tasks),
  for the window's length; at low load and slow pacing the idle part is a large share;
* **TTFT** and **end to end** p50/p99 over every correct chat of every repetition, pooled
  (from just before the POST to the first answer text / the last event);
* **tokens/s**: tokens delivered over the window (first POST to last answer), median;
* **chunks per answer**: how many pieces the client received per answer (socket.io events
  carrying text, or SSE chunks with content), mean;
* **RSS growth per chat**: the server's resident set after the window minus before, per
  chat, in KiB (median; Python seldom hands memory back, so a steady positive figure over
  repetitions is what matters, not one cell's);
* failed chats (wrong text, errors, timeouts), which never count as delivered tokens;
* **others' CPU**: what programs other than the bench (its mock and servers included) used
  during the window, in % of one CPU, the highest over repetitions; a cell where it passed
  ``BUSY_MACHINE_PERCENT`` is marked, since another load on a two-core machine moves
  every figure.

``format_tables`` prints them as Markdown tables, one set per mode, with every pipe's CPU
as a ratio to Open WebUI's built-in OpenAI connection on the same row; ``format_memory``
adds each server's resident set from after the warm-up to the end of the run, per chat.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

__all__ = [
    "BASELINE_PIPE",
    "CellSummary",
    "format_memory",
    "format_tables",
    "pacing_label",
    "percentile",
    "summarize",
]

#: The column every ratio is taken against.
BASELINE_PIPE = "builtin"
#: Others' CPU (% of one CPU) above which a cell is marked as measured on a busy machine.
BUSY_MACHINE_PERCENT = 10.0
_BUSY_MARK = " †"
_MODE_TITLES = {
    "socket": "socket.io (as the browser: POST, then the answer over socket.io)",
    "http": "HTTP (as an API client: the answer as the POST's SSE stream)",
}


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def pacing_label(delay_ms: float) -> str:
    if delay_ms <= 0:
        return "flat out"
    return f"{delay_ms:g} ms ({1000.0 / delay_ms:g} tok/s)"


@dataclass(frozen=True, slots=True)
class CellSummary:
    """One table cell: a pipe at one pacing and concurrency, over its repetitions."""

    mode: str
    delay_ms: float
    level: int
    pipe: str
    reps: int
    chats: int
    failed: int
    cpu_us_per_token: float | None
    cpu_us_min: float | None
    cpu_us_max: float | None
    #: CPU per token less the server's idle CPU over the window (None: not recorded).
    cpu_above_idle_us: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    e2e_p50_s: float | None
    e2e_p99_s: float | None
    tokens_per_s: float | None
    chunks_per_answer: float | None
    rss_kib_per_chat: float | None
    first_error: str
    #: The highest share of one CPU other programs used in a window of this cell; None when
    #: not recorded.
    others_cpu_percent: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(cell: Mapping[str, Any]) -> tuple[str, float, int, str]:
    return (str(cell["mode"]), float(cell["delay_ms"]), int(cell["level"]), str(cell["pipe"]))


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(key: tuple[str, float, int, str], cells: Sequence[Mapping[str, Any]]) -> CellSummary:
    mode, delay_ms, level, pipe = key
    cpu, rate, rss, above = [], [], [], []
    ttft: list[float] = []
    e2e: list[float] = []
    chunks: list[int] = []
    chats = failed = 0
    first_error = ""
    others: list[float] = []
    for cell in cells:
        if cell.get("others_cpu_s") is not None:
            span = float(cell["window_s"]) + float(cell.get("settle_s", 0.0))
            others.append(float(cell["others_cpu_s"]) * 100.0 / span if span > 0 else 0.0)
        records = cell["chats"]
        good = [r for r in records if r["ok"]]
        chats += len(records)
        failed += len(records) - len(good)
        first_error = first_error or next((r["error"] for r in records if not r["ok"]), "")
        tokens = len(good) * int(cell["tokens"])
        if tokens:
            cpu.append(float(cell["cpu_s"]) * 1e6 / tokens)
            if cell.get("idle_cpu_per_s") is not None:
                span = float(cell["window_s"]) + float(cell.get("settle_s", 0.0))
                spent = float(cell["cpu_s"]) - float(cell["idle_cpu_per_s"]) * span
                above.append(spent * 1e6 / tokens)
        if tokens and cell["window_s"] > 0:
            rate.append(tokens / float(cell["window_s"]))
        if records:
            grown = float(cell["rss_after_mib"]) - float(cell["rss_before_mib"])
            rss.append(grown * 1024.0 / len(records))
        ttft += [float(r["ttft_s"]) for r in good if r["ttft_s"] is not None]
        e2e += [float(r["e2e_s"]) for r in good if r["e2e_s"] is not None]
        chunks += [int(r["chunks"]) for r in good]

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000.0

    return CellSummary(
        mode=mode,
        delay_ms=delay_ms,
        level=level,
        pipe=pipe,
        reps=len(cells),
        chats=chats,
        failed=failed,
        cpu_us_per_token=_median(cpu),
        cpu_us_min=min(cpu) if cpu else None,
        cpu_us_max=max(cpu) if cpu else None,
        cpu_above_idle_us=_median(above),
        ttft_p50_ms=ms(percentile(ttft, 0.50)),
        ttft_p99_ms=ms(percentile(ttft, 0.99)),
        e2e_p50_s=percentile(e2e, 0.50),
        e2e_p99_s=percentile(e2e, 0.99),
        tokens_per_s=_median(rate),
        chunks_per_answer=statistics.fmean(chunks) if chunks else None,
        rss_kib_per_chat=_median(rss),
        first_error=first_error,
        others_cpu_percent=max(others) if others else None,
    )


def summarize(cells: Iterable[Mapping[str, Any]]) -> list[CellSummary]:
    """Group raw cells by (mode, pacing, chats, pipe) and sum each group up."""
    groups: dict[tuple[str, float, int, str], list[Mapping[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(_key(cell), []).append(cell)
    return [_summary(key, groups[key]) for key in sorted(groups)]


# -- tables -----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _cpu_cell(cell: CellSummary, baseline: CellSummary | None) -> str:
    if cell.cpu_us_per_token is None:
        return "-"
    text = _num(cell.cpu_us_per_token)
    if cell.reps > 1 and cell.cpu_us_min is not None and cell.cpu_us_max is not None:
        text += f" [{_num(cell.cpu_us_min)}..{_num(cell.cpu_us_max)}]"
    if (
        baseline is not None
        and baseline is not cell
        and baseline.cpu_us_per_token
        and cell.pipe != BASELINE_PIPE
    ):
        text += f" ({cell.cpu_us_per_token / baseline.cpu_us_per_token:.2f}x)"
    return text


def _above_idle_cell(cell: CellSummary, baseline: CellSummary | None) -> str:
    if cell.cpu_above_idle_us is None:
        return "-"
    text = _num(cell.cpu_above_idle_us)
    base = None if baseline is None else baseline.cpu_above_idle_us
    if base and cell.pipe != BASELINE_PIPE:
        text += f" ({cell.cpu_above_idle_us / base:.2f}x)"
    return text


def _failed(cell: CellSummary) -> str:
    return f" ⚠{cell.failed}/{cell.chats} failed" if cell.failed else ""


def _busy(cell: CellSummary) -> str:
    others = cell.others_cpu_percent
    return _BUSY_MARK if others is not None and others > BUSY_MACHINE_PERCENT else ""


def _latency_cell(cell: CellSummary) -> str:
    ttft = f"{_num(cell.ttft_p50_ms)}/{_num(cell.ttft_p99_ms)}"
    e2e = f"{_num(cell.e2e_p50_s, 2)}/{_num(cell.e2e_p99_s, 2)}"
    return f"{ttft} · {e2e}{_failed(cell)}"


def _flow_cell(cell: CellSummary) -> str:
    rss = "-" if cell.rss_kib_per_chat is None else f"{cell.rss_kib_per_chat:+.0f}"
    return f"{_num(cell.tokens_per_s)} · {_num(cell.chunks_per_answer)} · {rss}"


def _table(
    title: str,
    *,
    pipes: Sequence[str],
    titles: Mapping[str, str],
    rows: Sequence[tuple[float, int]],
    cells: Mapping[tuple[float, int, str], CellSummary],
    render: Any,
) -> list[str]:
    head = ["pacing", "chats at once", *(titles.get(pipe, pipe) for pipe in pipes)]
    lines = [f"#### {title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join(["---"] * 2 + ["--:"] * len(pipes)) + "|")
    for delay_ms, level in rows:
        baseline = cells.get((delay_ms, level, BASELINE_PIPE))
        rendered = []
        for pipe in pipes:
            cell = cells.get((delay_ms, level, pipe))
            rendered.append("-" if cell is None else render(cell, baseline))
        lines.append(f"| {pacing_label(delay_ms)} | {level} | " + " | ".join(rendered) + " |")
    return [*lines, ""]


def format_tables(
    summaries: Sequence[CellSummary], pipes: Sequence[str], titles: Mapping[str, str]
) -> str:
    """Markdown tables: per mode, CPU per token (with ratios), latencies, flow."""
    out: list[str] = []
    modes = sorted({s.mode for s in summaries}, key=lambda m: (m != "socket", m))
    for mode in modes:
        mine = [s for s in summaries if s.mode == mode]
        cells = {(s.delay_ms, s.level, s.pipe): s for s in mine}
        rows = sorted({(s.delay_ms, s.level) for s in mine})
        reps = max((s.reps for s in mine), default=0)
        out.append(f"### {_MODE_TITLES.get(mode, mode)}")
        out.append("")
        spread = " [lowest..highest]" if reps > 1 else ""
        table = partial(_table, pipes=pipes, titles=titles, rows=rows, cells=cells)
        out += table(
            f"Open WebUI CPU µs per token, median of {reps} rep(s){spread} (x built-in)",
            render=lambda cell, baseline: _cpu_cell(cell, baseline) + _failed(cell) + _busy(cell),
        )
        if any(_busy(s) for s in mine):
            out += [
                f"{_BUSY_MARK.strip()} other programs used more than "
                f"{BUSY_MACHINE_PERCENT:g} % of a CPU during a repetition of this cell.",
                "",
            ]
        if any(s.cpu_above_idle_us is not None for s in mine):
            out += table(
                "Open WebUI CPU µs per token above its idle CPU, median (x built-in)",
                render=_above_idle_cell,
            )
        out += table(
            "TTFT p50/p99 ms · end to end p50/p99 s",
            render=lambda cell, _baseline: _latency_cell(cell),
        )
        out += table(
            "tokens/s · chunks per answer · RSS growth KiB per chat",
            render=lambda cell, _baseline: _flow_cell(cell),
        )
    return "\n".join(out).rstrip() + "\n"


def format_memory(
    servers: Mapping[str, Mapping[str, Any]],
    cells: Iterable[Mapping[str, Any]],
    pipes: Sequence[str],
    titles: Mapping[str, str],
) -> str:
    """Each server's RSS after the warm-up and at the end, and the growth per chat run."""
    chats = dict.fromkeys(pipes, 0)
    for cell in cells:
        if cell["pipe"] in chats:
            chats[cell["pipe"]] += len(cell["chats"])
    lines = [
        "#### Open WebUI resident memory over the run",
        "",
        "| server | after warm-up MiB | at the end MiB | chats | KiB per chat |",
        "|---|--:|--:|--:|--:|",
    ]
    for pipe in pipes:
        server = servers.get(pipe, {})
        start, end = server.get("rss_start_mib"), server.get("rss_end_mib")
        per_chat = "-"
        if start is not None and end is not None and chats[pipe]:
            per_chat = f"{(float(end) - float(start)) * 1024.0 / chats[pipe]:+.1f}"
        lines.append(
            f"| {titles.get(pipe, pipe)} | {_num(start)} | {_num(end)} | {chats[pipe]} "
            f"| {per_chat} |"
        )
    return "\n".join(lines) + "\n"
