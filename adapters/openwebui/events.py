"""What Open WebUI sees of an answer: stream chunks for its HTTP stream, events for its socket.

This module owns:

* ``AnswerRenderer`` -- synchronous, clock-injected: turns the engine's
  outbound events (``engine.messages``) into ``Output`` values, each either a
  Chat Completions chunk for the pipe's async generator to yield or an event
  for ``__event_emitter__``; it also formats the final status line and keeps
  the answer, reasoning and usage totals;
* ``SafeEmitter`` -- the only asyncio-flavoured part: a wrapper around
  ``__event_emitter__`` that never lets a dead socket break an answer, never
  swallows a cancellation, keeps the status history clean and ends a status
  line left open;
* ``StatusHistory`` -- the rules both apply to statuses (below);
* small builders the pipe also uses before streaming: ``error_chunk``,
  ``busy_error_chunk``, ``status_event``, ``notification_event``,
  ``source_event``, ``strip_openai_utm``, ``format_final_status``,
  ``format_seconds``, ``closed_text``.

The pipe's loop stays trivial::

    for out in renderer.opening():  # "Waiting for OpenRouter…"
        await emitter.emit(out.event)
    for out in renderer.feed(event):
        if out.chunk is not None:
            yield out.chunk
        else:
            await emitter.emit(out.event)

Verified in the installed open-webui 0.12.4 (not guessed):

* ``open_webui/functions.py`` ``generate_function_chat_completion``
  (inner ``stream_content`` and ``process_line``): every item an async
  generator yields that is a ``dict`` becomes ``data: <json>`` verbatim; after
  the generator ends Open WebUI adds its own finish chunk
  (``finish_reason: "stop"``) and ``data: [DONE]``. With ``stream: false``,
  ``get_message_content`` joins ``str(item)`` of every item, so a generator
  of dicts must never be returned to a non-streaming request.
* ``open_webui/utils/middleware.py`` ``process_chat_response`` ->
  ``response_handler`` -> ``stream_body_handler``, for each ``data:`` line that
  is not a Responses event:

  (a) the answer is ``choices[0].delta.content`` (a string);
  (b) reasoning is ``delta.reasoning_content`` (then ``reasoning``,
      ``thinking``): it becomes an output item of type ``reasoning`` with
      ``<think>`` tags, i.e. the collapsible thinking block, closed when the
      first content arrives. ``utils/misc.py``
      ``openai_chat_chunk_message_template`` uses the same key;
  (c) ``usage`` at the top level of a chunk (``choices`` may be empty) is
      folded in with ``utils/response.py`` ``merge_usage``/``normalize_usage``,
      which accept Chat Completions names (``prompt_tokens``,
      ``completion_tokens``, ``total_tokens``, ``*_tokens_details``) and add
      ``cost``; merged usages are *summed*, so usage is sent once, as totals;
  (d) a chunk with no ``choices`` and an ``error`` marks the message as
      failed: the middleware stores ``{"error": {"content": <error>}}`` on the
      message and emits ``chat:completion {"error": <error>}``. The browser
      reads ``error.message`` (frontend ``Messages/Error.svelte``
      ``getErrorMessage``, and ``handleOpenAIError`` in ``Chat.svelte``), so
      the shape is ``{"error": {"message": "..."}}``.

  A chunk with an ``event`` key is handed to the emitter as well (not used
  here: events go through the emitter directly, which API clients never see).

  (e) ``delta.tool_calls`` (pass-through mode, TOOL_EXECUTION_MODE
      open-webui): each entry is collected by its ``index``; an entry without
      ``index`` is ignored, and a later entry with an index already seen is
      taken as more of that call (its ``arguments`` are appended), so every
      call needs its own index, counted per pipe call (the middleware starts
      a fresh list for each stream it reads). ``id`` is kept (a fresh
      ``fc_…`` one is made when it is missing or already used in this
      answer), ``function.name`` is looked up in ``__tools__`` by that exact
      key (``execute_tool_call``), ``function.arguments`` is a JSON string
      (other values are serialised; two objects back to back are split into
      two calls by ``_split_tool_calls``). ``type`` is not read but kept for
      API clients, which get the stream unchanged. No ``finish_reason`` is
      needed: the tool loop runs on the collected calls, and
      ``generate_function_chat_completion`` ends every pipe stream with its
      own ``finish_reason: "stop"`` chunk anyway.

  After the stream, when a chat is attached (an event emitter exists; plain
  API calls get the chunks passed through and run tools themselves), the
  middleware runs the calls, then calls the pipe again with ``messages``
  extended by an assistant message (its text, ``tool_calls: [{id, type:
  "function", function: {name, arguments}}]``) and one ``{role: "tool",
  tool_call_id, content: <string>}`` per call, up to
  ``CHAT_RESPONSE_MAX_TOOL_CALL_ITERATIONS`` (``env.py``, default 256)
  rounds; ``adapters.openwebui.request`` maps those back.
* After the stream ends the middleware itself emits ``chat:completion`` with
  ``done: true``, the final output and the merged usage. In the browser
  (``Chat.svelte`` ``chatCompletionEventHandler``, read from the frontend's
  source maps) ``done: true`` starts ``chatCompletedHandler`` -- outlet
  filters, chat save, title, follow-ups, tags -- and the next queued
  message. So this module's ``chat:completion`` events carry ``usage`` or
  ``error`` but **never ``done``**: a pipe-sent ``done`` would run all of
  that twice, the first time before the answer is final.
* ``open_webui/socket/main.py`` ``get_event_emitter``: ``source`` data
  without a ``type`` key is appended to the message's ``sources``, grouped in
  the browser by ``metadata[i].source`` (``Citations.svelte``). The data of
  *every* ``status`` event is appended to the message's ``statusHistory``,
  whatever it says: ``models/chats.py``
  ``add_message_status_to_chat_by_id_and_message_id`` in the database, and
  ``Chat.svelte`` (``message.statusHistory.push(data)``) in the open page.
  Nothing is ever replaced or merged. In the browser (the package's frontend
  build, read from its source maps in ``frontend/_app/immutable/chunks``:
  ``ResponseMessage/StatusHistory.svelte`` and ``StatusItem.svelte``):

  - the status line is the *last* entry; it shimmers while that entry's
    ``done`` is exactly ``false``; when the last entry is ``hidden`` the
    whole status area, list included, is not drawn;
  - clicking it lists every entry (when there are two or more), each with a
    dot; the dot is drawn for every entry, but ``StatusItem`` renders nothing
    for a ``hidden`` one -- a blank dot -- and a plain entry (no ``action``)
    without a ``description`` has no text either; listed entries never
    shimmer (they are drawn with ``done={true}``).

  So a status cannot be closed or hidden without adding an entry, and only
  the last entry's ``done`` matters. ``StatusHistory`` (used by both the
  renderer and ``SafeEmitter``) keeps the list clean: nothing without text
  or ``hidden`` is sent; a status is not "closed" by repeating it with
  ``done: true`` (a duplicate line) but superseded by the next meaningful
  one, or closed by a past-tense line, as Open WebUI's own middleware does
  ("Creating image" → "Image created"); a text already in the list is
  numbered ("Calling get_weather (2)…"). Reasoning is Open WebUI's own
  "Thinking..." / "Thought for N seconds" block (``structuredOutput.ts``,
  ``Collapsible.svelte``), so
  no status says the same: statuses say what the block cannot -- waiting on
  OpenRouter before its first event, web searches, tool calls -- and the
  final line ends the list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, assert_never
from urllib.parse import urlsplit, urlunsplit

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
    thaw_json,
)

__all__ = [
    "MIN_TPS_WINDOW_S",
    "STOPPED",
    "WAITING",
    "AnswerRenderer",
    "Emitter",
    "Output",
    "SafeEmitter",
    "StatusHistory",
    "UsageTotals",
    "busy_error_chunk",
    "closed_text",
    "error_chunk",
    "format_final_status",
    "format_seconds",
    "log_source_event",
    "notification_event",
    "source_event",
    "status_event",
    "strip_openai_utm",
]

log = logging.getLogger("orpipe.owui")

#: Open WebUI's ``__event_emitter__``: an async callable taking one event dict.
Emitter = Callable[[dict[str, Any]], Awaitable[None]]

#: The status line from submission until OpenRouter's first event is shown.
WAITING = "Waiting for OpenRouter…"

#: What closes a status that was still open when the answer stopped being read.
STOPPED = "Stopped"

#: The shortest generation window a tokens-per-second figure is shown for.
MIN_TPS_WINDOW_S = 0.5

_OPENAI_UTM = "utm_source=openai"


# -- what the pipe's loop receives ---------------------------------------------------


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


# -- event and chunk builders ----------------------------------------------------------


def status_event(description: str, *, done: bool, **extra: Any) -> dict[str, Any]:
    """A ``status`` event; extra keys (``action``, ``queries``, ...) go into its data."""
    return {"type": "status", "data": {"description": description, "done": done, **extra}}


def notification_event(
    kind: Literal["info", "success", "warning", "error"], content: str
) -> dict[str, Any]:
    """A toast in the browser (not stored with the chat)."""
    return {"type": "notification", "data": {"type": kind, "content": content}}


def log_source_event(request_id: str, lines: list[str]) -> dict[str, Any]:
    """A failed request's log lines as a source under the answer (the original pipe
    claimed to do this and never did, seed inventory §I)."""
    source_id = f"orpipe-log-{request_id}"
    return {
        "type": "source",
        "data": {
            "source": {"name": f"Request log {request_id}", "id": source_id},
            "document": ["\n".join(lines)],
            "metadata": [{"source": source_id, "name": f"orpipe request log ({len(lines)} lines)"}],
        },
    }


def source_event(url: str, title: str, *, accessed: str) -> dict[str, Any]:
    """A ``source`` event for one cited web page (inventory §C, contract §2.9)."""
    name = title or url
    return {
        "type": "source",
        "data": {
            "source": {"name": _site_name(url), "url": url},
            "document": [name],
            "metadata": [{"source": url, "name": name, "date_accessed": accessed}],
        },
    }


def error_chunk(message: str) -> dict[str, Any]:
    """A stream item Open WebUI shows as the message's error (no ``choices``: see (d) above)."""
    return {"error": {"message": message}}


def busy_error_chunk(message: str) -> dict[str, Any]:
    """``error_chunk`` for an engine that is too busy: API clients also get a 503-style code."""
    return {"error": {"message": message, "type": "server_busy", "code": 503}}


def strip_openai_utm(url: str) -> str:
    """The URL without the ``utm_source=openai`` that web-search citations append.

    The same page is often cited with and without it; removing the pair
    (wherever it sits in the query) makes both one source.
    """
    if _OPENAI_UTM not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed URL from upstream must not break the answer
        return url
    query = "&".join(pair for pair in parts.query.split("&") if pair != _OPENAI_UTM)
    return urlunsplit(parts._replace(query=query))


def _site_name(url: str) -> str:
    """The host without a leading ``www.`` *prefix* (the original's lstrip ate letters)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return url
    return host.removeprefix("www.") if host else url


# -- usage --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Token counts and cost summed over every ``Usage`` of a request (tool rounds)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None

    def plus(self, usage: Usage) -> UsageTotals:
        cost = self.cost
        if usage.cost is not None:
            cost = (cost or 0.0) + usage.cost
        return UsageTotals(
            input_tokens=self.input_tokens + usage.input_tokens,
            output_tokens=self.output_tokens + usage.output_tokens,
            total_tokens=self.total_tokens
            + (usage.total_tokens or usage.input_tokens + usage.output_tokens),
            cached_tokens=self.cached_tokens + usage.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + usage.reasoning_tokens,
            cost=cost,
        )

    def as_chat_completions(self) -> dict[str, Any]:
        """The Chat Completions ``usage`` object (what ``normalize_usage`` reads)."""
        usage: dict[str, Any] = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
        if self.cost is not None:
            usage["cost"] = self.cost
        return usage


def format_final_status(
    elapsed_s: float, usage: UsageTotals | None, generation_s: float | None
) -> str:
    """The final status line (inventory §C): figures separated by `` · ``, e.g.

    ``5.99 s · 30.9 tokens/s · $0.0019 · 205 tokens (25 in, 180 out, 60 reasoning)``

    Time and durations as ``format_seconds`` writes them (``s`` after a space,
    as every duration this project shows); token counts with thousands
    separators; cached input and reasoning output only when there are some;
    the cost only when above zero. Without usage it is the time alone.

    tokens/s = output tokens over the generation window (first to last
    delta). It is left out without output tokens or when the window is
    shorter than ``MIN_TPS_WINDOW_S``: then the whole answer came in one or
    two batches and the quotient (or a division by zero) would be noise, not
    a rate.
    """
    figures = [format_seconds(elapsed_s)]
    if (
        usage is not None
        and usage.output_tokens > 0
        and generation_s is not None
        and generation_s >= MIN_TPS_WINDOW_S
    ):
        figures.append(f"{usage.output_tokens / generation_s:.1f} tokens/s")
    if usage is None:
        return _SEPARATOR.join(figures)
    cost = _money(usage.cost)
    if cost:
        figures.append(f"${cost}")
    details = [f"{usage.input_tokens:,} in"]
    if usage.cached_tokens > 0:
        details.append(f"{usage.cached_tokens:,} cached")
    details.append(f"{usage.output_tokens:,} out")
    if usage.reasoning_tokens > 0:
        details.append(f"{usage.reasoning_tokens:,} reasoning")
    total = usage.total_tokens or usage.input_tokens + usage.output_tokens
    noun = "token" if total == 1 else "tokens"
    figures.append(f"{total:,} {noun} ({', '.join(details)})")
    return _SEPARATOR.join(figures)


def format_seconds(seconds: float) -> str:
    """A duration as the status lines show it: ``5.99 s``."""
    return f"{max(0.0, seconds):.2f} s"


_SEPARATOR = " · "


def _money(cost: float | None) -> str:
    """Six decimals with trailing zeros trimmed; "" when nothing worth showing."""
    if cost is None or cost <= 0:
        return ""
    text = f"{cost:.6f}".rstrip("0").rstrip(".")
    return "" if text == "0" else text


# -- status bookkeeping -------------------------------------------------------------------

#: Past-tense lines for statuses closed with their own description (Open WebUI's
#: own middleware closes "Creating image" with "Image created").
_CLOSED = {
    "Searching the web…": "Searched the web",
    "Preparing attachments…": "Attachments prepared",
    WAITING: "OpenRouter responded",
}


def closed_text(description: str) -> str:
    """The line that closes the open status ``description`` without repeating it."""
    known = _CLOSED.get(description)
    if known is not None:
        return known
    return f"{description.removesuffix('…').rstrip()}: done"


class StatusHistory:
    """One request's status entries as Open WebUI keeps them (see the module docstring).

    ``entry(data)`` is what to send for a status, or None when nothing may be:

    * no description text, or ``hidden``: None -- Open WebUI would list it as
      a dot without text;
    * ``done`` (not exactly ``false``) with the description of a status this
      history opened: that status's closing line (``closed_text``) instead of
      the same text again;
    * a text already in the history: numbered, ``"Calling x (2)…"``, so no
      line is listed twice.

    Other keys (``action``, ``queries``, …) are kept. ``open`` is the status
    line when it still shimmers (the last entry, ``done`` exactly false): only
    the last entry's ``done`` matters to the browser, so an earlier open
    status needs no closing of its own once a later one is sent.
    """

    def __init__(self) -> None:
        self._texts: set[str] = set()
        self._opened: set[str] = set()
        self._open: str | None = None

    @property
    def open(self) -> str | None:
        """The description of the last entry when it is still open, else None."""
        return self._open

    def entry(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        description = data.get("description")
        if not isinstance(description, str) or not description.strip() or data.get("hidden"):
            return None
        opening = data.get("done") is False
        text = description
        if opening:
            self._opened.add(description)
        elif description in self._opened:
            self._opened.discard(description)
            text = closed_text(description)
        text = self._unique(text)
        self._texts.add(text)
        self._open = text if opening else None
        return {**data, "description": text}

    def _unique(self, text: str) -> str:
        if text not in self._texts:
            return text
        stem, dots = (text[:-1].rstrip(), "…") if text.endswith("…") else (text, "")
        n = 2
        while f"{stem} ({n}){dots}" in self._texts:
            n += 1
        return f"{stem} ({n}){dots}"


# -- the renderer -------------------------------------------------------------------------


class AnswerRenderer:
    """The engine's outbound events of one request, rendered for Open WebUI.

    ``feed(event)`` returns what to deliver, in order. Chunks carry what must
    reach Open WebUI's HTTP stream (and so API clients too): answer text,
    reasoning, the cut-short notice, usage, the error. Events carry what only
    the browser needs: statuses, sources, notifications, usage/error mirrors.

    Statuses go through a ``StatusHistory`` (no blank, hidden or repeated
    entries; see the module docstring):

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
    with one complete call, the way 0.12.4's middleware collects them (see
    (e) above): ``index`` 0, 1, … in the order the model made them, ``id``
    the call id, ``function.name`` Open WebUI's own name for the tool
    (``tool_names`` maps an announced name back to it). Open WebUI runs them
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
        self._model = model
        self._clock = clock
        self._started = clock() if started_at is None else started_at
        wall = wall_clock()
        self._created = int(wall)
        # The day citations were read: UTC, so it does not depend on the server's zone.
        self._accessed = datetime.fromtimestamp(wall, UTC).date().isoformat()
        self._chunk_id: str | None = None
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
        #: Announced name → Open WebUI's own name, for tools offered under another one.
        self._tool_names = dict(tool_names or {})
        self._tool_calls = 0

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
        """Ids of the stored artifacts this answer produced (referenced at its end)."""
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
        if self._chunk_id is None:
            self._chunk_id = f"chatcmpl-{event.request_id}"
        if isinstance(event, Completed | Incomplete | Failed | Cancelled):
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
                return self._text(event.text)
            case ReasoningDelta():
                return self._reasoning_delta(event.text)
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
                    return [Output.to_yield(self._tool_call_chunk(event.item))]
                return []  # stored for the next turn; referenced when the answer ends
            case Completed() | Incomplete() | Failed() | Cancelled():
                return self._end(event)
        assert_never(event)

    def _responded(self) -> str:
        elapsed = format_seconds(self._clock() - self._started)
        return f"OpenRouter responded in {elapsed}{self._round}"

    # -- deltas ------------------------------------------------------------------------

    def _text(self, text: str) -> list[Output]:
        if not text:
            return []
        self._delta_seen()
        self._answer.append(text)
        return [Output.to_yield(self._chunk(delta={"content": text}))]

    def _reasoning_delta(self, text: str) -> list[Output]:
        """Open WebUI's thinking block (``reasoning_content``); it says "Thinking…" itself."""
        if not text:
            return []
        self._delta_seen()
        self._reasoning.append(text)
        return [Output.to_yield(self._chunk(delta={"reasoning_content": text}))]

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
            Output.to_yield(self._chunk(usage=self._usage.as_chat_completions())),
        ]

    def _failure_outputs(self, message: str) -> list[Output]:
        out: list[Output] = []
        data: dict[str, Any] = {"error": {"message": message}}
        if self._usage is not None:
            out.append(Output.to_yield(self._chunk(usage=self._usage.as_chat_completions())))
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
        return [Output.to_yield(self._chunk(delta={"content": self._references}))]

    def _notice_chunk(self, message: str) -> Output:
        answer = self.answer_text
        prefix = ""
        if answer:
            # An answer cut inside a code block would swallow the notice into the code.
            prefix = "\n```\n\n" if _inside_code_fence(answer) else "\n\n"
        self._notice = f"{prefix}> ⚠️ {message}"
        return Output.to_yield(self._chunk(delta={"content": self._notice}))

    def _tool_call_chunk(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """One function call for Open WebUI to run (pass-through mode).

        The whole call goes in one chunk: the engine delivers a call once it is
        complete, and a first entry carrying every field is valid for both the
        middleware and OpenAI-style API clients.
        """
        index = self._tool_calls
        self._tool_calls += 1
        name = str(item.get("name") or "")
        call = {
            "index": index,
            # Without a call id, the item id still pairs call and result; the index
            # fallback is unique within the answer, which is all Open WebUI needs.
            "id": str(item.get("call_id") or item.get("id") or f"call_{index}"),
            "type": "function",
            "function": {
                # Open WebUI looks the tool up by its own name (its __tools__ key).
                "name": self._tool_names.get(name, name),
                "arguments": _arguments_json(item.get("arguments")),
            },
        }
        return self._chunk(delta={"tool_calls": [call]})

    def _chunk(
        self, *, delta: dict[str, Any] | None = None, usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A ``chat.completion.chunk`` in the shape of Open WebUI's own template."""
        chunk: dict[str, Any] = {
            "id": self._chunk_id or "chatcmpl-orpipe",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk


def _is_status(output: Output) -> bool:
    return output.kind == "event" and output.payload.get("type") == "status"


def _arguments_json(arguments: Any) -> str:
    """A call's arguments as the JSON string Chat Completions carries.

    Upstream sends a string, passed on unchanged even when it is not JSON:
    Open WebUI then answers the model that the arguments could not be parsed.
    """
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return "{}"
    return json.dumps(thaw_json(arguments), ensure_ascii=False, default=str)


def _inside_code_fence(text: str) -> bool:
    """Whether ``text`` ends inside a ``` fenced block (an odd number of fence lines)."""
    fences = sum(1 for line in text.splitlines() if line.lstrip().startswith("```"))
    return fences % 2 == 1


# -- the emitter wrapper (asyncio) ------------------------------------------------------------


#: The longest one event may take to reach Open WebUI's socket layer.
EMIT_TIMEOUT_S = 5.0


class SafeEmitter:
    """``__event_emitter__`` made safe to call from an answer's hot path.

    * ``None`` (API calls without a chat) makes every call a no-op.
    * An exception from the emitter (the socket or Redis is gone) must not
      break the answer, which still travels over HTTP: it is logged once per
      request on ``orpipe.owui`` and swallowed; later events are still tried.
    * An emit that hangs (a stuck socket or Redis) is given up after
      ``EMIT_TIMEOUT_S`` and counted as a failure, so it cannot stall the
      answer that still flows over HTTP.
    * ``asyncio.CancelledError`` is a ``BaseException`` and is never caught:
      Open WebUI's stop button must stop the answer.
    * Every ``status`` event that passes through, whoever built it, goes
      through this request's ``StatusHistory``: one Open WebUI would list as
      a blank dot (no text, ``hidden``) is not sent, a closing repeat becomes
      its past-tense line, a repeated text is numbered. ``close_statuses()``
      -- to be awaited at the end of every request, success, error or
      cancellation -- ends a status line still open with ``STOPPED`` (after
      a normal ending the renderer's final line has closed it already).
    """

    def __init__(self, emitter: Emitter | None) -> None:
        self._emitter = emitter
        self._statuses = StatusHistory()
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self._emitter is not None

    @property
    def failures(self) -> int:
        """How many emits raised (only the first was logged)."""
        return self._failures

    @property
    def open_status(self) -> str | None:
        """The status line sent last, while it is still open (shimmering)."""
        return self._statuses.open

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Deliver one event; never raises except for cancellation."""
        if event.get("type") == "status":
            data = event.get("data")
            # Tracked by intent, delivered or not: a later line supersedes it anyway.
            entry = self._statuses.entry(data) if isinstance(data, Mapping) else None
            if entry is None:
                log.debug("status not sent (no text, or hidden): %r", data)
                return
            event = {**event, "data": entry}
        if self._emitter is None:
            return
        try:
            async with asyncio.timeout(EMIT_TIMEOUT_S):
                await self._emitter(dict(event))
        except TimeoutError:
            self._failed(TimeoutError(f"no answer within {EMIT_TIMEOUT_S:g} s"))
        except Exception as exc:
            self._failed(exc)

    async def status(self, description: str, *, done: bool, **extra: Any) -> None:
        await self.emit(status_event(description, done=done, **extra))

    async def close_statuses(self) -> None:
        """End a status line that still shimmers with ``STOPPED`` (once; a no-op otherwise)."""
        if self._statuses.open is not None:
            await self.status(STOPPED, done=True)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            log.warning(
                "Open WebUI's event emitter failed (%s: %s); the answer continues over HTTP "
                "and further emitter failures of this request are not logged",
                type(exc).__name__,
                exc,
            )
