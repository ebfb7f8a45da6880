"""Decodes one SSE payload into a typed stream item. Synchronous core of the parser.

msgspec is the fast path (measured ~18% faster than orjson on delta-sized
events). Both fast decoders refuse a lone UTF-16 surrogate escape, which
providers do send when an emoji is split across two deltas, so a payload
msgspec refuses is tried once more with the standard library's decoder
before it counts as a failure. That one also takes ``NaN``, ``Infinity`` and
numbers too large for a float (as ``nan`` and ``inf``), so an event may carry
a non-finite float. A failure is a ``ParseFailed`` that keeps its sequence
number: the reorderer never waits for it.

No payload can take the engine down: whatever the decoders raise on one
payload (``RecursionError`` on absurd nesting, ``MemoryError``, any refusal)
is that event's ``ParseFailed``. Only the decode calls are guarded, so a bug
anywhere else still surfaces. A payload nested deeper than
``MAX_FALLBACK_NESTING`` (Responses events nest about ten levels) is refused,
counted on the bytes without recursion, before any decoder sees it: the
standard library's decoder recurses per level, and data that msgspec would
take (up to the interpreter's recursion limit) would recurse later anyway.

OpenRouter may put an error in the stream without a ``type``
(``{"error": {"code": 502, "message": "Provider returned error"}}``); such an
object is an ``error`` event, so the mapper ends the request with the
provider's message.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from orpipe.actors.event_types import DOCUMENTED_TERMINAL_TYPES, REPEATS_TEXT
from orpipe.engine.pipeline_messages import DeltaEvent, ParseFailed, StreamItem, UpstreamEvent

__all__ = ["MAX_FALLBACK_NESTING", "decode_event"]

_decode = msgspec.json.Decoder().decode
_decode_leniently = json.loads

#: Deepest nesting of arrays and objects the standard library's decoder is handed
#: (Responses events nest about ten levels). msgspec takes deeper payloads, up to
#: the interpreter's recursion limit, where it refuses them itself.
MAX_FALLBACK_NESTING = 100


class _TypeOnly(msgspec.Struct):
    """The event's type alone: msgspec skips every other field without building it."""

    type: str


_decode_type = msgspec.json.Decoder(_TypeOnly).decode


class _DeltaHead(msgspec.Struct):
    """What a delta event is read for: most events of a stream are deltas, and
    msgspec skips their other fields without building the dict."""

    type: Any = None
    delta: Any = None


_decode_head = msgspec.json.Decoder(_DeltaHead).decode

#: A larger payload is read for its type first: a ``REPEATS_TEXT`` twin or a terminal
#: event is not decoded in full.
_LARGE = 16 * 1024


class _TerminalResponse(msgspec.Struct):
    """What the mapper reads from a terminal event's response; ``output`` is not among it."""

    id: Any = None
    status: Any = None
    usage: Any = None
    incomplete_details: Any = None
    error: Any = None
    error_type: Any = None


class _Terminal(msgspec.Struct):
    type: str
    response: _TerminalResponse | None = None
    error_type: Any = None


#: A terminal event's response repeats every output item, the whole answer included;
#: nobody reads that copy (the stream carried it), so a large one is decoded without it.
_decode_terminal = msgspec.json.Decoder(_Terminal).decode

_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        # Docs-only spelling in OpenRouter's basic-usage example (contract §1.9).
        "response.content_part.delta",
    }
)


def decode_event(seq: int, payload: bytes) -> StreamItem:
    """One payload → ``DeltaEvent`` | ``UpstreamEvent`` | ``ParseFailed``."""
    # Refused before any decoder sees it, whichever would take it: msgspec accepts
    # nesting up to the interpreter's recursion limit, and data that deep would
    # still recurse later (freezing an item, storing it as an artifact).
    if _nested_deeper_than(MAX_FALLBACK_NESTING, payload):
        return ParseFailed(
            seq=seq,
            reason=f"JSON nested deeper than {MAX_FALLBACK_NESTING} levels",
            size=len(payload),
        )
    if len(payload) <= _LARGE:
        delta = _delta_of(payload, seq)
        if delta is not None:
            return delta
    else:
        try:
            twin = _decode_type(payload).type
        except Exception:  # any refusal: decoded in full below, which says what is wrong
            twin = ""
        if twin in REPEATS_TEXT:
            return UpstreamEvent(seq=seq, type=twin, data={"type": twin})
        if twin in DOCUMENTED_TERMINAL_TYPES:
            try:
                terminal = _decode_terminal(payload)
            except Exception:  # any refusal: decoded in full below, which says what is wrong
                pass
            else:
                return UpstreamEvent(seq=seq, type=twin, data=msgspec.to_builtins(terminal))
    try:
        data: Any = _decode(payload)
    except Exception:  # a lone surrogate, NaN, a huge number, deep nesting, anything
        try:
            data = _fallback(payload)
        except _Undecodable as refused:
            return ParseFailed(seq=seq, reason=refused.reason, size=len(payload))
    if not isinstance(data, dict):
        return ParseFailed(seq=seq, reason="not a JSON object", size=len(payload))
    kind = data.get("type")
    if not isinstance(kind, str):
        if isinstance(data.get("error"), dict | str):
            # An untyped error line (OpenRouter's envelope in mid-stream).
            return UpstreamEvent(seq=seq, type="error", data=data)
        return ParseFailed(seq=seq, reason="no event type", size=len(payload))
    delta = data.get("delta")
    if isinstance(delta, str) and kind.endswith(".delta"):
        if kind in _TEXT_DELTAS:
            return DeltaEvent(seq=seq, channel="text", text=delta)
        # reasoning_text, reasoning_summary_text and the docs' reasoning.delta
        if kind.startswith("response.reasoning"):
            return DeltaEvent(seq=seq, channel="reasoning", text=delta)
    return UpstreamEvent(seq=seq, type=kind, data=data)


def _delta_of(payload: bytes, seq: int) -> DeltaEvent | None:
    """The fast path for a text or reasoning delta; None: decode it in full.

    Anything unusual (not an object, a lone surrogate, another type) is left
    to the full decode below, which decides exactly as it would have.
    """
    try:
        head = _decode_head(payload)
    except Exception:  # the full decode says what is wrong, or takes it leniently
        return None
    kind, delta = head.type, head.delta
    if type(delta) is not str or type(kind) is not str:
        return None
    if kind in _TEXT_DELTAS:
        return DeltaEvent(seq=seq, channel="text", text=delta)
    if kind.startswith("response.reasoning") and kind.endswith(".delta"):
        return DeltaEvent(seq=seq, channel="reasoning", text=delta)
    return None


class _Undecodable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fallback(payload: bytes) -> Any:
    """The standard library's decode of what msgspec refused, or ``_Undecodable``."""
    try:
        return _decode_leniently(payload)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise _Undecodable(_reason(exc)) from None
    except RecursionError:  # a deep stack already; the payload alone is shallow enough
        raise _Undecodable("JSON nested too deeply") from None
    except MemoryError:
        raise _Undecodable("too large to decode") from None
    except Exception as exc:
        raise _Undecodable(f"undecodable ({type(exc).__name__})") from None


def _reason(exc: ValueError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "invalid UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON ({str(exc).split(':')[0]})"
    return f"unusable JSON value ({str(exc).split(':')[0]})"


#: A JSON string, escapes included: its brackets do not nest anything.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENERS = frozenset(b"[{")


def _nested_deeper_than(limit: int, payload: bytes) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep; no recursion, linear.

    Cheap when it can be: with no more than ``limit`` openers in all, they cannot.
    An unterminated string's brackets count (the payload is malformed anyway).
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS):
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
