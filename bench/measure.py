"""One phase of a ``bench run`` on trio: the closed loop and the figures it reports.

Owns ``Phase`` (a ``bench.meter.Meter`` that counts upstream events and
reports them per request and per CPU second) and ``drive`` (the closed loop
of ``concurrency`` trio workers, bounded in time and in count, then a
bounded drain). The two clients (``bench.baseline``, ``bench.engine_client``)
only supply "run one request" and "upstream events so far"; everything they
are compared on is measured here, the same way for both.

Workers may start spread over ``stagger_s`` (a paced load: users do not
arrive in the same millisecond); the warm-up should outlast the spread.
Ctrl-C cancels ``drive``: the window closes with what it measured, and
every request still in flight is counted as unfinished.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from orpipe.bench.meter import (
    LoopCalls,
    Meter,
    OneRequest,
    run_worker,
    show_progress,
    stderr_is_tty,
)

__all__ = ["Phase", "drive"]

#: How long in-flight streams may take to finish after the window closes.
_DRAIN_S = 30.0
_TRIO_CALLS = LoopCalls(sleep=trio.sleep, to_thread=trio.to_thread.run_sync)


class Phase(Meter):
    """One phase (baseline or engine): the meter, counting upstream events."""

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
        super().__init__(name, concurrency=concurrency, warmup_s=warmup_s, duration_s=duration_s)
        #: Worker ``i`` starts ``i / concurrency * stagger_s`` after the phase does.
        self.stagger_s = stagger_s
        #: What the live progress line calls the phase (the runner adds the row).
        self.title = title or name
        #: Upstream events so far; the client installs its own counter.
        self.events_now: Callable[[], int] = lambda: 0
        self.event_source = ""
        #: CPU seconds of the mock process so far (None where unknown), for context only.
        self.mock_cpu_now: Callable[[], float | None] = lambda: None

    def units_now(self) -> int:
        return self.events_now()

    def progress_text(self, elapsed_s: float, stage: str, units_per_s: float) -> str:
        return (
            f"[{self.title}] {elapsed_s:5.1f}/{self.total_s:.0f} s {stage} "
            f"completed {self.finished:>6}  events/s {units_per_s:>8,.0f}"
        )

    def open_window(self) -> None:
        self._open(self.mock_cpu_now())

    def close_window(self) -> None:
        """Idempotent; also called on Ctrl-C, so an interrupted phase keeps its figures."""
        self._close(self.mock_cpu_now() if self.window_open else None)

    def result(self) -> dict[str, Any]:
        window = self.window()
        events = window.units if window is not None else 0
        counts = self.outcome_counts()
        counts["admitted"] = counts["submitted"] - counts["rejected"]
        cpu = self.cpu_figures(window)
        return {
            "phase": self.name,
            "concurrency": self.concurrency,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "stagger_s": self.stagger_s,
            "window_s": cpu["window_s"],
            "event_source": self.event_source,
            "events": events,
            "events_per_s": window.per_s(events) if window is not None else 0.0,
            "cpu_s": cpu["cpu_s"],
            "cpu_us_per_event": cpu["cpu_s"] * 1e6 / events if events > 0 else None,
            "cpu_share_of_one_core": cpu["cpu_share_of_one_core"],
            "mock_cpu_share_of_one_core": cpu["mock_cpu_share_of_one_core"],
            "requests": counts,
            "outcome_details": dict(self.details),
            "warmup_requests": self.warmup_count,
            "ttft_ms": self.first.summary(),
            "e2e_ms": self.whole.summary(),
            **self.extra,
        }


async def drive(phase: Phase, one_request: OneRequest) -> None:
    """Run the closed loop: warm up, count for ``duration_s``, then drain."""
    async with trio.open_nursery() as outer:
        if stderr_is_tty():
            outer.start_soon(show_progress, phase, _TRIO_CALLS)
        try:
            async with trio.open_nursery() as workers:
                for index in range(phase.concurrency):
                    delay = phase.stagger_s * index / phase.concurrency
                    worker = partial(run_worker, phase, one_request, _TRIO_CALLS, delay_s=delay)
                    workers.start_soon(worker, name=f"{phase.name}-{index}")
                await trio.sleep(phase.warmup_s)
                phase.open_window()
                await trio.sleep(phase.duration_s)
                phase.close_window()
                workers.cancel_scope.deadline = trio.current_time() + _DRAIN_S
        finally:
            phase.close_window()
            outer.cancel_scope.cancel()
