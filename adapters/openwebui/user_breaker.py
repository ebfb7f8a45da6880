"""The per-user request breaker: pause a user whose requests keep failing, then probe once.

This module owns ``UserBreaker`` (``engine.breaker.Breaker`` keyed by user
id, with the user-facing names its statistics have always had) and the
sentence a paused user reads (``paused_message``). One instance belongs to
one event loop (``adapters.openwebui.runtime``); it is not thread-safe.

What counts as a failure is the caller's decision (``adapters.openwebui.turn``):
real upstream failures and timeouts do; busy rejections and cancellations
do not. See ``engine.breaker`` for the states and for what the original's
breaker got wrong.
"""

from __future__ import annotations

import math
from typing import Unpack

from orpipe.engine.breaker import Breaker, BreakerDecision, BreakerSettings, BreakerState
from orpipe.engine.errors import ConfigError

__all__ = ["BreakerDecision", "BreakerState", "UserBreaker", "paused_message"]


class UserBreaker(Breaker[str]):
    """``Breaker`` keyed by user id; at most ``max_users`` users are tracked."""

    def __init__(self, *, max_users: int = 10_000, **settings: Unpack[BreakerSettings]) -> None:
        if max_users < 1:  # named as the caller knows it, not as ``max_keys``
            raise ConfigError("max_users", max_users, "an integer >= 1")
        super().__init__(max_keys=max_users, **settings)

    def statistics(self) -> dict[str, int]:
        """Tracked users and how many are open or probing."""
        stats = super().statistics()
        stats["tracked_users"] = stats.pop("tracked")
        stats["max_users"] = stats.pop("max_keys")
        return stats


def paused_message(retry_after_s: float) -> str:
    """What a paused user reads: the wait rounded up to whole seconds, at least 1."""
    seconds = math.ceil(retry_after_s) if math.isfinite(retry_after_s) else 1
    return f"Temporarily paused after repeated errors; retry in {max(1, seconds)} s."
