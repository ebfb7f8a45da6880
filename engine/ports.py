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

__all__ = ["ArtifactStore", "EnginePorts", "UpstreamResponse", "UpstreamTransport"]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class EnginePorts:
    """The engine's dependencies. ``rng`` drives retry jitter (seed it in tests)."""

    transport: UpstreamTransport
    rng: random.Random = field(default_factory=random.Random)
    #: Where the persister writes artifacts; None = artifacts are not stored.
    artifacts: ArtifactStore | None = None
