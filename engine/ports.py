"""What the engine needs from the outside world, as Protocols.

Real implementations live in ``adapters/`` (``adapters.openrouter_http``);
fakes live in ``tests/``. The engine never imports an I/O library: a
transport raises only ``engine.errors.UpstreamError`` subclasses, translated
at its own edge.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["EnginePorts", "UpstreamResponse", "UpstreamTransport"]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class EnginePorts:
    """The engine's dependencies. ``rng`` drives retry jitter (seed it in tests)."""

    transport: UpstreamTransport
    rng: random.Random = field(default_factory=random.Random)
