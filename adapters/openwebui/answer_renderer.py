"""``AnswerRenderer``: the engine's events of one request, as what Open WebUI shows.

Synchronous and clock-injected: it turns the engine's outbound events
(``engine.messages``) into ``Output`` values, each either a Chat Completions
chunk for the pipe's async generator to yield or an event for
``__event_emitter__``; it also writes the final status line and keeps the
answer, reasoning and usage totals. The pipe's loop stays trivial::

    for out in renderer.opening():  # "Waiting for OpenRouter…"
        await emitter.emit(out.event)
    for out in renderer.feed(event):
        if out.chunk is not None:
            yield out.chunk
        else:
            await emitter.emit(out.event)

What Open WebUI does with each chunk and event: docs/open-webui-notes.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, assert_never

from orpipe.adapters.openwebui.completion_chunks import CompletionChunks, error_chunk
from orpipe.adapters.openwebui.events import (
    notification_event,
    source_event,
    status_event,
    strip_openai_utm,
)
from orpipe.adapters.openwebui.final_status import UsageTotals, format_final_status
from orpipe.adapters.openwebui.statuses import WAITING, StatusHistory, closed_text, format_seconds
from orpipe.engine.artifacts import marker_line
from orpipe.engine.messages import (
    Cancelled,
    Citation,
    Completed,
    Ending,
    Failed,
    Incomplete,
    Notice,
    OutboundEvent,
    OutputItem,
    ReasoningDelta,
    Status,
    TextDelta,
    Usage,
)

__all__ = ["AnswerRenderer", "Output"]


@dataclass(frozen=True, slots=True)
class Output:
    """One thing to deliver: a chunk to yield (``kind="chunk"``) or an event to emit."""

    kind: Literal["chunk", "event"]
    payload: dict[str, Any]

    @classmethod
    def to_yield(cls, chunk: dict[str, Any]) -> Output:
        return cls("chunk", chunk)

    @classmethod
    def to_emit(cls, event: dict[str, Any]) -> Output:
        return cls("event", event)

    @property
    def chunk(self) -> dict[str, Any] | None:
        """The chunk for the async generator, or None when this is an event."""
        return self.payload if self.kind == "chunk" else None

    @property
    def event(self) -> dict[str, Any]:
        """The emitter event; asking a chunk for it is a programming error."""
        if self.kind != "event":
            raise TypeError("this Output is a chunk to yield, not an event to emit")
        return self.payload


class AnswerRenderer:
    """The engine's outbound events of one request, rendered for Open WebUI.

    ``feed(event)`` returns what to deliver, in order. Chunks carry what must
    reach Open WebUI's HTTP stream (and so API clients too): answer text,
    reasoning, the cut-short notice, usage, the error. Events carry what only
    the browser needs: statuses, sources, notifications, usage/error mirrors.

    Statuses go through a ``StatusHistory`` (no blank, hidden or repeated
    entries; see ``adapters.openwebui.statuses``):

    * ``opening()`` -- the pipe's first output, before anything is read --
      is ``WAITING``. The first thing shown after it ends the wait: a status
      of its own replaces it as the status line; anything else (text,
      reasoning, a source, …) is preceded by "OpenRouter responded in 0.84 s".
    * Reasoning streams as Open WebUI's thinking block, which says
      "Thinking…" and "Thought for N seconds" itself: no status for it.
    * The engine's statuses (web search, tool calls) pass through; one closed
      with its own description gets its past-tense line ("Searched the web").

    Endings:

    * ``Completed``: the final status line, which closes whatever status was
      open; usage;
    * ``Incomplete``: the same plus a warning notification and a notice at
      the end of the answer (closing an open code fence first, so the notice
      is not swallowed into code);
    * ``Failed``: "Failed after 2.31 s" if a status was still open, usage if
      any (it was paid for), the error chunk and a ``chat:completion`` error
      event -- no final line, the error is what the person needs to see;
    * ``Cancelled``: "Stopped after 2.31 s" if a status was still open,
      nothing else (nobody is reading).

    ``tool_calls_to_owui=True`` (TOOL_EXECUTION_MODE open-webui) yields each
    finished ``function_call`` output item as a ``delta.tool_calls`` chunk
    with one complete call (``CompletionChunks.tool_call``). Open WebUI runs them
    and calls the pipe again for the same message, adding to its status
    list: ``tool_round`` (2, 3, …) numbers the wait's lines, "Waiting for
    OpenRouter (round 2)…", so they do not repeat round 1's. In engine mode
    (the default) function calls are the engine's business and never reach
    Open WebUI as calls.

    ``write_references=False`` (a chat Open WebUI keeps, whose artifacts the
    next turn finds by message id: ``adapters.openwebui.branch_references``) adds
    nothing to the answer for its stored items; otherwise (an API client's
    own chat ids) each stored item gets a reference line at the end.

    ``show_final_status=False`` leaves the final line out: a status still
    open then gets its closing line ("OpenRouter responded in 0.84 s" for the
    wait) and nothing else is added. (Time spent reasoning is in Open WebUI's
    thinking block already.)
    """

    def __init__(
        self,
        *,
        show_final_status: bool = True,
        model: str = "orpipe",
        tool_calls_to_owui: bool = False,
        tool_names: Mapping[str, str] | None = None,
        tool_round: int = 1,
        write_references: bool = True,
        started_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._show_final_status = show_final_status
        self._write_references = write_references
        self._clock = clock
        self._started = clock() if started_at is None else started_at
        wall = wall_clock()
        self._chunks = CompletionChunks(model=model, created=int(wall), tool_names=tool_names)
        # The day citations were read: UTC, so it does not depend on the server's zone.
        self._accessed = datetime.fromtimestamp(wall, UTC).date().isoformat()
        self._answer: list[str] = []
        self._reasoning: list[str] = []
        self._notice = ""
        self._usage: UsageTotals | None = None
        self._first_delta_at: float | None = None
        self._last_delta_at: float | None = None
        self._sources: set[str] = set()
        self._statuses = StatusHistory()
        #: " (round 2)" on the wait's lines in Open WebUI's follow-up calls.
        self._round = f" (round {tool_round})" if tool_round > 1 else ""
        self._opened = False
        #: The opening is the status line and nothing has been shown since.
        self._waiting = False
        self._ending: Ending | None = None
        self._artifact_ids: list[str] = []
        self._references = ""
        self._tool_calls_to_owui = tool_calls_to_owui

    # -- properties --------------------------------------------------------------------

    @property
    def answer_text(self) -> str:
        """The model's answer so far (text deltas only)."""
        return "".join(self._answer)

    @property
    def content_text(self) -> str:
        """What the content chunks showed: the answer, any cut-short notice, and the
        artifact references (invisible when rendered)."""
        return self.answer_text + self._notice + self._references

    @property
    def artifact_ids(self) -> tuple[str, ...]:
        """Ids of the stored artifacts this answer produced (referenced at its end);
        after the ending, only those written by then (``unwritten_artifact_ids``)."""
        return tuple(self._artifact_ids)

    @property
    def reasoning_text(self) -> str:
        return "".join(self._reasoning)

    @property
    def usage(self) -> UsageTotals | None:
        """Totals over every ``Usage`` seen; None when none came."""
        return self._usage

    @property
    def failed(self) -> bool:
        return isinstance(self._ending, Failed)

    @property
    def ending(self) -> Ending | None:
        return self._ending

    @property
    def open_status(self) -> str | None:
        """The status line this renderer sent, while it is still open (shimmering)."""
        return self._statuses.open

    # -- feeding -----------------------------------------------------------------------

    def opening(self) -> list[Output]:
        """The status shown until OpenRouter's first event is (``WAITING``); once."""
        if self._opened or self._ending is not None:
            return []
        self._opened = self._waiting = True
        text = f"{WAITING.removesuffix('…')}{self._round}…" if self._round else WAITING
        return self._status(status_event(text, done=False))

    def feed(self, event: OutboundEvent) -> list[Output]:
        """What to deliver for one engine event, in order; nothing after the ending."""
        if self._ending is not None:
            return []
        self._chunks.name_after(event.request_id)
        if isinstance(event, Ending):
            return self._end(event)  # closes the wait itself
        out = self._render(event)
        if self._waiting and out:
            self._waiting = False
            # A status of its own replaces the wait as the status line; anything
            # else is shown under a line that says the wait is over.
            if not _is_status(out[0]):
                out[:0] = self._status(status_event(self._responded(), done=True))
        return out

    def _render(self, event: OutboundEvent) -> list[Output]:
        match event:
            case TextDelta():
                return self._delta(event.text, self._answer, "content")
            case ReasoningDelta():
                # Open WebUI's thinking block, which says "Thinking…" itself.
                return self._delta(event.text, self._reasoning, "reasoning_content")
            case Citation():
                return self._citation(event)
            case Status():
                return self._status(status_event(event.description, done=event.done))
            case Notice():
                return [Output.to_emit(notification_event("warning", event.message))]
            case Usage():
                self._usage = (self._usage or UsageTotals()).plus(event)
                return []
            case OutputItem():
                if event.artifact_id is not None:
                    self._artifact_ids.append(event.artifact_id)
                if self._tool_calls_to_owui and event.item.get("type") == "function_call":
                    return [Output.to_yield(self._chunks.tool_call(event.item))]
                return []  # stored for the next turn; referenced when the answer ends
            case Completed() | Incomplete() | Failed() | Cancelled():
                return self._end(event)
        assert_never(event)

    def _responded(self) -> str:
        elapsed = format_seconds(self._clock() - self._started)
        return f"OpenRouter responded in {elapsed}{self._round}"

    # -- deltas ------------------------------------------------------------------------

    def _delta(self, text: str, into: list[str], key: str) -> list[Output]:
        """A text or reasoning delta: kept in ``into``, yielded under ``delta[key]``."""
        if not text:
            return []
        self._delta_seen()
        into.append(text)
        return [Output.to_yield(self._chunks.delta({key: text}))]

    def _delta_seen(self) -> None:
        now = self._clock()
        if self._first_delta_at is None:
            self._first_delta_at = now
        self._last_delta_at = now

    # -- citations and statuses -------------------------------------------------------------

    def _citation(self, citation: Citation) -> list[Output]:
        url = strip_openai_utm(citation.url)
        if url in self._sources:
            return []
        self._sources.add(url)
        # The engine titles an untitled citation with its raw URL; show the cleaned one.
        title = url if citation.title == citation.url else citation.title
        return [Output.to_emit(source_event(url, title, accessed=self._accessed))]

    def _status(self, event: dict[str, Any]) -> list[Output]:
        """The status as the history lets it be sent (renamed, or not at all)."""
        data = self._statuses.entry(event["data"])
        return [] if data is None else [Output.to_emit({**event, "data": data})]

    def _close(self, text: str) -> list[Output]:
        """``text`` as a done status if one is still open (it ends the shimmer)."""
        if self._statuses.open is None:
            return []
        return self._status(status_event(text, done=True))

    # -- endings -------------------------------------------------------------------------

    def _end(self, ending: Ending) -> list[Output]:
        self._ending = ending
        if unwritten := set(ending.unwritten_artifact_ids):
            # Not in the shared store when the answer ended: another worker could
            # not replay them, so neither reference nor key them (orphan path).
            self._artifact_ids = [i for i in self._artifact_ids if i not in unwritten]
        out: list[Output] = []
        match ending:
            case Completed():
                out += self._reference_chunk()
                out += self._final_line()
                out += self._usage_outputs()
            case Incomplete():
                out.append(Output.to_emit(notification_event("warning", ending.message)))
                out.append(self._notice_chunk(ending.message))
                out += self._reference_chunk()
                out += self._final_line()
                out += self._usage_outputs()
            case Failed():
                out += self._close(f"Failed after {format_seconds(self._elapsed())}")
                out += self._reference_chunk()
                out += self._failure_outputs(ending.message)
            case Cancelled():
                out += self._close(f"Stopped after {format_seconds(self._elapsed())}")
            case _:
                assert_never(ending)
        self._waiting = False
        return out

    def _final_line(self) -> list[Output]:
        """The final status line; without it, the open status's closing line, if any."""
        if self._show_final_status:
            text = format_final_status(self._elapsed(), self._usage, self._generation_s())
            return self._status(status_event(text, done=True))
        open_status = self._statuses.open
        if open_status is None:
            return []
        return self._close(self._responded() if self._waiting else closed_text(open_status))

    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self._started)

    def _generation_s(self) -> float | None:
        if self._first_delta_at is None or self._last_delta_at is None:
            return None
        return self._last_delta_at - self._first_delta_at

    def _usage_outputs(self) -> list[Output]:
        """Usage to the browser now, and as a chunk for the middleware's ledger and API clients."""
        if self._usage is None:
            return []
        # Two separate dicts: Open WebUI may mutate what it is handed.
        return [
            Output.to_emit(
                {"type": "chat:completion", "data": {"usage": self._usage.as_chat_completions()}}
            ),
            Output.to_yield(self._chunks.usage(self._usage.as_chat_completions())),
        ]

    def _failure_outputs(self, message: str) -> list[Output]:
        out: list[Output] = []
        data: dict[str, Any] = {"error": {"message": message}}
        if self._usage is not None:
            out.append(Output.to_yield(self._chunks.usage(self._usage.as_chat_completions())))
            data["usage"] = self._usage.as_chat_completions()
        out.append(Output.to_yield(error_chunk(message)))
        out.append(Output.to_emit({"type": "chat:completion", "data": data}))
        return out

    def _reference_chunk(self) -> list[Output]:
        """One ``[id]: #`` line per stored artifact: a Markdown reference-style link
        definition, invisible when rendered, that the next turn finds in the history.
        Only where the next turn cannot find them by message id (``write_references``)."""
        if not self._artifact_ids or not self._write_references:
            return []
        shown = self.answer_text + self._notice
        prefix = "\n```" if _inside_code_fence(shown) else ""
        lines = "\n".join(marker_line(i) for i in self._artifact_ids)
        self._references = f"{prefix}\n\n{lines}\n"
        return [Output.to_yield(self._chunks.delta({"content": self._references}))]

    def _notice_chunk(self, message: str) -> Output:
        answer = self.answer_text
        prefix = ""
        if answer:
            # An answer cut inside a code block would swallow the notice into the code.
            prefix = "\n```\n\n" if _inside_code_fence(answer) else "\n\n"
        self._notice = f"{prefix}> ⚠️ {message}"
        return Output.to_yield(self._chunks.delta({"content": self._notice}))


def _is_status(output: Output) -> bool:
    return output.kind == "event" and output.payload.get("type") == "status"


def _inside_code_fence(text: str) -> bool:
    """Whether ``text`` ends inside a ``` fenced block (an odd number of fence lines)."""
    fences = sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))
    return fences % 2 == 1
