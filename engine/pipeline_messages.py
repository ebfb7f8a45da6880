"""The pipeline's own messages: what the shared channels between the actors carry.

Frozen, slotted, keyword-only dataclasses, like ``engine.messages``. Channels
carry one union alias each (DESIGN.md §2)::

    admission ─RequestHandle─▶ fetcher ─FetchOut─▶ parser pool ─ParseOut─▶ reorderer
    ─ParseOut─▶ delta batcher ─BatchOut─▶ emitter ─ToolRound─▶ tool executor

``StreamEnded`` carries a sequence number like every stream item, so it is
released by the reorderer only after every earlier item: the end of a
request can never overtake its last events.

A request's handle travels in messages, so no actor looks requests up in
shared state: each turn starts with a ``TurnStarted`` that the fetcher puts on
the first channel that keeps one request's order (``parse.out`` after the
parser pool, or ``batch.out`` on the express lane), ahead of the turn's
items; the stages after it pass it on, and the emitter keeps the handle until
it ends the request. A ``ToolRound`` carries the handle on to the tool executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from orpipe.engine.errors import EngineError
from orpipe.engine.json_values import JsonObject
from orpipe.engine.messages import OutboundEvent

if TYPE_CHECKING:  # engine.request imports engine.messages, never this module
    from orpipe.engine.request import RequestHandle

__all__ = [
    "BatchOut",
    "BatchedItem",
    "DeltaChannel",
    "DeltaEvent",
    "FetchOut",
    "ParseFailed",
    "ParseOut",
    "ParsedBatch",
    "RequestBatch",
    "SseBatch",
    "StreamEnded",
    "StreamItem",
    "TextRun",
    "ToolRound",
    "TurnStarted",
    "UpstreamEvent",
]

DeltaChannel = Literal["text", "reasoning"]


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """fetcher → … → emitter: a turn of this request starts; its items follow."""

    handle: RequestHandle

    @property
    def request_id(self) -> str:
        return self.handle.request_id


@dataclass(frozen=True, slots=True, kw_only=True)
class SseBatch:
    """Raw SSE data payloads that arrived together, numbered from ``first_seq``."""

    request_id: str
    first_seq: int
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded:
    """The upstream stream of one request is over; ``seq`` is one past its last item.

    ``failure`` is set when the stream broke, ``cancel_reason`` when the
    request was cancelled; both unset means the body ended normally (whether
    the response itself was complete is the emitter's judgement).
    """

    request_id: str
    seq: int
    failure: EngineError | None = None
    cancel_reason: str | None = None
    #: Which upstream turn of the request ended (0 first; tool rounds add turns).
    turn: int = 0


FetchOut = SseBatch | StreamEnded


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltaEvent:
    """A text or reasoning delta, already pulled out of its JSON event."""

    seq: int
    channel: DeltaChannel
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamEvent:
    """Any other decoded Responses stream event."""

    seq: int
    type: str
    data: JsonObject


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseFailed:
    """An event that could not be decoded; it still holds its sequence number."""

    seq: int
    reason: str
    size: int


StreamItem = DeltaEvent | UpstreamEvent | ParseFailed


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedBatch:
    """Decoded items of one ``SseBatch``, in sequence order."""

    request_id: str
    first_seq: int
    items: tuple[StreamItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextRun:
    """Consecutive deltas merged by the batcher; ``events`` is how many it merged."""

    request_id: str
    channel: DeltaChannel
    text: str
    events: int


ParseOut = ParsedBatch | StreamEnded | TurnStarted
BatchedItem = TextRun | UpstreamEvent | ParseFailed


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestBatch:
    """The batcher's output for one request, in order."""

    request_id: str
    items: tuple[BatchedItem, ...]


BatchOut = RequestBatch | StreamEnded | TurnStarted


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolRound:
    """emitter → tool executor: run this turn's function calls, then start the next.

    ``output`` is every output item of the turn in stream order (reasoning,
    message, function calls): the next turn sends them back, followed by
    the tool outputs, because OpenRouter keeps no state between turns.
    ``calls`` are the ``function_call`` items among them.
    """

    handle: RequestHandle
    turn: int
    output: tuple[JsonObject, ...]
    calls: tuple[JsonObject, ...]
    #: The turn's last events when they came without a credit to deliver
    #: them with; the tool executor delivers them first.
    carried: tuple[OutboundEvent, ...] = ()

    @property
    def request_id(self) -> str:
        return self.handle.request_id
