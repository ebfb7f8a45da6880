"""The telemetry server over real loopback sockets: WebSocket frames, /metrics, the static files."""

from __future__ import annotations

import functools
import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from orpipe.actors.telemetry import TelemetryHub, telemetry_sampler
from orpipe.actors.telemetry_core import TelemetrySettings
from orpipe.adapters.openwebui.user_breaker import UserBreaker
from orpipe.adapters.telemetry.server import (
    TelemetryEndpoints,
    TelemetryServerSettings,
    serve_telemetry,
)
from orpipe.engine import Engine
from tests.engine.support import API_KEY, collect, mock_server, request, running_engine, wait_until

LABELS = {"channel", "actor", "counter", "level", "breaker", "state", "service", "ending"}


@dataclass
class Running:
    engine: Engine
    hub: TelemetryHub
    endpoints: TelemetryEndpoints
    breaker: UserBreaker


@asynccontextmanager
async def telemetry(
    tmp_path: Path | None = None,
    *,
    settings: TelemetrySettings | None = None,
    **server: object,
) -> AsyncIterator[Running]:
    """A real engine against the mock, its sampler, and the server on ephemeral ports."""
    breaker = UserBreaker(threshold=1, window_s=60.0)
    async with mock_server() as mock, running_engine(mock, max_concurrent_requests=3) as engine:
        hub = TelemetryHub(
            engine.statistics,
            settings or TelemetrySettings(interval_s=0.02, subscriber_buffer=4, max_subscribers=3),
            breakers={"user": breaker.statistics},
        )
        server_settings = TelemetryServerSettings(dashboard_dir=tmp_path, **server)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(telemetry_sampler, hub)
            endpoints = await nursery.start(
                functools.partial(serve_telemetry, hub, server_settings)
            )
            yield Running(engine, hub, endpoints, breaker)
            nursery.cancel_scope.cancel()


async def _http(method: str, url: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, **kw)  # type: ignore[arg-type]


async def _raw_http(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        chunks = []
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
    return b"".join(chunks)


# -- WebSocket ---------------------------------------------------------------------------


async def test_frames_arrive_over_a_real_websocket_history_first_then_live() -> None:
    async with telemetry() as run:
        await wait_until(lambda: run.hub.counters.frames_total >= 3)
        async with open_websocket_url(run.endpoints.ws_url) as ws:
            seqs: list[int] = []
            frames = []
            with trio.fail_after(30):
                while len(frames) < 8:
                    frame = json.loads(await ws.get_message())
                    frames.append(frame)
                    seqs.append(frame["seq"])
            # History starts at the oldest frame in the ring; then live frames, in order.
            # A frame can only be missing if the hub counted it as dropped for a slow reader.
            assert seqs[0] == 1
            assert seqs == sorted(set(seqs))
            missing = seqs[-1] - len(seqs)
            assert missing <= run.hub.counters.dropped_total
            assert frames[0]["admission"]["max_concurrent"] == 3
            assert set(frames[-1]["channels"]) >= {"fetch.out", "parse.out", "batch.out"}

            # Live frames follow what the engine does.
            await collect(run.engine.submit(request("text", tokens=5)))
            with trio.fail_after(30):
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["endings"]:
                        break
            assert frame["endings"] == {"completed": 1}
            assert frame["admission"]["admitted_total"] == 1
            assert API_KEY not in json.dumps(frame)


async def test_a_wrong_websocket_path_is_refused_with_404() -> None:
    async with telemetry() as run:
        status, body = await _refused(run.endpoints.ws_port, "/nope")
        assert status == 404
        assert b"/ws" in body


async def test_a_foreign_browser_origin_is_refused_and_the_dashboard_origin_accepted() -> None:
    async with telemetry() as run:
        status, _ = await _refused(run.endpoints.ws_port, origin="http://evil.example")
        assert status == 403
        own = [("Origin", f"http://127.0.0.1:{run.endpoints.http_port}")]
        async with open_websocket_url(run.endpoints.ws_url, extra_headers=own) as ws:
            with trio.fail_after(30):
                assert json.loads(await ws.get_message())["seq"] == 1


async def test_subscribers_beyond_the_limit_are_refused_with_503() -> None:
    async with telemetry() as run:
        async with (
            open_websocket_url(run.endpoints.ws_url),
            open_websocket_url(run.endpoints.ws_url),
            open_websocket_url(run.endpoints.ws_url),
        ):
            await wait_until(lambda: run.hub.subscribers == 3)
            status, body = await _refused(run.endpoints.ws_port)
            assert status == 503
            assert b"Too many telemetry subscribers" in body
        await wait_until(lambda: run.hub.subscribers == 0)


def _upgrade(path: str = "/ws", origin: str | None = None) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n" + (f"Origin: {origin}\r\n" if origin else "") + "\r\n"
    ).encode()


async def _handshake(port: int, *, receive_buffer: int | None = None) -> trio.SocketStream:
    """A bare WebSocket handshake, so the test can break the connection however it likes."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # set before connecting, so the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(_upgrade())
    received = b""
    with trio.fail_after(30):
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 101"), received[:200]
    return stream


async def _refused(port: int, path: str = "/ws", origin: str | None = None) -> tuple[int, bytes]:
    """Status and body of a refused WebSocket handshake.

    A raw socket rather than trio-websocket's client: its client leaks the
    socket of a refused handshake (an unclosed-socket warning, an error here).
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(_upgrade(path, origin))
        received = b""
        with trio.fail_after(30):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += await stream.receive_some(65536)
    return int(head.split(b" ", 2)[1]), body


async def test_clients_vanishing_mid_stream_do_not_crash_the_server() -> None:
    async with telemetry() as run:
        # One closes its socket abruptly (no close frame) while frames flow; one resets it
        # (RST, SO_LINGER 0); one never reads at all and just closes later.
        closer = await _handshake(run.endpoints.ws_port)
        resetter = await _handshake(run.endpoints.ws_port)
        idle = await _handshake(run.endpoints.ws_port)
        await wait_until(lambda: run.hub.subscribers == 3)
        with trio.fail_after(30):
            await closer.receive_some(10)  # frames are arriving
        await closer.aclose()
        resetter.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await resetter.aclose()
        await idle.aclose()
        await wait_until(lambda: run.hub.subscribers == 0, limit_s=60)

        # The server lives on: a new client gets frames.
        async with open_websocket_url(run.endpoints.ws_url) as ws:
            with trio.fail_after(30):
                assert json.loads(await ws.get_message())["seq"] >= 1
        # And HTTP clients that leave mid-request do not disturb it either.
        half = await trio.open_tcp_stream("127.0.0.1", run.endpoints.http_port)
        await half.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never end
        await half.aclose()
        assert (await _http("GET", run.endpoints.metrics_url)).status_code == 200


async def test_a_client_that_stops_reading_loses_frames_not_the_sampler() -> None:
    async with telemetry(ws_send_timeout_s=3600.0) as run:
        # Reads nothing from here on; a small window so the server's sends stall soon.
        stuck = await _handshake(run.endpoints.ws_port, receive_buffer=4096)
        async with stuck:
            await wait_until(lambda: run.hub.counters.dropped_total > 0, limit_s=60)
            before = run.hub.counters.frames_total
            await wait_until(lambda: run.hub.counters.frames_total > before + 5)
            stats = run.hub.statistics()
            assert stats["subscriber_buffers_used"] <= stats["subscriber_buffer_size"]


async def test_a_client_stuck_longer_than_the_send_timeout_loses_its_place() -> None:
    async with telemetry(ws_send_timeout_s=0.2) as run:
        stuck = await _handshake(run.endpoints.ws_port, receive_buffer=4096)
        async with stuck:
            await wait_until(lambda: run.hub.subscribers == 1)
            # Its sends stall once the socket buffers fill; the server then lets it go.
            await wait_until(lambda: run.hub.subscribers == 0, limit_s=60)
            assert run.hub.counters.subscribers_total == 1


# -- HTTP --------------------------------------------------------------------------------


async def test_metrics_parse_as_prometheus_text_with_conventional_names() -> None:
    async with telemetry() as run:
        await collect(run.engine.submit(request("text", tokens=5)))
        run.breaker.record_failure("user-1")  # threshold 1: open
        response = await _http("GET", run.endpoints.metrics_url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert API_KEY not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        assert family.name.startswith("orpipe_"), family.name
        assert family.type in {"counter", "gauge"}, family.name
        for sample in family.samples:
            assert set(sample.labels) <= LABELS, (sample.name, sample.labels)
            if family.type == "counter":
                assert sample.name.endswith("_total"), sample.name
            else:
                assert not sample.name.endswith("_total"), sample.name

    def value(name: str, **labels: str) -> float:
        family = families[name.removesuffix("_total")]
        matches = [s.value for s in family.samples if s.labels == labels]
        assert len(matches) == 1, (name, labels, family.samples)
        return matches[0]

    assert families["orpipe_admission_admitted"].type == "counter"
    assert value("orpipe_admission_admitted_total") == 1
    assert value("orpipe_admission_in_flight") == 0
    assert value("orpipe_admission_max_concurrent") == 3
    assert families["orpipe_admission_queue_wait_seconds"].type == "counter"
    assert "orpipe_admission_queue_wait_max_seconds" in families
    assert value("orpipe_channel_buffer_capacity", channel="fetch.out") > 0
    assert value("orpipe_channel_buffer_used", channel="parse.out") == 0
    assert value("orpipe_actor_counter_total", actor="fetcher", counter="requests") == 1
    assert value("orpipe_request_endings_total", ending="completed") == 1
    assert value("orpipe_breaker_keys", breaker="user", state="open") == 1
    assert value("orpipe_breaker_max_users", breaker="user") > 0
    assert families["orpipe_telemetry_frames"].type == "counter"
    assert families["orpipe_telemetry_dropped"].type == "counter"


async def test_http_unhappy_paths(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>", encoding="utf-8")
    async with telemetry(tmp_path) as run:
        base = run.endpoints.http_url
        page = await _http("GET", f"{base}/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        head = await _http("HEAD", f"{base}/metrics")
        assert head.status_code == 200 and head.content == b""

        config = (await _http("GET", f"{base}/config.json")).json()
        assert config["ws_port"] == run.endpoints.ws_port and config["ws_path"] == "/ws"

        assert (await _http("GET", f"{base}/nope")).status_code == 404
        # Listed but missing from the directory: 404, not 500.
        assert (await _http("GET", f"{base}/dashboard.js")).status_code == 404
        traversal = await _raw_http(
            run.endpoints.http_port, b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert traversal.startswith(b"HTTP/1.1 404")
        posted = await _http("POST", f"{base}/metrics", content=b"x")
        assert posted.status_code == 405
        assert posted.headers["allow"] == "GET, HEAD"
        garbage = await _raw_http(run.endpoints.http_port, b"NOT HTTP AT ALL\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")

        # Keep-alive: several requests on one connection.
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                assert (await client.get(f"{base}/metrics")).status_code == 200


async def test_without_a_dashboard_directory_the_page_is_404_but_metrics_work() -> None:
    async with telemetry() as run:
        assert (await _http("GET", f"{run.endpoints.http_url}/")).status_code == 404
        assert (await _http("GET", run.endpoints.metrics_url)).status_code == 200
