"""OpenRouter's model catalogue, as data: what ``GET {base_url}/models`` says, parsed.

This module owns the pure part of the catalogue (no I/O, no loop):

* the ``ModelInfo`` record (the contract shared with the request mapper and
  the pipe): capability flags, context and output limits, prices;
* ``parse_catalogue``, which builds a ``Catalogue`` from the decoded JSON and
  raises ``CatalogueError`` when it makes no sense;
* the Open WebUI sub ids ``pipes()`` exposes (``sub_id_for``), mapped back by
  table lookup only, because OpenRouter ids contain dots themselves;
* the ``MODEL_ID`` valve (``Catalogue.select``) and what Open WebUI sends in
  ``body["model"]`` (``Catalogue.resolve``);
* when a fetched catalogue goes stale and when to fetch again after failures
  (``RefreshSchedule``, with the time passed in).

Fetching, caching and refreshing it is ``adapters.openwebui.model_registry``'s job.
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from orpipe.engine.backoff import capped_backoff
from orpipe.engine.errors import ConfigError, EngineError

__all__ = [
    "Catalogue",
    "CatalogueError",
    "ModelInfo",
    "RefreshSchedule",
    "Selection",
    "parse_catalogue",
    "sub_id_for",
]

_log = logging.getLogger("orpipe.catalogue")

DEFAULT_TTL_S: Final = 3600.0
#: Backoff after the n-th failure in a row: 5 s doubling, capped (and by the TTL).
BACKOFF_FIRST_S: Final = 5.0
BACKOFF_CAP_S: Final = 160.0

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
    entries: dict[str, Mapping[str, object]] = {}
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


def _model_info(oid: str, sub_id: str, entry: Mapping[str, object]) -> ModelInfo:
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


def _mapping(value: object) -> Mapping[str, object]:
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
