"""The OpenRouter HTTP transport: ``engine.ports.UpstreamTransport`` over httpx.

trio-flavoured (httpx picks its trio backend when run under trio). The
transport's connections are kept alive and reused across requests (the
original opened a session per request, weakness 20); they live in a few
small httpx clients (``adapters.openrouter.pool``) sized together from the
engine's concurrency limit.

Every httpx exception becomes an ``engine.errors.UpstreamError`` with a
message a person can act on (through ``adapters.openrouter.http_errors``). The API
key lives only in the client's default headers: it is never part of a
message, a ``repr`` or a statistic.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final, cast

import httpx
import trio

from orpipe.adapters.openrouter.http_errors import (
    HttpFailure,
    TimeoutPhase,
    translate_httpx_errors,
)
from orpipe.adapters.openrouter.pool import ShardedClients
from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = ["OpenRouterHttpTransport"]

_APP_TITLE = "orpipe"
_APP_URL = "https://github.com/orpipe/orpipe"
_CLOSE_GRACE_S = 5.0
#: What a request was doing when it timed out before the response head, by phase.
_PHASE_NAMES: Final[Mapping[TimeoutPhase, str]] = {
    "connect": "connect",
    "pool": "waiting for a free connection",
    "write": "sending the request",
    "read": "waiting for the first byte",
}


class _Response:
    """``UpstreamResponse`` over an httpx streaming response."""

    def __init__(self, response: httpx.Response, read_idle_timeout_s: float) -> None:
        self._response = response
        self._idle = read_idle_timeout_s

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        with translate_httpx_errors(self._cut_short):
            async with contextlib.aclosing(_raw_chunks(self._response)) as chunks:
                async for chunk in chunks:
                    yield chunk

    def _cut_short(self, failure: HttpFailure) -> UpstreamTimeout | UpstreamProtocolError:
        """The error of an answer that stopped in the middle."""
        if failure.kind == "timeout":
            return UpstreamTimeout(
                "idle read",
                self._idle,
                message=(
                    f"OpenRouter sent nothing for {self._idle:g} s in the middle of the answer, "
                    "so the request was stopped; retry."
                ),
            )
        return UpstreamProtocolError(
            "The connection to OpenRouter was cut in the middle of the answer "
            f"({failure.detail}); retry to get a complete answer."
        )

    async def read_limited(self, limit: int) -> bytes:
        body = bytearray()
        try:
            async with contextlib.aclosing(_raw_chunks(self._response)) as chunks:
                async for chunk in chunks:
                    body += chunk
                    if len(body) >= limit:
                        break
        except httpx.TransportError:
            pass  # the status code already tells what happened
        return bytes(body[:limit])


class OpenRouterHttpTransport(AsyncResource):
    """Streams ``POST {base_url}/responses``; use as ``async with``."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        api_key: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            # Identity, so raw chunks are SSE bytes with no decoder in between.
            "Accept-Encoding": "identity",
            "HTTP-Referer": _APP_URL,
            "X-Title": _APP_TITLE,
            **(extra_headers or {}),
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._clients = ShardedClients(
            config.max_concurrent_requests + 8,
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_idle_timeout_s,
                write=config.connect_timeout_s,
                pool=config.connect_timeout_s,
            ),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OpenRouterHttpTransport(base_url={self._config.base_url!r})"

    async def open(self) -> None:
        await self._clients.open()

    async def aclose(self) -> None:
        await self._clients.aclose()

    @asynccontextmanager
    async def stream(self, body: bytes) -> AsyncIterator[_Response]:
        client = self._clients.next()
        request = client.build_request("POST", "responses", content=body)
        with translate_httpx_errors(self._not_sent):
            response = await client.send(request, stream=True)
        try:
            yield _Response(response, self._config.read_idle_timeout_s)
        finally:
            # Shielded so a cancelled request still returns its connection to
            # the pool; bounded so a dead peer cannot hold the cancellation.
            with trio.move_on_after(_CLOSE_GRACE_S, shield=True):
                await response.aclose()

    def _not_sent(self, failure: HttpFailure) -> UpstreamTimeout | UpstreamConnectError:
        """The error of a request that got no response head."""
        if failure.phase is None:
            return UpstreamConnectError(failure.detail)
        config = self._config
        # Only the wait for the response head runs on the read timeout.
        limit = config.read_idle_timeout_s if failure.phase == "read" else config.connect_timeout_s
        return UpstreamTimeout(_PHASE_NAMES[failure.phase], limit)


def _raw_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """httpx's ``aiter_raw`` is an async generator, though typed as an iterator."""
    return cast("AsyncGenerator[bytes, None]", response.aiter_raw())
