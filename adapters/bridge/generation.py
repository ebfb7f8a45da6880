"""One engine generation inside the bridge's trio run: transport, store, ledger, engine,
side service.

``reconfigure`` starts a new generation in the same trio run and sends new
requests to it; the previous one takes no new work and leaves once its last
pump has ended (each is bounded by its deadline), so a change of settings
never drops an answer in flight.

Trio-flavoured. A generation runs as a task of the run's engine nursery from
``open`` until it is told to leave: ``retire()`` (leave after the last pump)
or ``close_now()`` (the run is stopping: leave at once, which closes the
engine gracefully and gives every open request an ending; the store closes
after the engine, so the persister flushes into it on the way out; so does the
shared admission ledger, so every request leaves it before it closes). A crash
is handed to the run, never raised into the nursery.

The side service (``EngineSetup.side_service``: the telemetry server) runs
while the engine does and is cancelled first: when the generation retires
(so the next generation's service can take its place, e.g. its port) and
before the engine closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from orpipe.actors import open_engine
from orpipe.adapters.bridge.protocol import (
    LedgerFactory,
    SideService,
    StoreFactory,
    TransportFactory,
)
from orpipe.engine import Engine, EngineConfig, EngineCrashed, EnginePorts
from orpipe.engine.ports import ArtifactStore

if TYPE_CHECKING:
    from orpipe.adapters.bridge.stream import Pump
    from orpipe.adapters.bridge.trio_run import TrioRun

__all__ = ["EngineSetup", "Generation"]


@dataclass(frozen=True, slots=True)
class EngineSetup:
    """What one generation is opened from: the engine's config, its transport, its store,
    its shared admission ledger, and what runs beside it."""

    config: EngineConfig
    transport_factory: TransportFactory
    #: None: artifacts are not stored.
    store_factory: StoreFactory | None = None
    #: None: nothing runs beside the engine.
    side_service: SideService | None = None
    #: None: the engine's own waiting room only.
    ledger_factory: LedgerFactory | None = None


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield None


class Generation:
    """One engine and its upstream transport (and artifact store), inside a run."""

    def __init__(self, run: TrioRun, setup: EngineSetup) -> None:
        self.run = run
        self.setup = setup
        #: The artifact store this generation's engine writes to (None: not stored).
        self.store: ArtifactStore | None = None
        self._engine: Engine | None = None
        self._pumps: set[Pump] = set()
        self._retiring = False
        self._leave = trio.Event()
        self._side = trio.CancelScope()

    @property
    def config(self) -> EngineConfig:
        return self.setup.config

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise self.run.closed_error()
        return self._engine

    def cancel(self, request_id: str, reason: str) -> None:
        """Cancel the request if this generation's engine has it (a no-op otherwise)."""
        if self._engine is not None:
            self._engine.cancel(request_id, reason)

    def pump_started(self, pump: Pump) -> None:
        self._pumps.add(pump)

    def pump_ended(self, pump: Pump) -> None:
        self._pumps.discard(pump)
        if self._retiring and not self._pumps:
            self._leave.set()

    def retire(self) -> None:
        self._retiring = True
        self._side.cancel()  # the new generation's service takes over now
        if not self._pumps:
            self._leave.set()

    def close_now(self) -> None:
        self._leave.set()

    async def open(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        setup = self.setup
        started = False
        try:
            store_cm = setup.store_factory() if setup.store_factory else _nothing()
            ledger_cm = setup.ledger_factory(self.config) if setup.ledger_factory else _nothing()
            # The store and the ledger outlive the engine: the persister flushes into
            # the store on exit, and every request leaves the ledger.
            async with (
                setup.transport_factory(self.config) as transport,
                store_cm as store,
                ledger_cm as ledger,
                open_engine(
                    self.config,
                    EnginePorts(transport=transport, artifacts=store, admission_ledger=ledger),
                ) as engine,
            ):
                self.store = store
                self._engine = engine
                started = True
                task_status.started()
                async with trio.open_nursery() as beside:
                    if setup.side_service is not None:
                        beside.start_soon(self._run_side, setup.side_service, engine)
                    await self._leave.wait()
                    self._side.cancel()
        except EngineCrashed as exc:
            if not started:
                raise  # to whoever is starting this generation
            self.run.crashed(exc)
        finally:
            self.run.generations.discard(self)

    async def _run_side(self, service: SideService, engine: Engine) -> None:
        with self._side:
            await service(engine.statistics)
