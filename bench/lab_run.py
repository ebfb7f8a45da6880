"""One research-bench run: the mock, the engine, the open-loop load, the sampler, the report.

Owns the order of a run and its ways out. The mock runs in its own process;
the engine runs here with the scenario's ``[engine]`` overrides (and the
caller's). Three tasks share one nursery:

* the **sender** sends each planned arrival on time (``trio.sleep_until``),
  each request in its own task, however many are still running (open loop);
* the **sampler** records, every interval, the engine's channel occupancy
  and in-flight count and the process's resident memory (read off the
  event loop);
* the **progress** line (``rich``) shows the phase, offered/answered/
  rejected, and in-flight.

After the last arrival the run waits up to ``drain_s`` for requests still
streaming, then cancels them. Ctrl-C cancels the run the same way and the
results are still written, marked ``"interrupted": true``. Then:
``results.json``, the plots and one self-contained HTML report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from orpipe.bench.fake_tools import FakeTools, LatencyModel
from orpipe.bench.lab_goals import goals
from orpipe.bench.lab_load import (
    Arrival,
    Recorder,
    capacity_rps,
    latency_cdf,
    latency_summary,
    plan_arrivals,
)
from orpipe.bench.lab_scenario import LabScenario

if TYPE_CHECKING:
    from orpipe.bench.chaos import Chaos
from orpipe.bench.engine_client import open_mock_engine
from orpipe.bench.mock_process import running_mock
from orpipe.bench.report import RunOutcome, machine_info, utc_now
from orpipe.engine import (
    AdmissionRejected,
    Cancelled,
    ChatRequest,
    Completed,
    Engine,
    EngineConfig,
    Failed,
    TextDelta,
)
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.errors import RequestShed
from orpipe.engine.tools import toolbox

__all__ = ["LabOptions", "LabOutcome", "run_lab"]

_IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class LabOptions:
    """A validated request for one research run (``bench.lab_cli`` builds it)."""

    scenario: LabScenario
    #: Engine config with the ``--set`` overrides; the scenario's ``[engine]`` go on top.
    config: EngineConfig
    out_dir: Path
    #: Multiplies every phase's duration (tests run the built-ins at 0.1).
    time_scale: float = 1.0
    #: Seconds between two samples of the engine's channels and of RSS.
    interval_s: float = 0.25
    #: None: the scenario's ``drain_s``.
    drain_s: float | None = None
    #: Show the live progress line.
    progress: bool = True
    #: Also write the PNG plots and the HTML report.
    report: bool = True


@dataclass(slots=True, kw_only=True)
class LabOutcome(RunOutcome):
    """The run's document, and every file written (results, plots, report)."""

    files: dict[str, Path] = field(default_factory=dict)


async def run_lab(options: LabOptions) -> LabOutcome:
    """Run the scenario and write its results; an interrupted run still writes them."""
    scenario = options.scenario
    config = options.config.with_overrides(dict(scenario.engine))
    options.out_dir.mkdir(parents=True, exist_ok=True)
    capacity = None
    if any(p.capacity_x is not None for p in scenario.phases):
        capacity = capacity_rps(scenario, config.max_concurrent_requests)
    arrivals = plan_arrivals(scenario, capacity=capacity, time_scale=options.time_scale)
    run = _Run(options, config, arrivals, capacity)
    try:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.cancel_on_sigint, signals, nursery.cancel_scope)
                await run.execute()
                nursery.cancel_scope.cancel()
    finally:
        document = run.document()
        results_path = options.out_dir / "results.json"
        text = json.dumps(document, indent=2, default=str)
        await trio.Path(results_path).write_text(text, encoding="utf-8")
    files: dict[str, Path] = {"results": results_path}
    if options.report:
        files.update(await trio.to_thread.run_sync(_write_report, document, options.out_dir))
    return LabOutcome(document=document, results_path=results_path, files=files)


def _write_report(document: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    from orpipe.bench.html_report import write_html  # noqa: PLC0415 - matplotlib is heavy
    from orpipe.bench.plots import write_plots  # noqa: PLC0415

    plots = write_plots(document, out_dir)
    return {**plots, "report": write_html(document, plots, out_dir)}


class _Run:
    def __init__(
        self,
        options: LabOptions,
        config: EngineConfig,
        arrivals: list[Arrival],
        capacity: float | None,
    ) -> None:
        self.options = options
        self.scenario = options.scenario
        self.config = config
        self.arrivals = arrivals
        self.capacity = capacity
        self.recorder = Recorder(interval_s=options.interval_s)
        self.samples: dict[str, list[Any]] = {"t_s": [], "in_flight": [], "rss_mb": []}
        self.channels: dict[str, dict[str, Any]] = {}
        self.started_at = utc_now()
        self.interrupted = False
        self.t0 = 0.0
        self.running = 0
        self.cpu_s = 0.0
        self.phase_now = ""
        self.statistics: dict[str, Any] = {}
        self.chaos: Chaos | None = None
        self.chaos_report: dict[str, Any] = {}
        self.tools: FakeTools | None = None
        if self.scenario.mix.get("tools"):
            self.tools = FakeTools(LatencyModel(0.02, 0.2, seed=self.scenario.seed))

    async def cancel_on_sigint(self, signals: Any, scope: trio.CancelScope) -> None:
        async for _ in signals:
            self.interrupted = True
            scope.cancel()
            return

    async def execute(self) -> None:
        out = self.options.out_dir
        async with contextlib.AsyncExitStack() as stack:
            mock = await stack.enter_async_context(running_mock(log_path=out / "mock.log"))
            config = dataclasses.replace(self.config, base_url=mock.base_url)
            store = None
            if self.scenario.chaos:
                from orpipe.bench.chaos import chaos_store  # noqa: PLC0415 - services only when asked

                store, self.chaos = await stack.enter_async_context(
                    chaos_store(self.scenario.chaos)
                )
            async with open_mock_engine(config, artifacts=store) as engine:
                cpu_start = time.process_time()
                try:
                    await self._load(engine)
                    if self.chaos is not None:
                        self.chaos_report = await self.chaos.settle(engine)
                finally:
                    self.cpu_s = time.process_time() - cpu_start
                    self.statistics = engine.statistics().as_dict()
            if self.chaos is not None:  # the engine closed: its final flush is done
                self.chaos_report["rows_in_sql"] = await self.chaos.count_rows()

    async def _load(self, engine: Engine) -> None:
        self.t0 = trio.current_time()
        async with trio.open_nursery() as background:
            background.start_soon(self._sample, engine)
            if self.chaos is not None:
                background.start_soon(self.chaos.run, self._now, self.t0, self.options.time_scale)
            if self.options.progress:
                background.start_soon(self._progress)
            async with trio.open_nursery() as requests:
                for arrival in self.arrivals:
                    await trio.sleep_until(self.t0 + arrival.at_s)
                    self.phase_now = self.scenario.phases[arrival.phase].name
                    requests.start_soon(self._one, engine, arrival)
                # Open loop done: give what still streams its time, then stop it.
                drain = self.options.drain_s or self.scenario.drain_s
                requests.cancel_scope.deadline = trio.current_time() + drain
            await trio.sleep(self.options.interval_s)  # one last sample after the drain
            background.cancel_scope.cancel()

    def _now(self) -> float:
        return trio.current_time() - self.t0

    async def _one(self, engine: Engine, arrival: Arrival) -> None:
        recorder = self.recorder
        request = self._request(arrival)
        submitted = trio.current_time()
        recorder.on_offered(self._now())
        try:
            stream = engine.submit(request)
        except AdmissionRejected:
            recorder.on_rejected(self._now(), trio.current_time() - submitted)
            return
        self.running += 1
        first: float | None = None
        try:
            async with stream:
                with trio.move_on_after(arrival.cancel_after_s or float("inf")):
                    while events := await stream.receive_batch():
                        if first is None and any(isinstance(e, TextDelta) for e in events):
                            first = trio.current_time()
                        if self.scenario.consumer_delay_ms:
                            await trio.sleep(self.scenario.consumer_delay_ms / 1000)
        except trio.Cancelled:
            # The drain ran out or the run was interrupted: still accounted for.
            recorder.on_admitted(stream.admission_wait_s)
            recorder.on_cancelled(self._now())
            raise
        finally:
            self.running -= 1
        self._ended(arrival, stream, submitted, first)

    def _ended(self, arrival: Arrival, stream: Any, submitted: float, first: float | None) -> None:
        recorder, now = self.recorder, trio.current_time()
        ending = stream.ending
        if isinstance(ending, Failed) and isinstance(ending.error, RequestShed):
            recorder.on_rejected(self._now(), now - submitted)  # shed from the waiting room
            return
        recorder.on_admitted(stream.admission_wait_s)
        if isinstance(ending, Completed):
            ttft = None if first is None else first - submitted
            recorder.on_completed(arrival, self._now(), now - submitted, ttft)
        elif isinstance(ending, Failed):
            recorder.on_failed(self._now(), type(ending.error).__name__)
        elif ending is None or isinstance(ending, Cancelled):
            recorder.on_cancelled(self._now())  # ours (cancel-storm), or left unread
        else:
            recorder.on_failed(self._now(), type(ending).__name__)  # Incomplete

    def _request(self, arrival: Arrival) -> ChatRequest:
        scenario = self.scenario
        metadata = {
            "mock.tokens": str(arrival.tokens),
            "mock.tps": f"{scenario.tps:g}",
            "mock.seed": str(scenario.seed),
        }
        model, tools = "mock/text", None
        content: list[dict[str, Any]] = [{"type": "input_text", "text": "bench"}]
        if arrival.kind == "reasoning":
            model = "mock/reasoning"
        elif arrival.kind == "tools" and self.tools is not None:
            model, tools = "mock/tools", toolbox(self.tools.tool())
            metadata.update({"mock.calls": "2", "mock.rounds": "1"})
        elif arrival.kind == "multimodal":
            content.append({"type": "input_image", "image_url": _IMAGE, "detail": "auto"})
        if arrival.fault is not None:
            model = f"mock/{arrival.fault}"
            metadata["mock.retry_after"] = str(arrival.retry_after)
            metadata["mock.fail_times"] = str(arrival.fail_times)
            # The mock counts attempts per key: one key per planned request.
            metadata["mock.attempt_key"] = f"lab-{scenario.seed}-{arrival.index}"
        return ChatRequest(
            model=model,
            input=({"type": "message", "role": "user", "content": content},),
            options={"metadata": metadata},
            tools=tools,
            # Chaos runs store every request's artifacts (reasoning, tool items).
            artifacts=(
                ArtifactContext(
                    chat_id=f"lab-{scenario.seed}", message_id=f"m{arrival.index}",
                    reasoning="conversation",
                )
                if self.chaos is not None
                else None
            ),
        )  # fmt: skip

    async def _sample(self, engine: Engine) -> None:
        while True:
            statistics = engine.statistics()
            self.samples["t_s"].append(round(self._now(), 3))
            self.samples["in_flight"].append(statistics.admission.in_flight)
            self.samples["rss_mb"].append(await trio.to_thread.run_sync(_rss_mb))
            index = len(self.samples["t_s"]) - 1
            for name, channel in statistics.channels.items():
                entry = self.channels.setdefault(
                    name,
                    {
                        "capacity": channel.max_buffer_size,
                        "used": [0] * index,
                        "waiting_send": [0] * index,
                    },
                )
                entry["used"].append(channel.current_buffer_used)
                entry["waiting_send"].append(channel.tasks_waiting_send)
            await trio.sleep(self.options.interval_s)

    async def _progress(self) -> None:
        from rich.console import Console  # noqa: PLC0415

        console = Console(stderr=True)
        total = len(self.arrivals)
        with console.status("") as status:
            while True:
                r = self.recorder
                status.update(
                    f"[bold]{self.scenario.name}[/] {self.phase_now} · t={self._now():5.1f} s · "
                    f"offered {r.offered}/{total} · done {r.completed} · rejected {r.rejected} "
                    f"· failed {r.failed} · in flight {self.running}"
                )
                await trio.sleep(0.5)

    # -- the document ----------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        r, scenario = self.recorder, self.scenario
        length = len(self.samples["t_s"])
        buckets_len = max(length, max((len(v) for v in r.buckets.values()), default=0))
        t_s = [round(i * self.options.interval_s, 3) for i in range(buckets_len)]
        elapsed = sum(p.duration_s for p in scenario.phases) * self.options.time_scale
        timeline = {
            "interval_s": self.options.interval_s,
            "t_s": t_s,
            **{name: r.series(name, buckets_len) for name in
               ("offered", "goodput", "rejected", "failed", "cancelled")},
            "in_flight": _pad(self.samples["in_flight"], buckets_len),
            "channels": {
                name: {
                    "capacity": c["capacity"],
                    "used": _pad(c["used"], buckets_len),
                    "waiting_send": _pad(c["waiting_send"], buckets_len),
                }
                for name, c in sorted(self.channels.items())
            },
        }  # fmt: skip
        document: dict[str, Any] = {
            "kind": "lab",
            "scenario": scenario.as_dict(),
            "config": self.config.as_dict(),
            "overrides": dict(scenario.engine),
            "machine": machine_info(),
            "started_at": self.started_at,
            "finished_at": utc_now(),
            "interrupted": self.interrupted,
            "time_scale": self.options.time_scale,
            "capacity_rps": self.capacity,
            "planned_requests": len(self.arrivals),
            "summary": {
                "offered": r.offered,
                "admitted": r.admitted,
                "rejected": r.rejected,
                "completed": r.completed,
                "failed": r.failed,
                "cancelled": r.cancelled,
                "failures": dict(r.failures),
                "offered_rps": r.offered / elapsed if elapsed else None,
                "goodput_rps": r.completed / elapsed if elapsed else None,
                "peak_goodput_rps": r.peak_goodput_rps(),
                "ttft_ms": latency_summary(r.ttft),
                "e2e_ms": latency_summary(r.e2e),
                "admission_wait_ms": latency_summary(r.admission_wait),
                "rejection_ms": latency_summary(r.rejection),
            },
            "latency_cdf": {
                "ttft_ms": latency_cdf(r.ttft),
                "e2e_ms": latency_cdf(r.e2e),
                "rejection_ms": latency_cdf(r.rejection),
                "admission_wait_ms": latency_cdf(r.admission_wait),
            },
            "timeline": timeline,
            "phases": self._phases(),
            "process": {"rss_mb": _pad(self.samples["rss_mb"], buckets_len), "cpu_s": self.cpu_s},
            "engine_statistics": self.statistics,
        }
        if self.tools is not None:
            document["tools"] = {
                "calls": self.tools.completed,
                "latency_ms": self.tools.durations.summary(),
            }
        if self.chaos is not None:
            persister = self.statistics.get("actors", {}).get("persister", {})
            document["chaos"] = {
                "events": self.chaos.events,
                "artifacts_accepted": persister.get("accepted", 0),
                "artifacts_written": persister.get("written", 0),
                "artifacts_lost": persister.get("lost", 0),
                "write_failures": persister.get("write_failures", 0),
                "backlog_peak": persister.get("backlog_peak", 0),
                **self.chaos_report,
            }
        document["goals"] = goals(document, self.recorder)
        return document

    def _phases(self) -> list[dict[str, Any]]:
        out, start = [], 0.0
        for phase in self.scenario.phases:
            duration = phase.duration_s * self.options.time_scale
            first, last = phase.rates(self.capacity or 0.0)
            out.append(
                {
                    "name": phase.name,
                    "start_s": start,
                    "end_s": start + duration,
                    "rate_rps": first,
                    "rate_to_rps": last,
                    "tokens": phase.tokens or self.scenario.tokens,
                }
            )
            start += duration
        return out


def _pad(values: list[Any], length: int) -> list[Any]:
    if len(values) >= length:
        return values[:length]
    fill = values[-1] if values else 0
    return values + [fill] * (length - len(values))


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * _PAGE / 1_048_576
