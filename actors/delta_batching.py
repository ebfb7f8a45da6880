"""Merges text deltas for one request. Synchronous core of the delta batcher.

With ``first_at_once`` (the shell's choice) the first text of each channel
(answer text, reasoning) goes out as soon as it arrives: the time to the
first token is what a reader feels. After it, consecutive deltas of one
channel are merged until ``char_limit``
characters or ``event_limit`` events are pending; any other
item flushes the pending run first, so order holds. The run never ends in the
first half of a UTF-16 surrogate pair: that half is held back until its
partner arrives — across non-text items too (an annotation between the two
halves of an emoji) — and pairs that came as two lone halves (two JSON
escapes) are joined into the real character. Each run says how many upstream
events it merged — their credits travel with it.

Why ``event_limit``: a pending run holds the credits of the events it
merged, and only a flush gives them back. With tiny deltas and a high
``char_limit`` (or the idle flush off) a run could otherwise hold the whole
credit window and stop its own fetcher for good. The batcher shell sets the
limit to half the request's window, so a run never holds more than that.
"""

from __future__ import annotations

import re

from orpipe.engine.pipeline_messages import (
    BatchedItem,
    DeltaChannel,
    DeltaEvent,
    StreamItem,
    TextRun,
)

__all__ = ["DeltaBatcher", "join_surrogates"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


def join_surrogates(text: str) -> str:
    """Pairs of lone surrogates → real characters; a stray half → U+FFFD."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class DeltaBatcher:
    __slots__ = (
        "_channel",
        "_events",
        "_length",
        "_parts",
        "_started",
        "char_limit",
        "event_limit",
        "request_id",
    )

    def __init__(
        self,
        request_id: str,
        char_limit: int,
        event_limit: int | None = None,
        *,
        first_at_once: bool = False,
    ) -> None:
        self.request_id = request_id
        self.char_limit = char_limit
        #: Most upstream events (credits) one pending run may hold; None: no limit.
        self.event_limit = event_limit if event_limit is not None else 1 << 62
        self._channel: DeltaChannel | None = None
        self._parts: list[str] = []
        self._length = 0
        self._events = 0
        #: Channels whose first text already went out (``first_at_once``: the
        #: first goes at once, for the time to first token; batching is for what
        #: follows). Without it, every channel counts as started.
        self._started: set[str] = set() if first_at_once else {"text", "reasoning"}

    @property
    def has_pending(self) -> bool:
        return bool(self._parts)

    def push(self, item: StreamItem) -> list[BatchedItem]:
        """Take one item; return what is ready to go downstream."""
        if isinstance(item, DeltaEvent):
            out: list[BatchedItem] = []
            if self._channel is not None and self._channel != item.channel:
                out.extend(self.flush(final=True))
            self._channel = item.channel
            self._parts.append(item.text)
            self._length += len(item.text)
            self._events += 1
            first = item.channel not in self._started and bool(item.text)
            if first:
                self._started.add(item.channel)
            if first or self._length >= self.char_limit or self._events >= self.event_limit:
                flushed = self.flush(final=False)
                if not flushed and self._events >= self.event_limit:
                    # Only a half pair is pending, on credits the fetcher needs
                    # to read its partner (a window of one): the credits go back
                    # in a run with no text, and the half keeps waiting.
                    flushed = [self._credits_only()]
                out.extend(flushed)
            return out
        # Not final: a trailing half pair waits for its partner past this item.
        out = list(self.flush(final=False))
        out.append(item)
        return out

    def _credits_only(self) -> TextRun:
        """A run with no text that gives the pending events' credits back."""
        assert self._channel is not None
        run = TextRun(
            request_id=self.request_id, channel=self._channel, text="", events=self._events
        )
        self._events = 0
        return run

    def flush(self, *, final: bool) -> list[TextRun]:
        """The pending run (minus a trailing half pair unless ``final``)."""
        if not self._parts or self._channel is None:
            return []
        text = "".join(self._parts)
        held = ""
        if not final and text and _is_high_surrogate(text[-1]):
            text, held = text[:-1], text[-1]
            if not text:
                return []  # only the half pair is pending: it keeps its credits
        channel, events = self._channel, self._events
        # The held half carries no credit: the run takes all of them, so every
        # run that reaches a consumer returns at least one credit.
        self._parts = [held] if held else []
        self._length = len(held)
        self._events = 0
        if not held:
            self._channel = None
        return [
            TextRun(
                request_id=self.request_id,
                channel=channel,
                text=join_surrogates(text),
                events=events,
            )
        ]
