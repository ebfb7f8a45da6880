"""Every error the engine can report, in one place.

::

    EngineError                      something went wrong while serving
    ├── AdmissionRejected            the waiting room is full (HTTP 503 semantics)
    │   └── RequestShed              waited longer than the queue deadline
    ├── EngineClosed                 submitted after shutdown began
    ├── UpstreamError                talking to OpenRouter failed
    │   ├── UpstreamTimeout          connect / idle read / total time ran out
    │   ├── UpstreamConnectError     could not reach OpenRouter at all
    │   ├── UpstreamProtocolError    the stream broke: cut, oversized, no ending
    │   ├── UpstreamNotAStream       the body is HTML, a redirect, an unknown encoding...
    │   ├── UpstreamHTTPError        a non-2xx answer before the stream
    │   │   └── UpstreamRateLimited  429, with the Retry-After hint
    │   └── UpstreamResponseFailed   an in-band response.failed / error event
    ├── RequestDeadlineExceeded      the engine-side deadline of one request
    ├── PersistenceError             storing or loading artifacts failed
    │   ├── StoreUnavailable         the database or Redis cannot be reached now
    │   └── ArtifactDecodeError      a stored row cannot be decrypted or decoded
    └── EngineCrashed                a bug unwound the engine

    UsageError                       the caller used the API wrongly
    └── ConfigError                  a knob is out of range (also a ValueError)

Foreign exceptions (httpx, trio.TooSlowError, ...) are translated once, at
the adapter edge, with ``raise X from exc``. Every message names what
happened and what to do; none carries a stack trace, a header or a key.
"""

from __future__ import annotations

__all__ = [
    "AdmissionRejected",
    "ArtifactDecodeError",
    "ConfigError",
    "EngineClosed",
    "EngineCrashed",
    "EngineError",
    "PersistenceError",
    "RequestDeadlineExceeded",
    "RequestShed",
    "StoreUnavailable",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamHTTPError",
    "UpstreamNotAStream",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamResponseFailed",
    "UpstreamTimeout",
    "UsageError",
]


class EngineError(Exception):
    """Root of every failure the engine reports while serving."""

    #: Whether retrying the same request later may succeed.
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AdmissionRejected(EngineError):
    """The waiting room was full; nothing was sent upstream."""

    retryable = True

    def __init__(self, retry_after_s: float, *, message: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message or f"The server is busy; retry in {_seconds(retry_after_s)}.")


class RequestShed(AdmissionRejected):
    """The request waited in the room longer than the queue deadline."""

    def __init__(self, waited_s: float, retry_after_s: float) -> None:
        self.waited_s = waited_s
        super().__init__(
            retry_after_s,
            message=(
                f"The server is busy: the request waited {waited_s:.1f} s without a free "
                f"slot and was dropped; retry in {_seconds(retry_after_s)}."
            ),
        )


class EngineClosed(EngineError):
    """The engine is shutting down and takes no new work."""

    retryable = True

    def __init__(self, message: str = "The engine is shutting down; retry in a moment.") -> None:
        super().__init__(message)


class RequestDeadlineExceeded(EngineError):
    """The engine-side deadline of one request expired."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        super().__init__(
            f"The request ran longer than the engine allows ({_seconds(deadline_s)}) "
            "and was stopped; ask for a shorter answer or raise request_deadline_s."
        )


class UpstreamError(EngineError):
    """Talking to OpenRouter failed."""


class UpstreamTimeout(UpstreamError):
    """OpenRouter did not answer in time."""

    retryable = True

    def __init__(self, phase: str, limit_s: float, *, message: str | None = None) -> None:
        self.phase = phase
        self.limit_s = limit_s
        super().__init__(
            message
            or f"OpenRouter did not answer in time ({phase}, limit {_seconds(limit_s)}); "
            "retry later."
        )


class UpstreamConnectError(UpstreamError):
    """OpenRouter could not be reached."""

    retryable = True

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"OpenRouter could not be reached ({detail}); check the network and the base URL, "
            "then retry."
        )


class UpstreamProtocolError(UpstreamError):
    """The stream broke or made no sense after it had started."""

    retryable = True


class UpstreamNotAStream(UpstreamError):
    """OpenRouter's answer is not an event stream (an HTML page, a redirect, ...).

    Not retryable: something between here and OpenRouter (a proxy, a wrong
    base URL) answers instead of it, and the same request gets the same body.
    The message names what came back and what to check.
    """


class UpstreamHTTPError(UpstreamError):
    """OpenRouter answered with a non-2xx status before the stream began."""

    def __init__(
        self,
        status: int,
        *,
        code: int | str | None,
        detail: str,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.retryable = status in {408, 425, 429} or status >= 500
        super().__init__(_describe_status(status, detail, retry_after_s))


class UpstreamRateLimited(UpstreamHTTPError):
    """429: OpenRouter (or the provider) rate-limited this request."""


class UpstreamResponseFailed(UpstreamError):
    """OpenRouter reported a failure inside a stream that had started."""

    def __init__(
        self, *, code: int | str | None, detail: str, error_type: str | None = None
    ) -> None:
        self.code = code
        self.detail = detail
        self.error_type = error_type
        label = f" ({code})" if code not in (None, "") else ""
        super().__init__(
            f"OpenRouter reported that the model failed{label}: {detail}. "
            "Retry, or pick another model if it keeps happening."
        )


class EngineCrashed(EngineError):
    """A bug (not an external fault) unwound the engine."""


class UsageError(Exception):
    """The caller used the engine's API wrongly; fix the calling code."""


class ConfigError(UsageError, ValueError):
    """A configuration value is out of its allowed range."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"Invalid setting {field}={value!r}: allowed is {allowed}.")


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 1 or value == 0 else f"{value:.1f} s"


_STATUS_ADVICE = {
    400: "OpenRouter rejected the request as invalid",
    401: "OpenRouter rejected the API key (401); check the key in the settings",
    402: "OpenRouter says the account is out of credits (402); add credits and retry",
    403: "OpenRouter refused this request (403: permission, guardrail or moderation)",
    404: "OpenRouter found no provider for this model (404); pick another model",
    408: "OpenRouter timed out waiting for the provider (408); retry",
    413: "The request is too large for this model (413); shorten the conversation",
    422: "OpenRouter could not process the request (422)",
    429: "OpenRouter rate-limited this request",
    500: "OpenRouter had an internal error (500); retry",
    502: "The model provider is down or answered badly (502); retry or pick another model",
    503: "No provider can serve this model right now (503); retry later",
    524: "The provider timed out (524); retry",
    529: "The provider is overloaded (529); retry later",
}


def _describe_status(status: int, detail: str, retry_after_s: float | None) -> str:
    advice = _STATUS_ADVICE.get(status) or f"OpenRouter answered HTTP {status}"
    if retry_after_s is not None:
        advice += f"; retry in {_seconds(retry_after_s)}"
    elif status == 429:
        advice += "; retry in a little while"
    return f"{advice}. OpenRouter said: {detail}" if detail else f"{advice}."


class PersistenceError(EngineError):
    """Storing or loading artifacts failed; the answer itself is not affected."""


class StoreUnavailable(PersistenceError):
    """The artifact store (database or Redis) cannot be reached right now."""

    retryable = True


class ArtifactDecodeError(PersistenceError):
    """A stored artifact cannot be decrypted or decoded (wrong key, corrupted row)."""

    def __init__(self, artifact_id: str, reason: str) -> None:
        self.artifact_id = artifact_id
        super().__init__(f"Stored artifact {artifact_id} cannot be read ({reason}); it is skipped.")
