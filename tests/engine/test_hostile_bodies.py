"""Endings that say what happened: a real engine against scripted raw HTTP answers.

A tiny loopback server (not the project's mock) writes each test's bytes
exactly as given: status line, headers, body, and then either closes the
connection or leaves it open. Every case must end with one ending, in
bounded time, whose message names what came back.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from orpipe.actors import open_engine
from orpipe.adapters import OpenRouterHttpTransport
from orpipe.engine import (
    ChatRequest,
    Completed,
    EngineConfig,
    EnginePorts,
    Failed,
    Incomplete,
    TextDelta,
    Usage,
)
from orpipe.engine.messages import Ending, OutboundEvent

#: Far above what any case needs and far below the read idle timeout below:
#: an answer that waits for the idle timeout fails the test.
_BOUND_S = 10.0
_IDLE_S = 60.0


def _event(**fields: object) -> bytes:
    return b"data: " + json.dumps(fields).encode() + b"\n\n"


def _stream(*parts: bytes) -> bytes:
    return b"".join(parts)


_HELLO = _stream(
    _event(type="response.created", response={"id": "resp_h"}),
    _event(type="response.output_text.delta", delta="Hello, "),
    _event(type="response.output_text.delta", delta="world"),
)


def _completed(status: str = "completed", **response: object) -> bytes:
    return _event(
        type="response.completed", response={"id": "resp_h", "status": status, **response}
    )


def _http(status: str, headers: dict[str, str], body: bytes, *, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    if length:
        headers = {**headers, "Content-Length": str(len(body))}
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_request(stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += await stream.receive_some(65536)


@asynccontextmanager
async def _server(answer: bytes, *, keep_open: bool = False) -> AsyncIterator[str]:
    """Serves ``answer`` to every request; ``keep_open`` leaves each connection open after it."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await _read_request(stream)
            await stream.send_all(answer)
            if keep_open:
                await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/api/v1"
        nursery.cancel_scope.cancel()


async def _ask(
    answer: bytes, *, keep_open: bool = False
) -> tuple[str, list[OutboundEvent], Ending]:
    async with _server(answer, keep_open=keep_open) as base_url:
        config = EngineConfig(base_url=base_url, read_idle_timeout_s=_IDLE_S, retry_attempts=0)
        async with (
            OpenRouterHttpTransport(config, api_key="sk-or-test") as transport,
            open_engine(config, EnginePorts(transport=transport)) as engine,
        ):
            stream = engine.submit(
                ChatRequest(
                    model="m", input=({"type": "message", "role": "user", "content": "hi"},)
                )
            )
            events: list[OutboundEvent] = []
            with trio.fail_after(_BOUND_S):
                async for event in stream:
                    events.append(event)
            assert stream.ending is not None
            text = "".join(e.text for e in events if isinstance(e, TextDelta))
            return text, events, stream.ending


_SSE = {"Content-Type": "text/event-stream"}


async def test_a_terminal_event_ends_the_answer_although_the_connection_stays_open() -> None:
    body = _HELLO + _completed()
    answer = _http("200 OK", _SSE, body, length=False)  # no length, never closed
    text, _, ending = await _ask(answer, keep_open=True)
    assert text == "Hello, world"
    assert isinstance(ending, Completed)


@pytest.mark.parametrize(
    "error_line",
    [
        _event(error={"code": 502, "message": "Provider returned error"}),
        _event(type="error", code="502", message="Provider returned error", param=None),
        _event(type="response.error", error={"code": 502, "message": "Provider returned error"}),
    ],
    ids=["untyped", "typed error", "response.error"],
)
async def test_an_in_band_error_reaches_the_user_with_the_provider_message(
    error_line: bytes,
) -> None:
    answer = _http("200 OK", _SSE, _HELLO + error_line, length=False)
    text, _, ending = await _ask(answer, keep_open=True)
    assert text == "Hello, world"
    assert isinstance(ending, Failed)
    assert "Provider returned error" in ending.message
    assert "502" in ending.message
    assert "partial" in ending.message  # the 12 characters so far are said to be partial


async def test_a_json_error_with_status_200_is_the_providers_message() -> None:
    envelope = {
        "error": {
            "code": 429,
            "message": "Rate limit exceeded: free-models-per-day",
            "metadata": {"provider_name": "Fireworks"},
        }
    }
    answer = _http("200 OK", {"Content-Type": "application/json"}, json.dumps(envelope).encode())
    text, _, ending = await _ask(answer)
    assert text == ""
    assert isinstance(ending, Failed)
    assert "Rate limit exceeded: free-models-per-day" in ending.message
    assert "Fireworks" in ending.message
    assert "429" in ending.message
    assert "ended the stream without finishing" not in ending.message


async def test_an_html_page_is_named_with_its_title() -> None:
    page = b"<!DOCTYPE html><html><head><title>Access denied | Corp Proxy</title></head></html>"
    _, _, ending = await _ask(_http("200 OK", {"Content-Type": "text/html"}, page))
    assert isinstance(ending, Failed)
    assert ending.message.startswith(
        'OpenRouter answered with an HTML page titled "Access denied | Corp Proxy" '
        "(HTTP 200, text/html) instead of a stream"
    )
    assert "proxy" in ending.message
    assert not ending.error.retryable


async def test_an_html_page_with_no_content_type_is_sniffed() -> None:
    page = b"\n  <html><body>Maintenance</body></html>"
    _, _, ending = await _ask(_http("200 OK", {}, page))
    assert isinstance(ending, Failed)
    assert "an HTML page (HTTP 200, no content type)" in ending.message


async def test_an_html_error_page_is_named_too() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    _, _, ending = await _ask(_http("502 Bad Gateway", {"Content-Type": "text/html"}, page))
    assert isinstance(ending, Failed)
    assert 'an HTML page titled "502 Bad Gateway"' in ending.message


async def test_a_gzip_stream_is_decoded() -> None:
    body = gzip.compress(_HELLO + _completed() + b"data: [DONE]\n\n")
    headers = {**_SSE, "Content-Encoding": "gzip"}
    text, _, ending = await _ask(_http("200 OK", headers, body))
    assert text == "Hello, world"
    assert isinstance(ending, Completed)


async def test_an_unknown_encoding_is_named() -> None:
    headers = {**_SSE, "Content-Encoding": "br"}
    _, _, ending = await _ask(_http("200 OK", headers, b"\x1b\x00\x00"))
    assert isinstance(ending, Failed)
    assert "compressed as 'br'" in ending.message


async def test_a_redirect_names_where_it_points_without_its_query() -> None:
    headers = {"Location": "https://login.example.com/sso?token=secret123"}
    _, _, ending = await _ask(_http("302 Found", headers, b""))
    assert isinstance(ending, Failed)
    assert "redirect (HTTP 302) to https://login.example.com/sso" in ending.message
    assert "secret123" not in ending.message
    assert "BASE_URL" in ending.message


async def test_a_non_streamed_json_answer_is_delivered_as_text() -> None:
    response = {
        "id": "resp_j",
        "object": "response",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "A whole answer.", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7, "cost": 0.001},
    }
    headers = {"Content-Type": "application/json"}
    text, events, ending = await _ask(_http("200 OK", headers, json.dumps(response).encode()))
    assert text == "A whole answer."
    assert isinstance(ending, Completed)
    usage = [e for e in events if isinstance(e, Usage)]
    assert [(u.input_tokens, u.output_tokens, u.cost) for u in usage] == [(3, 4, 0.001)]


async def test_json_that_is_neither_answer_nor_error_is_named() -> None:
    headers = {"Content-Type": "application/json"}
    _, _, ending = await _ask(_http("200 OK", headers, b'{"hello": "proxy"}'))
    assert isinstance(ending, Failed)
    assert "JSON that is neither a response nor an error" in ending.message


@pytest.mark.parametrize(
    ("status", "expected"),
    [("incomplete", Incomplete), ("failed", Failed), ("completed", Completed)],
)
async def test_the_status_inside_the_response_decides_the_ending(
    status: str, expected: type
) -> None:
    extra: dict[str, object] = {}
    if status == "incomplete":
        extra["incomplete_details"] = {"reason": "max_output_tokens"}
    if status == "failed":
        extra["error"] = {"code": "server_error", "message": "The model crashed"}
    body = _HELLO + _completed(status, **extra) + b"data: [DONE]\n\n"
    text, _, ending = await _ask(_http("200 OK", _SSE, body))
    assert text == "Hello, world"
    assert isinstance(ending, expected)
    if status == "failed":
        assert "The model crashed" in ending.message  # type: ignore[attr-defined]


async def test_a_nan_cost_is_dropped() -> None:
    usage = b'{"input_tokens": 5, "output_tokens": 2, "total_tokens": 7, "cost": NaN}'
    terminal = (
        b'data: {"type": "response.completed", "response": {"id": "r", "status": "completed", '
        b'"usage": ' + usage + b"}}\n\n"
    )
    _, events, ending = await _ask(_http("200 OK", _SSE, _HELLO + terminal))
    assert isinstance(ending, Completed)
    (usage_event,) = [e for e in events if isinstance(e, Usage)]
    assert usage_event.cost is None
    assert (usage_event.input_tokens, usage_event.output_tokens) == (5, 2)
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in vars_of(usage_event))


def vars_of(event: Usage) -> list[object]:
    return [getattr(event, name) for name in event.__slots__]  # type: ignore[attr-defined]
