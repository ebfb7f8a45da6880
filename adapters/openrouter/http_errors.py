"""httpx's exceptions, translated in one place (in the spirit of httpcore's ``map_exceptions``).

httpx raises a tree of classes, plus two outside it (``InvalidURL``,
``StreamError``). This module alone knows that tree: ``translate_httpx_errors(to)``
sorts any of them into one ``HttpFailure`` (what went wrong, in which phase a
timeout struck, and a short description) and raises the exception ``to``
builds from it, chained to the original. Each caller picks its own exception
types and messages; none of them writes an ``except`` ladder over httpx classes.

Plain code with no loop of its own: the OpenRouter transport uses it under
trio, the model registry and the downloader under asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

import httpx

__all__ = [
    "FailureKind",
    "HttpFailure",
    "TimeoutPhase",
    "classify",
    "describe",
    "translate_httpx_errors",
]

#: What went wrong: no answer in time; the network failed (refused, reset, DNS);
#: the URL cannot be used; or the peer spoke something that is not HTTP as expected.
FailureKind = Literal["timeout", "network", "bad_url", "protocol"]
#: Where a timeout struck: connecting, waiting for a pooled connection, sending, reading.
TimeoutPhase = Literal["connect", "pool", "write", "read"]

_DETAIL_LIMIT: Final = 200
_TIMEOUT_PHASES: Final[tuple[tuple[type[httpx.TimeoutException], TimeoutPhase], ...]] = (
    (httpx.ConnectTimeout, "connect"),
    (httpx.PoolTimeout, "pool"),
    (httpx.WriteTimeout, "write"),
)
_HTTPX_ERRORS: Final = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """One httpx exception, reduced to what a caller decides with."""

    kind: FailureKind
    #: The exception's class name, e.g. ``ReadTimeout``.
    name: str
    #: ``describe(exc)``: the class name and the first 200 characters of its message.
    detail: str
    #: For a timeout, the phase it struck in; None for every other kind.
    phase: TimeoutPhase | None = None


def classify(exc: Exception) -> HttpFailure:
    """The ``HttpFailure`` of an httpx exception (anything else is a ``protocol`` failure)."""
    name, detail = type(exc).__name__, describe(exc)
    if isinstance(exc, httpx.TimeoutException):
        return HttpFailure("timeout", name, detail, _timeout_phase(exc))
    if isinstance(exc, httpx.NetworkError):
        return HttpFailure("network", name, detail)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return HttpFailure("bad_url", name, detail)
    return HttpFailure("protocol", name, detail)


def _timeout_phase(exc: httpx.TimeoutException) -> TimeoutPhase:
    for cls, phase in _TIMEOUT_PHASES:
        if isinstance(exc, cls):
            return phase
    return "read"


@contextmanager
def translate_httpx_errors(to: Callable[[HttpFailure], Exception]) -> Iterator[None]:
    """Raise ``to(failure)`` from any httpx exception raised inside the block."""
    try:
        yield
    except _HTTPX_ERRORS as exc:
        raise to(classify(exc)) from exc


def describe(exc: Exception) -> str:
    """A short reason on one line; httpx messages name the error, never a header or key."""
    text = " ".join(str(exc).split())
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
