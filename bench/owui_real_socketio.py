"""The part of socket.io a chat page uses, on trio: connect with a token, listen, answer pings.

Open WebUI streams answers to the browser over socket.io (python-socketio on the server,
socket.io-client 4 in the page). This client speaks the same wire protocol over one
WebSocket (``trio-websocket``), as the page does with ``transports: ['websocket']``:

* Engine.IO 4: the server's open packet ``0{"sid": ..., "pingInterval": ...}``; the server
  pings (``2``) and the client answers (``3``); ``1`` closes;
* Socket.IO 5 on the default namespace: the client connects with its auth payload
  (``40{"token": ...}``), the server accepts with ``40{"sid": ...}`` (that sid is the
  page's ``socket.id``, which it sends as ``session_id`` with each chat) or refuses with
  ``44{...}``; events are ``42["name", data]`` both ways (an ack id may sit between the
  ``42`` and the ``[``; none is asked for here).

Binary packets, other namespaces, acks and the long-polling transport are not needed by a
chat page on a WebSocket and are not implemented. ``parse_packet`` is pure, for tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

__all__ = ["SocketIoClient", "SocketIoError", "open_socketio", "parse_packet"]

#: What a parsed packet is: ("open" | "ping" | "pong" | "close" | "noop" | "connect" |
#: "disconnect" | "event" | "connect_error" | "other", its payload).
Packet = tuple[str, Any]

_EIO_TYPES = {"0": "open", "1": "close", "2": "ping", "3": "pong", "6": "noop"}
_SIO_TYPES = {"0": "connect", "1": "disconnect", "2": "event", "4": "connect_error"}


class SocketIoError(Exception):
    """The server refused the connection or broke the protocol."""


def parse_packet(text: str) -> Packet:
    """One Engine.IO text packet (and the Socket.IO packet inside a ``4`` message)."""
    if not text:
        return "other", None
    head, body = text[0], text[1:]
    if head in _EIO_TYPES:
        return _EIO_TYPES[head], json.loads(body) if head == "0" and body else body
    if head != "4" or not body:
        return "other", text
    kind = _SIO_TYPES.get(body[0], "other")
    rest = body[1:]
    if rest.startswith("/"):  # a namespace other than "/": not ours
        return "other", text
    if kind == "event":
        rest = rest.lstrip("0123456789")  # an ack id, if any
    return kind, json.loads(rest) if rest else None


@dataclass(slots=True)
class SocketIoClient:
    """A connected client: its ``sid`` (the page's ``socket.id``) and what it can send."""

    sid: str
    ws: WebSocketConnection
    closed: trio.Event = field(default_factory=trio.Event)

    async def emit(self, name: str, data: Any) -> None:
        await self.ws.send_message("42" + json.dumps([name, data]))

    @property
    def connected(self) -> bool:
        return not self.closed.is_set()


def _ws_url(base: str, path: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path.rstrip('/')}/?EIO=4&transport=websocket"


async def open_socketio(
    base: str,
    auth: dict[str, Any],
    on_event: Callable[[str, Any], None],
    *,
    path: str = "/ws/socket.io",
    task_status: trio.TaskStatus[SocketIoClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, report the client through ``task_status``, then read until cancelled.

    Start it with ``nursery.start``; every ``42["name", data]`` the server sends is handed to
    ``on_event(name, data)`` on this task (keep it short: it holds up the next message).
    Cancelling the task closes the WebSocket.
    """
    async with open_websocket_url(_ws_url(base, path), connect_timeout=30) as ws:
        kind, _ = parse_packet(str(await ws.get_message()))
        if kind != "open":
            raise SocketIoError(f"expected the Engine.IO open packet, got {kind}")
        await ws.send_message("40" + json.dumps(auth))
        while True:
            kind, payload = parse_packet(str(await ws.get_message()))
            if kind == "connect":
                break
            if kind == "connect_error":
                raise SocketIoError(f"the server refused the connection: {payload}")
            if kind == "ping":
                await ws.send_message("3")
        client = SocketIoClient(sid=str(payload["sid"]), ws=ws)
        task_status.started(client)
        try:
            await _read(ws, on_event)
        finally:
            client.closed.set()


async def _read(ws: WebSocketConnection, on_event: Callable[[str, Any], None]) -> None:
    try:
        while True:
            kind, payload = parse_packet(str(await ws.get_message()))
            if kind == "event" and isinstance(payload, list) and payload:
                on_event(str(payload[0]), payload[1] if len(payload) > 1 else None)
            elif kind == "ping":
                await ws.send_message("3")
            elif kind in ("close", "disconnect"):
                return
    except ConnectionClosed:
        return
