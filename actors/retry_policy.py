"""When and how long the fetcher waits before trying again. Synchronous core.

Retries happen only before the first event was forwarded (the fetcher
enforces that); this module decides *whether* an error is worth another
attempt and *how long* to wait: exponential backoff with jitter, or the
server's ``Retry-After`` when it is longer, but never past the cap — a
``Retry-After`` beyond the cap gives up at once so the user hears "retry in
N s" instead of staring at a stalled request.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from orpipe.actors.upstream_body import describe_html
from orpipe.engine.backoff import capped_backoff
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import UpstreamError, UpstreamHTTPError, UpstreamRateLimited

__all__ = ["RetryPolicy", "http_error_from_response", "parse_retry_after"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    retry_after_cap_s: float

    @classmethod
    def from_config(cls, config: EngineConfig) -> RetryPolicy:
        return cls(
            attempts=config.retry_attempts,
            backoff_initial_s=config.retry_backoff_initial_s,
            backoff_max_s=config.retry_backoff_max_s,
            retry_after_cap_s=config.retry_after_cap_s,
        )

    def delay(self, retries_done: int, error: UpstreamError, rng: random.Random) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if retries_done >= self.attempts or not error.retryable:
            return None
        # "Equal jitter": at least half the backoff, so retries never bunch at 0.
        wait = capped_backoff(
            retries_done, base_s=self.backoff_initial_s, cap_s=self.backoff_max_s, rng=rng
        )
        retry_after: float | None = getattr(error, "retry_after_s", None)
        if retry_after is not None:
            if retry_after > self.retry_after_cap_s:
                return None
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_epoch)


def http_error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], now_epoch: float
) -> UpstreamHTTPError:
    """Read OpenRouter's error envelope (``error.code`` int or string)."""
    code: int | str | None = None
    detail = ""
    try:
        envelope = msgspec.json.decode(body)
    except msgspec.DecodeError:
        envelope = None
    if isinstance(envelope, dict):
        error = envelope.get("error")
        if isinstance(error, dict):
            raw_code = error.get("code")
            valid = isinstance(raw_code, int | str) and not isinstance(raw_code, bool)
            code = raw_code if valid else None
            detail = str(error.get("message") or "")
    if not detail and body.lstrip()[:1] == b"<":
        detail = describe_html(body) + " (a proxy may be answering for OpenRouter)"
    if not detail:
        detail = body[:200].decode("utf-8", "replace").strip()
    retry_after = parse_retry_after(headers.get("retry-after"), now_epoch)
    kind = UpstreamRateLimited if status == 429 else UpstreamHTTPError
    return kind(status, code=code, detail=detail[:500], retry_after_s=retry_after)
