"""Splits an SSE byte stream into event payloads (contract §1.8). Synchronous core.

Follows WHATWG HTML "Interpreting an event stream" where it matters here:

- A line ends with CR, LF or CRLF, in any mix. A CR ends its line at once;
  an LF right after it (even at the start of the next chunk) belongs to the
  same line end and is skipped.
- One UTF-8 BOM at the very start of the stream is dropped (also when it is
  split across chunks); a BOM anywhere else is data.
- A line starting with ``:`` is a comment (``: OPENROUTER PROCESSING``).
- ``field:value`` with exactly one leading space of the value removed; a line
  without a colon is a field with an empty value. Only ``data`` matters to the
  engine: ``event``, ``id``, ``retry`` and unknown fields are tolerated and
  ignored, so events come out in arrival order whatever their ids say.
- The ``data`` lines of one event are joined with LF; a blank line dispatches.

Two deliberate departures, because every payload is a JSON event for the
parser: an event that carries no data characters (a heartbeat ``data:``
line, only ``event:`` lines) is not dispatched, where a browser would fire
an empty message; and at the end of the body an event still missing its
blank line is delivered (lenient), where a browser would drop it.
``data: [DONE]`` ends the stream and sets ``done``.

Bytes are never decoded here, so a multi-byte character split across chunks
is harmless. Memory is bounded: one event may not exceed ``max_event_bytes``
(including a partial line still waiting for its end), else ``EventTooLarge``.
A line is read where it lies in the buffer and its value copied out once, so
a large event (a long answer's ``.done`` events repeat all of it) costs one
copy besides the buffer, not one per slicing step.
"""

from __future__ import annotations

__all__ = ["EventTooLarge", "SseFramer"]

_DONE = b"[DONE]"
_BOM = b"\xef\xbb\xbf"
_COLON = 0x3A
_SPACE = 0x20
_LF = 0x0A
#: From this length a value is copied out through a memoryview (cheaper below it to slice).
_VIEW_FROM = 16 * 1024


class EventTooLarge(Exception):
    """One SSE event grew past the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event of at least {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class SseFramer:
    """Feed it chunks; it returns the complete events' data payloads."""

    __slots__ = (
        "_at_start",
        "_buffer",
        "_data",
        "_data_size",
        "_idle",
        "_skip_lf",
        "done",
        "max_event_bytes",
    )

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        #: Nothing read yet: a BOM may still come (or be coming, split).
        self._at_start = True
        #: The last chunk ended with a CR: an LF opening the next one is its CRLF's.
        self._skip_lf = False
        #: Nothing pending at all (no bytes, no data, no CR, not at the start, not done):
        #: the one flag the fast path reads.
        self._idle = False
        #: True once ``[DONE]`` was seen; later bytes are ignored.
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of every event completed by ``chunk``, in order."""
        # Fast path for the usual chunk: exactly one whole "data: ...\n\n" event
        # (LF only) and nothing pending. Same result as the general path, a third of the work.
        if (
            self._idle
            and chunk.startswith(b"data: ")
            and chunk.find(b"\n") == (size := len(chunk)) - 2
            and chunk[-1] == _LF
            and chunk.find(b"\r") < 0  # (faster than `in`)
            and size - 8 <= self.max_event_bytes
        ):
            payload = chunk[6:-2]
            if payload == _DONE:
                self.done = True
                self._idle = False
                return []
            return [payload] if payload else []
        if self.done:
            return []
        buffer = self._buffer
        buffer += chunk
        start = 0
        if self._at_start:
            if len(buffer) < 3 and _BOM.startswith(buffer):
                return []  # all of it may yet be a BOM
            self._at_start = False
            if buffer.startswith(_BOM):
                start = 3
        elif self._skip_lf and buffer:
            self._skip_lf = False
            if buffer[0] == _LF:
                start = 1
        events: list[bytes] = []
        size = len(buffer)
        # The next LF and the next CR: each searched again only once passed,
        # so an LF-only stream pays one fruitless CR search per chunk.
        lf = buffer.find(b"\n", start)
        cr = buffer.find(b"\r", start)
        while lf >= 0 or cr >= 0:
            if cr < 0 or 0 <= lf < cr:
                end = lf
                next_start = lf + 1
            else:
                end = cr
                next_start = cr + 1
                if next_start == size:
                    self._skip_lf = True  # CRLF or lone CR: the next chunk says
                elif buffer[next_start] == _LF:
                    next_start += 1
            if end > start:
                self._line(buffer, start, end, events)
            elif self._dispatch(events):  # a blank line dispatches; this one ended the stream
                buffer.clear()  # whatever follows [DONE] is not part of the stream
                self._skip_lf = False
                return events
            start = next_start
            if 0 <= lf < start:
                lf = buffer.find(b"\n", start)
            if 0 <= cr < start:
                cr = buffer.find(b"\r", start)
        del buffer[:start]
        pending = len(buffer) + self._data_size
        if pending > self.max_event_bytes:
            raise EventTooLarge(pending, self.max_event_bytes)
        self._idle = not buffer and not self._data and not self._skip_lf
        return events

    def close(self) -> list[bytes]:
        """End of body: an unterminated last event is still delivered (lenient)."""
        events: list[bytes] = []
        buffer = self._buffer
        self._idle = False
        if not self.done and buffer:
            self._line(buffer, 0, len(buffer), events)
        buffer.clear()
        if not self.done:
            self._dispatch(events)
        return events

    def _line(self, buffer: bytearray, start: int, stop: int, events: list[bytes]) -> None:
        """The line ``buffer[start:stop]``, not blank (its line end already cut off)."""
        if buffer[start] == _COLON:
            return  # a comment: keep-alive
        colon = buffer.find(b":", start, stop)
        name_end = value_start = stop if colon < 0 else colon
        if colon >= 0:
            value_start = colon + 1
            if value_start < stop and buffer[value_start] == _SPACE:
                value_start += 1
        # event:, id:, retry: and unknown fields carry nothing the engine needs.
        if name_end - start != 4 or not buffer.startswith(b"data", start):
            return
        if stop - value_start < _VIEW_FROM:
            value = bytes(buffer[value_start:stop])
        else:  # one copy, not two; the view is released at once (the buffer is resized later)
            with memoryview(buffer) as view:
                value = bytes(view[value_start:stop])
        self._data.append(value)
        self._data_size += len(value) + 1
        if self._data_size > self.max_event_bytes:
            raise EventTooLarge(self._data_size, self.max_event_bytes)

    def _dispatch(self, events: list[bytes]) -> bool:
        """Ends the event; True if it was ``[DONE]``, the end of the stream."""
        data = self._data
        if not data:
            return False  # no data line: nothing to dispatch (only event:, id:, ... lines)
        self._data = []
        self._data_size = 0
        # Only empty data lines (a heartbeat "data:") dispatch nothing: an empty payload
        # would reach the parser as a broken event (and the user as "text may be missing").
        if len(data) == 1:
            payload = data[0]
            if payload == _DONE:
                self.done = True
                return True
            if payload:
                events.append(payload)
        elif any(data):
            events.append(b"\n".join(data))
        return False
