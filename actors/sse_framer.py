"""Splits an SSE byte stream into event payloads (contract §1.8). Synchronous core.

Handles LF and CRLF line ends, multi-line ``data:`` (joined with LF), comment
lines (``: OPENROUTER PROCESSING``), and tolerates ``event:``, ``id:`` and
``retry:`` fields. ``data: [DONE]`` ends the stream. Bytes are never
decoded here, so a multi-byte character split across chunks is harmless.

Memory is bounded: one event may not exceed ``max_event_bytes`` (including
a partial line still waiting for its end), else ``EventTooLarge``. A line is
read where it lies in the buffer and its value copied out once, so a large
event (a long answer's ``.done`` events repeat all of it) costs one copy
besides the buffer, not one per slicing step.
"""

from __future__ import annotations

__all__ = ["EventTooLarge", "SseFramer"]

_DONE = b"[DONE]"
_COLON = 0x3A
_SPACE = 0x20
_CR = 0x0D
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

    __slots__ = ("_buffer", "_data", "_data_size", "done", "max_event_bytes")

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        #: True once ``[DONE]`` was seen; later bytes are ignored.
        self.done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of every event completed by ``chunk``, in order."""
        # Fast path for the usual chunk: exactly one whole "data: ...\n\n" event
        # and nothing pending. Same result as the general path, a third of the work.
        if (
            not self._buffer
            and not self._data
            and not self.done
            and chunk.startswith(b"data: ")
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk.endswith(b"\n\n")
            and len(chunk) - 8 <= self.max_event_bytes
        ):
            payload = chunk[6:-2]
            if payload.endswith(b"\r"):
                payload = payload[:-1]
            if payload == _DONE:
                self.done = True
                return []
            return [payload]
        buffer = self._buffer
        buffer += chunk
        events: list[bytes] = []
        start = 0
        while not self.done:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self._line(buffer, start, _strip_cr(buffer, start, end), events)
            start = end + 1
        if self.done:
            buffer.clear()  # whatever follows [DONE] is not part of the stream
            return events
        del buffer[:start]
        pending = len(buffer) + self._data_size
        if pending > self.max_event_bytes:
            raise EventTooLarge(pending, self.max_event_bytes)
        return events

    def close(self) -> list[bytes]:
        """End of body: an unterminated last event is still delivered (lenient)."""
        events: list[bytes] = []
        buffer = self._buffer
        if not self.done and buffer:
            self._line(buffer, 0, _strip_cr(buffer, 0, len(buffer)), events)
        buffer.clear()
        if not self.done:
            self._dispatch(events)
        return events

    def _line(self, buffer: bytearray, start: int, stop: int, events: list[bytes]) -> None:
        """The line ``buffer[start:stop]`` (its line end already cut off)."""
        if start == stop:
            self._dispatch(events)
            return
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

    def _dispatch(self, events: list[bytes]) -> None:
        if not self._data:
            return
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        self._data_size = 0
        if payload == _DONE:
            self.done = True
        else:
            events.append(payload)


def _strip_cr(buffer: bytearray, start: int, end: int) -> int:
    """Where the line ``buffer[start:end]`` stops once a CR before its LF is cut off."""
    return end - 1 if end > start and buffer[end - 1] == _CR else end
