"""Downloads of remote files for intake: SSRF-vetted, size-capped, retried within a budget.

``Downloader.fetch(url)`` returns the body and its media type, or raises
``DownloadError`` (a person-readable reason: refused, too large, failed after
retries). It runs on the asyncio loop of the adapter (httpx), and:

* vets the URL with ``adapters.openwebui.ssrf_guard`` and connects **to the vetted
  address**, never resolving the name again: the request goes to
  ``https://<address>/...`` with the name in the ``Host`` header and as the
  TLS server name (``sni_hostname``), so the certificate is still checked
  against the name;
* follows redirects itself, vetting every hop (``max_redirects``), and
  refuses https → http;
* refuses a ``Content-Length`` over the limit before reading, and stops as
  soon as the bytes read pass it (a lying or missing length changes nothing);
  memory is one buffer per download, at most the limit;
* retries network errors, timeouts, 408, 425, 429 and 5xx with exponential
  backoff (httpx errors are sorted by ``adapters.openrouter.http_errors``;
  any other one ends the download); a ``Retry-After`` is honoured **up to** ``retry_after_cap_s``
  (a longer one ends the download instead of stalling the user), and the
  whole download, retries included, fits in ``total_budget_s``;
* limits concurrent downloads with the semaphores it is given (per process
  and per request).

Owns one ``httpx.AsyncClient`` (closed by ``aclose``). Redirects, retries and
limits are its own, not httpx's: ``follow_redirects=False``, no proxies from
the environment (a proxy would resolve the name itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import Collection
from dataclasses import dataclass, field

import httpx

from orpipe.adapters.openrouter.http_errors import HttpFailure, translate_httpx_errors
from orpipe.adapters.openwebui.data_urls import readable_size
from orpipe.adapters.openwebui.refusal import Refusal
from orpipe.adapters.openwebui.ssrf_guard import (
    AsyncioResolver,
    Resolver,
    UnsafeUrl,
    VettedTarget,
    vet,
    vet_redirect,
)
from orpipe.engine.backoff import capped_backoff

__all__ = ["DownloadError", "DownloadLimits", "Downloaded", "Downloader"]

_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DownloadError(Refusal):
    """A download that did not happen; ``reason`` says why, for the person who asked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadLimits:
    """The REMOTE_DOWNLOAD_* valves and REMOTE_FILE_MAX_SIZE_MB, in engine units."""

    max_bytes: int = 50 * 1024 * 1024
    #: Connect and per-read timeout of one attempt.
    attempt_timeout_s: float = 10.0
    #: Everything, retries and waits included.
    total_budget_s: float = 45.0
    max_retries: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_cap_s: float = 10.0
    max_redirects: int = 3
    #: Hosts that may be fetched over plain http (none by default).
    allow_http_hosts: Collection[str] = ()
    #: Tests only: lets a loopback server be the target. Never on in production.
    allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class Downloaded:
    body: bytes
    media_type: str
    #: The URL the body came from (after redirects).
    final_url: str


@dataclass
class Downloader:
    """Fetches remote files under ``limits``; one per process (it owns a client)."""

    limits: DownloadLimits = field(default_factory=DownloadLimits)
    resolver: Resolver = field(default_factory=AsyncioResolver)
    #: At most this many downloads at once in the process.
    process_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    rng: random.Random = field(default_factory=random.Random)
    _client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(
        self,
        url: str,
        *,
        request_slots: asyncio.Semaphore | None = None,
        max_bytes: int | None = None,
    ) -> Downloaded:
        """Download ``url``; ``DownloadError`` says why when it cannot be had.

        ``max_bytes`` lowers the size limit for this download (never raises it).
        """
        limits = self.limits
        limit = limits.max_bytes if max_bytes is None else min(max_bytes, limits.max_bytes)
        async with contextlib.AsyncExitStack() as stack:
            if request_slots is not None:
                await stack.enter_async_context(request_slots)
            await stack.enter_async_context(self.process_slots)
            try:
                async with asyncio.timeout(limits.total_budget_s):
                    return await self._fetch(url, limit)
            except TimeoutError:
                raise DownloadError(
                    f"the download took longer than {limits.total_budget_s:g} s and was stopped"
                ) from None
            except UnsafeUrl as exc:
                raise DownloadError(f"the address was refused: {exc.reason}") from None

    async def _fetch(self, url: str, limit: int) -> Downloaded:
        limits = self.limits
        target = await self._vet(url)
        hop = 0
        attempt = 0
        while True:
            try:
                response_or_redirect = await self._attempt(target, limit)
            except _Retryable as exc:
                attempt += 1
                if attempt > limits.max_retries:
                    raise DownloadError(
                        f"the download failed {attempt} times ({exc.reason}); try again later"
                    ) from None
                await asyncio.sleep(self._delay(attempt, exc.retry_after_s))
                continue
            if isinstance(response_or_redirect, Downloaded):
                return response_or_redirect
            hop += 1
            target = await vet_redirect(
                target,
                response_or_redirect,
                hop=hop,
                max_hops=limits.max_redirects,
                resolver=self.resolver,
                allow_http_hosts=limits.allow_http_hosts,
                allow_loopback=limits.allow_loopback,
            )

    async def _vet(self, url: str) -> VettedTarget:
        return await vet(
            url,
            resolver=self.resolver,
            allow_http_hosts=self.limits.allow_http_hosts,
            allow_loopback=self.limits.allow_loopback,
        )

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        limits = self.limits
        # Equal jitter, so retries do not line up.
        backoff = capped_backoff(
            attempt - 1, base_s=limits.backoff_initial_s, cap_s=limits.backoff_max_s, rng=self.rng
        )
        if retry_after_s is None:
            return backoff
        if retry_after_s > limits.retry_after_cap_s:
            raise DownloadError(
                f"the server asked to retry in {retry_after_s:.0f} s, longer than the "
                f"{limits.retry_after_cap_s:g} s this pipe waits; try again later"
            )
        return max(backoff, retry_after_s)

    async def _attempt(self, target: VettedTarget, limit: int) -> Downloaded | str:
        """One request: the body, or the Location to follow; ``_Retryable`` to try again."""
        client = self._client_now()
        address = target.addresses[0]
        host = f"[{address}]" if address.version == 6 else str(address)
        url = f"{target.scheme}://{host}:{target.port}{target.target}"
        headers = {"Host": _host_header(target), "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = client.build_request("GET", url, headers=headers, extensions=extensions)
        with translate_httpx_errors(_failed_attempt):
            response = await client.send(request, stream=True)
        async with contextlib.aclosing(response):
            status = response.status_code
            if status in _REDIRECTS:
                return str(response.headers.get("location", ""))
            if status in _RETRY_STATUSES:
                raise _Retryable(
                    f"HTTP {status}", _retry_after(response.headers.get("retry-after"))
                )
            if status >= 400:
                raise DownloadError(f"the server answered HTTP {status}")
            body = await self._read(response, limit)
        media_type = response.headers.get("content-type", "application/octet-stream")
        return Downloaded(
            body=body, media_type=media_type.split(";")[0].strip(), final_url=target.url
        )

    async def _read(self, response: httpx.Response, limit: int) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise DownloadError(_too_large(limit, f"the server says {int(declared):,} bytes"))
        buffer = bytearray()
        with translate_httpx_errors(_failed_attempt):
            async for chunk in response.aiter_raw():
                buffer += chunk
                if len(buffer) > limit:
                    raise DownloadError(_too_large(limit, "it kept coming past the limit"))
        return bytes(buffer)

    def _client_now(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = self.limits.attempt_timeout_s
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # a proxy would resolve the name itself
                timeout=httpx.Timeout(timeout),
                # No connection is kept for reuse: a pooled connection is keyed by the
                # address, and one opened (and certificate-checked) for one host name
                # must never carry a request for another name on the same address.
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=0),
            )
        return self._client


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


def _failed_attempt(failure: HttpFailure) -> _Retryable | DownloadError:
    """A timeout or a network failure is worth another attempt; anything else ends the download."""
    if failure.kind in ("timeout", "network"):
        return _Retryable(failure.name)
    return DownloadError(f"the download failed ({failure.detail})")


def _too_large(limit: int, detail: str) -> str:
    return (
        f"the file is larger than the {readable_size(limit)} limit ({detail}); "
        "upload a smaller file"
    )


def _host_header(target: VettedTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date); None if absent."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
