"""The door's shape: what the asyncio host may ask of the trio engine, and nothing else.

``EngineBridge`` is every call Open WebUI's side makes on the engine; callers
type against it, and only the runtime's factory names an implementation
(``GuestModeBridge`` or ``ThreadBridge``, chosen by a ``BridgeMode``). Three
factories say how an engine generation opens its transport, its store and its
shared admission ledger, inside the trio run; an optional service runs beside
the engine (the telemetry server), so the bridge never imports what it needs.

This module runs neither loop (it imports no trio and no asyncio), so it can
be read, and typed against, without either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, TypeVar, Unpack

from orpipe.engine import ChatRequest, EngineConfig, EngineStatistics, UpstreamTransport
from orpipe.engine.ports import AdmissionLedger, ArtifactStore

if TYPE_CHECKING:
    from orpipe.adapters.bridge.stream import BridgedStream

__all__ = [
    "BRIDGE_CHANNEL",
    "BridgeMode",
    "EngineBridge",
    "EngineServices",
    "LedgerFactory",
    "SideService",
    "StoreFactory",
    "TransportFactory",
]

T = TypeVar("T")

#: How trio runs next to the asyncio loop: as a ``"guest"`` on the loop's own
#: thread (``GuestModeBridge``), or in a ``"thread"`` of its own (``ThreadBridge``).
BridgeMode = Literal["guest", "thread"]

#: The name under which the asyncio-side per-request queues appear in statistics.
BRIDGE_CHANNEL = "bridge.to_asyncio"

#: Builds the upstream transport inside the trio run (tests inject faults here).
TransportFactory = Callable[[EngineConfig], AbstractAsyncContextManager[UpstreamTransport]]

#: Opens the artifact store inside the trio run (None: artifacts are not stored).
StoreFactory = Callable[[], AbstractAsyncContextManager[ArtifactStore]]

#: Runs inside the trio run beside one engine generation, given that engine's
#: ``statistics``, until cancelled (the telemetry server). It must never raise:
#: a side service's trouble is its own, never the engine's.
SideService = Callable[[Callable[[], EngineStatistics]], Awaitable[None]]
#: Opens the admission ledger shared with other workers inside the trio run, for the
#: generation's config (its limits); None: the engine's own waiting room only.
LedgerFactory = Callable[[EngineConfig], AbstractAsyncContextManager[AdmissionLedger]]


class EngineServices(TypedDict, total=False):
    """What a bridge opens beside each engine generation, given as keyword arguments
    to a bridge and to ``reconfigure``; each one left out is not used."""

    #: Opens the transport; left out: OpenRouter over HTTP with the bridge's key.
    transport_factory: TransportFactory | None
    #: Opens the artifact store; left out: artifacts are not stored.
    store_factory: StoreFactory | None
    #: Runs beside the engine (the telemetry server).
    side_service: SideService | None
    #: Opens the admission ledger shared with other workers.
    ledger_factory: LedgerFactory | None


class EngineBridge(Protocol):
    """What an asyncio host (the Open WebUI pipe) needs from the engine.

    Every method is asyncio-flavoured and must be awaited on the loop the
    bridge was started on. No trio exception type crosses: failures are
    ``engine`` errors (``AdmissionRejected``, ``EngineClosed``, ``EngineCrashed``,
    ``UsageError``).
    """

    @property
    def running(self) -> bool:
        """True while a trio run of this bridge exists (started and not yet ended)."""

    @property
    def open_streams(self) -> int:
        """Requests handed to asyncio whose ending has not been read (on the loop)."""

    async def start(self) -> None:
        """Start the engine if it is not running (idempotent; also restarts after a crash)."""

    async def submit(self, request: ChatRequest) -> BridgedStream:
        """Submit a request, starting the engine lazily; raises as ``Engine.submit`` would."""

    async def statistics(self) -> EngineStatistics:
        """A snapshot of the engine's statistics (taken inside the trio run)."""

    async def wait_persisted(self, timeout_s: float) -> bool:
        """Wait (bounded) until the artifacts sent to the persister before the call are
        written; returns whether the store's writes are failing (``Engine.wait_persisted``).
        Raises ``EngineClosed`` when the engine is not running."""

    async def call_store(self, fn: Callable[[ArtifactStore], Awaitable[T]]) -> T | None:
        """``await fn(store)`` inside the trio run with the current engine's artifact
        store, starting the engine lazily; None when that engine stores no artifacts."""

    async def call_store_when_persisted(
        self, fn: Callable[[ArtifactStore], Awaitable[T]], timeout_s: float
    ) -> tuple[T | None, bool]:
        """The history read in one crossing: wait (at most ``timeout_s``) at the
        persister's barrier, then ``await fn(store)``, starting the engine lazily.
        Returns ``fn``'s result (None when the engine stores no artifacts) and whether
        the store's writes are failing (False when the barrier cannot be asked)."""

    async def reconfigure(
        self,
        config: EngineConfig,
        *,
        api_key: str | None = None,
        **services: Unpack[EngineServices],
    ) -> None:
        """Use a new config (and key, transport, store, side service, ledger) for new
        requests, dropping none in flight: a running bridge starts a new engine generation,
        and the previous one closes once its last request has ended."""

    async def aclose(self) -> None:
        """Graceful shutdown, waiting until the trio run has ended (idempotent)."""
