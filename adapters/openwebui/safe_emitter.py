"""``SafeEmitter``: Open WebUI's ``__event_emitter__`` made safe for an answer's hot path.

The only asyncio-flavoured part of what Open WebUI sees of an answer. It owns
one request's emitter: a dead or stuck socket never breaks the answer (which
still travels over HTTP), every status goes through the request's
``StatusHistory``, and a status line left open is ended.

On cancellation: ``asyncio.CancelledError`` passes through every emit
untouched (Open WebUI's stop button must stop the answer); the caller's
``finally`` awaits ``close_statuses()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from orpipe.adapters.openwebui.events import status_event
from orpipe.adapters.openwebui.statuses import STOPPED, StatusHistory

__all__ = ["EMIT_TIMEOUT_S", "Emitter", "SafeEmitter"]

log = logging.getLogger("orpipe.owui")

#: Open WebUI's ``__event_emitter__``: an async callable taking one event dict.
Emitter = Callable[[dict[str, Any]], Awaitable[None]]

#: The longest one event may take to reach Open WebUI's socket layer.
EMIT_TIMEOUT_S = 5.0


class SafeEmitter:
    """``__event_emitter__`` made safe to call from an answer's hot path.

    * ``None`` (API calls without a chat) makes every call a no-op.
    * An exception from the emitter (the socket or Redis is gone) must not
      break the answer, which still travels over HTTP: it is logged once per
      request on ``orpipe.owui`` and swallowed; later events are still tried.
    * An emit that hangs (a stuck socket or Redis) is given up after
      ``EMIT_TIMEOUT_S`` and counted as a failure, so it cannot stall the
      answer that still flows over HTTP.
    * ``asyncio.CancelledError`` is a ``BaseException`` and is never caught:
      Open WebUI's stop button must stop the answer.
    * Every ``status`` event that passes through, whoever built it, goes
      through this request's ``StatusHistory``: one Open WebUI would list as
      a blank dot (no text, ``hidden``) is not sent, a closing repeat becomes
      its past-tense line, a repeated text is numbered. ``close_statuses()``
      -- to be awaited at the end of every request, success, error or
      cancellation -- ends a status line still open with ``STOPPED`` (after
      a normal ending the renderer's final line has closed it already).
    """

    def __init__(self, emitter: Emitter | None) -> None:
        self._emitter = emitter
        self._statuses = StatusHistory()
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self._emitter is not None

    @property
    def failures(self) -> int:
        """How many emits raised (only the first was logged)."""
        return self._failures

    @property
    def open_status(self) -> str | None:
        """The status line sent last, while it is still open (shimmering)."""
        return self._statuses.open

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Deliver one event; never raises except for cancellation."""
        if event.get("type") == "status":
            data = event.get("data")
            # Tracked by intent, delivered or not: a later line supersedes it anyway.
            entry = self._statuses.entry(data) if isinstance(data, Mapping) else None
            if entry is None:
                log.debug("status not sent (no text, or hidden): %r", data)
                return
            event = {**event, "data": entry}
        if self._emitter is None:
            return
        try:
            async with asyncio.timeout(EMIT_TIMEOUT_S):
                await self._emitter(dict(event))
        except TimeoutError:
            self._failed(TimeoutError(f"no answer within {EMIT_TIMEOUT_S:g} s"))
        except Exception as exc:
            self._failed(exc)

    async def status(self, description: str, *, done: bool, **extra: Any) -> None:
        await self.emit(status_event(description, done=done, **extra))

    async def close_statuses(self) -> None:
        """End a status line that still shimmers with ``STOPPED`` (once; a no-op otherwise)."""
        if self._statuses.open is not None:
            await self.status(STOPPED, done=True)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            log.warning(
                "Open WebUI's event emitter failed (%s: %s); the answer continues over HTTP "
                "and further emitter failures of this request are not logged",
                type(exc).__name__,
                exc,
            )
