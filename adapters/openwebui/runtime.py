"""What the Open WebUI pipe keeps per event loop: the engine bridge and the user breaker.

Open WebUI runs one asyncio loop per worker process and shares one ``Pipe``
instance between all concurrent requests, while replacing ``pipe.valves``
on every dispatch. So nothing per request lives on the ``Pipe``, and what
must outlive a request (the trio engine, the breaker) lives here, one
``PipeRuntime`` per loop, found with ``runtime_for_loop()``.

Everything here is asyncio-flavoured: call it on the loop it belongs to.

* ``PipeRuntime.bridge(target)`` starts the engine lazily on first use and,
  when the valves change what the engine needs (limits, base URL, key,
  bridge kind), moves new requests to a reconfigured engine while answers
  in flight finish where they started (``EngineBridge.reconfigure``; a
  change of bridge kind starts a new bridge and retires the old one once
  its last stream has ended).
* The runtime stops cleanly when the loop shuts down: a parked async
  generator is registered with the loop, and asyncio's
  ``shutdown_asyncgens()`` (run by ``asyncio.run``, ``asyncio.Runner`` and
  uvicorn) closes it, which closes the bridges and the model catalogue's
  HTTP clients of that loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from orpipe.adapters.bridge import (
    BridgeMode,
    EngineBridge,
    EngineServices,
    GuestModeBridge,
    LedgerFactory,
    SideService,
    StoreFactory,
    ThreadBridge,
    TransportFactory,
)
from orpipe.adapters.openwebui.downloader import Downloader, DownloadLimits
from orpipe.adapters.openwebui.files import OwuiFiles
from orpipe.adapters.openwebui.model_registry import close_registries
from orpipe.adapters.openwebui.user_breaker import UserBreaker
from orpipe.engine import EngineConfig
from orpipe.engine.logs import LogSettings, setup_logging

__all__ = ["BridgeTarget", "PipeRuntime", "runtime_for_loop"]

log = logging.getLogger("orpipe.owui")

#: How often a retired bridge looks whether its last stream has ended (each
#: is bounded by its own request deadline, so the wait is bounded too).
_RETIRE_POLL_S = 0.05

#: Users remembered as already told that history storage is degraded.
_TOLD_MAX = 10_000

#: Engine knobs every Open WebUI request sets for itself: the turn puts the user's
#: effective text batching on ``ChatRequest.update_char_limit`` and ``idle_flush_ms``,
#: so the engine never reads these from its config here, and changing the streaming
#: valves is no reason to start a new engine generation.
_PER_REQUEST_KNOBS = frozenset({"update_char_limit", "idle_flush_ms"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeTarget:
    """What the engine should look like for the current valves."""

    config: EngineConfig
    api_key: str
    kind: BridgeMode = "thread"
    window_batches: int = 8
    #: Tests inject faults here; None means the real OpenRouter transport.
    transport_factory: TransportFactory | None = None
    #: Opens the artifact store; None: artifacts are not stored.
    store_factory: StoreFactory | None = None
    #: What the store factory was built from (equal keys: the same store). Secrets
    #: inside it must already be hashed; None: the factory object itself.
    store_key: object = None
    #: Runs beside the engine (the telemetry server; equal services compare equal).
    side_service: SideService | None = None
    #: Opens the admission ledger shared with other workers; None: this engine's own room.
    ledger_factory: LedgerFactory | None = None
    #: As ``store_key``, for the ledger factory.
    ledger_key: object = None

    def fingerprint(self) -> tuple[object, ...]:
        """Equal fingerprints need no new engine generation. The knobs each request
        carries itself are left out; the key enters only as a keyed hash."""
        engine_knobs = tuple(
            (name, value)
            for name, value in self.config.as_dict().items()
            if name not in _PER_REQUEST_KNOBS
        )
        key = hashlib.blake2b(self.api_key.encode(), key=b"orpipe-bridge", digest_size=16)
        store = self.store_key if self.store_key is not None else self.store_factory
        ledger = self.ledger_key if self.ledger_key is not None else self.ledger_factory
        return (
            engine_knobs,
            key.hexdigest(),
            self.transport_factory,
            store,
            self.side_service,
            ledger,
        )

    def services(self) -> EngineServices:
        """What the bridge opens beside each engine, as it takes them."""
        return EngineServices(
            transport_factory=self.transport_factory,
            store_factory=self.store_factory,
            side_service=self.side_service,
            ledger_factory=self.ledger_factory,
        )

    def __repr__(self) -> str:  # never print the key
        return f"BridgeTarget(kind={self.kind!r}, base_url={self.config.base_url!r})"


class PipeRuntime:
    """The engine bridge and the per-user breaker of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.breaker = UserBreaker()
        #: Per user: history loads that failed; while open, DB work is skipped.
        self.db_breaker = UserBreaker()
        self._told_degraded: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._bridge: EngineBridge | None = None
        self._kind: BridgeMode | None = None
        self._window = 0
        self._fingerprint: tuple[object, ...] | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[EngineBridge] = []
        self._closed = False
        self._sentinel: AsyncGenerator[None, None] | None = None
        self._downloader: Downloader | None = None
        self._download_key: tuple[DownloadLimits, int] | None = None
        self._files: OwuiFiles | None = None
        self._logging: LogSettings | None = None
        self._files_key: tuple[str, str, str] | None = None

    @property
    def current_bridge(self) -> EngineBridge | None:
        return self._bridge

    def tell_degraded_once(self, user_id: str) -> bool:
        """True the first time a user meets degraded history storage (until it recovers)."""
        if user_id in self._told_degraded:
            return False
        self._told_degraded[user_id] = None
        while len(self._told_degraded) > _TOLD_MAX:
            self._told_degraded.popitem(last=False)  # bounded: forget the oldest
        return True

    def storage_recovered(self, user_id: str) -> None:
        self._told_degraded.pop(user_id, None)

    def configure_breaker(self, threshold: int, window_s: float) -> UserBreaker:
        """The user breakers (requests, DB work) with the valves' threshold and window;
        history kept. Returns the request breaker."""
        for breaker in (self.breaker, self.db_breaker):
            breaker.threshold = threshold
            breaker.window_s = breaker.cooldown_s = float(window_s)
        return self.breaker

    def downloader(self, limits: DownloadLimits, process_slots: int) -> Downloader:
        """The process's downloader for these limits (one HTTP client, one slot pool).

        New limits get a new downloader; the old one is closed once every
        download it may still run has hit its time budget.
        """
        key = (limits, process_slots)
        if self._downloader is None or self._download_key != key:
            old = self._downloader
            self._downloader = Downloader(
                limits=limits, process_slots=asyncio.Semaphore(process_slots)
            )
            self._download_key = key
            if old is not None:
                self._later(old.limits.total_budget_s + 1.0, old.aclose, "downloader")
        return self._downloader

    def use_logging(self, settings: LogSettings) -> None:
        """The engine's log sinks for these settings (set up again only when they change)."""
        if settings != self._logging:
            setup_logging(settings)
            self._logging = settings

    def files(self, email: str, name: str, role: str) -> OwuiFiles:
        """Open WebUI's file store, with this fallback owner (FALLBACK_STORAGE_*)."""
        key = (email, name, role)
        if self._files is None or self._files_key != key:
            self._files = OwuiFiles(fallback_email=email, fallback_name=name, fallback_role=role)
            self._files_key = key
        return self._files

    def _later(self, delay_s: float, close: Callable[[], Awaitable[None]], what: str) -> None:
        async def run() -> None:
            await asyncio.sleep(delay_s)
            await close()

        task = self.loop.create_task(run(), name=f"orpipe retire {what}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def bridge(self, target: BridgeTarget) -> EngineBridge:
        """The bridge for these settings, started, reconfigured or replaced as needed."""
        async with self._lock:
            if self._closed:
                from orpipe.engine import EngineClosed  # noqa: PLC0415

                raise EngineClosed("The engine is stopping with the server; retry in a moment.")
            await self._watch_loop_shutdown()
            bridge = self._bridge
            if bridge is None or self._kind != target.kind or self._window != target.window_batches:
                if bridge is not None:
                    self._retire(bridge)
                bridge = self._new_bridge(target)
            elif target.fingerprint() != self._fingerprint:
                log.info("valves changed: new requests go to a reconfigured engine")
                await bridge.reconfigure(target.config, api_key=target.api_key, **target.services())
            self._fingerprint = target.fingerprint()
            await bridge.start()
            return bridge

    def _new_bridge(self, target: BridgeTarget) -> EngineBridge:
        cls = GuestModeBridge if target.kind == "guest" else ThreadBridge
        bridge = cls(
            target.config,
            target.api_key,
            window_batches=target.window_batches,
            **target.services(),
        )
        self._bridge, self._kind, self._window = bridge, target.kind, target.window_batches
        return bridge

    def _retire(self, bridge: EngineBridge) -> None:
        """Close ``bridge`` once the streams it handed out have ended."""

        async def retire() -> None:
            while bridge.open_streams:  # noqa: ASYNC110 - streams end on their own deadline
                await asyncio.sleep(_RETIRE_POLL_S)
            await bridge.aclose()

        log.info("bridge kind changed: the previous bridge closes after its last answer")
        self._retired.append(bridge)
        task = self.loop.create_task(retire(), name="orpipe retire bridge")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        """Close every bridge of this loop (idempotent)."""
        self._closed = True
        for task in list(self._retiring):
            task.cancel()
        bridges = [*self._retired, *([self._bridge] if self._bridge is not None else [])]
        for bridge in bridges:
            with contextlib.suppress(Exception):
                await bridge.aclose()
        self._retired.clear()
        if self._downloader is not None:
            with contextlib.suppress(Exception):
                await self._downloader.aclose()
            self._downloader = None

    async def _watch_loop_shutdown(self) -> None:
        """Register a parked async generator whose ``finally`` closes this runtime.

        asyncio tracks started async generators weakly and closes them in
        ``loop.shutdown_asyncgens()``, which ``asyncio.run`` and uvicorn call
        after the last request task is gone; so that is when the engine
        stops, with the loop still running to let trio finish.
        """
        if self._sentinel is not None:
            return
        self._sentinel = _closes_on_loop_shutdown(self)
        await self._sentinel.__anext__()


async def _closes_on_loop_shutdown(runtime: PipeRuntime) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await runtime.aclose()
        await close_registries()  # the catalogue's HTTP clients live on this loop too
        _RUNTIMES.pop(runtime.loop, None)


_RUNTIMES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PipeRuntime] = (
    weakref.WeakKeyDictionary()
)


def runtime_for_loop() -> PipeRuntime:
    """The runtime of the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    runtime = _RUNTIMES.get(loop)
    if runtime is None:
        runtime = _RUNTIMES[loop] = PipeRuntime(loop)
    return runtime
