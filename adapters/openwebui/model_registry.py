"""The model catalogue's registry: fetches, caches and refreshes it for the Open WebUI pipe.

This module owns everything between ``GET {base_url}/models`` and the pipe's
use of the parsed ``adapters.openrouter.catalogue.Catalogue``, refreshed when
its ``RefreshSchedule`` says so:

* the registry that fetches, caches and shares the catalogue
  (``ModelCatalogRegistry``, one per loop, base URL and API key through
  ``registry_for``), and ``close_registries``;
* the errors of a fetch: ``CatalogueAuthError``, ``CatalogueUnreachable``,
  and ``CatalogueError`` for every other failure.

asyncio-flavoured (await it on the loop that runs the Open WebUI pipe,
asyncio or uvloop): ``ModelCatalogRegistry.get / warm_up / aclose``,
``registry_for`` (synchronous, but needs the running loop) and
``close_registries``. On cancellation a caller stops waiting, but the shared
fetch goes on for the others (it is shielded); ``aclose`` cancels it.

httpx errors are translated by ``adapters.openrouter.http_errors`` into a
``CatalogueError`` whose message tells a person what happened and what to
do. The API key lives in a ``_Secret`` and in the httpx client's headers
(whose ``repr`` masks it): it is never part of a message, a ``repr`` or a
log line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import time
import urllib.parse
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Final, cast

import httpx

from orpipe.adapters.openrouter.catalogue import (
    DEFAULT_TTL_S,
    Catalogue,
    CatalogueError,
    RefreshSchedule,
    parse_catalogue,
)
from orpipe.adapters.openrouter.http_errors import HttpFailure, translate_httpx_errors
from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.backoff import capped_backoff
from orpipe.engine.errors import ConfigError

__all__ = [
    "CatalogueAuthError",
    "CatalogueUnreachable",
    "ModelCatalogRegistry",
    "close_registries",
    "registry_for",
]

_log = logging.getLogger("orpipe.catalogue")

DEFAULT_TIMEOUT_S: Final = 10.0
#: Warm-up retries: 0.5 s doubling, capped.
WARM_UP_FIRST_DELAY_S: Final = 0.5
WARM_UP_MAX_DELAY_S: Final = 4.0
#: Registries kept per loop before the least recently used one is closed.
MAX_REGISTRIES_PER_LOOP: Final = 16

#: OpenRouter's full catalogue is about 1 MB; far more means a wrong BASE_URL.
_BODY_LIMIT: Final = 32 * 1024 * 1024
_ERROR_BODY_LIMIT: Final = 16 * 1024
_DETAIL_LIMIT: Final = 200


# --------------------------------------------------------------------------- errors


class CatalogueAuthError(CatalogueError):
    """OpenRouter refused the API key (401/403); retrying will not help."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"OpenRouter rejected the API key (HTTP {status}). "
            "Paste a valid key into the API_KEY valve.",
            status=status,
        )


class CatalogueUnreachable(CatalogueError):
    """OpenRouter could not be reached, or did not answer in time."""

    def __init__(self, base_url: str, reason: str) -> None:
        self.base_url = base_url
        self.reason = reason
        super().__init__(
            f"OpenRouter is unreachable at {base_url} ({reason}). "
            "Check BASE_URL and the network; retrying automatically.",
            retryable=True,
        )


# --------------------------------------------------------------------------- the registry


class _Secret:
    """The API key, printed as a mask wherever an object graph is printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "_Secret('[secure]')" if self._value else "_Secret('')"

    def headers(self) -> dict[str, str]:
        # /models is public on OpenRouter, so no key means no header rather than an error.
        return {"Authorization": f"Bearer {self._value}"} if self._value else {}

    def redact(self, text: str) -> str:
        """Text from elsewhere (a server's error body) with the key masked, in case it echoes it."""
        return text.replace(self._value, "[secure]") if self._value else text

    def fingerprint(self) -> str:
        # Keyed, so the registry table holds nothing a plain hash lookup could reverse.
        digest = hashlib.blake2b(self._value.encode(), key=b"orpipe-catalogue", digest_size=16)
        return digest.hexdigest()


class ModelCatalogRegistry(AsyncResource):
    """Fetches, caches and refreshes one catalogue (one base URL and API key).

    asyncio-flavoured: use it on one loop (``registry_for`` keeps one per
    loop). ``get`` never makes a caller wait for a refresh when it has data:
    stale data is served while a single background task refreshes it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not timeout_s > 0:
            raise ConfigError("timeout_s", timeout_s, "a number of seconds > 0")
        self._base_url = _normal_base_url(base_url)
        self._display_url = _display_url(self._base_url)
        self._secret = _Secret(api_key)
        self._schedule = RefreshSchedule(ttl_s)
        self._timeout_s = float(timeout_s)
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._catalogue: Catalogue | None = None
        self._inflight: asyncio.Task[Catalogue] | None = None
        self._closed = False
        #: The error of the latest fetch; None once a fetch succeeds.
        self.last_error: CatalogueError | None = None

    def __repr__(self) -> str:
        size = "none" if self._catalogue is None else str(len(self._catalogue))
        return (
            f"ModelCatalogRegistry(base_url={self._display_url!r}, models={size}, "
            f"refresh_failures={self.refresh_failures}, closed={self._closed})"
        )

    # ----------------------------------------------------------------- statistics

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def ttl_s(self) -> float:
        return self._schedule.ttl_s

    @ttl_s.setter
    def ttl_s(self, value: float) -> None:
        self._schedule.ttl_s = value

    @property
    def fetched_at(self) -> float | None:
        """The clock reading (``time.monotonic`` by default) of the last successful fetch."""
        return self._schedule.last_success_at

    @property
    def refresh_failures(self) -> int:
        """Failed fetches since the last success."""
        return self._schedule.failures

    @property
    def refreshing(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    @property
    def closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------- use

    async def get(self) -> Catalogue:
        """The catalogue: cached if fresh, stale (refreshing behind) if not, else fetched.

        Without data every call may fetch (concurrent callers share one
        fetch), so a failed warm-up never locks users out; the error of that
        fetch is raised. With data, a refresh starts only once the backoff
        after failures allows it, and its failure is only logged.
        """
        if self._closed:
            raise _closed_error()
        catalogue = self._catalogue
        if catalogue is None:
            return await self._await_refresh()
        now = self._clock()
        if self._schedule.stale(now) and self._schedule.due(now):
            self._start_refresh()
        return catalogue

    async def warm_up(self, *, attempts: int = 3) -> Catalogue:
        """First use: load the catalogue, retrying transient failures only.

        Retries connect errors, timeouts, 5xx and 429 after 0.5 s, 1 s, 2 s ...
        (at most 4 s); a rejected key (401/403) or a nonsensical answer is
        raised at once, since waiting cannot fix it.
        """
        if attempts < 1:
            raise ConfigError("attempts", attempts, "1 or more")
        for attempt in range(1, attempts):
            delay = capped_backoff(
                attempt - 1, base_s=WARM_UP_FIRST_DELAY_S, cap_s=WARM_UP_MAX_DELAY_S
            )
            try:
                return await self.get()
            except CatalogueError as exc:
                if not exc.retryable:
                    raise
                _log.info(
                    "Model catalogue warm-up attempt %d of %d failed (%s); retrying in %.1f s",
                    attempt,
                    attempts,
                    exc.message,
                    delay,
                )
            await self._sleep(delay)
        return await self.get()

    async def aclose(self) -> None:
        """Cancel a running refresh and close the HTTP client; ``get`` fails afterwards."""
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait never raises, so our own cancellation is not swallowed here.
            await asyncio.wait([task])
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # ----------------------------------------------------------------- refresh

    def _start_refresh(self) -> asyncio.Task[Catalogue]:
        """The running refresh, or a new one: never two at once (single flight)."""
        task = self._inflight
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._refresh(), name="orpipe-catalogue-refresh"
            )
            task.add_done_callback(self._refresh_done)
            self._inflight = task
        return task

    async def _await_refresh(self) -> Catalogue:
        task = self._start_refresh()
        try:
            # Shielded: a caller that gives up must not cancel the fetch others share.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not _current_task_cancelling():
                raise _closed_error() from None  # aclose() cancelled the shared fetch
            raise

    def _refresh_done(self, task: asyncio.Task[Catalogue]) -> None:
        if self._inflight is task:
            self._inflight = None
        if task.cancelled():
            return
        # Retrieving the exception keeps asyncio from reporting it as never retrieved;
        # catalogue errors were logged by _refresh, anything else is a bug worth a trace.
        exc = task.exception()
        if exc is not None and not isinstance(exc, CatalogueError):
            _log.error("Model catalogue refresh crashed", exc_info=exc)

    async def _refresh(self) -> Catalogue:
        try:
            catalogue = await self._fetch()
        except CatalogueError as exc:
            self._record_failure(exc)
            raise
        self._record_success(catalogue)
        return catalogue

    def _record_success(self, catalogue: Catalogue) -> None:
        self._schedule.record_success(self._clock())
        self._catalogue = catalogue
        self.last_error = None
        _log.info(
            "Model catalogue loaded from %s: %d models (%d malformed entries skipped)",
            self._display_url,
            len(catalogue),
            catalogue.skipped,
        )

    def _record_failure(self, exc: CatalogueError) -> None:
        pause = self._schedule.record_failure(self._clock())
        self.last_error = exc
        serving = "serving the previous list" if self._catalogue is not None else "no list yet"
        _log.warning(
            "Model catalogue refresh failed (%d in a row; %s): %s Next attempt in %.0f s.",
            self._schedule.failures,
            serving,
            exc.message,
            pause,
        )

    # ----------------------------------------------------------------- HTTP

    async def _fetch(self) -> Catalogue:
        client = await self._client_now()
        try:
            # httpx times each phase; this bounds the whole exchange, so a server
            # dripping bytes cannot hold a refresh (and its waiting callers) forever.
            async with asyncio.timeout(self._timeout_s):
                with translate_httpx_errors(self._fetch_failed):
                    status, body = await self._download(client)
        except TimeoutError as exc:
            raise self._unreachable(f"no complete answer within {self._timeout_s:g} s") from exc
        if status != 200:
            raise self._status_error(status, body)
        return self._decode(body)

    def _fetch_failed(self, failure: HttpFailure) -> CatalogueError:
        if failure.kind == "timeout":
            return self._unreachable(f"no answer within {self._timeout_s:g} s")
        if failure.kind == "network":
            return self._unreachable(failure.detail)
        if failure.kind == "bad_url":
            return CatalogueError(
                f"BASE_URL {self._display_url!r} is not a usable URL ({failure.detail}); "
                "set it to https://openrouter.ai/api/v1."
            )
        return CatalogueError(
            f"OpenRouter at {self._display_url} broke off the model list "
            f"({failure.detail}); retrying automatically.",
            retryable=True,
        )

    async def _client_now(self) -> httpx.AsyncClient:
        if self._client is None:
            # Built in a thread: a default client loads the CA bundle from disk,
            # which would block the loop. Only one fetch runs at a time, so no race.
            client = await asyncio.to_thread(self._new_client)
            if self._closed:  # aclose() ran meanwhile and would not see this client
                await client.aclose()
                raise _closed_error()
            self._client = client
        return self._client

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            headers={"Accept": "application/json", **self._secret.headers()},
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,
        )

    async def _download(self, client: httpx.AsyncClient) -> tuple[int, bytes]:
        async with client.stream("GET", f"{self._base_url}/models") as response:
            if response.status_code != 200:
                return response.status_code, await _read(response, _ERROR_BODY_LIMIT, cut=True)
            return 200, await _read(response, _BODY_LIMIT, cut=False)

    def _decode(self, body: bytes) -> Catalogue:
        # Decoded on the loop: about 8 ms for a 1 MB catalogue, once per TTL, and
        # json.loads holds the GIL throughout, so a worker thread would not free the loop.
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise CatalogueError(
                f"OpenRouter at {self._display_url} answered the model list with something that "
                "is not JSON; check that BASE_URL points at OpenRouter's API "
                "(https://openrouter.ai/api/v1)."
            ) from exc
        return parse_catalogue(payload)

    def _unreachable(self, reason: str) -> CatalogueUnreachable:
        return CatalogueUnreachable(self._display_url, self._secret.redact(reason))

    def _status_error(self, status: int, body: bytes) -> CatalogueError:
        if status in (401, 403):
            return CatalogueAuthError(status)
        detail = self._secret.redact(_error_detail(body))
        said = f" OpenRouter said: {detail}" if detail else ""
        if status == 429:
            advice = "OpenRouter rate-limited the model list request (HTTP 429); retrying"
            return CatalogueError(f"{advice} automatically.{said}", status=status, retryable=True)
        if status >= 500 or status == 408:
            advice = f"OpenRouter could not list its models (HTTP {status}); retrying"
            return CatalogueError(f"{advice} automatically.{said}", status=status, retryable=True)
        if status == 404:
            advice = f"There is no model list at {self._display_url}/models (HTTP 404)"
            return CatalogueError(
                f"{advice}; check that BASE_URL ends in /api/v1.{said}", status=status
            )
        return CatalogueError(
            f"OpenRouter answered HTTP {status} to the model list request; check BASE_URL and "
            f"the API_KEY valve.{said}",
            status=status,
        )


async def _read(response: httpx.Response, limit: int, *, cut: bool) -> bytes:
    """The body up to ``limit`` bytes: cut there (error bodies) or refused beyond it."""
    body = bytearray()
    # httpx's aiter_bytes is an async generator though typed as an iterator; closing
    # it explicitly when we stop early keeps it from being finalised by the GC.
    chunks = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                if cut:
                    break
                raise CatalogueError(
                    f"OpenRouter's model list is larger than {limit / 2**20:g} MiB; check "
                    "that BASE_URL points at OpenRouter's API."
                )
    return bytes(body[:limit])


def _error_detail(body: bytes) -> str:
    """OpenRouter's ``{"error": {"message": ...}}``, shortened to one line."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return ""
    line = " ".join(message.split())
    return line if len(line) <= _DETAIL_LIMIT else line[: _DETAIL_LIMIT - 1] + "…"


def _closed_error() -> CatalogueError:
    return CatalogueError("The model catalogue was closed (settings changed or shutdown); retry.")


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _normal_base_url(base_url: str) -> str:
    return base_url.strip().rstrip("/")


def _display_url(base_url: str) -> str:
    """The URL without user info, query or fragment, which may carry credentials."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


# --------------------------------------------------------------------------- per-loop registries

_RegistryKey = tuple[str, str]
_REGISTRIES: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, collections.OrderedDict[_RegistryKey, ModelCatalogRegistry]
] = weakref.WeakKeyDictionary()
#: Background closes of evicted registries; held here so they are not garbage collected.
_CLOSING: set[asyncio.Task[None]] = set()


def registry_for(
    base_url: str, api_key: str, *, ttl_s: float = DEFAULT_TTL_S
) -> ModelCatalogRegistry:
    """The running loop's registry for this base URL and API key (created on first use).

    Call it from a coroutine on the loop (it raises ``RuntimeError`` without one).
    Registries are keyed by a keyed fingerprint of the key, never the key; at
    most 16 live per loop, the least recently used is closed in the background.
    A different ``ttl_s`` updates the existing registry.
    """
    loop = asyncio.get_running_loop()
    table = _REGISTRIES.get(loop)
    if table is None:
        table = _REGISTRIES[loop] = collections.OrderedDict()
    key = (_normal_base_url(base_url), _Secret(api_key).fingerprint())
    registry = table.get(key)
    if registry is not None:
        table.move_to_end(key)
        if registry.ttl_s != ttl_s:
            registry.ttl_s = ttl_s
        return registry
    registry = table[key] = ModelCatalogRegistry(base_url, api_key, ttl_s=ttl_s)
    while len(table) > MAX_REGISTRIES_PER_LOOP:
        _, evicted = table.popitem(last=False)
        _close_later(loop, evicted)
    return registry


def _close_later(loop: asyncio.AbstractEventLoop, registry: ModelCatalogRegistry) -> None:
    task = loop.create_task(registry.aclose(), name="orpipe-catalogue-close")
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def close_registries() -> None:
    """Close every registry of the running loop (shutdown, and the end of each test)."""
    loop = asyncio.get_running_loop()
    table = _REGISTRIES.pop(loop, None)
    registries = list(table.values()) if table else []
    closing = [task for task in _CLOSING if task.get_loop() is loop]
    await asyncio.gather(*(registry.aclose() for registry in registries), *closing)
