"""What the engine needs from the outside world, as Protocols.

Real implementations live in ``adapters/`` (``adapters.openrouter.transport``);
fakes live in ``tests/``. The engine never imports an I/O library: a
transport raises only ``engine.errors.UpstreamError`` subclasses, translated
at its own edge.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from orpipe.engine.artifacts import Artifact
from orpipe.engine.statistics import LedgerStats

__all__ = [
    "AdmissionLedger",
    "ArtifactStore",
    "EnginePorts",
    "LedgerVerdict",
    "UpstreamResponse",
    "UpstreamTransport",
]


class UpstreamResponse(Protocol):
    """An HTTP response whose body has not been read yet."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers; lookups ignore case (``headers.get("retry-after")``)."""
        ...

    def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        """Body chunks as they arrive.

        Raises ``UpstreamTimeout`` when no byte arrives within the idle read
        timeout and ``UpstreamProtocolError`` when the connection breaks.
        """
        ...

    async def read_limited(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (for error envelopes)."""
        ...


class UpstreamTransport(Protocol):
    """Opens one streaming ``POST /responses`` per call."""

    def stream(self, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Send ``body``; entering yields the response once its headers arrived.

        Raises ``UpstreamConnectError`` or ``UpstreamTimeout`` on entry.
        """
        ...


class ArtifactStore(Protocol):
    """Durable storage of artifacts (trio-flavoured; implementations in ``adapters``).

    Every method may raise ``StoreUnavailable`` (retry later) or another
    ``PersistenceError``; none raises a foreign exception type.
    """

    async def write(self, artifacts: Sequence[Artifact]) -> None:
        """Store these artifacts. Idempotent by artifact id: writing one twice keeps one."""
        ...

    async def fetch(self, chat_id: str, artifact_ids: Sequence[str]) -> dict[str, Artifact]:
        """The artifacts of ``chat_id`` with these ids that exist and can be read.

        A row that cannot be decrypted or decoded is left out (and logged with
        its id), never raised.
        """
        ...

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]:
        """Ids of a chat's artifacts (optionally of some messages), oldest first."""
        ...

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int:
        """Remove these artifacts; returns how many existed."""
        ...

    async def delete_older_than(self, cutoff_unix_s: float) -> int:
        """Age cleanup: remove artifacts created before the cutoff; returns the count."""
        ...


@dataclass(frozen=True, slots=True)
class LedgerVerdict:
    """A shared ledger's answer to a request that arrives or asks again."""

    #: The request holds a permit (a lease the ledger keeps renewed) and may start.
    admitted: bool
    #: Set when the shared line is full: the request is refused at once, and the
    #: person asking may retry after this many seconds.
    retry_after_s: float | None = None


class AdmissionLedger(Protocol):
    """Permits and one waiting line shared by every engine (worker) that uses the same ledger.

    Several Open WebUI workers each run an engine; the ledger makes
    ``max_concurrent_requests`` and ``queue_maxsize`` hold for all of them together.
    The engine's own waiting room still keeps its local waiters in order and
    enforces their deadlines; the ledger decides, across workers, who goes next
    (arrival order across workers). A ledger that cannot reach its shared state
    degrades by itself (a per-worker share of the limit) and says so in its
    statistics: its methods do not raise for that.
    """

    async def arrive(self, request_id: str) -> LedgerVerdict:
        """A new request, in one round trip: a permit at once when one is free and nobody
        waits ahead of it; else a place in the shared line (``admitted`` False, no retry
        hint); else refused because the shared line is full (``retry_after_s`` set)."""
        ...

    async def retry(self, request_id: str) -> bool:
        """A waiter asks again: True when its place in the line has become a permit."""
        ...

    async def leave(self, request_id: str) -> None:
        """The request ended or its waiter left: give back its permit or its place
        (idempotent; unknown ids are ignored)."""
        ...

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return when a permit may have been freed anywhere, or after ``timeout_s``."""
        ...

    async def run(self) -> None:
        """The ledger's upkeep for as long as the engine runs (renewing this worker's
        leases, noticing its shared state come and go); the engine runs it as a
        supervised service, so it may raise ``OSError`` to be restarted."""
        ...

    def statistics(self) -> LedgerStats:
        """What the ledger holds and last saw (synchronous: no round trip)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EnginePorts:
    """The engine's dependencies. ``rng`` drives retry jitter (seed it in tests)."""

    transport: UpstreamTransport
    rng: random.Random = field(default_factory=random.Random)
    #: Where the persister writes artifacts; None = artifacts are not stored.
    artifacts: ArtifactStore | None = None
    #: Limits shared with other engines (workers); None = this engine's own room only.
    admission_ledger: AdmissionLedger | None = None
