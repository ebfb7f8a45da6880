"""What one consumer saw, and the properties it must satisfy.

For every stream: exactly one ending, last; never an engine crash; never
an ending later than the bound derived from the configured timeouts (see
``tests.fuzz.script.Timing``). Per class, from the case's ``Expect``: the
kind of ending, the exact text and reasoning (or a prefix of the text for a
stream cut short), the upstream's own error message, no "could not be read"
notice for a well-formed stream, and for a completed answer the response id,
the usage and the cited URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orpipe.engine import (
    Cancelled,
    Citation,
    Completed,
    EngineClosed,
    EngineCrashed,
    Failed,
    Incomplete,
    Notice,
    OutboundEvent,
    ReasoningDelta,
    TextDelta,
    Usage,
)
from tests.fuzz.script import Case

__all__ = ["CUT_MARKER", "Seen", "Violation", "judge"]

_ENDINGS = (Completed, Incomplete, Failed, Cancelled)
#: The engine's words for "the body ended without a terminal event" (actors.response_mapper).
#: A body that was not an event stream at all deserves its own explanation.
CUT_MARKER = "without finishing the response"

ViolationKind = Literal["crash", "hang", "mismatch"]


@dataclass(frozen=True, slots=True)
class Violation:
    kind: ViolationKind
    #: A short label: "ending", "text", "timing", ...
    what: str
    detail: str


@dataclass(slots=True)
class Seen:
    """Everything one consumer read, and when."""

    submitted: float
    events: list[OutboundEvent] = field(default_factory=list)
    endings: int = 0
    after_ending: int = 0
    text: str = ""
    reasoning: str = ""
    notices: list[str] = field(default_factory=list)
    citations: list[str] = field(default_factory=list)
    usage: Usage | None = None
    ending: Completed | Incomplete | Failed | Cancelled | None = None
    ended_at: float | None = None
    #: Seconds the consumer itself spent pausing (a slow reader's own time).
    paused: float = 0.0
    #: Set when the ending was (or still is) later than the bound.
    late: str | None = None
    #: The harness gave up waiting and cancelled the request.
    no_ending: bool = False
    #: The share of its allowed time the ending took (how close it came to a hang).
    bound_used: float = 0.0

    def take(self, events: tuple[OutboundEvent, ...], now: float) -> None:
        for event in events:
            self.events.append(event)
            if self.ending is not None:
                self.after_ending += 1
            if isinstance(event, _ENDINGS):
                self.endings += 1
                if self.ending is None:
                    self.ending = event
                    self.ended_at = now
            elif isinstance(event, TextDelta):
                self.text += event.text
            elif isinstance(event, ReasoningDelta):
                self.reasoning += event.text
            elif isinstance(event, Notice):
                self.notices.append(event.message)
            elif isinstance(event, Citation):
                self.citations.append(event.url)
            elif isinstance(event, Usage):
                self.usage = event

    @property
    def time_to_ending(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.submitted


def judge(case: Case, seen: Seen) -> list[Violation]:
    """Every property ``seen`` breaks, for ``case``."""
    out: list[Violation] = []
    if seen.no_ending:
        return [Violation("hang", "no ending", seen.late or "no ending at all")]
    if seen.late is not None:
        out.append(Violation("hang", "late ending", seen.late))
    ending = seen.ending
    if seen.endings != 1 or seen.after_ending:
        out.append(
            Violation(
                "mismatch",
                "endings",
                f"{seen.endings} endings, {seen.after_ending} events after the first",
            )
        )
    if isinstance(ending, Failed) and isinstance(ending.error, EngineCrashed | EngineClosed):
        out.append(Violation("crash", "engine", f"{type(ending.error).__name__}: {ending.message}"))
        return out
    expect = case.expect
    name = type(ending).__name__ if ending is not None else "nothing"
    said = f" ({ending.message})" if isinstance(ending, Failed | Incomplete) else ""
    wanted = {
        "completed": (Completed,),
        "incomplete": (Incomplete,),
        "failed": (Failed,),
        "failed_or_incomplete": (Failed, Incomplete),
    }[expect.ending]
    if not isinstance(ending, wanted):
        out.append(Violation("mismatch", "ending", f"expected {expect.ending}, got {name}{said}"))
    if expect.text is not None and seen.text != expect.text:
        out.append(Violation("mismatch", "text", _text_diff(expect.text, seen.text)))
    if expect.text_prefix_of is not None:
        got = seen.text.removesuffix("\ufffd")  # a cut between the halves of an emoji
        if not expect.text_prefix_of.startswith(got):
            detail = "not a prefix of the stream's text: " + _text_diff(
                expect.text_prefix_of[: len(got)], got
            )
            out.append(Violation("mismatch", "text", detail))
    if expect.reasoning is not None and seen.reasoning != expect.reasoning:
        out.append(Violation("mismatch", "reasoning", _text_diff(expect.reasoning, seen.reasoning)))
    if isinstance(ending, Failed):
        if expect.message_contains is not None and expect.message_contains not in ending.message:
            out.append(
                Violation(
                    "mismatch",
                    "message",
                    f"the upstream said {expect.message_contains!r}; the user was told "
                    f"{ending.message!r}",
                )
            )
        if expect.not_cut_message and CUT_MARKER in ending.message:
            out.append(
                Violation(
                    "mismatch",
                    "message",
                    "the body was not an event stream, but the user was told it was cut short: "
                    f"{ending.message!r}",
                )
            )
    if not expect.notices_allowed and seen.notices:
        out.append(Violation("mismatch", "notice", f"well-formed stream, yet: {seen.notices[0]}"))
    if isinstance(ending, Completed | Incomplete) and expect.usage is not None:
        got_usage = (
            None if seen.usage is None else (seen.usage.input_tokens, seen.usage.output_tokens)
        )
        if got_usage != expect.usage:
            out.append(Violation("mismatch", "usage", f"expected {expect.usage}, got {got_usage}"))
    if isinstance(ending, Completed):
        if expect.response_id is not None and ending.response_id != expect.response_id:
            out.append(
                Violation(
                    "mismatch",
                    "response id",
                    f"expected {expect.response_id}, got {ending.response_id}",
                )
            )
        if ending.text_chars != len(seen.text):
            out.append(
                Violation(
                    "mismatch",
                    "text_chars",
                    f"Completed says {ending.text_chars} characters, {len(seen.text)} arrived",
                )
            )
        if expect.citations is not None and (
            set(seen.citations) != expect.citations or len(seen.citations) != len(expect.citations)
        ):
            out.append(
                Violation(
                    "mismatch",
                    "citations",
                    f"expected {sorted(expect.citations)}, got {seen.citations}",
                )
            )
    return out


def _text_diff(expected: str, got: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
        min(len(expected), len(got)),
    )
    lo = max(0, at - 20)
    return (
        f"{len(got)} chars instead of {len(expected)}; first difference at {at}: "
        f"expected {expected[lo : at + 20]!r}, got {got[lo : at + 20]!r}"
    )
