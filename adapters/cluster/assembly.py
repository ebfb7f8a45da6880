"""The Redis admission ledger, opened from its ``LedgerSettings`` and the engine's config.

``open_ledger(settings, config)`` is an async context manager the bridge opens
inside the trio run, once per engine generation (the Open WebUI side builds
the settings from its valves and hands the bridge ``partial(open_ledger,
settings)``). The limits come from the engine's config
(``max_concurrent_requests``, ``queue_maxsize``, ``busy_retry_after_s``), so a
change of valves reaches the ledger with the new generation.

Opening does no I/O (a Redis that is down at start means local shares until
it answers); leaving closes the ledger's own Redis connections. The engine
runs ``ledger.run()``; this module starts nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from orpipe.adapters.cluster.redis_ledger import MAX_LEASE_S, RedisAdmissionLedger
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.engine.config import EngineConfig

__all__ = ["LedgerSettings", "open_ledger"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSettings:
    """Where the shared ledger lives and how it behaves (no limits: those are the engine's)."""

    redis_url: str
    #: Every worker using the same prefix (and Redis) shares the limits.
    prefix: str
    lease_s: float = MAX_LEASE_S
    #: The number of workers, for the share each admits alone while Redis is out of
    #: reach; None: the live workers last seen.
    workers: int | None = None

    def key(self) -> tuple[object, ...]:
        """Equal keys describe the same ledger; the URL (it may carry a password)
        enters only as a keyed hash, as in ``StoreSettings.key``."""
        url = hashlib.blake2b(
            self.redis_url.encode(), key=b"orpipe-ledger", digest_size=16
        ).hexdigest()
        return (url, self.prefix, self.lease_s, self.workers)

    def __repr__(self) -> str:  # never print the URL (it may carry a password)
        return (
            f"LedgerSettings(prefix={self.prefix!r}, lease_s={self.lease_s}, "
            f"workers={self.workers})"
        )


@asynccontextmanager
async def open_ledger(
    settings: LedgerSettings, config: EngineConfig
) -> AsyncIterator[RedisAdmissionLedger]:
    """trio: a ledger on its own Redis connections (closed on leaving)."""
    link = RedisLink(settings.redis_url)
    try:
        yield RedisAdmissionLedger(
            link,
            prefix=settings.prefix,
            limit=config.max_concurrent_requests,
            queue_maxsize=config.queue_maxsize,
            busy_retry_after_s=config.busy_retry_after_s,
            lease_s=settings.lease_s,
            workers=settings.workers,
        )
    finally:
        link.close()
