"""The one door to Redis for the write-behind: redis-py's synchronous client, driven from trio.

This module owns the client (``RESP2``, short timeouts, one immediate retry),
the worker threads every call runs in, and the translation of every redis-py
exception into ``engine.errors`` types: no redis type leaves it, and no
message carries the URL's password (masked in every spelling it may take).

trio-flavoured: ``RedisLink.call`` runs one unit of work in
``trio.to_thread.run_sync`` holding a token of ``limiter`` (by default a
``CapacityLimiter(4)`` of its own); redis-py's asyncio client does not run
under trio. After a failed call the link is "suspect" for a second, so the
store skips Redis instead of paying one timeout per write.

Cancellation: every call runs with ``abandon_on_cancel=False``: a cancelled
caller waits until its thread returns (at most the socket timeout, 5 s; the
flusher's blocking read returns within a second), and trio raises
``Cancelled`` at the next checkpoint. Never abandoning a call matters here:
an abandoned enqueue or ack would leave the caller not knowing whether its
transaction was applied, a thread would still use a pooled connection while
``close`` closes the pool, and the limiter would no longer bound the
threads really talking to Redis.

Notes on redis-py under trio (RESP2 replies, timeouts): ``docs/redis-notes.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from orpipe.engine.errors import ConfigError, PersistenceError, StoreUnavailable

__all__ = ["DEFAULT_REDIS_THREADS", "REDIS_LIMITER_NAME", "QueueMissing", "RedisLink"]

T = TypeVar("T")

REDIS_LIMITER_NAME: Final = "redis"
DEFAULT_REDIS_THREADS: Final = 4

#: Must exceed the flusher's blocking read, or every idle read would look like a timeout.
_SOCKET_TIMEOUT_S: Final = 5.0
_CONNECT_TIMEOUT_S: Final = 2.0
#: After a Redis failure, writes and reads skip Redis for this long.
_HOLDOFF_S: Final = 1.0
_DETAIL_CHARS: Final = 200


class QueueMissing(StoreUnavailable):
    """The consumer group (or the whole stream) is not in Redis."""


class RedisLink:
    """A redis-py client whose calls run in worker threads, with errors translated."""

    def __init__(
        self,
        redis_url: str,
        *,
        limiter: trio.CapacityLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets, self.location = _url_secrets(redis_url)
        #: The synchronous client: use it only inside a unit of work given to ``call``.
        self.client = _make_client(redis_url)
        self.limiter = limiter or trio.CapacityLimiter(DEFAULT_REDIS_THREADS)
        self.limiter_name = REDIS_LIMITER_NAME
        self._clock = clock
        self._failed_at: float | None = None

    async def call(self, work: Callable[[], T], doing: str) -> T:
        """``work()`` in a worker thread (never abandoned: module doc); errors translated.

        ``doing`` completes "Redis at ... failed while <doing>" in messages.
        """
        try:
            result = await trio.to_thread.run_sync(
                work, limiter=self.limiter, abandon_on_cancel=False
            )
        except (redis.RedisError, OSError) as exc:
            self._failed_at = self._clock()
            raise self._translate(exc, doing) from exc
        self._failed_at = None
        return result

    def suspect(self) -> bool:
        """Redis failed less than a second ago: skip it rather than wait for another timeout."""
        failed_at = self._failed_at
        return failed_at is not None and self._clock() - failed_at < _HOLDOFF_S

    def close(self) -> None:
        """Close the pooled sockets (no thread needed)."""
        self.client.close()

    def _translate(self, exc: BaseException, doing: str) -> PersistenceError:
        detail = self._detail(exc)
        where = f"Redis at {self.location}"
        if isinstance(exc, redis.AuthenticationError):
            return StoreUnavailable(
                f"{where} refused the credentials while {doing} ({detail}); "
                "check the password in REDIS_URL."
            )
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            return StoreUnavailable(f"{where} is unreachable while {doing} ({detail}).")
        if isinstance(exc, redis.ResponseError) and str(exc).startswith("NOGROUP"):
            return QueueMissing(f"{where} has no write-behind queue ({detail}).")
        return StoreUnavailable(f"{where} failed while {doing} ({detail}).")

    def _detail(self, exc: BaseException) -> str:
        """The error's first line, with every form of the URL's secrets masked."""
        lines = str(exc).strip().splitlines()
        text = lines[0].strip() if lines else ""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = text[:_DETAIL_CHARS]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _make_client(redis_url: str) -> redis.Redis:
    """The synchronous client: RESP2, short timeouts, one immediate retry (a stale
    pooled connection after a Redis restart costs a reconnect, not an error)."""
    try:
        return redis.Redis.from_url(
            redis_url,
            protocol=2,
            decode_responses=False,
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError:
        raise _bad_url() from None


def _url_secrets(redis_url: str) -> tuple[list[str], str]:
    """The URL's secrets in every spelling that may show up in a message, and its location."""
    try:
        parts = urlsplit(redis_url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise _bad_url() from None
    raw = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    # As written, as redis-py sees it (percent-decoded), and encoded again.
    spellings = (lambda v: v, unquote, lambda v: quote(unquote(v), safe=""))
    secrets_ = {spell(value) for value in raw if value for spell in spellings}
    if parts.scheme == "unix":
        location = parts.path or "(unix socket)"
    else:
        location = f"{host or 'localhost'}:{port or 6379}{parts.path or '/0'}"
    # Longest first: a secret that contains another is masked whole.
    return sorted(secrets_, key=len, reverse=True), location


def _bad_url() -> ConfigError:
    return ConfigError("REDIS_URL", "(not shown)", "a redis://, rediss:// or unix:// URL")
