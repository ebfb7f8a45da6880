"""A keyed circuit breaker: pause a key (a user, a user's tool) whose calls keep failing.

``Breaker`` is plain synchronous code with an injected clock: nothing here
awaits, and one instance belongs to one thread (it is not thread-safe). The
Open WebUI adapter keys it by user (``adapters.openwebui.user_breaker``); the tool
executor keys it by (user, tool name), so one flaky tool pauses only itself.

States, per key::

    closed ──(threshold failures within window_s)──▶ open
    open ──(cooldown_s elapsed)──▶ half_open
    half_open ──(the one trial succeeds)──▶ closed (history cleared)
    half_open ──(the trial fails)──▶ open again for another cool-down
    half_open ──(the trial ends neither way: record_abandoned)──▶ half_open, slot free

What the original got wrong and this one does not (inventory §F, §K.2 items
2, 3 and 21):

* The caller decides what a failure is. Busy rejections and cancellations
  are not failures and must not be recorded as such; one failed call is one
  failure.
* A success while closed does **not** wipe the recent failures: the
  original cleared everything on any normal return, so its breakers almost
  never stayed open. Only a half-open trial that succeeds resets a key.
* There is a half-open probe, limited to exactly one call at a time,
  instead of "self-healing" purely by time.
* Memory is bounded: at most ``max_keys`` keys are tracked, keys whose
  failures have all expired are forgotten, and eviction prefers the
  least-recently-seen *closed* key (see ``_evict``).

Calls that finish after the breaker opened (stragglers started while it was
still closed) are not told apart from the trial: a straggler's success after
the cool-down closes the breaker, its failure re-opens it. Either is real
evidence about the key's calls, so this is accepted rather than handing out
trial tokens.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypedDict, TypeVar

from orpipe.engine.errors import ConfigError

__all__ = ["Breaker", "BreakerDecision", "BreakerSettings", "BreakerState"]

K = TypeVar("K", bound=Hashable)

BreakerState = Literal["closed", "open", "half_open"]

#: How long a refused call is told to wait while another call is the
#: half-open trial. A trial usually settles within seconds, so the full
#: cool-down would be an overstatement; capped by ``cooldown_s``.
_TRIAL_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """Whether one call for a key may run, and if not, for how long to wait."""

    allowed: bool
    retry_after_s: float
    state: BreakerState


_ALLOW_CLOSED = BreakerDecision(allowed=True, retry_after_s=0.0, state="closed")


class BreakerSettings(TypedDict, total=False):
    """``Breaker``'s keywords but ``max_keys``, for a subclass that names that one its own way."""

    threshold: int
    window_s: float
    cooldown_s: float | None
    clock: Callable[[], float]
    trial_timeout_s: float


@dataclass(slots=True)
class _Record:
    """What the breaker knows about one key."""

    #: Monotonic times of recent failures (only the newest ``threshold`` matter).
    failures: deque[float]
    #: When the breaker opened for this key; None while closed.
    opened_at: float | None = None
    #: When the current half-open trial was granted; None when no trial runs.
    trial_at: float | None = None


class Breaker(Generic[K]):
    """A circuit breaker per key, with a sliding failure window and a one-call probe.

    ``trial_timeout_s`` bounds how long a granted trial may stay unreported:
    after it, the trial counts as abandoned and another one may start. That
    protects a key from being locked out for good by a caller that forgot
    to report (an exception between ``check`` and the call); the price is
    that a trial slower than the bound may overlap a second one.
    """

    def __init__(
        self,
        threshold: int = 5,
        window_s: float = 60.0,
        cooldown_s: float | None = None,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        trial_timeout_s: float = 300.0,
    ) -> None:
        cooldown = window_s if cooldown_s is None else cooldown_s
        _require(threshold >= 1, "threshold", threshold, "an integer >= 1")
        _require(_positive(window_s), "window_s", window_s, "a number > 0")
        _require(_positive(cooldown), "cooldown_s", cooldown, "a number > 0")
        _require(max_keys >= 1, "max_keys", max_keys, "an integer >= 1")
        _require(_positive(trial_timeout_s), "trial_timeout_s", trial_timeout_s, "a number > 0")
        self.threshold = threshold
        self.window_s = float(window_s)
        self.cooldown_s = float(cooldown)
        self.max_keys = max_keys
        self.trial_timeout_s = float(trial_timeout_s)
        self._clock = clock
        # Two LRU orders (oldest first) so eviction can prefer closed keys
        # in O(1); a key is in exactly one of them.
        self._closed: OrderedDict[K, _Record] = OrderedDict()
        self._tripped: OrderedDict[K, _Record] = OrderedDict()
        self._evicted = 0

    # -- the public decisions --------------------------------------------------------

    def check(self, key: K) -> BreakerDecision:
        """May this record's next call run? A granted half-open trial is reserved here."""
        now = self._clock()
        record = self._touch(key, now)
        if record is None or record.opened_at is None:
            return _ALLOW_CLOSED
        reopens_at = record.opened_at + self.cooldown_s
        if now < reopens_at:
            return BreakerDecision(allowed=False, retry_after_s=reopens_at - now, state="open")
        if self._trial_running(record, now):
            wait = min(_TRIAL_WAIT_S, self.cooldown_s)
            return BreakerDecision(allowed=False, retry_after_s=wait, state="half_open")
        record.trial_at = now
        return BreakerDecision(allowed=True, retry_after_s=0.0, state="half_open")

    def record_failure(self, key: K) -> None:
        """One of the record's calls really failed (upstream error, deadline, ...)."""
        now = self._clock()
        record = self._touch(key, now)
        if record is None:
            record = self._add(key)
        if record.opened_at is None:
            record.failures.append(now)
            self._prune(record, now)
            if len(record.failures) >= self.threshold:
                self._open(key, record, now)
        elif now >= record.opened_at + self.cooldown_s:
            # A failure after the cool-down (the trial, or a straggler) is
            # fresh evidence: another full cool-down.
            self._open(key, record, now)
        # A failure while already open (a straggler) changes nothing.

    def record_success(self, key: K) -> None:
        """One of the record's calls succeeded; only a half-open one resets the record."""
        now = self._clock()
        record = self._touch(key, now)
        if record is None or record.opened_at is None:
            return  # closed: recent failures stay in the window on purpose
        if now >= record.opened_at + self.cooldown_s:
            self._forget(key)

    def record_abandoned(self, key: K) -> None:
        """A call ended neither way (cancelled, refused later): free the trial slot."""
        now = self._clock()
        record = self._touch(key, now)
        if record is not None:
            record.trial_at = None

    # -- introspection ------------------------------------------------------------------

    def state(self, key: K) -> BreakerState:
        """The record's state now, without reserving a trial or refreshing recency."""
        record = self._closed.get(key) or self._tripped.get(key)
        if record is None or record.opened_at is None:
            return "closed"
        return "open" if self._clock() < record.opened_at + self.cooldown_s else "half_open"

    def statistics(self) -> dict[str, int]:
        """Counts for logs and metrics: tracked keys and how many are open or probing."""
        now = self._clock()
        half_open = sum(
            1
            for record in self._tripped.values()
            if record.opened_at is not None and now >= record.opened_at + self.cooldown_s
        )
        return {
            "tracked": len(self._closed) + len(self._tripped),
            "closed": len(self._closed),
            "open": len(self._tripped) - half_open,
            "half_open": half_open,
            "evicted": self._evicted,
            "max_keys": self.max_keys,
        }

    # -- internals ----------------------------------------------------------------------

    def _touch(self, key: K, now: float) -> _Record | None:
        """The record's record, pruned and marked most recently seen; None if untracked."""
        record = self._closed.get(key)
        if record is not None:
            self._prune(record, now)
            if not record.failures:
                # Nothing left to remember: an untracked record is a closed one.
                del self._closed[key]
                return None
            self._closed.move_to_end(key)
            return record
        record = self._tripped.get(key)
        if record is not None:
            self._tripped.move_to_end(key)
        return record

    def _add(self, key: K) -> _Record:
        if len(self._closed) + len(self._tripped) >= self.max_keys:
            self._evict()
        # Only the newest ``threshold`` failures can ever open the breaker.
        record = _Record(failures=deque(maxlen=self.threshold))
        self._closed[key] = record
        return record

    def _evict(self) -> None:
        """Drop the least-recently-seen closed record; an open one only if all are open.

        Trade-off: evicting an open (or half-open) record forgets its pause, so
        that record gets a fresh start. That happens only when ``max_keys``
        keys are all tripped at once (a wide outage or many abusive
        accounts); bounded memory is then worth more than a perfect memory
        of who was paused.
        """
        victims = self._closed or self._tripped
        victims.popitem(last=False)
        self._evicted += 1

    def _prune(self, record: _Record, now: float) -> None:
        """Forget failures that have left the sliding window."""
        horizon = now - self.window_s
        failures = record.failures
        while failures and failures[0] <= horizon:
            failures.popleft()

    def _open(self, key: K, record: _Record, now: float) -> None:
        record.opened_at = now
        record.trial_at = None
        record.failures.clear()
        if self._closed.pop(key, None) is not None:
            self._tripped[key] = record

    def _forget(self, key: K) -> None:
        """Close the breaker for good: the history is cleared, so the record goes."""
        # Only tripped keys can be reset this way; closed ones keep their window.
        self._tripped.pop(key, None)

    def _trial_running(self, record: _Record, now: float) -> bool:
        return record.trial_at is not None and now - record.trial_at < self.trial_timeout_s


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)
