"""What a generated stream is: the server's script and the engine's expected answer.

A ``Case`` is one request's worth of upstream behaviour: for each HTTP
attempt, the exact bytes the server writes (status line and headers
included) with pauses between them, and what it does after the last write.
Its ``Expect`` says what the engine must make of it. Everything here is
plain data, built by ``tests.fuzz.generator`` from a class name and a seed,
so a failing case is replayed from those two numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Attempt",
    "Case",
    "EndKind",
    "EndingKind",
    "Expect",
    "Limits",
    "Sleep",
    "Timing",
    "Wire",
]


@dataclass(frozen=True, slots=True)
class Sleep:
    """The server says nothing for this long."""

    seconds: float


Wire = bytes | Sleep

#: After its last write the server closes the connection gracefully ("close"),
#: resets it ("reset"), leaves the body complete and the connection open for the
#: next request ("keep_alive"), or holds it open with the body unfinished:
#: "hold" when the stream had no terminal event yet (the engine may wait for its
#: read idle timeout) or "hold_after_terminal" (the engine must end at once).
EndKind = Literal["close", "reset", "keep_alive", "hold", "hold_after_terminal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """The server's side of one HTTP exchange."""

    wire: tuple[Wire, ...]
    end: EndKind
    #: One line for a person: framing, line ends, splits, stalls.
    notes: str = ""


#: "failed_or_incomplete" is any ending but ``Completed`` or ``Cancelled``.
EndingKind = Literal["completed", "incomplete", "failed", "failed_or_incomplete"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """What the engine must make of a case (checked by ``tests.fuzz.properties``)."""

    ending: EndingKind
    #: The exact answer text; None when only ``text_prefix_of`` applies.
    text: str | None = None
    #: The answer must be a prefix of this (a stream cut somewhere).
    text_prefix_of: str | None = None
    #: The exact reasoning text (None: not checked).
    reasoning: str | None = None
    #: A ``Failed`` ending's message must contain this (the upstream's own words).
    message_contains: str | None = None
    #: A ``Failed`` ending must not say "the stream ended without finishing":
    #: the body was not an event stream at all, and the user should hear that.
    not_cut_message: bool = False
    #: Whether a ``Notice`` (an event that could not be read) is acceptable.
    notices_allowed: bool = True
    #: For a ``Completed`` ending: the response id, usage and cited URLs.
    response_id: str | None = None
    usage: tuple[int, int] | None = None
    citations: frozenset[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One generated request: its class, seed, server script and expectation."""

    cls: str
    seed: int
    #: The server plays attempt ``min(n, len - 1)`` for the n-th request (retries).
    attempts: tuple[Attempt, ...]
    expect: Expect
    #: This request's batching (``ChatRequest.update_char_limit`` / ``idle_flush_ms``).
    update_char_limit: int | None = None
    idle_flush_ms: float | None = None
    #: The consumer sleeps this long after each batch it reads (a slow reader).
    consumer_pause_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def wire_bytes(self) -> int:
        return sum(len(w) for a in self.attempts for w in a.wire if isinstance(w, bytes))

    def describe(self) -> str:
        parts = list(self.notes)
        parts.append(f"update_char_limit={self.update_char_limit}")
        parts.append(f"idle_flush_ms={self.idle_flush_ms}")
        if self.consumer_pause_s:
            parts.append(f"consumer pause {self.consumer_pause_s * 1000:.0f} ms/batch")
        for index, attempt in enumerate(self.attempts):
            parts.append(f"attempt {index + 1}: {attempt.notes}, then {attempt.end}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The engine settings a generator must know to shape its streams."""

    read_idle_timeout_s: float
    max_event_bytes: int
    request_window_events: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """How late an ending may be, from the engine's configured timeouts.

    The engine must end a request within ``read_idle_timeout_s`` (+ slack)
    of the upstream's last byte while the body is open without a terminal
    event; within ``slack`` (+ the longest retry wait) once the body ended;
    and within ``prompt_s`` once a terminal event arrived, even if the
    connection stays open. A request still without an ending ``guard_s``
    past its bound is cancelled by the harness and counted as a hang.
    """

    read_idle_timeout_s: float
    retry_wait_s: float
    slack_s: float = 1.5
    prompt_s: float = 1.0
    guard_s: float = 3.0
