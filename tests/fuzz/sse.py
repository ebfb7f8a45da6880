"""SSE encodings of a stream, and a reference decoder that checks the generator itself.

``SseStyle`` is how one server writes events: line ends (LF, CRLF, CR
alone, or a mix), a leading byte-order mark, keep-alive comments,
``event:``/``id:``/``retry:`` and unknown fields, JSON spread over several
``data:`` lines, ``data:`` without its space. All are valid SSE (WHATWG
HTML, "Server-sent events" §9.2.5/§9.2.6), so a well-formed stream in any
style must give the same answer.

``reference_events`` is a small, literal implementation of that parsing
algorithm. The self-check tests run every generated stream through it,
so an expectation the harness asserts against the engine is first shown to
hold for a by-the-book parser.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Literal

from tests.fuzz.script import Sleep
from tests.fuzz.streams import Event

__all__ = ["LineEnd", "Raw", "SseStyle", "encode_body", "reference_events"]

LineEnd = Literal["lf", "crlf", "cr", "mixed"]
_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
BOM = b"\xef\xbb\xbf"
_COMMENTS = (
    b": OPENROUTER PROCESSING",
    b":",
    b": keep-alive \xf0\x9f\x98\x80",
    b":data: not an event",
)


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written into the body as they are (junk lines, oversized runs)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SseStyle:
    line_end: LineEnd = "lf"
    bom: bool = False
    #: Probabilities, per event, of each decoration.
    comments: float = 0.0
    event_lines: float = 0.0
    id_lines: float = 0.0
    other_fields: float = 0.0
    multiline: float = 0.0
    no_space: float = 0.0
    #: Whether the first event is always spread over several data lines.
    multiline_first: bool = False

    def describe(self) -> str:
        extras = [
            name
            for name, value in (
                ("bom", self.bom),
                ("comments", self.comments),
                ("event: lines", self.event_lines),
                ("id: lines", self.id_lines),
                ("other fields", self.other_fields),
                ("multi-line data", self.multiline or self.multiline_first),
                ("data: without space", self.no_space),
            )
            if value
        ]
        return "line ends " + self.line_end + (" + " + ", ".join(extras) if extras else "")


class _Lines:
    """Writes lines with the style's line ends; never lets CR + an empty LF line merge."""

    def __init__(self, style: SseStyle, rng: random.Random) -> None:
        self.style = style
        self.rng = rng
        self.last_was_cr = False

    def line(self, content: bytes) -> bytes:
        mode = self.style.line_end
        if mode == "mixed":
            mode = self.rng.choice(["lf", "crlf", "cr"])
            if mode == "lf" and not content and self.last_was_cr:
                mode = "cr"  # CR then LF would be one line end, not two
        end = _ENDS[mode]
        self.last_was_cr = end == b"\r"
        return content + end


def encode_body(
    items: list[Event | Raw | Sleep], style: SseStyle, rng: random.Random, *, done: bool
) -> list[bytes | Sleep]:
    """The SSE body: one bytes block per event (so stalls and cuts can go between them)."""
    lines = _Lines(style, rng)
    blocks: list[bytes | Sleep] = []
    first = True
    for item in items:
        if isinstance(item, Sleep):
            blocks.append(item)
            continue
        if isinstance(item, Raw):
            blocks.append(item.data)
            continue
        block = bytearray()
        if rng.random() < style.comments:
            block += lines.line(rng.choice(_COMMENTS))
            if rng.random() < 0.5:
                block += lines.line(b"")
        if item.name is not None and rng.random() < style.event_lines:
            block += lines.line(b"event: " + item.name.encode())
        if rng.random() < style.id_lines:
            block += lines.line(b"id: " + str(rng.getrandbits(20)).encode())
        if rng.random() < style.other_fields:
            block += lines.line(rng.choice([b"retry: 1000", b"x-fuzz: 1", b"ignored"]))
        spread = item.obj is not None and (
            (first and style.multiline_first) or rng.random() < style.multiline
        )
        if spread:
            ascii_only = not _utf8_safe(item.payload)
            pretty = json.dumps(item.obj, indent=rng.choice([1, 2]), ensure_ascii=ascii_only)
            data_lines = [p.encode("utf-8") for p in pretty.split("\n")]
        else:
            data_lines = [item.payload]
        for data in data_lines:
            prefix = b"data:" if rng.random() < style.no_space else b"data: "
            block += lines.line(prefix + data)
        block += lines.line(b"")
        blocks.append(bytes(block))
        first = False
    if done:
        blocks.append(lines.line(b"data: [DONE]") + lines.line(b""))
    if style.bom:
        for index, written in enumerate(blocks):
            if isinstance(written, bytes):
                blocks[index] = BOM + written
                break
    return blocks


def _utf8_safe(payload: bytes) -> bool:
    """The payload was written with raw UTF-8 (not all-ASCII escapes)."""
    return not payload.isascii()


def reference_events(body: bytes) -> tuple[list[bytes], bool]:
    """Data payloads of ``body`` by the WHATWG algorithm, and whether ``[DONE]`` came.

    An unterminated last event is discarded, as the standard says.
    """
    if body.startswith(BOM):
        body = body[len(BOM) :]
    events: list[bytes] = []
    data: list[bytes] = []
    position = 0
    size = len(body)
    while position < size:
        cr = body.find(b"\r", position)
        lf = body.find(b"\n", position)
        if cr < 0 and lf < 0:
            break  # an unterminated last line: not part of any event
        if lf < 0 or (0 <= cr < lf):
            end, after = cr, cr + 1
            if after < size and body[after : after + 1] == b"\n":
                after += 1
        else:
            end, after = lf, lf + 1
        line = body[position:end]
        position = after
        if not line:
            if data:
                payload = b"\n".join(data)
                data = []
                if payload == b"[DONE]":
                    return events, True
                events.append(payload)
            continue
        if line.startswith(b":"):
            continue
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
    return events, False
