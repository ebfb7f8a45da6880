"""``open_engine_with_graph``: starts the actors, supervises them, and shuts them down.

The engine package may not import ``actors`` (imports flow engine ← actors),
so the actor graph is handed in: ``open_engine_with_graph(config, ports, graph=...)``.
``actors.open_engine`` is this call with the streaming graph filled in, the one
public ``open_engine``, and is what bench, adapters and tests use.

Lifecycle::

    open_engine_with_graph
      └─ nursery ─┬─ graph (admission ▶ fetcher ▶ parsers ▶ reorderer ▶ batcher ▶ emitter)
                  └─ services, each under ``supervise`` (restart with backoff)

* Start: the graph starts its actors downstream-first with ``nursery.start``
  and reports its ``AdmissionDoor``; only then does ``open_engine_with_graph`` yield.
* Normal shutdown (leaving the ``async with``, or ``Engine.aclose``): the
  admission door closes (waiting requests end with ``EngineClosed``), each actor's
  ``async for`` ends and closes its outbox, down to the emitter; after
  ``shutdown_grace_s`` whatever still runs is cancelled.
* A crash that is a bug cancels everything and leaves ``open_engine`` as one
  ``EngineCrashed`` (never an exception group). Every request still open gets
  a ``Failed`` ending, so no consumer waits forever.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from orpipe.engine.backoff import capped_backoff
from orpipe.engine.channels import ChannelRegistry
from orpipe.engine.config import EngineConfig
from orpipe.engine.durable_wait import DurableWait
from orpipe.engine.errors import EngineClosed, EngineCrashed, UsageError
from orpipe.engine.logs import request_logs
from orpipe.engine.messages import Cancelled, ChatRequest, Ending
from orpipe.engine.persist_barrier import PersistBarrier
from orpipe.engine.ports import EnginePorts
from orpipe.engine.request import RequestHandle, ResponseStream
from orpipe.engine.statistics import (
    ActorCounters,
    AdmissionStats,
    EngineStatistics,
    FlowStats,
)

__all__ = [
    "ActorGraph",
    "AdmissionDoor",
    "Engine",
    "ServiceSpec",
    "Wiring",
    "open_engine_with_graph",
    "supervise",
]


class AdmissionDoor(Protocol):
    """The admission actor's synchronous front door (implemented in ``actors``)."""

    def submit(self, handle: RequestHandle) -> None:
        """Take a request into the waiting room or raise ``AdmissionRejected``."""

    def withdraw(self, request_id: str) -> RequestHandle | None:
        """Remove a still-waiting request; ``None`` if it was already admitted."""

    def release(self, handle: RequestHandle) -> None:
        """An admitted request ended: its slot is free."""

    def close(self) -> list[RequestHandle]:
        """Take no more requests; returns those still waiting (never started)."""

    def statistics(self) -> AdmissionStats: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Wiring:
    """Everything an actor graph needs from the engine."""

    config: EngineConfig
    ports: EnginePorts
    channels: ChannelRegistry
    counters: Callable[[str], ActorCounters]
    #: Registers a named breaker's counts (``Breaker.statistics``) for ``statistics().breakers``.
    breakers: Callable[[str, Callable[[], Mapping[str, int]]], None]
    #: "Flushed up to here" between the senders of ``persist.in`` and the persister.
    persist_barrier: PersistBarrier = field(default_factory=PersistBarrier)


class ActorGraph(Protocol):
    """Runs the pipeline until its admission door is closed and every actor has drained."""

    async def __call__(
        self, wiring: Wiring, *, task_status: trio.TaskStatus[AdmissionDoor] = ...
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """A long-lived actor that may fail on external faults and is restarted.

    Exceptions of a type in ``restart_on`` restart it (counted in
    ``statistics().restarts``); anything else is a bug and crashes the engine.
    """

    name: str
    run: Callable[[], Awaitable[None]]
    restart_on: tuple[type[Exception], ...] = field(default=(OSError,))


class Engine:
    """The handle ``open_engine`` yields: submit, cancel, observe, close."""

    def __init__(self, config: EngineConfig, ports: EnginePorts) -> None:
        self.config = config
        self.ports = ports
        self._channels = ChannelRegistry()
        # Bounded: a request is here only between submit and its ending, so
        # at most max_concurrent_requests + queue_maxsize entries.
        self._requests: dict[str, RequestHandle] = {}
        self._counters: dict[str, ActorCounters] = {}
        self._breakers: dict[str, Callable[[], Mapping[str, int]]] = {}
        self._restarts: collections.Counter[str] = collections.Counter()
        self._endings: collections.Counter[str] = collections.Counter()
        self._door: AdmissionDoor | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._pipeline_done = trio.Event()
        #: What the persister wrote of what was sent to it (``wait_persisted``).
        self.persist_barrier = PersistBarrier()
        #: Each request's ending waits here for its own artifacts (in its consumer's task).
        self._durable = DurableWait(
            self.persist_barrier, config.durable_wait_s, self._counter("persister")
        )

    # -- public API ------------------------------------------------------

    def submit(self, request: ChatRequest) -> ResponseStream:
        """Admit a request, or raise at once (never waits).

        Raises ``AdmissionRejected`` when the waiting room is full and
        ``EngineClosed`` during shutdown. The returned stream yields the
        request's events and ends with exactly one ``Ending``.
        """
        if self._closing or self._door is None:
            raise EngineClosed()
        if request.request_id in self._requests:
            raise UsageError(f"request id {request.request_id!r} is already in use")
        handle = RequestHandle(
            request,
            window_events=self.config.request_window_events,
            deadline=trio.current_time() + self.config.request_deadline_s,
            channels=self._channels,
            on_finished=self._request_finished,
        )
        self._door.submit(handle)
        self._requests[handle.request_id] = handle
        return ResponseStream(handle, self.cancel, self._durable)

    def cancel(self, request_id: str, reason: str) -> bool:
        """Cancel a request (waiting or running); False if it is not open."""
        handle = self._requests.get(request_id)
        if handle is None:
            return False
        handle.cancel(reason)
        if self._door is not None and self._door.withdraw(request_id) is not None:
            # Still waiting: no phase runs that could end it, so it ends here.
            handle.outbox.finish(Cancelled(request_id=request_id, reason=reason))
        return True

    def statistics(self) -> EngineStatistics:
        """A snapshot of every buffer, counter and window (cheap; sample freely)."""
        handles = list(self._requests.values())
        ledger = self.ports.admission_ledger
        assert self._door is not None, "statistics() is available inside open_engine"
        return EngineStatistics(
            channels=self._channels.statistics(),
            admission=self._door.statistics(),
            flow=FlowStats(
                open_requests=len(handles),
                credits_in_flight=sum(h.window.in_flight for h in handles),
                credit_capacity=sum(h.window.capacity for h in handles),
                fetchers_waiting_credit=sum(h.window.waiting for h in handles),
            ),
            actors={name: c.snapshot() for name, c in sorted(self._counters.items())},
            breakers={name: dict(source()) for name, source in sorted(self._breakers.items())},
            restarts=dict(self._restarts),
            endings=dict(self._endings),
            logs=request_logs().statistics(),
            ledger=None if ledger is None else ledger.statistics(),
            store=_store_figures(self.ports.artifacts),
        )

    async def wait_persisted(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every artifact sent to the persister
        before this call is written; returns whether the store's writes are failing."""
        return await self.persist_barrier.wait_flushed(timeout_s)

    async def aclose(self) -> None:
        """Graceful shutdown: finish in-flight work within the grace, then stop."""
        if not self._closing:
            self._closing = True
            if self._door is not None:
                for handle in self._door.close():
                    handle.outbox.fail(_closed("before it started"))
        with trio.move_on_after(self.config.shutdown_grace_s):
            await self._pipeline_done.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- internals ---------------------------------------------------------

    def _counter(self, name: str) -> ActorCounters:
        return self._counters.setdefault(name, ActorCounters())

    def _request_finished(self, handle: RequestHandle, ending: Ending) -> None:
        self._requests.pop(handle.request_id, None)
        self._endings[type(ending).__name__.lower()] += 1
        if handle.admitted_at is not None and self._door is not None:
            self._door.release(handle)

    async def _run_graph(
        self, graph: ActorGraph, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        wiring = Wiring(
            config=self.config,
            ports=self.ports,
            channels=self._channels,
            counters=self._counter,
            breakers=self._breakers.__setitem__,
            persist_barrier=self.persist_barrier,
        )
        async with trio.open_nursery() as graph_nursery:
            self._door = await graph_nursery.start(graph, wiring)
            task_status.started()
        # The graph returns when every actor has drained after the admission door closed.
        self._pipeline_done.set()

    def _fail_open_requests(self) -> None:
        for handle in list(self._requests.values()):
            handle.outbox.fail(_closed("before this answer finished"))


def _store_figures(store: object) -> dict[str, int | float | str]:
    """The artifact store's figures, when it has a ``statistics()`` (it need not)."""
    figures = getattr(store, "statistics", None)
    return dict(figures()) if callable(figures) else {}


def _closed(when: str) -> EngineClosed:
    return EngineClosed(f"The engine stopped {when}; retry in a moment.")


@asynccontextmanager
async def open_engine_with_graph(
    config: EngineConfig,
    ports: EnginePorts,
    *,
    graph: ActorGraph,
    services: tuple[ServiceSpec, ...] = (),
) -> AsyncIterator[Engine]:
    """Run an engine for the duration of the ``async with`` block."""
    engine = Engine(config, ports)
    body_error: BaseException | None = None
    crash: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            engine._nursery = nursery
            await nursery.start(engine._run_graph, graph)
            for spec in services:
                nursery.start_soon(supervise, spec, config, engine._restarts)
            try:
                yield engine
            except BaseException as exc:
                body_error = exc
                nursery.cancel_scope.cancel()
            else:
                await engine.aclose()
    except BaseException as exc:
        crash = _collapse(exc)
    finally:
        engine._closing = True
        engine._fail_open_requests()
    if isinstance(crash, EngineCrashed):
        raise crash
    if body_error is not None:
        raise body_error
    if crash is not None:
        raise crash


async def supervise(
    spec: ServiceSpec, config: EngineConfig, restarts: collections.Counter[str]
) -> None:
    """Run a service; restart it on external faults with capped, growing backoff.

    ``restart_max_attempts`` consecutive failures end the engine with
    ``EngineCrashed``. A run that lasted longer than the longest backoff
    counts as recovered, so an occasional fault never adds up to a crash.
    """
    failures = 0
    while True:
        started = trio.current_time()
        try:
            await spec.run()
            return
        except spec.restart_on as exc:
            if trio.current_time() - started > config.restart_backoff_max_s:
                failures = 0
            failures += 1
            if failures > config.restart_max_attempts:
                raise EngineCrashed(
                    f"Service {spec.name!r} failed {failures} times in a row "
                    f"({type(exc).__name__}: {exc}); check what it depends on."
                ) from exc
            restarts[spec.name] += 1
            delay = capped_backoff(
                failures - 1,
                base_s=config.restart_backoff_initial_s,
                cap_s=config.restart_backoff_max_s,
            )
            await trio.sleep(delay)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _collapse(exc: BaseException) -> BaseException:
    """One exception for whatever left the nursery (DESIGN.md §4)."""
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, EngineCrashed):
            return leaf
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled | KeyboardInterrupt | SystemExit):
            crashed = EngineCrashed(
                f"The engine stopped because of an internal error ({type(leaf).__name__}: "
                f"{leaf}); this is a bug, please report it with the logs."
            )
            crashed.__cause__ = leaf
            return crashed
    for leaf in leaves:
        if isinstance(leaf, KeyboardInterrupt | SystemExit):
            return leaf
    return leaves[0]
