"""The downloader against real HTTP servers on loopback (a test-only allowance for loopback).

Each server is a plain asyncio socket server that writes exactly the bytes a
hostile or broken server would: a length over the limit, a chunked body that
never stops, a slow drip, redirects into private space, 503 with
Retry-After. Names resolve through a fake resolver; nothing leaves the host.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from orpipe.adapters.openwebui.downloader import Downloader, DownloadError, DownloadLimits
from orpipe.adapters.openwebui.ssrf_guard import IPAddress
from tests.adapters.asyncio_support import run_on

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    """A loopback HTTP/1.1 server; ``handler`` gets the request head and writes the answer."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await handler(head, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        srv.close()
        await srv.wait_closed()


def answer(status: str, body: bytes = b"", **headers: str) -> Handler:
    async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return handle


class Names:
    """A resolver from a table; a list of answers gives one per lookup (rebinding)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups = 0

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups += 1
        answers = self.table.get(host)
        if answers is None:
            raise OSError("no such name")
        chosen = answers[min(self.lookups, len(answers)) - 1]
        return [ipaddress.ip_address(a) for a in chosen]


def downloader(resolver: Any = None, **limits: Any) -> Downloader:
    settings: dict[str, Any] = {
        "allow_loopback": True,
        "allow_http_hosts": {"127.0.0.1", "files.test"},
        "backoff_initial_s": 0.01,
        **limits,
    }
    kwargs: dict[str, Any] = {"limits": DownloadLimits(**settings)}
    if resolver is not None:
        kwargs["resolver"] = resolver
    return Downloader(**kwargs)


def on_loop(scenario: Callable[[], Awaitable[None]]) -> None:
    run_on("asyncio", scenario, limit_s=10)


def test_a_file_is_downloaded_with_its_type() -> None:
    async def scenario() -> None:
        handler = answer("200 OK", b"\x89PNG...", Content_Type="image/png; charset=binary")
        async with server(handler) as port:
            d = downloader()
            got = await d.fetch(f"http://127.0.0.1:{port}/a.png")
            await d.aclose()
        assert got.body == b"\x89PNG..." and got.media_type == "image/png"

    on_loop(scenario)


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def scenario() -> None:
        async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 1000)

        async with server(handle) as port:
            d = downloader(max_bytes=100_000)
            with pytest.raises(DownloadError, match="the server says 5,000,000 bytes"):
                await d.fetch(f"http://127.0.0.1:{port}/big")
            await d.aclose()

    on_loop(scenario)


def test_an_understated_length_never_delivers_more_than_it_said() -> None:
    async def scenario() -> None:
        async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"y" * 200_000)

        async with server(handle) as port:
            d = downloader(max_bytes=1000)
            got = await d.fetch(f"http://127.0.0.1:{port}/liar")
            await d.aclose()
        assert got.body == b"y" * 10

    on_loop(scenario)


def test_a_chunked_body_that_grows_past_the_limit_is_stopped() -> None:
    sent: list[int] = []

    async def scenario() -> None:
        async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"z" * 16384
            for _ in range(10_000):  # 160 MB if nobody stopped it
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent.append(len(chunk))

        async with server(handle) as port:
            d = downloader(max_bytes=100_000)
            with pytest.raises(DownloadError, match="kept coming past the limit"):
                await d.fetch(f"http://127.0.0.1:{port}/endless")
            await d.aclose()

    on_loop(scenario)
    assert sum(sent) < 20_000_000  # the client hung up long before the end


def test_a_slow_drip_ends_at_the_total_budget() -> None:
    async def scenario() -> None:
        async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b"d")
                await writer.drain()
                await asyncio.sleep(0.05)

        async with server(handle) as port:
            d = downloader(total_budget_s=0.6, attempt_timeout_s=0.5)
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(DownloadError, match=r"longer than 0\.6 s"):
                await d.fetch(f"http://127.0.0.1:{port}/drip")
            assert loop.time() - began < 3
            await d.aclose()

    on_loop(scenario)


def test_a_redirect_chain_into_private_space_is_refused() -> None:
    async def scenario() -> None:
        async with server(answer("302 Found", Location="http://10.0.0.5/secret")) as inner:
            hop = answer("301 Moved", Location=f"http://127.0.0.1:{inner}/next")
            async with server(hop) as outer:
                # Plain http allowed for the private host too: the address check must stop it.
                d = downloader(allow_http_hosts={"127.0.0.1", "10.0.0.5"})
                with pytest.raises(DownloadError, match=r"10\.0\.0\.0/8"):
                    await d.fetch(f"http://127.0.0.1:{outer}/start")
                await d.aclose()

    on_loop(scenario)


def test_redirects_are_followed_up_to_the_limit() -> None:
    async def scenario() -> None:
        async with (
            server(answer("200 OK", b"done")) as last,
            server(answer("302 Found", Location="/../x")) as loop_server,
        ):
            relay = answer("307 Temporary", Location=f"http://127.0.0.1:{last}/file")
            async with server(relay) as first:
                d = downloader()
                got = await d.fetch(f"http://127.0.0.1:{first}/")
                assert got.body == b"done"
                assert got.final_url == f"http://127.0.0.1:{last}/file"
                with pytest.raises(DownloadError, match="redirected more than 3 times"):
                    await d.fetch(f"http://127.0.0.1:{loop_server}/spin")
                await d.aclose()

    on_loop(scenario)


def test_retries_follow_retry_after_within_the_cap() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        async def flaky(head: bytes, writer: asyncio.StreamWriter) -> None:
            calls.append(1)
            if len(calls) < 3:
                await answer("503 Busy", Retry_After="0")(head, writer)
            else:
                await answer("200 OK", b"third time")(head, writer)

        async with server(flaky) as port:
            d = downloader()
            got = await d.fetch(f"http://127.0.0.1:{port}/")
            await d.aclose()
        assert got.body == b"third time" and len(calls) == 3

    on_loop(scenario)


def test_a_retry_after_past_the_cap_ends_the_download_at_once() -> None:
    async def scenario() -> None:
        async with server(answer("429 Too Many", Retry_After="3600")) as port:
            d = downloader(retry_after_cap_s=10)
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(DownloadError, match="retry in 3600 s, longer than the 10 s"):
                await d.fetch(f"http://127.0.0.1:{port}/")
            assert loop.time() - began < 2
            await d.aclose()

    on_loop(scenario)


def test_client_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        async def missing(head: bytes, writer: asyncio.StreamWriter) -> None:
            calls.append(1)
            await answer("404 Not Found")(head, writer)

        async with server(missing) as port:
            d = downloader()
            with pytest.raises(DownloadError, match="HTTP 404"):
                await d.fetch(f"http://127.0.0.1:{port}/gone")
            await d.aclose()
        assert calls == [1]

    on_loop(scenario)


def test_the_connection_goes_to_the_vetted_address_with_the_name_as_host() -> None:
    heads: list[bytes] = []

    async def scenario() -> None:
        async def echo(head: bytes, writer: asyncio.StreamWriter) -> None:
            heads.append(head)
            await answer("200 OK", b"ok")(head, writer)

        async with server(echo) as port:
            # Public-looking first answer is not available on loopback, so the test
            # allowance stands in: first answer loopback, every later one private.
            names = Names({"files.test": [["127.0.0.1"], ["10.9.9.9"]]})
            d = downloader(names)
            got = await d.fetch(f"http://files.test:{port}/doc")
            await d.aclose()
        assert got.body == b"ok"
        assert names.lookups == 1  # never resolved again
        assert f"host: files.test:{port}".encode() in heads[0].lower()

    on_loop(scenario)


def test_refused_addresses_and_unreachable_servers_say_why() -> None:
    async def scenario() -> None:
        d = downloader(max_retries=1, attempt_timeout_s=0.5)
        with pytest.raises(DownloadError, match=r"the address was refused: .*169\.254"):
            await d.fetch("https://169.254.169.254/latest/meta-data/")
        with pytest.raises(DownloadError, match="plain http is refused"):
            await d.fetch("http://example.com/")
        with pytest.raises(DownloadError, match="failed 2 times"):
            await d.fetch("http://127.0.0.1:9/")  # discard port: connection refused
        await d.aclose()

    on_loop(scenario)


def test_downloads_wait_for_a_slot() -> None:
    async def scenario() -> None:
        running = 0
        peak = 0

        async def slow(head: bytes, writer: asyncio.StreamWriter) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            await answer("200 OK", b"x")(head, writer)

        async with server(slow) as port:
            d = downloader()
            d.process_slots = asyncio.Semaphore(2)
            per_request = asyncio.Semaphore(5)
            urls = [f"http://127.0.0.1:{port}/{i}" for i in range(6)]
            await asyncio.gather(*(d.fetch(u, request_slots=per_request) for u in urls))
            await d.aclose()
        assert peak == 2

    on_loop(scenario)


def test_a_server_that_does_not_speak_http_ends_the_download_with_a_reason() -> None:
    async def garbage(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    async def scenario() -> None:
        async with server(garbage) as port:
            d = downloader()
            with pytest.raises(DownloadError, match=r"the download failed \(RemoteProtocolError"):
                await d.fetch(f"http://127.0.0.1:{port}/a.png")
            await d.aclose()

    on_loop(scenario)
