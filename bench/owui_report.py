"""Presenting an Open WebUI bench run: speed, memory and ratio tables.

Owns the shape of the ``owui`` report only, in the style of
``bench.report`` (phase left, numbers right, a rule above and below the
rows); every figure comes from the ``results.json`` document that
``bench.owui_run`` assembles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["format_owui_report", "owui_shape"]

Column = tuple[str, Callable[[Mapping[str, Any]], str]]


def _num(value: Any, pattern: str) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return pattern.format(value)


def _ms(value: Any) -> str:
    return _num(value, "{:,.1f}")


def _mib(value: Any) -> str:
    return _num(value, "{:,.1f}")


def _ratio(value: Any) -> str:
    return _num(value, "{:.2f}")


def _failed(phase: Mapping[str, Any]) -> str:
    chats = phase["chats"]
    return str(chats["failed"] + chats["unfinished"])


def _run_chats(phase: Mapping[str, Any]) -> str:
    rows = phase["rss_series"]["rows"]
    return f"{rows[-1][1]:,}" if rows else "-"


_SPEED: tuple[Column, ...] = (
    ("phase", lambda p: str(p["phase"])),
    ("chats", lambda p: str(p["chats"]["completed"])),
    ("refused", lambda p: str(p["chats"]["rejected"])),
    ("failed", _failed),
    ("chunks", lambda p: f"{p['chunks']:,}"),
    ("chunks/chat", lambda p: _num(p["chunks_per_chat"], "{:.1f}")),
    ("chats/s", lambda p: _num(p["chats_per_s"], "{:,.0f}")),
    ("CPU µs/chunk", lambda p: _num(p["cpu_us_per_chunk"], "{:.1f}")),
    ("CPU µs/chat", lambda p: _num(p["cpu_us_per_chat"], "{:,.0f}")),
    ("TTFC p50 ms", lambda p: _ms(p["ttfc_ms"]["p50_ms"])),
    ("TTFC p99 ms", lambda p: _ms(p["ttfc_ms"]["p99_ms"])),
    ("chat p50 ms", lambda p: _ms(p["chat_ms"]["p50_ms"])),
    ("chat p99 ms", lambda p: _ms(p["chat_ms"]["p99_ms"])),
)

_MEMORY: tuple[Column, ...] = (
    ("phase", lambda p: str(p["phase"])),
    ("RSS start MiB", lambda p: _mib(p["rss_mib"]["start"])),
    ("after warm-up", lambda p: _mib(p["rss_mib"]["after_warmup"])),
    ("end", lambda p: _mib(p["rss_mib"]["end"])),
    ("after close", lambda p: _mib(p["rss_mib"]["after_close"])),
    ("added", lambda p: _num(p["rss_mib"]["added"], "{:+,.1f}")),
    ("chats in run", _run_chats),
    ("slope MiB/1000 chats", lambda p: _num(p["rss_mib"]["slope_per_1000_chats"], "{:+.3f}")),
)

_RATIOS: tuple[Column, ...] = (
    ("ratio", lambda r: str(r["name"])),
    ("CPU/chat", lambda r: _ratio(r.get("cpu_us_per_chat"))),
    ("CPU/chunk", lambda r: _ratio(r.get("cpu_us_per_chunk"))),
    ("chats/s", lambda r: _ratio(r.get("chats_per_s"))),
    ("TTFC p50", lambda r: _ratio(r.get("ttfc_p50_ms"))),
    ("TTFC p99", lambda r: _ratio(r.get("ttfc_p99_ms"))),
    ("chat p50", lambda r: _ratio(r.get("chat_p50_ms"))),
    ("chat p99", lambda r: _ratio(r.get("chat_p99_ms"))),
    ("RSS added", lambda r: _ratio(r.get("rss_added_mib"))),
    ("RSS end", lambda r: _ratio(r.get("rss_end_mib"))),
)


def _aligned(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cells = [[cell(row) for _, cell in columns] for row in rows]
    titles = [title for title, _ in columns]
    widths = [max(len(titles[i]), *(len(r[i]) for r in cells)) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.ljust(widths[i]) if i == 0 else value.rjust(widths[i])
            for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    header = line(titles)
    rule = "-" * len(header)
    return [header, rule, *(line(r) for r in cells), rule]


def format_owui_report(document: Mapping[str, Any]) -> str:
    """The three tables (speed, memory, ratios) and what their units mean."""
    measured = document["phases"]
    phases = [measured[name] for name in document["phase_order"] if name in measured]
    if not phases:
        return "no phase was measured"
    ratios = [{"name": name, **values} for name, values in document.get("ratios", {}).items()]
    lines = _aligned(_SPEED, phases)
    lines += ["", *_aligned(_MEMORY, phases)]
    if ratios:
        lines += ["", *_aligned(_RATIOS, ratios)]
    lines += [
        "TTFC: pipe() called → first chunk; chat: → generator exhausted. CPU: this process, "
        "mock excluded.",
        "A baseline chunk is one SSE event, a pipe chunk one item Open WebUI reads: CPU is "
        "compared per chat.",
        "slope: RSS against chats finished over the second half of the counted window "
        "(≈ 0: levelled off).",
    ]
    return "\n".join(lines)


def owui_shape(document: Mapping[str, Any]) -> str:
    """One line: the offered load and the loop."""
    s = document["scenario"]
    return (
        f"{s['concurrency']} chats at once, {s['tokens']} tokens each, tps {s['tps']:g}, "
        f"{s['events_per_write']} event(s)/write, {s['warmup_s']:g} s warm-up + "
        f"{s['duration_s']:g} s counted per phase, on {document['loop']}"
    )
