"""HTTP/1.1 responses as scripted writes: framing, splits, cuts and pauses.

A response is built from a status, headers and body *blocks* (bytes, with
``Sleep`` between some of them). Framing is ``Content-Length``, chunked, or
delimited by the connection's close. The wire bytes are then cut into
writes: whole blocks, several blocks per write, random sizes, or single
bytes; a split may fall anywhere, inside the status line, a chunk header or
a UTF-8 sequence. A response may stop early (a cut) or leave its body
unfinished while the connection stays open.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from tests.fuzz.script import Attempt, EndKind, Sleep, Wire

__all__ = ["Framing", "Response", "SplitMode", "build_attempt"]

Framing = Literal["content_length", "chunked", "close"]
SplitMode = Literal["block", "merge", "random", "tiny", "bytes"]
#: Largest single write: a big event goes out in several.
_MAX_WRITE = 16 * 1024
#: Byte-by-byte only up to this much body; past it, tiny writes (1-5 bytes).
_BYTES_LIMIT = 6 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    520: "Unknown Error",
    524: "A Timeout Occurred",
    529: "Site Overloaded",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int = 200
    content_type: str = "text/event-stream"
    headers: tuple[tuple[str, str], ...] = ()
    framing: Framing = "close"
    split: SplitMode = "block"
    #: What happens after the last write (see ``tests.fuzz.script.EndKind``).
    end: EndKind = "close"
    #: The body stops after this many bytes of the SSE body (None: all of it).
    cut_body_at: int | None = None
    #: The wire stops after this many bytes in all, head included (a cut in the head).
    cut_wire_at: int | None = None
    #: Silence before the status line.
    first_byte_delay: float = 0.0


def build_attempt(
    rng: random.Random, response: Response, blocks: list[bytes | Sleep], notes: str = ""
) -> Attempt:
    """The scripted writes of one response."""
    framing = response.framing
    end = response.end
    if framing == "close" and end == "keep_alive":
        end = "close"  # a close-delimited body ends with the connection
    body_total = sum(len(b) for b in blocks if isinstance(b, bytes))
    if response.cut_body_at is not None:
        blocks = _cut_blocks(blocks, response.cut_body_at)
    complete = response.cut_body_at is None and end in ("close", "keep_alive", "reset")
    declared = body_total
    if end in ("hold", "hold_after_terminal") and response.cut_body_at is None:
        declared += rng.randint(1, 64)  # a Content-Length the server never reaches
    head = _head(response, framing, declared, keep_alive=end == "keep_alive")
    framed: list[bytes | Sleep] = (
        [Sleep(response.first_byte_delay)] if response.first_byte_delay else []
    )
    framed.append(head)
    for block in blocks:
        if isinstance(block, Sleep):
            framed.append(block)
        elif block:
            framed.append(_chunked(rng, block) if framing == "chunked" else block)
    if framing == "chunked" and complete:
        framed.append(rng.choice([b"0\r\n\r\n", b"0;fuzz=1\r\n\r\n"]))
    wire = _split(rng, framed, response.split)
    if response.cut_wire_at is not None:
        wire = _cut_wire(wire, response.cut_wire_at)
    described = (
        f"HTTP {response.status} {response.content_type}, {framing}, writes={response.split}"
    )
    if response.cut_body_at is not None:
        described += f", body cut at {response.cut_body_at} of {body_total} bytes"
    if response.cut_wire_at is not None:
        described += f", wire cut at byte {response.cut_wire_at}"
    if response.first_byte_delay:
        described += f", first byte after {response.first_byte_delay:.2f} s"
    stalls = [round(b.seconds, 2) for b in blocks if isinstance(b, Sleep)]
    if stalls:
        described += f", stalls {stalls} s"
    return Attempt(wire=tuple(wire), end=end, notes=described + (", " + notes if notes else ""))


def _head(response: Response, framing: Framing, body_total: int, *, keep_alive: bool) -> bytes:
    reason = _REASONS.get(response.status, "Whatever")
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}"]
    if response.content_type.startswith("text/event-stream"):
        lines.append("Cache-Control: no-cache")
    if framing == "content_length":
        lines.append(f"Content-Length: {body_total}")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append("Connection: close")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunked(rng: random.Random, block: bytes) -> bytes:
    """One block as one to three chunks (hex in either case)."""
    out = bytearray()
    rest = block
    while rest:
        size = len(rest) if rng.random() < 0.6 else rng.randint(1, len(rest))
        piece, rest = rest[:size], rest[size:]
        header = f"{len(piece):x}" if rng.random() < 0.7 else f"{len(piece):X}"
        out += header.encode() + b"\r\n" + piece + b"\r\n"
    return bytes(out)


def _cut_blocks(blocks: list[bytes | Sleep], keep: int) -> list[bytes | Sleep]:
    out: list[bytes | Sleep] = []
    left = keep
    for block in blocks:
        if isinstance(block, Sleep):
            out.append(block)
            continue
        if left <= 0:
            break
        out.append(block[:left])
        left -= len(block)
    while out and isinstance(out[-1], Sleep):
        out.pop()  # a pause after the last byte would only delay the cut
    return out


def _cut_wire(wire: list[Wire], keep: int) -> list[Wire]:
    out: list[Wire] = []
    left = keep
    for piece in wire:
        if left <= 0:
            break
        if isinstance(piece, Sleep):
            out.append(piece)
            continue
        out.append(piece[:left])
        left -= len(piece)
    return out


def _split(rng: random.Random, framed: list[bytes | Sleep], mode: SplitMode) -> list[Wire]:
    """Cut the framed blocks into writes; pauses stay where they are."""
    runs: list[list[bytes] | Sleep] = []
    for piece in framed:
        if isinstance(piece, Sleep):
            runs.append(piece)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(piece)
        else:
            runs.append([piece])
    wire: list[Wire] = []
    for run in runs:
        if isinstance(run, Sleep):
            wire.append(run)
            continue
        if mode == "block":
            writes = list(run)
        elif mode == "merge":
            writes = []
            i = 0
            while i < len(run):
                take = rng.randint(1, 8)
                writes.append(b"".join(run[i : i + take]))
                i += take
        else:
            data = b"".join(run)
            if mode == "bytes" and len(data) <= _BYTES_LIMIT:
                sizes: tuple[int, int] = (1, 1)
            elif mode in ("bytes", "tiny"):
                sizes = (1, 5)
            else:
                sizes = (1, 400)
            writes = []
            i = 0
            while i < len(data):
                take = rng.randint(*sizes)
                writes.append(data[i : i + take])
                i += take
        for write in writes:
            for i in range(0, len(write), _MAX_WRITE):
                wire.append(write[i : i + _MAX_WRITE])
    return wire
