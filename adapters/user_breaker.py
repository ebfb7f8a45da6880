"""A per-user request breaker: pause a user whose requests keep failing, then probe once.

This module owns ``UserBreaker`` (its decision type ``BreakerDecision``) and
the sentence a paused user reads (``paused_message``). It is plain
synchronous code with an injected clock: nothing here awaits, so it is safe
to call from the Open WebUI loop, and one instance belongs to one event loop
(``adapters.owui_runtime``); it is not thread-safe.

States, per user::

    closed ──(threshold failures within window_s)──▶ open
    open ──(cooldown_s elapsed)──▶ half_open
    half_open ──(the one trial request succeeds)──▶ closed (history cleared)
    half_open ──(the trial fails)──▶ open again for another cool-down
    half_open ──(the trial ends neither way: record_abandoned)──▶ half_open, slot free

What the original got wrong and this one does not (inventory §F, §K.2 items
2 and 21):

* The caller decides what a failure is. Busy rejections and cancellations
  are not the user's failures and must not be recorded as such; one failed
  request is one failure.
* A success while closed does **not** wipe the recent failures: the
  original cleared everything on any normal return, so the breaker almost
  never stayed open. Only a half-open trial that succeeds resets a user.
* There is a half-open probe, limited to exactly one request at a time,
  instead of "self-healing" purely by time.
* Memory is bounded: at most ``max_users`` users are tracked, users whose
  failures have all expired are forgotten, and eviction prefers the
  least-recently-seen *closed* user (see ``_evict``).

Requests that finish after the breaker opened (stragglers admitted while it
was still closed) are not told apart from the trial: a straggler's success
after the cool-down closes the breaker, its failure re-opens it. Either is
real evidence about the user's requests, so this is accepted rather than
handing out trial tokens.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from engine.errors import ConfigError

__all__ = ["BreakerDecision", "BreakerState", "UserBreaker", "paused_message"]

BreakerState = Literal["closed", "open", "half_open"]

#: How long a refused request is told to wait while another request is the
#: half-open trial. A trial usually settles within seconds, so the full
#: cool-down would be an overstatement; capped by ``cooldown_s``.
_TRIAL_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """Whether one request of a user may run, and if not, for how long to wait."""

    allowed: bool
    retry_after_s: float
    state: BreakerState


_ALLOW_CLOSED = BreakerDecision(allowed=True, retry_after_s=0.0, state="closed")


@dataclass(slots=True)
class _User:
    """What the breaker knows about one user."""

    #: Monotonic times of recent failures (only the newest ``threshold`` matter).
    failures: deque[float]
    #: When the breaker opened for this user; None while closed.
    opened_at: float | None = None
    #: When the current half-open trial was granted; None when no trial runs.
    trial_at: float | None = None


class UserBreaker:
    """Per-user circuit breaker with a sliding failure window and a one-request probe.

    ``trial_timeout_s`` bounds how long a granted trial may stay unreported:
    after it, the trial counts as abandoned and another one may start. That
    protects a user from being locked out for good by a caller that forgot
    to report (an exception between ``check`` and the request); the price is
    that a trial slower than the bound may overlap a second one.
    """

    def __init__(
        self,
        threshold: int = 5,
        window_s: float = 60.0,
        cooldown_s: float | None = None,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        trial_timeout_s: float = 300.0,
    ) -> None:
        cooldown = window_s if cooldown_s is None else cooldown_s
        _require(threshold >= 1, "threshold", threshold, "an integer >= 1")
        _require(_positive(window_s), "window_s", window_s, "a number > 0")
        _require(_positive(cooldown), "cooldown_s", cooldown, "a number > 0")
        _require(max_users >= 1, "max_users", max_users, "an integer >= 1")
        _require(_positive(trial_timeout_s), "trial_timeout_s", trial_timeout_s, "a number > 0")
        self.threshold = threshold
        self.window_s = float(window_s)
        self.cooldown_s = float(cooldown)
        self.max_users = max_users
        self.trial_timeout_s = float(trial_timeout_s)
        self._clock = clock
        # Two LRU orders (oldest first) so eviction can prefer closed users
        # in O(1); a user is in exactly one of them.
        self._closed: OrderedDict[str, _User] = OrderedDict()
        self._tripped: OrderedDict[str, _User] = OrderedDict()
        self._evicted = 0

    # -- the public decisions --------------------------------------------------------

    def check(self, user_id: str) -> BreakerDecision:
        """May this user's next request run? A granted half-open trial is reserved here."""
        now = self._clock()
        user = self._touch(user_id, now)
        if user is None or user.opened_at is None:
            return _ALLOW_CLOSED
        reopens_at = user.opened_at + self.cooldown_s
        if now < reopens_at:
            return BreakerDecision(allowed=False, retry_after_s=reopens_at - now, state="open")
        if self._trial_running(user, now):
            wait = min(_TRIAL_WAIT_S, self.cooldown_s)
            return BreakerDecision(allowed=False, retry_after_s=wait, state="half_open")
        user.trial_at = now
        return BreakerDecision(allowed=True, retry_after_s=0.0, state="half_open")

    def record_failure(self, user_id: str) -> None:
        """One of the user's requests really failed (upstream error, deadline, ...)."""
        now = self._clock()
        user = self._touch(user_id, now)
        if user is None:
            user = self._add(user_id)
        if user.opened_at is None:
            user.failures.append(now)
            self._prune(user, now)
            if len(user.failures) >= self.threshold:
                self._open(user_id, user, now)
        elif now >= user.opened_at + self.cooldown_s:
            # A failure after the cool-down (the trial, or a straggler) is
            # fresh evidence: another full cool-down.
            self._open(user_id, user, now)
        # A failure while already open (a straggler) changes nothing.

    def record_success(self, user_id: str) -> None:
        """One of the user's requests succeeded; only a half-open one resets the user."""
        now = self._clock()
        user = self._touch(user_id, now)
        if user is None or user.opened_at is None:
            return  # closed: recent failures stay in the window on purpose
        if now >= user.opened_at + self.cooldown_s:
            self._forget(user_id)

    def record_abandoned(self, user_id: str) -> None:
        """A request ended neither way (cancelled, refused later): free the trial slot."""
        now = self._clock()
        user = self._touch(user_id, now)
        if user is not None:
            user.trial_at = None

    # -- introspection ------------------------------------------------------------------

    def state(self, user_id: str) -> BreakerState:
        """The user's state now, without reserving a trial or refreshing recency."""
        user = self._closed.get(user_id) or self._tripped.get(user_id)
        if user is None or user.opened_at is None:
            return "closed"
        return "open" if self._clock() < user.opened_at + self.cooldown_s else "half_open"

    def statistics(self) -> dict[str, int]:
        """Counts for logs and metrics: tracked users and how many are open or probing."""
        now = self._clock()
        half_open = sum(
            1
            for user in self._tripped.values()
            if user.opened_at is not None and now >= user.opened_at + self.cooldown_s
        )
        return {
            "tracked_users": len(self._closed) + len(self._tripped),
            "closed": len(self._closed),
            "open": len(self._tripped) - half_open,
            "half_open": half_open,
            "evicted": self._evicted,
            "max_users": self.max_users,
        }

    # -- internals ----------------------------------------------------------------------

    def _touch(self, user_id: str, now: float) -> _User | None:
        """The user's record, pruned and marked most recently seen; None if untracked."""
        user = self._closed.get(user_id)
        if user is not None:
            self._prune(user, now)
            if not user.failures:
                # Nothing left to remember: an untracked user is a closed one.
                del self._closed[user_id]
                return None
            self._closed.move_to_end(user_id)
            return user
        user = self._tripped.get(user_id)
        if user is not None:
            self._tripped.move_to_end(user_id)
        return user

    def _add(self, user_id: str) -> _User:
        if len(self._closed) + len(self._tripped) >= self.max_users:
            self._evict()
        # Only the newest ``threshold`` failures can ever open the breaker.
        user = _User(failures=deque(maxlen=self.threshold))
        self._closed[user_id] = user
        return user

    def _evict(self) -> None:
        """Drop the least-recently-seen closed user; an open one only if all are open.

        Trade-off: evicting an open (or half-open) user forgets its pause, so
        that user gets a fresh start. That happens only when ``max_users``
        users are all tripped at once (a wide outage or many abusive
        accounts); bounded memory is then worth more than a perfect memory
        of who was paused.
        """
        victims = self._closed or self._tripped
        victims.popitem(last=False)
        self._evicted += 1

    def _prune(self, user: _User, now: float) -> None:
        """Forget failures that have left the sliding window."""
        horizon = now - self.window_s
        failures = user.failures
        while failures and failures[0] <= horizon:
            failures.popleft()

    def _open(self, user_id: str, user: _User, now: float) -> None:
        user.opened_at = now
        user.trial_at = None
        user.failures.clear()
        if self._closed.pop(user_id, None) is not None:
            self._tripped[user_id] = user

    def _forget(self, user_id: str) -> None:
        """Close the breaker for good: the history is cleared, so the record goes."""
        # Only tripped users can be reset this way; closed ones keep their window.
        self._tripped.pop(user_id, None)

    def _trial_running(self, user: _User, now: float) -> bool:
        return user.trial_at is not None and now - user.trial_at < self.trial_timeout_s


def paused_message(retry_after_s: float) -> str:
    """What a paused user reads: the wait rounded up to whole seconds, at least 1."""
    seconds = math.ceil(retry_after_s) if math.isfinite(retry_after_s) else 1
    return f"Temporarily paused after repeated errors; retry in {max(1, seconds)} s."


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)
