"""Maps one request's Responses stream to outbound events. Synchronous core of the emitter.

It knows the event catalogue (contract §1.9): text and reasoning runs become
deltas, ``url_citation`` annotations become ``Citation`` (once per URL),
web-search progress becomes ``Status``, finished non-message output items
become ``OutputItem`` (reasoning, function calls: what persistence and tools
need), and the terminal event gives ``Usage`` and the ending.

Endings are explicit. The terminal event's response object has the last
word: its ``status`` (``completed`` / ``incomplete`` / ``failed``) decides
between ``Completed``, ``Incomplete`` and ``Failed`` whatever the event's
type says (a ``response.completed`` whose response failed is a failure);
without a status the type decides (``response.done``, a docs-only
spelling, counts as completed). ``error`` and ``response.error`` (code int
or string, top-level or nested, and the untyped ``{"error": …}`` lines the
decoder names ``error``) → ``Failed`` with the provider's message. A body
that ends without any of them → ``Failed`` saying the answer may be cut.
Unknown event types are counted and ignored. Numbers in usage that are not
finite (``NaN`` cost) are dropped, so Open WebUI can always serialise them.
"""

from __future__ import annotations

import collections
import math
from typing import Any, assert_never

from orpipe.actors.event_types import ERROR_TYPES, REPEATS_TEXT, TERMINAL_TYPES
from orpipe.engine.errors import (
    EngineError,
    RequestDeadlineExceeded,
    UpstreamProtocolError,
    UpstreamResponseFailed,
)
from orpipe.engine.logs import logger
from orpipe.engine.messages import (
    Cancelled,
    Citation,
    Completed,
    Ending,
    Failed,
    Incomplete,
    JsonObject,
    Notice,
    OutboundEvent,
    OutputItem,
    ReasoningDelta,
    Status,
    TextDelta,
    Usage,
)
from orpipe.engine.pipeline_messages import (
    BatchedItem,
    ParseFailed,
    StreamEnded,
    TextRun,
    UpstreamEvent,
)

__all__ = ["ResponseMapper"]

#: Catalogue events that carry nothing a consumer needs beyond what other
#: events already give (the ``.done`` twins repeat the deltas).
_QUIET = REPEATS_TEXT | {
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.debug",
}
#: Families of server-tool progress events, ignored by prefix.
_QUIET_PREFIXES = (
    "response.image_generation_call.",
    "response.code_interpreter_call",
    "response.custom_tool_call_input.",
    "response.apply_patch_call_operation_diff.",
    "response.fusion_call.",
    "response.file_search_call.",
    "response.mcp_",
)
_WEB_SEARCH = "response.web_search_call."
#: The response object's status → the ending it means.
_STATUS_ENDINGS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}
_SEARCHING = "Searching the web…"


class ResponseMapper:
    """Per-request state: text length, citations seen, terminal event."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.text_chars = 0
        self.reasoning_chars = 0
        self.response_id: str | None = None
        self.parse_failures = 0
        self.unknown_types: collections.Counter[str] = collections.Counter()
        self._terminal: Ending | None = None
        #: Every finished output item of the turn, in stream order (messages
        #: too): a tool loop's next turn sends them back.
        self.output_items: list[JsonObject] = []
        self._urls: set[str] = set()
        self._searching = False

    def map(self, item: BatchedItem) -> list[OutboundEvent]:
        """Outbound events for one item (often none)."""
        if self._terminal is not None:
            return []  # nothing after the terminal event counts
        match item:
            case TextRun(text=""):
                return []  # empty deltas: their credits go back, nothing to show
            case TextRun(channel="text", text=text):
                self.text_chars += len(text)
                return [TextDelta(request_id=self.request_id, text=text)]
            case TextRun(text=text):
                self.reasoning_chars += len(text)
                return [ReasoningDelta(request_id=self.request_id, text=text)]
            case ParseFailed(reason=reason):
                self.parse_failures += 1
                if self.parse_failures > 1:
                    return []
                return [
                    Notice(
                        request_id=self.request_id,
                        message=f"An event from OpenRouter could not be read ({reason}) and "
                        "was skipped; the answer may miss a few characters.",
                    )
                ]
            case UpstreamEvent():
                return self._event(item.type, item.data)
        assert_never(item)

    def finish(self, ended: StreamEnded) -> tuple[list[OutboundEvent], Ending]:
        """Events that close the request's open statuses, and its ending."""
        out: list[OutboundEvent] = []
        if self._searching:
            out.append(Status(request_id=self.request_id, description=_SEARCHING, done=True))
        return out, self._ending(ended)

    # -- internals ---------------------------------------------------------

    def _ending(self, ended: StreamEnded) -> Ending:
        rid = self.request_id
        if self._terminal is not None:
            return self._terminal
        if ended.cancel_reason is not None:
            return Cancelled(request_id=rid, reason=ended.cancel_reason)
        error: EngineError = ended.failure or UpstreamProtocolError(
            "OpenRouter ended the stream without finishing the response; "
            "the answer may be incomplete. Retry to get a complete answer."
        )
        message = error.message
        if self.text_chars and not isinstance(error, RequestDeadlineExceeded):
            message += (
                f" (The stream stopped after {self.text_chars:,} characters; "
                "the text so far is partial.)"
            )
        return Failed(request_id=rid, error=error, message=message)

    def _event(self, kind: str, data: JsonObject) -> list[OutboundEvent]:
        rid = self.request_id
        if kind in _QUIET:
            return []
        if kind == "response.output_text.annotation.added":
            return self._citation(data.get("annotation"))
        if kind == "response.output_item.done":
            return self._item_done(data.get("item"))
        if kind == "response.reasoning_summary_part.added":
            # Separate summary parts the way a reader expects paragraphs.
            if self.reasoning_chars:
                return [ReasoningDelta(request_id=rid, text="\n\n")]
            return []
        if kind.startswith(_WEB_SEARCH):
            done = kind.endswith(".completed")
            if done == self._searching:  # only report changes
                self._searching = not done
                return [Status(request_id=rid, description=_SEARCHING, done=done)]
            return []
        if kind == "response.created":
            response = data.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.response_id = response["id"]
            return []
        if kind in TERMINAL_TYPES:
            return self._terminal_event(kind, data)
        if kind in ERROR_TYPES:
            return self._error_event(data)
        if kind.startswith(_QUIET_PREFIXES):
            return []
        self.unknown_types[kind] += 1
        return []

    def _citation(self, annotation: Any) -> list[OutboundEvent]:
        if not isinstance(annotation, dict) or annotation.get("type") != "url_citation":
            return []
        url = annotation.get("url")
        if not isinstance(url, str) or not url or url in self._urls:
            return []
        self._urls.add(url)
        return [
            Citation(
                request_id=self.request_id,
                url=url,
                title=str(annotation.get("title") or url),
                start_index=_int_or_none(annotation.get("start_index")),
                end_index=_int_or_none(annotation.get("end_index")),
            )
        ]

    @property
    def function_calls(self) -> list[JsonObject]:
        """The turn's ``function_call`` items, in the model's order."""
        return [i for i in self.output_items if i.get("type") == "function_call"]

    def _item_done(self, item: Any) -> list[OutboundEvent]:
        if not isinstance(item, dict) or item.get("type") is None:
            return []
        self.output_items.append(item)
        if item.get("type") == "message":
            return []
        return [OutputItem(request_id=self.request_id, item=item)]

    def _terminal_event(self, kind: str, data: JsonObject) -> list[OutboundEvent]:
        rid = self.request_id
        response = data.get("response")
        response = response if isinstance(response, dict) else {}
        if isinstance(response.get("id"), str):
            self.response_id = response["id"]
        out: list[OutboundEvent] = []
        usage = _usage(rid, response.get("usage"))
        if usage is not None:
            out.append(usage)
        status = response.get("status")
        if isinstance(status, str) and status in _STATUS_ENDINGS:
            kind = _STATUS_ENDINGS[status]
        if kind in ("response.completed", "response.done"):
            self._terminal = Completed(
                request_id=rid, response_id=self.response_id, text_chars=self.text_chars
            )
        elif kind == "response.incomplete":
            details = response.get("incomplete_details")
            reason = str(details.get("reason")) if isinstance(details, dict) else "unknown"
            self._terminal = Incomplete(request_id=rid, reason=reason, message=_incomplete(reason))
        else:
            error = response.get("error")
            error = error if isinstance(error, dict) else {}
            error_type = response.get("error_type") or data.get("error_type")
            detail = error.get("message") or (
                f"the response ended with status {status!r}" if status == "cancelled" else None
            )
            self._fail(
                UpstreamResponseFailed(
                    code=_code(error.get("code")),
                    detail=str(detail or "no reason given"),
                    error_type=str(error_type) if error_type else None,
                )
            )
        return out

    def _error_event(self, data: JsonObject) -> list[OutboundEvent]:
        nested = data.get("error")
        source = nested if isinstance(nested, dict) else data
        detail = source.get("message") or (nested if isinstance(nested, str) else None)
        metadata = source.get("metadata")
        provider = metadata.get("provider_name") if isinstance(metadata, dict) else None
        detail = str(detail or "no reason given")
        if isinstance(provider, str) and provider:
            detail += f" (provider: {provider})"
        self._fail(
            UpstreamResponseFailed(
                code=_code(source.get("code")),
                detail=detail,
                error_type=_str_or_none(data.get("error_type") or source.get("error_type")),
            )
        )
        return []

    def _fail(self, error: EngineError) -> None:
        message = error.message
        if self.text_chars:
            message += (
                f" (It stopped after {self.text_chars:,} characters; the text so far is partial.)"
            )
        self._terminal = Failed(request_id=self.request_id, error=error, message=message)


def _incomplete(reason: str) -> str:
    if reason == "max_output_tokens":
        return (
            "The answer was cut short because it reached the output token limit; "
            "ask to continue, or raise max_output_tokens."
        )
    if reason == "content_filter":
        return "The provider's content filter stopped the answer early."
    return f"The answer ended early ({reason})."


def _usage(request_id: str, raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inputs = raw.get("input_tokens_details")
    outputs = raw.get("output_tokens_details")
    cost = raw.get("cost")
    input_tokens = _int(raw.get("input_tokens"))
    output_tokens = _int(raw.get("output_tokens"))
    return Usage(
        request_id=request_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_int(raw.get("total_tokens")) or input_tokens + output_tokens,
        cached_tokens=_int(inputs.get("cached_tokens")) if isinstance(inputs, dict) else 0,
        reasoning_tokens=_int(outputs.get("reasoning_tokens")) if isinstance(outputs, dict) else 0,
        cost=_finite_cost(cost),
    )


def _finite_cost(cost: Any) -> float | None:
    """The cost as a float; None when absent or not a finite number (JSON cannot carry NaN)."""
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        return None
    if not math.isfinite(cost):
        logger.debug("usage cost {!r} is not a finite number; dropped", cost)
        return None
    return float(cost)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _code(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    return value if isinstance(value, int | str) else None
