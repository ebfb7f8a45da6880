"""The meter every closed-loop bench shares, on trio or on asyncio: window, outcomes, latency.

Owns ``Meter``: the counted window (opened after the warm-up, closed after
the duration; CPU, upstream units and finished requests are deltas across
it), the outcome counts and HDR latencies of the requests *started* inside
it (each followed to its end), and the two coroutines every closed loop
runs: ``run_worker`` (one client of ``concurrency``) and ``show_progress``
(the live line on stderr). It imports no event loop: what a loop must
supply, sleeping and running a blocking call in a thread, comes in as a
``LoopCalls`` (``bench.measure`` passes trio's, ``bench.owui_load``
asyncio's). Time is ``time.perf_counter()``, the same clock on any loop;
CPU is ``time.process_time()`` of this process, every thread included.

A worker or progress line cancelled by its loop simply stops; the request
in flight is recorded as cut off (outcome None, "unfinished").
"""

from __future__ import annotations

import abc
import collections
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from hdrh.histogram import HdrHistogram

__all__ = [
    "COUNT_KEYS",
    "Latency",
    "LoopCalls",
    "Meter",
    "OneRequest",
    "Outcome",
    "RequestRecord",
    "Window",
    "run_worker",
    "show_progress",
    "stderr_is_tty",
]

Outcome = Literal["completed", "failed", "rejected"]
COUNT_KEYS = ("submitted", "completed", "failed", "rejected", "unfinished")

_LOWEST_US = 1
_HIGHEST_US = 120_000_000
_SIGNIFICANT_DIGITS = 3
#: Pause after a failed or rejected request, so a dead upstream is not hammered in a hot loop.
_RETRY_PAUSE_S = 0.01
#: Hard cap on requests per phase (the loop is also bounded by time).
_MAX_REQUESTS = 2_000_000
_PROGRESS_EVERY_S = 0.5


class Latency:
    """An HDR histogram of durations, in microseconds from 1 µs to 120 s."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS)

    def record(self, seconds: float) -> None:
        micros = min(max(round(seconds * 1e6), _LOWEST_US), _HIGHEST_US)
        self._hist.record_value(micros)

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def percentile_ms(self, percentile: float) -> float | None:
        if self.count == 0:
            return None
        return float(self._hist.get_value_at_percentile(percentile)) / 1000.0

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "max_ms": float(self._hist.get_max_value()) / 1000.0 if self.count else None,
        }


@dataclass(slots=True)
class RequestRecord:
    """One request as the meter sees it; the client marks its first token or chunk."""

    started: float
    measured: bool
    first: float | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.started


@dataclass(frozen=True, slots=True)
class _Mark:
    at: float
    cpu_s: float
    units: int
    finished: int
    mock_cpu_s: float | None


@dataclass(frozen=True, slots=True)
class Window:
    """What changed across the counted window; ``start_s``/``end_s`` from the phase's start."""

    start_s: float
    end_s: float
    cpu_s: float
    units: int
    finished: int
    mock_cpu_s: float | None

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    def per_s(self, amount: float) -> float:
        return amount / self.seconds if self.seconds > 0 else 0.0


class Meter(abc.ABC):
    """One phase of a closed loop: its window, outcome counts, latencies and CPU.

    A subclass names what it counts (``units_now``: upstream events, pipe
    chunks) and writes its own result and progress line.
    """

    def __init__(self, name: str, *, concurrency: int, warmup_s: float, duration_s: float) -> None:
        self.name = name
        self.concurrency = concurrency
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        self.started_at = time.perf_counter()
        self.accepting = True
        #: Requests that completed so far, warm-up included.
        self.finished = 0
        self.warmup_count = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.details: collections.Counter[str] = collections.Counter()
        #: Time to the first token (or chunk), and the whole request.
        self.first = Latency()
        self.whole = Latency()
        self.extra: dict[str, Any] = {}
        self._window_open = False
        self._opened: _Mark | None = None
        self._closed: _Mark | None = None

    @abc.abstractmethod
    def units_now(self) -> int:
        """What the phase counts so far (events, chunks), warm-up included."""

    @abc.abstractmethod
    def progress_text(self, elapsed_s: float, stage: str, units_per_s: float) -> str:
        """The live line: seconds so far, the stage (warm-up, counting, draining), the rate."""

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.duration_s

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started_at

    # -- the counted window -------------------------------------------------------

    @property
    def window_open(self) -> bool:
        return self._window_open

    def _open(self, mock_cpu_s: float | None) -> None:
        self._opened = self._mark(mock_cpu_s)
        self._window_open = True

    def _close(self, mock_cpu_s: float | None) -> bool:
        """Idempotent; True the one time the window actually closes."""
        closing = self._window_open and self._closed is None
        if closing:
            self._closed = self._mark(mock_cpu_s)
        self._window_open = False
        self.accepting = False
        return closing

    def _mark(self, mock_cpu_s: float | None) -> _Mark:
        return _Mark(
            time.perf_counter(), time.process_time(), self.units_now(), self.finished, mock_cpu_s
        )

    def window(self) -> Window | None:
        """The deltas across the window, or None if it never both opened and closed."""
        opened, closed = self._opened, self._closed
        if opened is None or closed is None:
            return None
        mock_cpu_s = None
        if opened.mock_cpu_s is not None and closed.mock_cpu_s is not None:
            mock_cpu_s = closed.mock_cpu_s - opened.mock_cpu_s
        return Window(
            start_s=opened.at - self.started_at,
            end_s=closed.at - self.started_at,
            cpu_s=closed.cpu_s - opened.cpu_s,
            units=closed.units - opened.units,
            finished=closed.finished - opened.finished,
            mock_cpu_s=mock_cpu_s,
        )

    # -- requests -----------------------------------------------------------------

    def begin(self) -> RequestRecord:
        measured = self._window_open
        if measured:
            self.counts["submitted"] += 1
        else:
            self.warmup_count += 1
        return RequestRecord(started=time.perf_counter(), measured=measured)

    def end(self, record: RequestRecord, outcome: Outcome | None, detail: str) -> None:
        """``outcome`` None: the request was cut off at the end of the drain."""
        if outcome == "completed":
            self.finished += 1
        if not record.measured:
            return
        self.counts[outcome or "unfinished"] += 1
        if detail:
            self.details[detail] += 1
        if outcome == "completed":
            self.whole.record(time.perf_counter() - record.started)
            if record.first is not None:
                self.first.record(record.first)

    # -- figures both results share -------------------------------------------------

    def outcome_counts(self) -> dict[str, int]:
        return {key: self.counts[key] for key in COUNT_KEYS}

    def cpu_figures(self, window: Window | None) -> dict[str, Any]:
        """Window length, our CPU across it, and its share of one core (the mock's too)."""
        if window is None:
            window = Window(0.0, 0.0, 0.0, 0, 0, None)
        mock = window.mock_cpu_s
        return {
            "window_s": window.seconds,
            "cpu_s": window.cpu_s,
            "cpu_share_of_one_core": window.per_s(window.cpu_s),
            "mock_cpu_share_of_one_core": (
                mock / window.seconds if mock is not None and window.seconds > 0 else None
            ),
        }


OneRequest = Callable[[RequestRecord], Awaitable[tuple[Outcome, str]]]


@dataclass(frozen=True, slots=True)
class LoopCalls:
    """The two things the closed loop needs from its event loop (trio's or asyncio's)."""

    sleep: Callable[[float], Awaitable[object]]
    #: Run a blocking call in a worker thread: ``await to_thread(fn, *args)``.
    to_thread: Callable[..., Awaitable[Any]]


async def run_worker(
    meter: Meter, one_request: OneRequest, loop: LoopCalls, *, delay_s: float = 0.0
) -> None:
    """One client: start a request as soon as the last one ended, while the meter accepts."""
    if delay_s > 0:
        await loop.sleep(delay_s)
    while meter.accepting and meter.warmup_count + meter.counts["submitted"] < _MAX_REQUESTS:
        record = meter.begin()
        outcome: Outcome | None = None
        detail = "cut off after the drain time"
        try:
            outcome, detail = await one_request(record)
        finally:
            meter.end(record, outcome, detail)
        if outcome != "completed":
            await loop.sleep(_RETRY_PAUSE_S)


async def show_progress(meter: Meter, loop: LoopCalls) -> None:
    """Rewrite one status line twice a second; each write runs in a thread, off the loop."""
    last_at, last_units = meter.elapsed_s, meter.units_now()
    try:
        while True:
            await loop.sleep(_PROGRESS_EVERY_S)
            now, units = meter.elapsed_s, meter.units_now()
            rate = (units - last_units) / max(now - last_at, 1e-9)
            last_at, last_units = now, units
            stage = "warm-up" if now < meter.warmup_s else "counting"
            if not meter.accepting:
                stage = "draining"
            text = meter.progress_text(min(now, meter.total_s), f"{stage:<8}", rate)
            await loop.to_thread(_write_stderr, "\r" + text)
    finally:
        # Erased in place (a cancelled task cannot wait for a thread); the
        # title of a grid row makes the line longer than 80 columns.
        _write_stderr("\r\x1b[K")


def stderr_is_tty() -> bool:
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
