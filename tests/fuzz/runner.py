"""Runs generated streams against real engines: batches, canaries, crashes, the summary.

A run is a sequence of engines, each with its own random configuration
(credit window, buffer sizes, parser workers, retries, event size limit)
and the harness's short timeouts. On each engine it plays a few batches;
a batch is ``concurrency`` generated streams at once, followed by a canary
(a plain well-formed request that must still complete with its exact text)
and a check that the engine holds no request any more.

If an engine crashes (``EngineCrashed`` leaves ``open_engine``), every
stream in flight is reported with the crash; the first few crashes are
isolated by replaying each of those streams alone on a fresh engine with
the same configuration until one crashes it again.

Everything random comes from ``random.Random`` seeded from the run's seed,
so ``--seed`` repeats a run and ``--case CLASS:SEED@CONFIG`` one stream.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from orpipe.actors import open_engine
from orpipe.adapters import OpenRouterHttpTransport
from orpipe.engine import (
    AdmissionRejected,
    ChatRequest,
    Completed,
    Engine,
    EngineConfig,
    EngineCrashed,
    EnginePorts,
    Failed,
    Incomplete,
)
from tests.fuzz.generator import CLASS_NAMES, CLASSES, generate, pick_class
from tests.fuzz.properties import Seen, Violation, judge
from tests.fuzz.script import Case, Limits, Timing
from tests.fuzz.server import FuzzServer

__all__ = [
    "ClassStats",
    "Failure",
    "FuzzOptions",
    "Summary",
    "engine_setup",
    "replay_command",
    "run_fuzz",
]

#: How often a consumer looks at the clock while it waits for events.
_TICK_S = 0.1
_API_KEY = "sk-fuzz-not-a-key"
_INPUT = ({"role": "user", "content": "fuzz"},)


@dataclass(frozen=True, slots=True, kw_only=True)
class FuzzOptions:
    seed: int = 1
    #: Stop starting batches after this long (None: no time limit).
    seconds: float | None = None
    #: Stop after this many streams (None: no count limit).
    streams: int | None = None
    concurrency: int = 16
    batches_per_engine: int = 4
    #: Only these classes (empty: all).
    only: tuple[str, ...] = ()
    #: Replay one case alone: (class, seed, config seed).
    case: tuple[str, int, int] | None = None
    #: Crashes isolated by replaying the streams in flight one by one.
    isolate_crashes: int = 3
    read_idle_timeout_s: float = 2.0
    slack_s: float = 1.5
    prompt_s: float = 1.0
    progress_every_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """One engine's configuration and what the generators and bounds need of it."""

    config_seed: int
    config: EngineConfig
    limits: Limits
    timing: Timing


def engine_setup(config_seed: int, base_url: str, options: FuzzOptions) -> Setup:
    """A random engine configuration with the harness's short timeouts."""
    rng = random.Random(f"config:{config_seed}")
    idle = options.read_idle_timeout_s
    retries = rng.choice([0, 1, 1, 2])
    if options.only and all(CLASSES[c][2] for c in options.only if c in CLASSES):
        retries = max(1, retries)  # only classes that need a retry were asked for
    backoff_max = 0.2
    retry_after_cap = 0.5
    config = EngineConfig(
        base_url=base_url,
        connect_timeout_s=2.0,
        read_idle_timeout_s=idle,
        retry_attempts=retries,
        retry_backoff_initial_s=0.05,
        retry_backoff_max_s=backoff_max,
        retry_after_cap_s=retry_after_cap,
        max_event_bytes=rng.choice([64 * 1024, 256 * 1024, 256 * 1024]),
        request_deadline_s=120.0,
        max_concurrent_requests=max(64, options.concurrency * 2),
        parser_workers=rng.randint(1, 4),
        chunk_buffer_size=rng.choice([0, 1, 8, 100]),
        event_buffer_size=rng.choice([0, 1, 8, 100]),
        ordered_buffer_size=rng.choice([0, 1, 8, 100]),
        batched_buffer_size=rng.choice([0, 1, 8, 100]),
        request_window_events=rng.choice([1, 4, 16, 64, 256, 1024]),
        update_char_limit=rng.choice([1, 20, 100, 500]),
        idle_flush_ms=rng.choice([0.0, 50.0, 250.0, 2000.0]),
        shutdown_grace_s=2.0,
    )
    limits = Limits(
        read_idle_timeout_s=idle,
        max_event_bytes=config.max_event_bytes,
        request_window_events=config.request_window_events,
    )
    timing = Timing(
        read_idle_timeout_s=idle,
        retry_wait_s=max(backoff_max, retry_after_cap),
        slack_s=options.slack_s,
        prompt_s=options.prompt_s,
    )
    return Setup(config_seed=config_seed, config=config, limits=limits, timing=timing)


def _settings(config: EngineConfig) -> str:
    return (
        f"window {config.request_window_events}, retries {config.retry_attempts}, "
        f"max_event_bytes {config.max_event_bytes // 1024} KiB, parsers {config.parser_workers}, "
        f"buffers {config.chunk_buffer_size}/{config.event_buffer_size}/"
        f"{config.ordered_buffer_size}/{config.batched_buffer_size}, "
        f"engine update_char_limit {config.update_char_limit}, "
        f"idle_flush_ms {config.idle_flush_ms:g}"
    )


def replay_command(cls: str, seed: int, config_seed: int) -> str:
    return f"python -m bench fuzz --case {cls}:{seed}@{config_seed}"


# --------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------


@dataclass(slots=True)
class ClassStats:
    played: int = 0
    completed: int = 0
    incomplete: int = 0
    failed: int = 0
    crashes: int = 0
    hangs: int = 0
    mismatches: int = 0
    max_end_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    kind: str
    cls: str
    seed: int
    config_seed: int
    what: str
    detail: str
    case: str
    settings: str

    def lines(self) -> list[str]:
        return [
            f"[{self.kind}: {self.what}] class {self.cls}, seed {self.seed}, "
            f"config {self.config_seed}: {self.detail}",
            f"    replay: {replay_command(self.cls, self.seed, self.config_seed)}",
            f"    stream: {self.case}",
            f"    engine: {self.settings}",
        ]


@dataclass(slots=True)
class Crash:
    config_seed: int
    error: str
    in_flight: list[tuple[str, int]]
    #: The stream that crashed a fresh engine alone, when isolation found it.
    culprit: tuple[str, int] | None = None
    settings: str = ""

    def lines(self) -> list[str]:
        out = [f"[crash] config {self.config_seed}: {self.error}"]
        if self.culprit is not None:
            cls, seed = self.culprit
            out.append(f"    crashes a fresh engine alone: class {cls}, seed {seed}")
            out.append(f"    replay: {replay_command(cls, seed, self.config_seed)}")
        else:
            flying = ", ".join(f"{c}:{s}" for c, s in self.in_flight[:12])
            out.append(f"    streams in flight: {flying}")
        out.append(f"    engine: {self.settings}")
        return out


@dataclass(slots=True)
class Summary:
    #: "seed N" for a run, "case CLASS:SEED@CONFIG" for a replay.
    label: str
    started: float = field(default_factory=time.monotonic)
    classes: dict[str, ClassStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    engines: int = 0
    batches: int = 0
    canaries: int = 0
    #: Streams whose engine crashed under them (not judged).
    cut_by_crash: int = 0
    #: The ending that came closest to its time bound: (share used, class, seed).
    closest: tuple[float, str, int] = (0.0, "", 0)
    planned: int | None = None

    @property
    def played(self) -> int:
        return sum(s.played for n, s in self.classes.items() if n != "canary")

    @property
    def hangs(self) -> int:
        return sum(s.hangs for s in self.classes.values())

    @property
    def mismatches(self) -> int:
        return sum(s.mismatches for s in self.classes.values())

    @property
    def max_end_s(self) -> float:
        return max((s.max_end_s for s in self.classes.values()), default=0.0)

    @property
    def ok(self) -> bool:
        complete = self.planned is None or self.played + self.cut_by_crash >= self.planned
        return complete and not self.crashes and not self.hangs and not self.mismatches

    def stats(self, cls: str) -> ClassStats:
        return self.classes.setdefault(cls, ClassStats())

    def record(self, case: Case, setup: Setup, seen: Seen, violations: list[Violation]) -> None:
        stats = self.stats(case.cls)
        stats.played += 1
        ending = seen.ending
        if isinstance(ending, Completed):
            stats.completed += 1
        elif isinstance(ending, Incomplete):
            stats.incomplete += 1
        elif isinstance(ending, Failed):
            stats.failed += 1
        if seen.time_to_ending is not None:
            stats.max_end_s = max(stats.max_end_s, seen.time_to_ending)
        if not seen.late and seen.bound_used > self.closest[0]:
            self.closest = (seen.bound_used, case.cls, case.seed)
        kinds = {v.kind for v in violations}
        stats.crashes += "crash" in kinds
        stats.hangs += "hang" in kinds
        stats.mismatches += "mismatch" in kinds
        for violation in violations:
            self.failures.append(
                Failure(
                    kind=violation.kind,
                    cls=case.cls,
                    seed=case.seed,
                    config_seed=setup.config_seed,
                    what=violation.what,
                    detail=violation.detail,
                    case=case.describe(),
                    settings=_settings(setup.config),
                )
            )

    def progress_line(self) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"[{elapsed:6.0f} s] {self.played} streams ({self.batches} batches, "
            f"{self.engines} engines, {self.canaries} canaries): {len(self.crashes)} crashes, "
            f"{self.hangs} hangs, {self.mismatches} mismatches; "
            f"max time to ending {self.max_end_s:.2f} s"
        )

    def table(self) -> str:
        header = (
            f"{'class':<16}{'played':>8}{'completed':>11}{'incompl.':>10}{'failed':>8}"
            f"{'crash':>7}{'hang':>6}{'mismatch':>10}{'max end s':>11}"
        )
        rows = [header, "-" * len(header)]
        names = [n for n in (*CLASS_NAMES, "canary") if n in self.classes]
        total = ClassStats()
        for name in names:
            s = self.classes[name]
            rows.append(_row(name, s))
            if name != "canary":
                total.played += s.played
                total.completed += s.completed
                total.incomplete += s.incomplete
                total.failed += s.failed
                total.crashes += s.crashes
                total.hangs += s.hangs
                total.mismatches += s.mismatches
                total.max_end_s = max(total.max_end_s, s.max_end_s)
        rows.append("-" * len(header))
        rows.append(_row("all streams", total))
        elapsed = time.monotonic() - self.started
        rows.append("")
        rows.append(
            f"streams played: {self.played} in {elapsed:.0f} s ({self.label}; "
            f"{self.batches} batches on {self.engines} engines, {self.canaries} canaries"
            + (f", {self.cut_by_crash} cut short by a crash" if self.cut_by_crash else "")
            + ")"
        )
        rows.append(
            f"crashes: {len(self.crashes)}   hangs: {self.hangs}   "
            f"mismatches: {self.mismatches}   max time to ending: {self.max_end_s:.2f} s"
        )
        used, cls, seed = self.closest
        if cls:
            rows.append(
                f"closest in-time ending: {used:.0%} of its allowed time ({cls}, seed {seed})"
            )
        if self.planned is not None and self.played + self.cut_by_crash < self.planned:
            rows.append(f"only {self.played} of {self.planned} planned streams were played")
        return "\n".join(rows)

    def report(self, limit: int = 40) -> str:
        """The crashes and failures, grouped: the first few of each (class, what) in full."""
        lines: list[str] = []
        for crash in self.crashes[:limit]:
            lines.extend(crash.lines())
        seen: dict[tuple[str, str, str], int] = {}
        shown = 0
        for failure in self.failures:
            key = (failure.kind, failure.cls, failure.what)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= 2 and shown < limit:
                lines.extend(failure.lines())
                shown += 1
        if seen:
            lines.append("failures by kind, class and property:")
            for (kind, cls, what), count in sorted(seen.items()):
                lines.append(f"    {count:5d}  {kind:<9}{cls:<16}{what}")
            configs: dict[tuple[int, str], int] = {}
            for failure in self.failures:
                key2 = (failure.config_seed, failure.settings)
                configs[key2] = configs.get(key2, 0) + 1
            lines.append("failures by engine configuration:")
            for (config_seed, settings), count in sorted(configs.items(), key=lambda i: -i[1]):
                lines.append(f"    {count:5d}  config {config_seed}: {settings}")
        return "\n".join(lines)


def _row(name: str, s: ClassStats) -> str:
    return (
        f"{name:<16}{s.played:>8}{s.completed:>11}{s.incomplete:>10}{s.failed:>8}"
        f"{s.crashes:>7}{s.hangs:>6}{s.mismatches:>10}{s.max_end_s:>11.2f}"
    )


# --------------------------------------------------------------------------
# Playing streams
# --------------------------------------------------------------------------


async def _play(engine: Engine, server: FuzzServer, case: Case, timing: Timing) -> Seen:
    """Submit the case's request, read it to its ending (or give up on it)."""
    key, tracker = server.track(case)
    request = ChatRequest(
        model="fuzz/model",
        input=_INPUT,
        options={"metadata": {"fuzz_key": key}},
        update_char_limit=case.update_char_limit,
        idle_flush_ms=case.idle_flush_ms,
    )
    seen = Seen(submitted=trio.current_time())
    tracker.submitted = seen.submitted
    try:
        stream = engine.submit(request)
    except AdmissionRejected as exc:  # the harness sizes admission so this never happens
        raise AssertionError(f"the engine rejected a fuzz request: {exc}") from exc
    try:
        async with stream:
            while True:
                events = None
                with trio.move_on_after(_TICK_S):
                    events = await stream.receive_batch()
                now = trio.current_time()
                if events is not None:
                    seen.take(events, now)
                if _check_time(seen, tracker.deadline(timing), timing, now):
                    break
                if events is not None and case.consumer_pause_s:
                    await trio.sleep(case.consumer_pause_s)
                    seen.paused += case.consumer_pause_s
            if seen.ending is not None:
                # Anything after the ending is a broken promise; look once more.
                with trio.move_on_after(_TICK_S):
                    more = await stream.receive_batch()
                    seen.take(more, trio.current_time())
    finally:
        server.forget(key)
    return seen


def _check_time(seen: Seen, bound: tuple[float, float, str], timing: Timing, now: float) -> bool:
    """Note lateness against the bound; True when reading should stop (ended or given up)."""
    deadline, since, why = bound
    deadline += seen.paused
    allowed = f"allowed {deadline - since:.2f} s"
    if seen.ending is not None:
        seen.bound_used = (now - since) / max(deadline - since, 1e-9)
        if now > deadline or seen.late is not None:
            seen.late = f"ended {now - since:.2f} s after {why} ({allowed})"
        return True
    if now > deadline and seen.late is None:
        seen.late = f"no ending {now - since:.2f} s after {why} ({allowed})"
    if now > deadline + timing.guard_s:
        seen.no_ending = True
        seen.late = (
            f"no ending {now - since:.2f} s after {why} ({allowed}); the harness cancelled it"
        )
        return True
    return False


async def _open_requests_drain(engine: Engine, wait_s: float) -> int:
    """Open requests left after everything ended (waits a little for stragglers)."""
    for _ in range(round(wait_s / 0.05)):
        if not engine.statistics().flow.open_requests:
            break
        await trio.sleep(0.05)
    return engine.statistics().flow.open_requests


@dataclass(slots=True)
class _Batch:
    cases: list[tuple[str, int]]
    canary_seed: int


class _Run:
    def __init__(self, options: FuzzOptions, server: FuzzServer, summary: Summary) -> None:
        self.options = options
        self.server = server
        self.summary = summary
        self.isolations_left = options.isolate_crashes
        self.deadline = math.inf if options.seconds is None else time.monotonic() + options.seconds

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    async def engine(self, setup: Setup, batches: list[_Batch]) -> None:
        """Play ``batches`` on one engine; after a crash, the rest on a fresh one."""
        remaining = list(batches)
        while remaining and not self.out_of_time():
            await self._engine_life(setup, remaining)

    async def _engine_life(self, setup: Setup, remaining: list[_Batch]) -> None:
        """Play batches off ``remaining`` until it is empty or the engine crashed."""
        summary = self.summary
        in_flight: dict[int, Case] = {}
        summary.engines += 1
        try:
            async with (
                OpenRouterHttpTransport(setup.config, api_key=_API_KEY) as transport,
                open_engine(setup.config, EnginePorts(transport=transport)) as engine,
            ):
                while remaining and not self.out_of_time():
                    await self._batch(engine, setup, remaining.pop(0), in_flight)
        except EngineCrashed as exc:
            cause = exc.__cause__
            error = f"{exc}" + (f" [cause {type(cause).__name__}]" if cause is not None else "")
            crash = Crash(
                config_seed=setup.config_seed,
                error=error,
                in_flight=[(c.cls, c.seed) for c in in_flight.values()],
                settings=_settings(setup.config),
            )
            summary.crashes.append(crash)
            summary.cut_by_crash += sum(1 for c in in_flight.values() if c.cls != "canary")
            for case in in_flight.values():
                summary.stats(case.cls).crashes += 1
            if self.isolations_left > 0 and in_flight:
                self.isolations_left -= 1
                crash.culprit = await self._isolate(setup, list(in_flight.values()))

    async def _batch(
        self, engine: Engine, setup: Setup, batch: _Batch, in_flight: dict[int, Case]
    ) -> None:
        summary = self.summary

        async def one(case: Case) -> None:
            token = id(case)
            in_flight[token] = case
            seen = await _play(engine, self.server, case, setup.timing)
            del in_flight[token]
            summary.record(case, setup, seen, judge(case, seen))

        cases = [generate(cls, seed, setup.limits) for cls, seed in batch.cases]
        async with trio.open_nursery() as nursery:
            for case in cases:
                nursery.start_soon(one, case)
        summary.batches += 1
        canary = generate("canary", batch.canary_seed, setup.limits)
        await one(canary)
        summary.canaries += 1
        left = await _open_requests_drain(engine, 1.0)
        if left:
            summary.stats("canary").mismatches += 1
            summary.failures.append(
                Failure(
                    kind="mismatch",
                    cls="canary",
                    seed=batch.canary_seed,
                    config_seed=setup.config_seed,
                    what="leak",
                    detail=f"{left} request(s) still open after every stream had ended",
                    case="(the batch as a whole)",
                    settings=_settings(setup.config),
                )
            )

    async def _isolate(self, setup: Setup, cases: list[Case]) -> tuple[str, int] | None:
        """Replay each case alone on a fresh engine; the first that crashes it."""
        for case in cases:
            if self.out_of_time():
                return None
            try:
                async with (
                    OpenRouterHttpTransport(setup.config, api_key=_API_KEY) as transport,
                    open_engine(setup.config, EnginePorts(transport=transport)) as engine,
                ):
                    await _play(engine, self.server, case, setup.timing)
            except EngineCrashed:
                return case.cls, case.seed
        return None


async def run_fuzz(
    options: FuzzOptions, on_progress: Callable[[Summary], None] | None = None
) -> Summary:
    """Play streams until the options' time or count runs out; the summary."""
    label = f"seed {options.seed}"
    if options.case is not None:
        label = "case {}:{}@{}".format(*options.case)
    summary = Summary(label=label)
    for name in options.only:
        if name not in CLASS_NAMES:
            raise ValueError(f"unknown class {name!r}; known: {', '.join(CLASS_NAMES)}")
    async with trio.open_nursery() as nursery:
        server = FuzzServer()
        await nursery.start(server.run)
        if on_progress is not None:
            nursery.start_soon(_report_progress, summary, options.progress_every_s, on_progress)
        run = _Run(options, server, summary)
        if options.case is not None:
            cls, seed, config_seed = options.case
            summary.planned = 1
            batch = _Batch(cases=[(cls, seed)], canary_seed=seed)
            await run.engine(engine_setup(config_seed, server.base_url, options), [batch])
        else:
            await _run_many(run, options, server)
        nursery.cancel_scope.cancel()
    return summary


async def _run_many(run: _Run, options: FuzzOptions, server: FuzzServer) -> None:
    rng = random.Random(options.seed)
    summary = run.summary
    summary.planned = options.streams
    planned = 0
    while not run.out_of_time():
        if options.streams is not None and planned >= options.streams:
            break
        config_seed = rng.getrandbits(32)
        setup = engine_setup(config_seed, server.base_url, options)
        retries = setup.config.retry_attempts > 0
        batches: list[_Batch] = []
        for _ in range(options.batches_per_engine):
            count = options.concurrency
            if options.streams is not None:
                count = min(count, options.streams - planned)
            if count <= 0:
                break
            cases = [
                (pick_class(rng, retries=retries, only=options.only), rng.getrandbits(32))
                for _ in range(count)
            ]
            planned += count
            batches.append(_Batch(cases=cases, canary_seed=rng.getrandbits(32)))
        await run.engine(setup, batches)


async def _report_progress(
    summary: Summary, every_s: float, on_progress: Callable[[Summary], None]
) -> None:
    while True:
        await trio.sleep(every_s)
        on_progress(summary)
