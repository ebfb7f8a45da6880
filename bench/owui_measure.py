"""Measuring one phase of the Open WebUI bench: its window, chats, chunks, CPU, latency, RSS.

Owns ``ChatMeter`` (a ``bench.meter.Meter`` counting the pipe's chunks, plus
the resident-memory series and its slope), the probes it
reads (``read_rss_mib``, the mock's CPU), and ``phase_ratios`` (every
figure of a pipe phase over the same figure of the baseline measured in the
same run, and guest over thread). Plain synchronous code with no event loop
of its own: ``bench.owui_load`` drives it from asyncio and reads the probes
in a worker thread, so file reads never run on the loop.

The window is the meter's (``bench.meter``); CPU is ``time.process_time()``
of this process, so the thread bridge's trio thread counts as much as the
loop thread does.

Memory is the process's resident set (``/proc/self/statm``), sampled with
the number of chats finished so far. ``slope`` is the least-squares fit of
RSS against chats over the second half of the counted window, in MiB per
1000 chats: near zero when memory has levelled off, steadily positive when
every chat leaves something behind.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orpipe.bench.meter import Meter, Window

__all__ = [
    "RATIO_PAIRS",
    "ChatMeter",
    "Probe",
    "phase_ratios",
    "ratio_directions",
    "read_rss_mib",
    "slope_per_1000",
]

_MIB = 1024.0 * 1024.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")

#: (numerator phase, denominator phase) of every ratio reported.
RATIO_PAIRS: tuple[tuple[str, str], ...] = (
    ("guest", "baseline"),
    ("thread", "baseline"),
    ("guest", "thread"),
)


def read_rss_mib() -> float | None:
    """Resident set size of this process in MiB (Linux); None where unknown. Blocking."""
    try:
        resident_pages = int(_STATM.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * _PAGE_BYTES / _MIB


@dataclass(frozen=True, slots=True)
class Probe:
    """What is read off the loop at one moment: our RSS and the mock's CPU so far."""

    rss_mib: float | None
    mock_cpu_s: float | None


class ChatMeter(Meter):
    """One phase (baseline, guest or thread): the meter, counting chunks, plus RSS."""

    def __init__(
        self,
        name: str,
        *,
        client: str,
        chunk_unit: str,
        concurrency: int,
        warmup_s: float,
        duration_s: float,
        mock_cpu_now: Callable[[], float | None] = lambda: None,
    ) -> None:
        super().__init__(name, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s)
        self.client = client
        self.chunk_unit = chunk_unit
        self.mock_cpu_now = mock_cpu_now
        #: Chunks the client has received so far (all of them, warm-up included).
        self.chunks = 0
        #: Event types the pipe sent to ``__event_emitter__`` (counts only).
        self.emitted: collections.Counter[str] = collections.Counter()
        #: (seconds since the phase started, chats finished so far, RSS MiB)
        self.rss_series: list[tuple[float, int, float]] = []
        self.rss_start_mib: float | None = None
        self.rss_after_warmup_mib: float | None = None
        self.rss_end_mib: float | None = None
        self.rss_after_close_mib: float | None = None

    def units_now(self) -> int:
        return self.chunks

    def count_chunk(self) -> None:
        self.chunks += 1

    def progress_text(self, elapsed_s: float, stage: str, units_per_s: float) -> str:
        rss = self.rss_series[-1][2] if self.rss_series else 0.0
        return (
            f"[{self.name:<8}] {elapsed_s:5.1f}/{self.total_s:g} s {stage} "
            f"chats {self.finished:>7}  chunks/s {units_per_s:>9,.0f}  RSS {rss:6.1f} MiB"
        )

    # -- probes (blocking: call them from a worker thread when a loop runs) ------

    def probe(self) -> Probe:
        return Probe(read_rss_mib(), self.mock_cpu_now())

    def sample(self, probe: Probe) -> None:
        if probe.rss_mib is not None:
            self.rss_series.append((self.elapsed_s, self.finished, probe.rss_mib))

    # -- the counted window ----------------------------------------------------

    def open_window(self, probe: Probe) -> None:
        self.sample(probe)
        self.rss_after_warmup_mib = probe.rss_mib
        self._open(probe.mock_cpu_s)

    def close_window(self, probe: Probe | None = None) -> None:
        """Idempotent; without a probe (cancelled, Ctrl-C) the last RSS sample stands in."""
        if self.window_open and probe is not None:
            self.sample(probe)
        if self._close(probe.mock_cpu_s if probe is not None else None):
            self.rss_end_mib = (
                probe.rss_mib
                if probe is not None and probe.rss_mib is not None
                else (self.rss_series[-1][2] if self.rss_series else None)
            )

    # -- results -----------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        window = self.window()
        chunks = window.units if window is not None else 0
        finished = window.finished if window is not None else 0
        cpu = self.cpu_figures(window)
        cpu_s = cpu["cpu_s"]
        slope, used = _window_slope(self.rss_series, window)
        return {
            "phase": self.name,
            "client": self.client,
            "concurrency": self.concurrency,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "window_s": cpu["window_s"],
            "chats": self.outcome_counts(),
            "outcome_details": dict(self.details),
            "warmup_chats": self.warmup_count,
            "chats_finished_in_window": finished,
            "chats_per_s": window.per_s(finished) if window is not None else 0.0,
            "chunk_unit": self.chunk_unit,
            "chunks": chunks,
            "chunks_per_s": window.per_s(chunks) if window is not None else 0.0,
            "chunks_per_chat": chunks / finished if finished else None,
            "cpu_s": cpu_s,
            "cpu_us_per_chunk": cpu_s * 1e6 / chunks if chunks else None,
            "cpu_us_per_chat": cpu_s * 1e6 / finished if finished else None,
            "cpu_share_of_one_core": cpu["cpu_share_of_one_core"],
            "mock_cpu_share_of_one_core": cpu["mock_cpu_share_of_one_core"],
            "ttfc_ms": self.first.summary(),
            "chat_ms": self.whole.summary(),
            "rss_mib": {
                "start": self.rss_start_mib,
                "after_warmup": self.rss_after_warmup_mib,
                "end": self.rss_end_mib,
                "after_close": self.rss_after_close_mib,
                "added": (
                    self.rss_end_mib - self.rss_start_mib
                    if self.rss_end_mib is not None and self.rss_start_mib is not None
                    else None
                ),
                "slope_per_1000_chats": slope,
                "slope_samples": used,
                "slope_over": "second half of the counted window, RSS against chats finished",
            },
            "rss_series": {
                "columns": ["seconds", "chats_finished", "rss_mib"],
                "rows": [[round(t, 3), n, round(m, 3)] for t, n, m in self.rss_series],
            },
            "emitted_events": dict(self.emitted),
            **self.extra,
        }


def _window_slope(
    series: Sequence[tuple[float, int, float]], window: Window | None
) -> tuple[float | None, int]:
    if window is None:
        return None, 0
    start, end = window.start_s, window.end_s
    half = start + (end - start) / 2
    points = [(float(n), rss) for t, n, rss in series if half <= t <= end + 1e-6]
    return slope_per_1000(points), len(points)


def slope_per_1000(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x, times 1000; None without two distinct x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var_x = sum((x - mean_x) ** 2 for x, _ in points)
    if var_x == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var_x * 1000.0


# -- ratios ------------------------------------------------------------------------

Better = Literal["lower", "higher"]

#: What each ratio compares, and which way is better for the numerator.
_RATIO_FIGURES: tuple[tuple[str, Callable[[Mapping[str, Any]], Any], Better], ...] = (
    ("cpu_us_per_chat", lambda p: p["cpu_us_per_chat"], "lower"),
    ("chats_per_s", lambda p: p["chats_per_s"], "higher"),
    ("ttfc_p50_ms", lambda p: p["ttfc_ms"]["p50_ms"], "lower"),
    ("ttfc_p99_ms", lambda p: p["ttfc_ms"]["p99_ms"], "lower"),
    ("chat_p50_ms", lambda p: p["chat_ms"]["p50_ms"], "lower"),
    ("chat_p99_ms", lambda p: p["chat_ms"]["p99_ms"], "lower"),
    ("rss_added_mib", lambda p: p["rss_mib"]["added"], "lower"),
    ("rss_end_mib", lambda p: p["rss_mib"]["end"], "lower"),
)
#: Only between phases whose chunks are the same thing (pipe chunks, not SSE events).
_SAME_UNIT_FIGURES: tuple[tuple[str, Callable[[Mapping[str, Any]], Any], Better], ...] = (
    ("cpu_us_per_chunk", lambda p: p["cpu_us_per_chunk"], "lower"),
)


def phase_ratios(phases: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``{"guest/baseline": {figure: ratio}, ...}`` for each pair whose phases both ran.

    A ratio is None when either figure is missing or the denominator is not
    positive (e.g. a phase that added no memory).
    """
    ratios: dict[str, dict[str, float | None]] = {}
    for top, bottom in RATIO_PAIRS:
        if top not in phases or bottom not in phases:
            continue
        a, b = phases[top], phases[bottom]
        figures = list(_RATIO_FIGURES)
        if a.get("chunk_unit") == b.get("chunk_unit"):
            figures += _SAME_UNIT_FIGURES
        ratios[f"{top}/{bottom}"] = {name: _ratio(get(a), get(b)) for name, get, _ in figures}
    return ratios


def ratio_directions() -> dict[str, Better]:
    """Which way is better for each ratio's numerator (for readers of results.json)."""
    return {name: better for name, _, better in (*_RATIO_FIGURES, *_SAME_UNIT_FIGURES)}


def _ratio(top: Any, bottom: Any) -> float | None:
    if not isinstance(top, int | float) or not isinstance(bottom, int | float):
        return None
    if bottom <= 0:
        return None
    return float(top) / float(bottom)
