"""OpenRouter's model catalogue, as the Open WebUI pipe needs it.

This module owns everything between ``GET {base_url}/models`` and the pipe:

* the ``ModelInfo`` record (the contract shared with the request mapper and
  the pipe) and ``parse_catalogue``, which builds it from the decoded JSON;
* the Open WebUI sub ids ``pipes()`` exposes (``sub_id_for``), mapped back by
  table lookup only, because OpenRouter ids contain dots themselves;
* the ``MODEL_ID`` valve (``Catalogue.select``) and what Open WebUI sends in
  ``body["model"]`` (``Catalogue.resolve``);
* when to refresh (``RefreshSchedule``: TTL, and a capped backoff after
  failures) and the registry that fetches, caches and shares the catalogue
  (``ModelCatalogRegistry``, one per loop, base URL and API key through
  ``registry_for``).

Flavours:

* synchronous and pure (no I/O, no loop): ``sub_id_for``, ``parse_catalogue``,
  ``Catalogue``, ``Selection``, ``RefreshSchedule``;
* asyncio-flavoured (await them on the loop that runs the Open WebUI pipe,
  asyncio or uvloop): ``ModelCatalogRegistry.get / warm_up / aclose``,
  ``registry_for`` (synchronous, but needs the running loop) and
  ``close_registries``.

Every httpx exception is translated here into a ``CatalogueError`` whose
message tells a person what happened and what to do. The API key lives in a
``_Secret`` and in the httpx client's headers (whose ``repr`` masks it): it is
never part of a message, a ``repr`` or a log line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import re
import time
import types
import urllib.parse
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import httpx

from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.backoff import capped_backoff
from orpipe.engine.errors import ConfigError, EngineError

__all__ = [
    "Catalogue",
    "CatalogueAuthError",
    "CatalogueError",
    "CatalogueUnreachable",
    "ModelCatalogRegistry",
    "ModelInfo",
    "RefreshSchedule",
    "Selection",
    "close_registries",
    "parse_catalogue",
    "registry_for",
    "sub_id_for",
]

_log = logging.getLogger("orpipe.catalogue")

DEFAULT_TTL_S: Final = 3600.0
DEFAULT_TIMEOUT_S: Final = 10.0
#: Backoff after the n-th failure in a row: 5 s doubling, capped (and by the TTL).
BACKOFF_FIRST_S: Final = 5.0
BACKOFF_CAP_S: Final = 160.0
#: Warm-up retries: 0.5 s doubling, capped.
WARM_UP_FIRST_DELAY_S: Final = 0.5
WARM_UP_MAX_DELAY_S: Final = 4.0
#: Registries kept per loop before the least recently used one is closed.
MAX_REGISTRIES_PER_LOOP: Final = 16

#: OpenRouter's full catalogue is about 1 MB; far more means a wrong BASE_URL.
_BODY_LIMIT: Final = 32 * 1024 * 1024
_ERROR_BODY_LIMIT: Final = 16 * 1024
_DETAIL_LIMIT: Final = 200
_DISAMBIGUATOR: Final = "~"
#: Ids end up in Open WebUI model ids and in the comma-separated MODEL_ID valve.
_BAD_ID: Final = re.compile(r"[\s,\x00-\x1f\x7f]")


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """One catalogue entry, reduced to what the pipe decides with.

    Capabilities come from the catalogue only (``architecture.input_modalities``
    and ``supported_parameters``), never from a request.
    """

    #: OpenRouter's id, exactly as ``/models`` gave it ("openai/gpt-4o-2024-08-06").
    openrouter_id: str
    #: The Open WebUI-safe id ``pipes()`` exposes ("openai.gpt-4o-2024-08-06").
    sub_id: str
    name: str
    input_modalities: frozenset[str] = frozenset({"text"})
    output_modalities: frozenset[str] = frozenset({"text"})
    supported_parameters: frozenset[str] = frozenset()
    context_length: int | None = None
    #: ``top_provider.max_completion_tokens``.
    max_output_tokens: int | None = None
    #: ``pricing`` as given (USD per token or per request, as decimal strings).
    pricing: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def vision(self) -> bool:
        return "image" in self.input_modalities

    @property
    def file_input(self) -> bool:
        return "file" in self.input_modalities

    @property
    def audio_input(self) -> bool:
        return "audio" in self.input_modalities

    @property
    def video_input(self) -> bool:
        return "video" in self.input_modalities

    @property
    def reasoning(self) -> bool:
        return "reasoning" in self.supported_parameters

    @property
    def reasoning_summary(self) -> bool:
        return "include_reasoning" in self.supported_parameters

    @property
    def tools(self) -> bool:
        return bool({"tools", "tool_choice"} & self.supported_parameters)

    @property
    def structured_output(self) -> bool:
        return bool({"response_format", "structured_outputs"} & self.supported_parameters)

    @property
    def web_search(self) -> bool:
        """The model searches natively (or is priced for OpenRouter's web plugin)."""
        return "web_search_options" in self.supported_parameters or _positive(
            self.pricing.get("web_search")
        )


def _positive(price: str | None) -> bool:
    try:
        return price is not None and float(price) > 0
    except ValueError:
        return False


# --------------------------------------------------------------------------- errors


class CatalogueError(EngineError):
    """The model list could not be loaded, or made no sense."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        #: The HTTP status OpenRouter answered with, when there was one.
        self.status = status
        self.retryable = retryable


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


# --------------------------------------------------------------------------- ids


def sub_id_for(openrouter_id: str) -> str:
    """The Open WebUI-safe id of an OpenRouter id: every "/" becomes ".".

    Nothing else changes (case, ":free" variants, dates), so distinct models
    keep distinct sub ids; only the "/"-versus-"." clash remains, which
    ``parse_catalogue`` resolves.
    """
    return openrouter_id.replace("/", ".")


def _assign_sub_ids(openrouter_ids: Iterable[str]) -> dict[str, str]:
    """Sub id per OpenRouter id, unique, independent of the payload's order.

    The first id (in sorted order) owns a natural sub id; later ids that map
    to it get "~2", "~3", ... skipping every natural sub id, so a suffix never
    takes the id another model would get on its own.
    """
    ordered = sorted(set(openrouter_ids))
    natural = {oid: sub_id_for(oid) for oid in ordered}
    owners: dict[str, str] = {}
    for oid in ordered:
        owners.setdefault(natural[oid], oid)
    taken = set(owners)
    assigned: dict[str, str] = {}
    for oid in ordered:
        sub = natural[oid]
        if owners[sub] != oid:
            n = 2
            while f"{sub}{_DISAMBIGUATOR}{n}" in taken:
                n += 1
            sub = f"{sub}{_DISAMBIGUATOR}{n}"
            taken.add(sub)
        assigned[oid] = sub
    return assigned


# --------------------------------------------------------------------------- parsing


def parse_catalogue(payload: object) -> Catalogue:
    """A ``Catalogue`` from the decoded JSON of ``GET /models``.

    Entries without a usable id (or repeating one) are skipped and counted;
    other fields of the wrong type fall back to their defaults, so one odd
    field never hides a model. Raises ``CatalogueError`` if the payload is not
    ``{"data": [...]}`` or no entry is usable.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
        raise CatalogueError(
            'OpenRouter\'s model list is not shaped like {"data": [...]}; check that BASE_URL '
            "points at OpenRouter's API (https://openrouter.ai/api/v1)."
        )
    entries: dict[str, Mapping[str, Any]] = {}
    skipped = 0
    for entry in payload["data"]:
        oid = _entry_id(entry)
        if oid is None or oid in entries:
            skipped += 1
            continue
        entries[oid] = entry
    if not entries:
        raise CatalogueError(
            f"OpenRouter's model list has no usable model ({skipped} malformed entries "
            "skipped); check that BASE_URL points at OpenRouter's API, or try again later."
        )
    sub_ids = _assign_sub_ids(entries)
    models = [_model_info(oid, sub_ids[oid], entry) for oid, entry in entries.items()]
    renamed = {oid: sub for oid, sub in sub_ids.items() if sub != sub_id_for(oid)}
    for oid, sub in renamed.items():
        _log.warning(
            "Model id %r clashes with another id once '/' becomes '.'; exposed as %r", oid, sub
        )
    return Catalogue(models, skipped=skipped, renamed=renamed)


def _entry_id(entry: object) -> str | None:
    if not isinstance(entry, Mapping):
        return None
    oid = entry.get("id")
    if not isinstance(oid, str) or not oid or _BAD_ID.search(oid):
        return None
    return oid


def _model_info(oid: str, sub_id: str, entry: Mapping[str, Any]) -> ModelInfo:
    architecture = _mapping(entry.get("architecture"))
    top_provider = _mapping(entry.get("top_provider"))
    name = entry.get("name")
    return ModelInfo(
        openrouter_id=oid,
        sub_id=sub_id,
        name=name.strip() if isinstance(name, str) and name.strip() else oid,
        input_modalities=_strings(architecture.get("input_modalities"), default={"text"}),
        output_modalities=_strings(architecture.get("output_modalities"), default={"text"}),
        supported_parameters=_strings(entry.get("supported_parameters"), default=set()),
        context_length=_positive_int(entry.get("context_length")),
        max_output_tokens=_positive_int(top_provider.get("max_completion_tokens")),
        pricing=types.MappingProxyType(_prices(entry.get("pricing"))),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object, *, default: set[str]) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset(default)
    return frozenset(item for item in value if isinstance(item, str))


def _positive_int(value: object) -> int | None:
    # bool is an int in Python; ``true`` is not a token count.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _prices(value: object) -> dict[str, str]:
    """Prices are decimal strings; numbers (``discount``) are kept as text, lists dropped."""
    prices: dict[str, str] = {}
    for key, price in _mapping(value).items():
        if isinstance(price, str):
            prices[key] = price
        elif isinstance(price, int | float) and not isinstance(price, bool):
            prices[key] = str(price)
    return prices


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True, slots=True)
class Selection:
    """What the ``MODEL_ID`` valve picked, and the entries that named no model."""

    models: tuple[ModelInfo, ...]
    unknown: tuple[str, ...] = ()


class Catalogue:
    """An immutable set of models with lookups by sub id and by OpenRouter id."""

    __slots__ = ("_by_id", "_by_sub", "_folded", "models", "renamed", "skipped")

    def __init__(
        self,
        models: Iterable[ModelInfo],
        *,
        skipped: int = 0,
        renamed: Mapping[str, str] | None = None,
    ) -> None:
        #: Sorted by name (case-insensitively), then by OpenRouter id.
        self.models: tuple[ModelInfo, ...] = tuple(
            sorted(models, key=lambda m: (m.name.casefold(), m.name, m.openrouter_id))
        )
        #: Malformed or repeated entries ``parse_catalogue`` left out.
        self.skipped = skipped
        #: OpenRouter id → disambiguated sub id, for ids whose plain sub id clashed.
        self.renamed: Mapping[str, str] = types.MappingProxyType(dict(renamed or {}))
        self._by_sub = _index(self.models, lambda m: m.sub_id, "sub id")
        self._by_id = _index(self.models, lambda m: m.openrouter_id, "OpenRouter id")
        self._folded = _folded_index(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"Catalogue({len(self.models)} models, {self.skipped} skipped)"

    def get(self, sub_id: str) -> ModelInfo | None:
        """The model with exactly this sub id."""
        return self._by_sub.get(sub_id)

    def by_openrouter_id(self, openrouter_id: str) -> ModelInfo | None:
        """The model with exactly this OpenRouter id."""
        return self._by_id.get(openrouter_id)

    def select(self, model_id_valve: str) -> Selection:
        """The models the ``MODEL_ID`` valve names, in the valve's order.

        "auto" or blank selects every model. Otherwise each comma-separated
        entry is an OpenRouter id or a sub id (exact, then case-insensitive).
        Entries that match nothing are reported in ``unknown``; they never
        widen the selection to the whole catalogue (the original pipe did, so
        one typo exposed every model).
        """
        text = model_id_valve.strip()
        if not text or text.casefold() == "auto":
            return Selection(self.models)
        picked: dict[str, ModelInfo] = {}
        unknown: dict[str, None] = {}
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            model = self._lookup(entry)
            if model is None:
                unknown[entry] = None
            else:
                picked.setdefault(model.openrouter_id, model)
        return Selection(tuple(picked.values()), tuple(unknown))

    def resolve(self, model_field: str) -> ModelInfo | None:
        """The model Open WebUI means by ``body["model"]``.

        Open WebUI sends "<function_id>.<sub_id>" and the function id holds no
        dot, so everything up to the first dot goes; a bare sub id or a bare
        OpenRouter id is accepted too (other callers, tests).
        """
        _, dot, sub_id = model_field.partition(".")
        found = self._by_sub.get(sub_id) if dot else None
        return found or self._by_sub.get(model_field) or self._by_id.get(model_field)

    def _lookup(self, entry: str) -> ModelInfo | None:
        exact = self._by_id.get(entry) or self._by_sub.get(entry)
        return exact or self._folded.get(entry.casefold())


def _index(
    models: Iterable[ModelInfo], key: Callable[[ModelInfo], str], what: str
) -> dict[str, ModelInfo]:
    index: dict[str, ModelInfo] = {}
    for model in models:
        if index.setdefault(key(model), model) is not model:
            raise ValueError(f"two catalogue models share the {what} {key(model)!r}")
    return index


def _folded_index(models: Iterable[ModelInfo]) -> dict[str, ModelInfo]:
    """Case-insensitive lookup; a key two models share matches neither (no guessing)."""
    index: dict[str, ModelInfo] = {}
    ambiguous: set[str] = set()
    for model in models:
        for key in {model.openrouter_id.casefold(), model.sub_id.casefold()}:
            if index.setdefault(key, model) is not model:
                ambiguous.add(key)
    for key in ambiguous:
        del index[key]
    return index


# --------------------------------------------------------------------------- the schedule


class RefreshSchedule:
    """When the catalogue is stale and when the next fetch may start.

    Synchronous, with the time passed in (any monotonic clock in seconds).
    After a success the data is fresh for ``ttl_s``; after the n-th failure in
    a row the next attempt waits ``min(5·2^(n-1), 160, ttl_s)`` seconds, so a
    broken OpenRouter is not hammered and a short TTL still bounds the wait.
    Times are derived lazily, so a changed TTL applies at once.
    """

    __slots__ = ("_ttl_s", "failures", "last_failure_at", "last_success_at")

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._ttl_s = _checked_ttl(ttl_s)
        #: Failures since the last success (0 when healthy).
        self.failures = 0
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    @ttl_s.setter
    def ttl_s(self, value: float) -> None:
        self._ttl_s = _checked_ttl(value)

    @staticmethod
    def backoff_s(failures: int, ttl_s: float) -> float:
        """The pause after ``failures`` failures in a row (0 when there were none)."""
        if failures <= 0:
            return 0.0
        # capped_backoff cannot overflow, however long the outage.
        return capped_backoff(failures - 1, base_s=BACKOFF_FIRST_S, cap_s=min(BACKOFF_CAP_S, ttl_s))

    def record_success(self, now: float) -> None:
        self.failures = 0
        self.last_success_at = now

    def record_failure(self, now: float) -> float:
        """Count a failure; returns the pause before the next attempt."""
        self.failures += 1
        self.last_failure_at = now
        return self.backoff_s(self.failures, self._ttl_s)

    def stale(self, now: float) -> bool:
        """No data yet, or the data is older than the TTL."""
        return self.last_success_at is None or now - self.last_success_at >= self._ttl_s

    def next_attempt_at(self) -> float:
        """When a fetch should start next (``-inf``: now, nothing was ever tried)."""
        if self.failures and self.last_failure_at is not None:
            return self.last_failure_at + self.backoff_s(self.failures, self._ttl_s)
        if self.last_success_at is not None:
            return self.last_success_at + self._ttl_s
        return float("-inf")

    def due(self, now: float) -> bool:
        """A fetch may start now (fresh data, or a backoff still running, say no)."""
        return now >= self.next_attempt_at()

    def retry_in(self, now: float) -> float:
        """Seconds until ``due`` turns true (0 when it already is)."""
        return max(0.0, self.next_attempt_at() - now)


def _checked_ttl(ttl_s: float) -> float:
    if not ttl_s > 0:  # also rejects NaN
        raise ConfigError("MODEL_CATALOG_REFRESH_SECONDS", ttl_s, "a number of seconds > 0")
    return float(ttl_s)


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
    def cached(self) -> Catalogue | None:
        """The catalogue held now, fresh or stale, without fetching."""
        return self._catalogue

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
        delay = WARM_UP_FIRST_DELAY_S
        for attempt in range(1, attempts):
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
            delay = min(delay * 2, WARM_UP_MAX_DELAY_S)
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
                status, body = await self._download(client)
        except TimeoutError as exc:
            raise self._unreachable(f"no complete answer within {self._timeout_s:g} s") from exc
        except httpx.TimeoutException as exc:
            raise self._unreachable(f"no answer within {self._timeout_s:g} s") from exc
        except (httpx.ConnectError, httpx.NetworkError) as exc:
            raise self._unreachable(_describe(exc)) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CatalogueError(
                f"BASE_URL {self._display_url!r} is not a usable URL ({_describe(exc)}); "
                "set it to https://openrouter.ai/api/v1."
            ) from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise CatalogueError(
                f"OpenRouter at {self._display_url} broke off the model list "
                f"({_describe(exc)}); retrying automatically.",
                retryable=True,
            ) from exc
        if status != 200:
            raise self._status_error(status, body)
        return self._decode(body)

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
    message = _mapping(_mapping(payload).get("error")).get("message")
    if not isinstance(message, str):
        return ""
    line = " ".join(message.split())
    return line if len(line) <= _DETAIL_LIMIT else line[: _DETAIL_LIMIT - 1] + "…"


def _describe(exc: Exception) -> str:
    """A short reason; httpx messages name the error, never a header."""
    text = " ".join(str(exc).split())
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
