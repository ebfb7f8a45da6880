"""Capped exponential backoff: the one formula every retry loop uses.

``capped_backoff(attempt, base_s=..., cap_s=...)`` is ``base_s * factor **
attempt``, never more than ``cap_s``. Pure and synchronous: it only computes a
number of seconds; the caller sleeps (trio or asyncio) and keeps its own
failure count.

**Attempt numbering starts at 0**: attempt 0 waits ``base_s``, attempt 1
``base_s * factor``, and so on. A caller that counts failures from 1 (the
first failure is ``failures == 1``) passes ``failures - 1``.

**Jitter** (``rng`` given) is "equal jitter": the wait is drawn uniformly from
``[d / 2, d]`` where ``d`` is the capped backoff, so retries from many clients
spread out but never bunch near 0. It takes exactly one ``rng.uniform`` draw,
so a seeded ``random.Random`` gives a repeatable sequence. Without ``rng`` the
result is exactly ``min(cap_s, base_s * factor ** attempt)``.

A very large ``attempt`` cannot overflow: once the growth passes what a float
holds, the wait is simply ``cap_s``.
"""

from __future__ import annotations

import math
import random

__all__ = ["capped_backoff"]


def capped_backoff(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    ``base_s``: the first wait (attempt 0), seconds, at least 0.
    ``cap_s``: the longest wait, seconds, at least 0; a cap below ``base_s``
    wins (every wait is then ``cap_s``).
    ``factor``: growth per attempt, at least 1 (2.0 doubles).
    ``rng``: when given, equal jitter (uniform in ``[d / 2, d]``); when None,
    no jitter.

    Raises ``ValueError`` for a negative or non-integer ``attempt``, a negative
    or non-finite ``base_s``, a negative or NaN ``cap_s``, or a ``factor``
    below 1.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise ValueError(f"attempt must be an int counted from 0, got {attempt!r}")
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more (the first retry is 0), got {attempt}")
    if not (math.isfinite(base_s) and base_s >= 0):
        raise ValueError(f"base_s must be a finite number of seconds >= 0, got {base_s!r}")
    if not cap_s >= 0:  # also rejects NaN
        raise ValueError(f"cap_s must be a number of seconds >= 0, got {cap_s!r}")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
    if base_s == 0:
        step = 0.0
    else:
        try:
            step = base_s * factor**attempt
        except OverflowError:
            step = math.inf
    delay = float(min(cap_s, step))
    if rng is None:
        return delay
    return delay / 2 + rng.uniform(0, delay / 2)
