"""Measuring one phase of a run: the closed loop, the counted window, the figures.

Owns ``Phase`` (clock, counted window, request counts, latency histograms,
client CPU), ``drive`` (the closed loop of ``concurrency`` workers, bounded
in time and in count) and the live progress line. The two clients
(``bench.baseline``, ``bench.engine_client``) only supply "run one request"
and "upstream events so far"; everything they are compared on is measured
here, the same way for both.

Workers may start spread over ``stagger_s`` (a paced load: users do not
arrive in the same millisecond); the warm-up should outlast the spread. The
counted window opens after the warm-up and closes at the end of the
duration. Events and CPU are the deltas across the window; request counts
and latencies cover the requests *started* inside it, each followed to its
end (streams still open when the drain time runs out count as unfinished).
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import trio
from hdrh.histogram import HdrHistogram

__all__ = ["Latency", "Outcome", "Phase", "RequestRecord", "drive", "stderr_is_tty"]

Outcome = Literal["completed", "failed", "rejected"]

_LOWEST_US = 1
_HIGHEST_US = 120_000_000
_SIGNIFICANT_DIGITS = 3
#: Pause after a failed or rejected request, so a dead upstream is not hammered in a hot loop.
_RETRY_PAUSE_S = 0.01
#: How long in-flight streams may take to finish after the window closes.
_DRAIN_S = 30.0
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
    """One request as the phase sees it; the client marks the first token."""

    started: float
    measured: bool
    ttft: float | None = None

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = trio.current_time() - self.started


class Phase:
    """One phase (baseline or engine): its window, counts, latencies and CPU."""

    def __init__(
        self,
        name: str,
        *,
        concurrency: int,
        warmup_s: float,
        duration_s: float,
        stagger_s: float = 0.0,
        title: str | None = None,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        #: Worker ``i`` starts ``i / concurrency * stagger_s`` after the phase does.
        self.stagger_s = stagger_s
        #: What the live progress line calls the phase (the runner adds the row).
        self.title = title or name
        #: Upstream events so far; the client installs its own counter.
        self.events_now: Callable[[], int] = lambda: 0
        self.event_source = ""
        #: CPU seconds of the mock process so far (None where unknown), for context only.
        self.mock_cpu_now: Callable[[], float | None] = lambda: None
        self.accepting = True
        self.started_at = trio.current_time()
        self.counts: collections.Counter[str] = collections.Counter()
        self.details: collections.Counter[str] = collections.Counter()
        self.ttft = Latency()
        self.e2e = Latency()
        self.warmup_requests = 0
        self.all_completed = 0
        self.extra: dict[str, Any] = {}
        self._window_open = False
        self._opened: tuple[float, float, int, float | None] | None = (
            None  # wall, cpu, events, mock
        )
        self._closed: tuple[float, float, int, float | None] | None = None

    # -- the counted window -------------------------------------------------

    def open_window(self) -> None:
        self._opened = self._sample()
        self._window_open = True

    def close_window(self) -> None:
        """Idempotent; also called on Ctrl-C, so an interrupted phase keeps its figures."""
        if self._window_open and self._closed is None:
            self._closed = self._sample()
        self._window_open = False
        self.accepting = False

    def _sample(self) -> tuple[float, float, int, float | None]:
        return (trio.current_time(), time.process_time(), self.events_now(), self.mock_cpu_now())

    # -- requests -----------------------------------------------------------

    def begin(self) -> RequestRecord:
        measured = self._window_open
        if measured:
            self.counts["submitted"] += 1
        else:
            self.warmup_requests += 1
        return RequestRecord(started=trio.current_time(), measured=measured)

    def end(self, record: RequestRecord, outcome: Outcome | None, detail: str) -> None:
        """``outcome`` None: the request was cut off at the end of the drain."""
        if outcome == "completed":
            self.all_completed += 1
        if not record.measured:
            return
        self.counts[outcome or "unfinished"] += 1
        if detail:
            self.details[detail] += 1
        if outcome == "completed":
            self.e2e.record(trio.current_time() - record.started)
            if record.ttft is not None:
                self.ttft.record(record.ttft)

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.duration_s

    # -- results ------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        window_s = events = cpu_s = 0.0
        mock_cpu_s: float | None = None
        if self._opened is not None and self._closed is not None:
            window_s = self._closed[0] - self._opened[0]
            cpu_s = self._closed[1] - self._opened[1]
            events = float(self._closed[2] - self._opened[2])
            if self._opened[3] is not None and self._closed[3] is not None:
                mock_cpu_s = self._closed[3] - self._opened[3]
        counts = {k: self.counts[k] for k in _COUNT_KEYS}
        counts["admitted"] = counts["submitted"] - counts["rejected"]
        return {
            "phase": self.name,
            "concurrency": self.concurrency,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "stagger_s": self.stagger_s,
            "window_s": window_s,
            "event_source": self.event_source,
            "events": int(events),
            "events_per_s": events / window_s if window_s > 0 else 0.0,
            "cpu_s": cpu_s,
            "cpu_us_per_event": cpu_s * 1e6 / events if events > 0 else None,
            "cpu_share_of_one_core": cpu_s / window_s if window_s > 0 else 0.0,
            "mock_cpu_share_of_one_core": (
                mock_cpu_s / window_s if mock_cpu_s is not None and window_s > 0 else None
            ),
            "requests": counts,
            "outcome_details": dict(self.details),
            "warmup_requests": self.warmup_requests,
            "ttft_ms": self.ttft.summary(),
            "e2e_ms": self.e2e.summary(),
            **self.extra,
        }


_COUNT_KEYS = ("submitted", "completed", "failed", "rejected", "unfinished")

OneRequest = Callable[[RequestRecord], Awaitable[tuple[Outcome, str]]]


async def drive(phase: Phase, one_request: OneRequest) -> None:
    """Run the closed loop: warm up, count for ``duration_s``, then drain."""
    async with trio.open_nursery() as outer:
        if stderr_is_tty():
            outer.start_soon(_progress, phase)
        try:
            async with trio.open_nursery() as workers:
                for index in range(phase.concurrency):
                    delay = phase.stagger_s * index / phase.concurrency
                    workers.start_soon(
                        _worker, phase, one_request, delay, name=f"{phase.name}-{index}"
                    )
                await trio.sleep(phase.warmup_s)
                phase.open_window()
                await trio.sleep(phase.duration_s)
                phase.close_window()
                workers.cancel_scope.deadline = trio.current_time() + _DRAIN_S
        finally:
            phase.close_window()
            outer.cancel_scope.cancel()


async def _worker(phase: Phase, one_request: OneRequest, delay_s: float) -> None:
    if delay_s > 0:
        await trio.sleep(delay_s)
    while phase.accepting and phase.warmup_requests + phase.counts["submitted"] < _MAX_REQUESTS:
        record = phase.begin()
        outcome: Outcome | None = None
        detail = "cut off after the drain time"
        try:
            outcome, detail = await one_request(record)
        finally:
            phase.end(record, outcome, detail)
        if outcome != "completed":
            await trio.sleep(_RETRY_PAUSE_S)


# -- progress line ------------------------------------------------------------


def stderr_is_tty() -> bool:
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


async def _progress(phase: Phase) -> None:
    """Rewrite one status line twice a second; the write runs in a thread, off the loop."""
    last_time, last_events = trio.current_time(), phase.events_now()
    try:
        while True:
            await trio.sleep(_PROGRESS_EVERY_S)
            now, events = trio.current_time(), phase.events_now()
            rate = (events - last_events) / max(now - last_time, 1e-9)
            last_time, last_events = now, events
            elapsed = min(now - phase.started_at, phase.total_s)
            stage = "warm-up" if elapsed < phase.warmup_s else "counting"
            if not phase.accepting:
                stage = "draining"
            line = (
                f"\r[{phase.title}] {elapsed:5.1f}/{phase.total_s:.0f} s {stage:<8} "
                f"completed {phase.all_completed:>6}  events/s {rate:>8,.0f}"
            )
            await trio.to_thread.run_sync(_write_stderr, line)
    finally:
        with trio.CancelScope(shield=True):
            # Erase to the end of the line: a row's title makes the line longer than 80.
            await trio.to_thread.run_sync(_write_stderr, "\r\x1b[K")
