"""The byte-level upstream: a raw trio TCP server on 127.0.0.1 that plays ``Case`` scripts.

It speaks just enough HTTP/1.1 to read a request (request line, headers, a
``Content-Length`` body; keep-alive connections are served request after
request), picks the case by the ``fuzz_key`` in the request body's
``metadata``, and writes that case's next attempt byte for byte, pausing
where the script says. Nothing is reframed or buffered on the way: what the
script says is what goes on the wire.

For each request key a ``Tracker`` records what the server did when: when
each attempt started, when its last byte went out, and how it ended. That
record is what the time bounds are measured from (``Tracker.deadline``),
so a server slowed down by a busy machine never makes the engine look late.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

import trio

from tests.fuzz.script import Attempt, Case, Sleep, Timing

__all__ = ["AttemptLog", "FuzzServer", "Tracker"]

#: How long a connection is held open at most (the engine should close it long before).
_MAX_HOLD_S = 120.0
_MAX_HEAD = 64 * 1024
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 63\r\n"
    b'Connection: close\r\n\r\n{"error":{"code":404,"message":"no fuzz case for this request"}}'
)

AttemptState = Literal["writing", "done", "held", "held_after_terminal"]


@dataclass(slots=True)
class AttemptLog:
    """What the server did for one attempt."""

    started: float
    last_byte: float
    state: AttemptState = "writing"
    #: When the script ran out (its last write, or the connection broke).
    finished: float | None = None


@dataclass(slots=True)
class Tracker:
    """One request key: its case and every attempt the engine made for it."""

    case: Case
    submitted: float = 0.0
    attempts: list[AttemptLog] = field(default_factory=list)

    def begin(self) -> tuple[Attempt, AttemptLog]:
        script = self.case.attempts[min(len(self.attempts), len(self.case.attempts) - 1)]
        now = trio.current_time()
        log = AttemptLog(started=now, last_byte=now)
        self.attempts.append(log)
        return script, log

    def deadline(self, timing: Timing) -> tuple[float, float, str]:
        """By when the engine must have ended the request, from what, and why.

        Returns (deadline, reference time, the rule in words).
        """
        idle = timing.read_idle_timeout_s + timing.slack_s
        if not self.attempts:
            return self.submitted + idle, self.submitted, "no request reached the upstream"
        log = self.attempts[-1]
        if log.state == "held_after_terminal" and log.finished is not None:
            return (
                log.finished + timing.prompt_s,
                log.finished,
                "the terminal event arrived (the connection was left open)",
            )
        if log.state == "done" and log.finished is not None:
            allowed = timing.slack_s + timing.retry_wait_s
            return log.finished + allowed, log.finished, "the upstream body ended"
        what = "the body stayed open" if log.state == "held" else "the upstream went quiet"
        return log.last_byte + idle, log.last_byte, what + " (read idle timeout)"


@dataclass(slots=True)
class _Request:
    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    body: bytes


class _RequestReader:
    """HTTP/1.1 requests from one connection, one after another."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _more(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def read(self) -> _Request | None:
        """The next request, or None when the client closed the connection."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD or not await self._more():
                return None
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        request_line, *lines = head.split(b"\r\n")
        method, target, _version = request_line.split(b" ", 2)
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            raise ValueError("the fuzz server reads Content-Length bodies only")
        length = int(headers.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            if not await self._more():
                return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return _Request(method=method, target=target, headers=headers, body=body)


class FuzzServer:
    """Serve ``Case`` scripts on 127.0.0.1; ``await nursery.start(server.run)``."""

    def __init__(self) -> None:
        self.port = 0
        self.trackers: dict[str, Tracker] = {}
        self._keys = itertools.count()
        #: Requests that named no known case (a harness bug if ever non-zero).
        self.unknown_requests = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def track(self, case: Case) -> tuple[str, Tracker]:
        """A fresh request key for ``case`` (each play of a case gets its own)."""
        key = f"{case.cls}-{case.seed}-{next(self._keys)}"
        tracker = self.trackers[key] = Tracker(case=case, submitted=trio.current_time())
        return key, tracker

    def forget(self, key: str) -> None:
        self.trackers.pop(key, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        reader = _RequestReader(stream)
        log: AttemptLog | None = None
        try:
            while True:
                request = await reader.read()
                if request is None:
                    return
                tracker = self._tracker_for(request)
                if tracker is None:
                    self.unknown_requests += 1
                    await stream.send_all(_NOT_FOUND)
                    return
                script, log = tracker.begin()
                if not await self._play(stream, script, log):
                    return
                log = None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the engine hung up: it is allowed to, whenever it has decided
        finally:
            if log is not None and log.finished is None:
                log.state, log.finished = "done", trio.current_time()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def _tracker_for(self, request: _Request) -> Tracker | None:
        try:
            body = json.loads(request.body)
            key = body["metadata"]["fuzz_key"]
        except (ValueError, KeyError, TypeError):
            return None
        return self.trackers.get(key) if isinstance(key, str) else None

    async def _play(self, stream: trio.SocketStream, script: Attempt, log: AttemptLog) -> bool:
        """Write the script; True when the connection may serve another request."""
        for piece in script.wire:
            if isinstance(piece, Sleep):
                await trio.sleep(piece.seconds)
                continue
            await stream.send_all(piece)
            log.last_byte = trio.current_time()
        log.finished = trio.current_time()
        if script.end == "keep_alive":
            log.state = "done"
            return True
        if script.end in ("close", "reset"):
            log.state = "done"
            if script.end == "reset":
                # Linger 0: close() sends RST instead of FIN.
                linger = struct.pack("ii", 1, 0)
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            return False
        log.state = "held" if script.end == "hold" else "held_after_terminal"
        with trio.move_on_after(_MAX_HOLD_S):
            while await stream.receive_some(65536):
                pass  # whatever the client sends now is not a request we answer
        return False
