"""The telemetry server: live frames over a WebSocket, ``/metrics`` and the dashboard. Trio.

``serve_telemetry(hub, settings)`` runs two loopback listeners until cancelled
and reports where they are (``TelemetryEndpoints``; a port of 0 is chosen by
the OS and the bound port is reported):

* **WebSocket** (trio-websocket), path ``/ws`` (or ``/``): one JSON text
  message per frame — first the hub's recent history (oldest first), then
  live frames as the sampler publishes them. Each connection is one hub
  subscriber, so a client that reads slowly loses frames (counted in the
  hub's ``dropped_total``) instead of slowing the sampler. A send that
  stalls longer than ``ws_send_timeout_s`` ends that connection, freeing its
  subscriber place. Browsers may connect only from the dashboard's own
  origin (``allowed_origins``), so another web page cannot read the
  telemetry; clients that send no ``Origin`` (scripts) are accepted.
* **HTTP** (h11 on ``trio.serve_tcp``): ``GET /metrics`` (Prometheus text,
  ``adapters.telemetry.metrics``) sampled fresh per scrape; ``GET /`` with
  ``/dashboard.js`` and ``/dashboard.css`` from ``dashboard_dir``;
  ``GET /config.json`` tells the page where the WebSocket is. Anything else
  is 404, other methods 405, a malformed request 400. With ``workers``
  (``fan_in.WorkerFrames``), ``/metrics`` shows every live worker with a
  ``worker`` label (``render_workers``; Redis unreachable: this worker
  alone) and ``GET /workers.json`` gives the dashboard their frames. At most
  ``max_http_connections`` at once (one more gets 503); a connection idle for
  ``http_idle_timeout_s`` is closed.

With ``token`` set, every request (HTTP and WebSocket) must carry
``Authorization: Bearer <token>`` (compared in constant time); anything
else gets 401 with a message saying so. The token is never logged or echoed.

Everything here is trio-flavoured; nothing is asyncio. A client that
disconnects at any point ends its own connection task only. On
cancellation both listeners and every connection are closed (forcefully,
without waiting for peers), and WebSocket subscriptions are released.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import h11
import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from orpipe.actors.telemetry import Subscription, TelemetryHub
from orpipe.adapters.telemetry.access import UNAUTHORIZED, bearer_matches, header
from orpipe.adapters.telemetry.fan_in import WorkerFrames
from orpipe.adapters.telemetry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from orpipe.adapters.telemetry.metrics import render_metrics, render_workers
from orpipe.engine.errors import AdmissionRejected, EngineClosed

__all__ = ["TelemetryEndpoints", "TelemetryServerSettings", "serve_telemetry"]

#: The dashboard's files, by URL path; nothing outside this table is ever read.
_STATIC: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_WS_PATHS = frozenset({"/", "/ws"})
#: The dashboard may talk to its own origin and to WebSockets; nothing else loads.
_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:"


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryServerSettings:
    """Where the server listens and how much it accepts.

    ``allowed_origins``: browser origins (``scheme://host:port``) allowed on the
    WebSocket; ``None`` means the server's own HTTP origin (by the bound host,
    ``localhost`` and ``127.0.0.1``).
    """

    host: str = "127.0.0.1"
    http_port: int = 0
    ws_port: int = 0
    dashboard_dir: Path | None = None
    max_http_connections: int = 32
    http_idle_timeout_s: float = 30.0
    max_request_bytes: int = 16 * 1024
    ws_send_timeout_s: float = 30.0
    allowed_origins: frozenset[str] | None = None
    #: When set, every request must carry ``Authorization: Bearer <token>``.
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryEndpoints:
    """The bound addresses, reported by ``serve_telemetry`` once it listens."""

    host: str
    http_port: int
    ws_port: int
    http_url: str
    ws_url: str
    metrics_url: str
    #: The dashboard page, told where its WebSocket is.
    dashboard_url: str

    @classmethod
    def bound(cls, host: str, http_port: int, ws_port: int) -> TelemetryEndpoints:
        """The addresses of a server listening on ``host`` at these ports."""
        netloc_host = f"[{host}]" if ":" in host else host
        http_url = f"http://{netloc_host}:{http_port}"
        ws_url = f"ws://{netloc_host}:{ws_port}/ws"
        return cls(
            host=host,
            http_port=http_port,
            ws_port=ws_port,
            http_url=http_url,
            ws_url=ws_url,
            metrics_url=f"{http_url}/metrics",
            dashboard_url=f"{http_url}/?ws={ws_url}",
        )


async def serve_telemetry(
    hub: TelemetryHub,
    settings: TelemetryServerSettings | None = None,
    *,
    workers: WorkerFrames | None = None,
    task_status: trio.TaskStatus[TelemetryEndpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the WebSocket and HTTP endpoints until cancelled (``workers``: module doc)."""
    server = _TelemetryServer(hub, settings or TelemetryServerSettings(), workers)
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            functools.partial(
                trio.serve_tcp, server.handle_http, server.settings.http_port, host=server.host
            )
        )
        server.http_port = listeners[0].socket.getsockname()[1]
        ws = await nursery.start(
            functools.partial(
                serve_websocket,
                server.handle_ws,
                server.host,
                server.settings.ws_port,
                None,
                # Clients have nothing to say: a tiny inbound queue and message size.
                message_queue_size=1,
                max_message_size=4096,
                connect_timeout=server.settings.http_idle_timeout_s,
                disconnect_timeout=5.0,
            )
        )
        server.ws_port = ws.port
        task_status.started(TelemetryEndpoints.bound(server.host, server.http_port, server.ws_port))


class _TelemetryServer:
    """The handlers' shared state: the hub, the settings and the bound ports."""

    def __init__(
        self, hub: TelemetryHub, settings: TelemetryServerSettings, workers: WorkerFrames | None
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.workers = workers
        self.host = settings.host
        self.http_port = 0
        self.ws_port = 0
        self._connections = trio.CapacityLimiter(settings.max_http_connections)

    # -- WebSocket ------------------------------------------------------------------

    async def handle_ws(self, request: WebSocketRequest) -> None:
        """One subscriber per connection; its disconnect ends only this task."""
        try:
            refusal = self._ws_refusal(request)
            if refusal is not None:
                await request.reject(refusal[0], body=refusal[1].encode())
                return
            try:
                subscription = self.hub.subscribe()
            except (AdmissionRejected, EngineClosed) as exc:
                await request.reject(503, body=exc.message.encode())
                return
            with subscription:
                connection = await request.accept()
                await self._stream(connection, subscription)
        except ConnectionClosed:
            pass  # the client left (or broke the connection): nothing more to send it

    def _ws_refusal(self, request: WebSocketRequest) -> tuple[int, str] | None:
        if not bearer_matches(request.headers, self.settings.token):
            return 401, UNAUTHORIZED
        if request.path.split("?", 1)[0] not in _WS_PATHS:
            return 404, "No telemetry here; the WebSocket is at /ws."
        origin = header(request.headers, b"origin")
        if origin is not None and origin not in self._allowed_origins():
            return 403, "This origin may not read the telemetry."
        return None

    def _allowed_origins(self) -> frozenset[str]:
        if self.settings.allowed_origins is not None:
            return self.settings.allowed_origins
        hosts = {self.host, "127.0.0.1", "localhost", "[::1]"}
        hosts = {f"[{h}]" if ":" in h and not h.startswith("[") else h for h in hosts}
        return frozenset(f"http://{h}:{self.http_port}" for h in hosts)

    async def _stream(self, connection: WebSocketConnection, subscription: Subscription) -> None:
        for frame in subscription.history:
            if not await self._send_frame(connection, frame):
                return
        async for frame in subscription:
            if not await self._send_frame(connection, frame):
                return
        await connection.aclose(code=1001, reason="telemetry stopped")

    async def _send_frame(self, connection: WebSocketConnection, frame: object) -> bool:
        """Send one frame; False if the client stopped reading for ``ws_send_timeout_s``.

        Such a client loses its place (trio-websocket closes the connection when
        the handler returns), so a stuck peer cannot hold a subscriber slot forever.
        """
        with trio.move_on_after(self.settings.ws_send_timeout_s) as stalled:
            await connection.send_message(_encode(frame))
        return not stalled.cancelled_caught

    # -- HTTP -----------------------------------------------------------------------

    async def handle_http(self, stream: trio.SocketStream) -> None:
        """Serve requests on one connection until it closes, errs or idles."""
        try:
            try:
                self._connections.acquire_on_behalf_of_nowait(stream)
            except trio.WouldBlock:
                conn = h11.Connection(h11.SERVER)
                await self._send_error(conn, stream, 503, "Too many connections; retry shortly.")
                return
            try:
                await self._serve_connection(stream)
            finally:
                self._connections.release_on_behalf_of(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-request or mid-response
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.settings.max_request_bytes)
        while True:
            with trio.move_on_after(self.settings.http_idle_timeout_s):
                try:
                    request = await self._read_request(conn, stream)
                except h11.RemoteProtocolError as exc:
                    await self._send_error(
                        conn, stream, exc.error_status_hint, "Malformed HTTP request."
                    )
                    return
                if request is None:
                    return
                await self._respond(conn, stream, request)
            if request is None or conn.our_state is not h11.DONE:
                return  # idle timeout or a response we could not finish
            if conn.their_state is not h11.DONE:
                return  # a body we did not read: do not try to reuse the connection
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> h11.Request | None:
        """The next request, its body read and discarded (within the size bound)."""
        request: h11.Request | None = None
        body_bytes = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)  # b"" means the peer closed its side
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body_bytes += len(event.data)
                if body_bytes > self.settings.max_request_bytes:
                    raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage):
                return request
            else:  # ConnectionClosed or PAUSED: no (further) request on this connection
                return None

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            await self._send_error(
                conn, stream, 405, "Only GET and HEAD.", extra=[("allow", "GET, HEAD")]
            )
            return
        if not bearer_matches(request.headers, self.settings.token):
            await self._send_error(
                conn, stream, 401, UNAUTHORIZED, extra=[("www-authenticate", "Bearer")]
            )
            return
        status, content_type, body, extra = 200, "", b"", list[tuple[str, str]]()
        if path == "/metrics":
            content_type = METRICS_CONTENT_TYPE
            if self.workers is None:
                body = render_metrics(self.hub.snapshot()).encode()
            else:
                body = render_workers(await self.workers.everyone(self.hub.snapshot())).encode()
        elif path == "/workers.json" and self.workers is not None:
            content_type = "application/json"
            workers = await self.workers.everyone(self.hub.snapshot())
            body = msgspec.json.encode({"workers": workers})
        elif path == "/config.json":
            content_type = "application/json"
            body = msgspec.json.encode(
                {
                    "ws_port": self.ws_port,
                    "ws_path": "/ws",
                    "interval_s": self.hub.settings.interval_s,
                }
            )
        elif path in _STATIC and (page := await self._static(path)) is not None:
            content_type = _STATIC[path][1]
            body = page
            extra.append(("content-security-policy", _CSP))
        else:
            await self._send_error(conn, stream, 404, f"Nothing at {path[:200]}.")
            return
        await _send(
            conn, stream, status, content_type, body, extra=extra, head=request.method == b"HEAD"
        )

    async def _static(self, path: str) -> bytes | None:
        if self.settings.dashboard_dir is None:
            return None
        try:
            return await trio.Path(self.settings.dashboard_dir / _STATIC[path][0]).read_bytes()
        except FileNotFoundError:
            return None

    async def _send_error(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        message: str,
        *,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response already started: nothing sensible left to say
        headers = [*(extra or []), ("connection", "close")]
        await _send(
            conn,
            stream,
            status,
            "text/plain; charset=utf-8",
            f"{message}\n".encode(),
            extra=headers,
        )


async def _send(
    conn: h11.Connection,
    stream: trio.SocketStream,
    status: int,
    content_type: str,
    body: bytes,
    *,
    extra: list[tuple[str, str]],
    head: bool = False,
) -> None:
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        *extra,
    ]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    if not head:
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
    data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send_all(data)


def _encode(frame: object) -> str:
    return msgspec.json.encode(frame).decode()
