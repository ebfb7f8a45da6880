"""Tests of the mock OpenRouter itself, over real loopback HTTP (httpx on trio).

The SSE splitting here is deliberately tiny and local: the engine's real framer is tested
elsewhere. ``plan()`` tells each test exactly what the server should have sent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from orpipe.bench.mock_catalogue import CATALOGUE
from orpipe.bench.mock_openrouter import MockServer, serve_mock
from orpipe.bench.mock_requests import SUMMARY_TEXT_CHARS, summarize_input
from orpipe.bench.mock_scenarios import plan
from orpipe.bench.mock_text import join_surrogates

REPO = Path(__file__).resolve().parents[2]
DONE = "[DONE]"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def sse_blocks(raw: bytes) -> list[bytes]:
    """Split an SSE body into its blank-line separated blocks (bytes, undecoded)."""
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"", "body must end with a blank line"
    return blocks[:-1]


def parse_events(raw: bytes) -> tuple[list[dict[str, Any]], list[bytes], bool]:
    """(JSON events, comment blocks, saw [DONE]); asserts [DONE] is the last block."""
    events: list[dict[str, Any]] = []
    comments: list[bytes] = []
    done = False
    for block in sse_blocks(raw):
        assert not done, "nothing may follow [DONE]"
        if block.startswith(b":"):
            comments.append(block)
            continue
        assert block.startswith(b"data: "), block[:80]
        payload = block[len(b"data: ") :]
        if payload == b"[DONE]":
            done = True
        else:
            events.append(json.loads(payload))
    return events, comments, done


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def text_deltas(events: list[dict[str, Any]]) -> list[str]:
    return [e["delta"] for e in events if e["type"] == "response.output_text.delta"]


def body(model: str, metadata: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "input": "hello",
        "stream": True,
        "metadata": dict(metadata or {}),
        **extra,
    }


@pytest.fixture
async def server(nursery: trio.Nursery) -> MockServer:
    srv: MockServer = await nursery.start(serve_mock)
    return srv


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def post(
    client: httpx.AsyncClient, server: MockServer, payload: dict[str, Any], **kw: Any
) -> httpx.Response:
    return await client.post(f"{server.base_url}/responses", json=payload, **kw)


POLL_DEADLINE = 5.0


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll a condition of the in-process server (no blind sleeps) inside a deadline."""
    with trio.fail_after(POLL_DEADLINE):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------------


async def test_port_zero_reports_the_bound_port(server: MockServer, client: httpx.AsyncClient):
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/api/v1"
    r = await client.get(f"{server.base_url}/models")
    assert r.status_code == 200


async def test_unknown_path_is_404_envelope(server: MockServer, client: httpx.AsyncClient):
    r = await client.get(f"{server.base_url}/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404


# --------------------------------------------------------------------------------------------
# streaming scenarios
# --------------------------------------------------------------------------------------------

TEXT_ORDER_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_ORDER_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


async def test_text_stream(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "30", "mock.seed": "7"}
    r = await post(client, server, body("mock/text", meta))
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["x-generation-id"].startswith("gen-")
    assert r.content.startswith(b": OPENROUTER PROCESSING\n\n")
    events, _, done = parse_events(r.content)
    assert done
    assert_contiguous(events)
    expected = plan("text", meta)
    assert types(events) == [
        *TEXT_ORDER_HEAD,
        *["response.output_text.delta"] * 30,
        *TEXT_ORDER_TAIL,
    ]
    assert "".join(text_deltas(events)) == expected.text
    assert any(ord(c) > 0xFFFF for c in expected.text)  # the text exercises astral chars
    assert "naïve" in expected.text
    created = events[0]["response"]
    for key in ("id", "object", "created_at", "model", "status", "output", "error", "tools"):
        assert key in created
    assert created["status"] == "in_progress" and created["output"] == []
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == expected.text
    usage = final["usage"]
    assert isinstance(usage["cost"], float) and usage["cost"] > 0
    assert usage["output_tokens"] == 30
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # the handler's bookkeeping may finish just after the client has the whole body
    await wait_for(lambda: server.stats.streams_completed == 1)
    assert server.stats.events_sent_total == len(events)


async def test_catalogue_model_gets_text_and_header_wins(
    server: MockServer, client: httpx.AsyncClient
):
    r = await post(client, server, body("openai/gpt-4o", {"mock.tokens": "3"}))
    assert types(parse_events(r.content)[0]).count("response.output_text.delta") == 3
    r = await post(
        client,
        server,
        body("openai/gpt-4o", {"mock.tokens": "3"}),
        headers={"X-Mock-Scenario": "http-429"},
    )
    assert r.status_code == 429
    r = await post(client, server, body("deepseek/deepseek-r1", {"mock.tokens": "3"}))
    assert "response.reasoning_summary_text.delta" in types(parse_events(r.content)[0])
    assert server.stats.requests_by_scenario == {"text": 1, "http-429": 1, "reasoning": 1}


async def test_params_from_a_header_for_clients_without_metadata(
    server: MockServer, client: httpx.AsyncClient
):
    r = await post(client, server, body("mock/text", {}), headers={"X-Mock-Params": "tokens=4"})
    assert types(parse_events(r.content)[0]).count("response.output_text.delta") == 4
    # The body's metadata wins over the header.
    r = await post(
        client,
        server,
        body("mock/text", {"mock.tokens": "2"}),
        headers={"X-Mock-Params": "tokens=4"},
    )
    assert types(parse_events(r.content)[0]).count("response.output_text.delta") == 2
    r = await post(client, server, body("mock/text", {}), headers={"X-Mock-Params": "tokenz=4"})
    assert r.status_code == 400 and "mock.tokenz" in r.text


@pytest.mark.parametrize("style", ["summary", "text"])
async def test_reasoning_stream(server: MockServer, client: httpx.AsyncClient, style: str):
    meta = {"mock.tokens": "5", "mock.reasoning_tokens": "4", "mock.reasoning_style": style}
    r = await post(client, server, body("mock/reasoning", meta))
    events, _, done = parse_events(r.content)
    assert done
    assert_contiguous(events)
    expected = plan("reasoning", meta)
    if style == "summary":
        reasoning = [
            "response.reasoning_summary_part.added",
            *["response.reasoning_summary_text.delta"] * 4,
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
        ]
        delta_type = "response.reasoning_summary_text.delta"
    else:
        reasoning = [*["response.reasoning_text.delta"] * 4, "response.reasoning_text.done"]
        delta_type = "response.reasoning_text.delta"
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *reasoning,
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        *TEXT_ORDER_TAIL,
    ]
    assert "".join(e["delta"] for e in events if e["type"] == delta_type) == expected.reasoning_text
    assert "".join(text_deltas(events)) == expected.text
    item = events[2 + len(reasoning) + 1]["item"]
    assert item["type"] == "reasoning" and item["encrypted_content"]
    if style == "summary":
        assert item["summary"][0]["text"] == expected.reasoning_text
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 4


async def test_annotations(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "6", "mock.citations": "3"}
    r = await post(client, server, body("mock/annotations", meta))
    events, _, _ = parse_events(r.content)
    assert_contiguous(events)
    names = types(events)
    assert names == [
        *TEXT_ORDER_HEAD,
        *["response.output_text.delta"] * 6,
        *["response.output_text.annotation.added"] * 3,
        *TEXT_ORDER_TAIL,
    ]
    added = [e["annotation"] for e in events if e["type"].endswith("annotation.added")]
    urls = [a["url"] for a in added]
    assert len(urls) == 3 and len(set(urls)) == 2  # one duplicate for client de-duplication
    assert all(a["type"] == "url_citation" for a in added)
    assert [(a["url"], a["title"]) for a in added] == list(plan("annotations", meta).citations)
    message = events[-1]["response"]["output"][0]
    assert message["content"][0]["annotations"] == added


async def test_tools_round_trip(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.calls": "2", "mock.rounds": "2"}
    tools = [{"type": "function", "name": "lookup", "parameters": None}]
    history: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    seen_calls: list[str] = []
    for round_index in range(3):
        r = await post(client, server, body("mock/tools", meta, input=history, tools=tools))
        events, _, done = parse_events(r.content)
        assert done
        assert_contiguous(events)
        final = events[-1]["response"]
        assert events[-1]["type"] == "response.completed"
        if round_index < 2:
            expected = plan("tools", meta, tool_outputs=2 * round_index, tool_names=["lookup"])
            assert types(events)[2:6] == [
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
            ]
            calls = [o for o in final["output"] if o["type"] == "function_call"]
            assert [o["type"] for o in final["output"]] == ["function_call"] * 2
            got = [(c["call_id"], c["name"], c["arguments"]) for c in calls]
            assert got == list(expected.function_calls)
            for event in events:
                if event["type"] == "response.function_call_arguments.done":
                    json.loads(event["arguments"])
            args = "".join(
                e["delta"]
                for e in events
                if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == 0
            )
            assert args == calls[0]["arguments"]
            for call in calls:
                seen_calls.append(call["call_id"])
                history.append({**call, "status": "completed"})
                history.append(
                    {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}
                )
        else:
            assert [o["type"] for o in final["output"]] == ["message"]
            assert "".join(text_deltas(events)) == plan("text", meta).text
    assert seen_calls == ["call_1", "call_2", "call_3", "call_4"]


async def test_split_surrogates(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "40", "mock.split_surrogates": "1"}
    r = await post(client, server, body("mock/text", meta))
    assert b"\\ud83d" in r.content  # written as JSON escapes
    events, _, _ = parse_events(r.content)
    assert_contiguous(events)
    deltas = text_deltas(events)
    expected = plan("text", meta)
    assert tuple(deltas) == expected.wire_deltas
    assert len(deltas) > 40
    lone = [d for d in deltas if any(0xD800 <= ord(c) <= 0xDFFF for c in d)]
    assert lone, "some deltas must carry lone surrogates"
    assert join_surrogates("".join(deltas)) == expected.text
    assert events[-4]["text"] == expected.text  # output_text.done carries the real text


async def test_events_per_write_and_tps(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "5", "mock.tps": "50", "mock.events_per_write": "3"}
    start = trio.current_time()
    r = await post(client, server, body("mock/text", meta))
    elapsed = trio.current_time() - start
    events, _, done = parse_events(r.content)
    assert done and len(text_deltas(events)) == 5
    assert elapsed >= 4 / 50  # deltas are paced at 50/s


# --------------------------------------------------------------------------------------------
# pre-stream HTTP errors
# --------------------------------------------------------------------------------------------

ERRORS = [
    ("http-429", 429, 429, "Rate limit exceeded", True),
    ("http-500", 500, 500, None, False),
    ("http-502", 502, 502, "Provider returned error", False),
    ("http-503", 503, 503, None, True),
    ("http-529", 529, 529, None, False),
    ("http-401", 401, 401, "User not found.", False),
    ("http-402", 402, 402, "Insufficient credits", False),
    ("http-408", 408, 408, None, False),
    ("http-400", 400, "invalid_prompt", None, False),
]


@pytest.mark.parametrize(("scenario", "status", "code", "message", "retry"), ERRORS)
async def test_http_errors(
    server: MockServer,
    client: httpx.AsyncClient,
    scenario: str,
    status: int,
    code: int | str,
    message: str | None,
    retry: bool,
):
    r = await post(client, server, body(f"mock/{scenario}", {"mock.retry_after": "7"}))
    assert r.status_code == status
    payload = r.json()
    assert payload["error"]["code"] == code
    assert isinstance(payload["error"]["message"], str)
    if message:
        assert payload["error"]["message"].startswith(message)
    if status == 400:
        assert payload["metadata"] is None
    if retry:
        assert r.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in r.headers


async def test_fail_times_then_success(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.fail_times": "2", "mock.attempt_key": "abc", "mock.tokens": "4"}
    statuses = []
    for _ in range(3):
        r = await post(client, server, body("mock/http-503", meta))
        statuses.append(r.status_code)
    assert statuses == [503, 503, 200]
    events, _, done = parse_events(r.content)
    assert done and "".join(text_deltas(events)) == plan("text", meta).text
    other = await post(client, server, body("mock/http-503", {**meta, "mock.attempt_key": "x"}))
    assert other.status_code == 503  # counted per attempt_key


async def test_bad_parameter_and_scenario_are_400(server: MockServer, client: httpx.AsyncClient):
    r = await post(client, server, body("mock/text", {"mock.tokens": "many"}))
    assert r.status_code == 400 and "mock.tokens" in r.json()["error"]["message"]
    r = await post(client, server, body("mock/text", {"mock.tokenz": "1"}))
    assert r.status_code == 400 and "mock.tokenz" in r.json()["error"]["message"]
    r = await post(client, server, body("mock/no-such-thing"))
    assert r.status_code == 400 and "no-such-thing" in r.json()["error"]["message"]


# --------------------------------------------------------------------------------------------
# faults inside the stream
# --------------------------------------------------------------------------------------------


async def test_drop_is_a_transport_error(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "20", "mock.drop_after": "4"}
    received = b""
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        async with client.stream(
            "POST", f"{server.base_url}/responses", json=body("mock/drop", meta)
        ) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes():
                received += chunk
    events, _, done = parse_events(received)
    assert not done
    assert "".join(text_deltas(events)) == plan("drop", meta).text
    assert len(text_deltas(events)) == 4


async def test_malformed_event(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "8", "mock.bad_at": "3"}
    r = await post(client, server, body("mock/malformed", meta))
    blocks = [b for b in sse_blocks(r.content) if not b.startswith(b":")]
    bad = []
    seqs = []
    for block in blocks[:-1]:
        try:
            seqs.append(json.loads(block[6:])["sequence_number"])
        except json.JSONDecodeError:
            bad.append(block)
            match = re.search(rb'"sequence_number": (\d+)', block)
            assert match
            seqs.append(int(match.group(1)))
    assert len(bad) == 1
    assert seqs == list(range(len(seqs)))  # the bad event occupies a sequence number
    good = [json.loads(b[6:]) for b in blocks[:-1] if b not in bad]
    deltas = text_deltas(good)
    assert "".join(deltas) == plan("malformed", meta).text
    # the bad event sits right after the third delta
    assert blocks.index(bad[0]) == 4 + 3


async def test_invalid_utf8_event(server: MockServer, client: httpx.AsyncClient):
    r = await post(client, server, body("mock/invalid-utf8", {"mock.tokens": "8"}))
    bad = []
    for block in sse_blocks(r.content):
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(block)
    assert len(bad) == 1
    assert b"\xff\xfe" in bad[0]
    assert bad[0].startswith(b'data: {"type":"response.output_text.delta"')


async def test_oversized_event(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "8", "mock.oversize_bytes": str(2 * 1024 * 1024)}
    r = await post(client, server, body("mock/oversized", meta))
    events, _, done = parse_events(r.content)
    assert done
    assert_contiguous(events)
    sizes = [len(d.encode()) for d in text_deltas(events)]
    assert max(sizes) == 2 * 1024 * 1024
    assert sizes.count(2 * 1024 * 1024) == 1
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == plan("oversized", meta).text


async def test_stall_sends_nothing_and_notices_disconnect(
    server: MockServer, client: httpx.AsyncClient
):
    received = b""
    async with client.stream(
        "POST", f"{server.base_url}/responses", json=body("mock/stall", {"mock.stall_s": "3600"})
    ) as r:
        chunks = r.aiter_raw()
        with trio.fail_after(5):
            while b"response.created" not in received:
                received += await chunks.__anext__()
        await wait_for(lambda: server.stats.streams_active == 1)
        # A negative check needs a window: nothing at all may arrive during the stall.
        with trio.move_on_after(0.3) as window:
            received += await chunks.__anext__()
        assert window.cancelled_caught, received
        assert b"response.in_progress" not in received
        (resp_id, sent) = next(iter(server.stats.active_stream_events.items()))
        assert resp_id.startswith("resp_") and sent == 1
    # leaving the block closes the connection; the server must stop the stalled handler
    await wait_for(lambda: server.stats.streams_active == 0)
    assert server.stats.streams_disconnected == 1
    assert server.stats.active_stream_events == {}


async def test_short_stall_mid_stream_then_continues(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "6", "mock.stall_after": "3", "mock.stall_s": "0.05"}
    r = await post(client, server, body("mock/stall", meta))
    events, _, done = parse_events(r.content)
    assert done and events[-1]["type"] == "response.completed"
    assert "".join(text_deltas(events)) == plan("stall", meta).text


async def test_failed_event(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "9", "mock.error_after": "3"}
    r = await post(client, server, body("mock/failed", meta))
    events, _, done = parse_events(r.content)
    assert done
    assert_contiguous(events)
    assert len(text_deltas(events)) == 3
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {
        "code": "server_error",
        "message": "The model provider returned an error",
    }
    assert last["response"]["error_type"] == "provider_unavailable"


@pytest.mark.parametrize(
    ("scenario", "style", "shape", "expected"),
    [
        ("error-event", "string", "top", {"code": "server_error", "param": None}),
        ("error-event", "int", "top", {"code": 502, "param": None}),
        ("error-event", "int", "nested", {"error": {"code": 502}}),
        ("response-error", "string", "top", {"error": {"code": "server_error"}}),
    ],
)
async def test_error_events(
    server: MockServer,
    client: httpx.AsyncClient,
    scenario: str,
    style: str,
    shape: str,
    expected: dict[str, Any],
):
    meta = {"mock.error_after": "2", "mock.code_style": style, "mock.error_shape": shape}
    r = await post(client, server, body(f"mock/{scenario}", meta))
    events, _, done = parse_events(r.content)
    assert done
    assert_contiguous(events)
    last = events[-1]
    assert last["type"] == ("error" if scenario == "error-event" else "response.error")
    for key, value in expected.items():
        if isinstance(value, dict):
            assert last[key]["code"] == value["code"]
            assert last[key]["message"]
        else:
            assert last[key] == value
    assert len(text_deltas(events)) == 2


async def test_incomplete(server: MockServer, client: httpx.AsyncClient):
    r = await post(client, server, body("mock/incomplete", {"mock.tokens": "4"}))
    events, _, done = parse_events(r.content)
    assert done
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["usage"]["cost"] > 0


@pytest.mark.parametrize("done_flag", ["1", "0"])
async def test_no_terminal(server: MockServer, client: httpx.AsyncClient, done_flag: str):
    meta = {"mock.tokens": "4", "mock.done": done_flag}
    r = await post(client, server, body("mock/no-terminal", meta))
    events, _, done = parse_events(r.content)
    assert done is (done_flag == "1")
    assert events[-1]["type"] == "response.output_item.done"
    assert "".join(text_deltas(events)) == plan("no-terminal", meta).text


async def test_stalled_reader_stops_server_writes(server: MockServer, client: httpx.AsyncClient):
    # A client that stops reading must push back on the server (no unbounded buffering).
    meta = {"mock.tokens": "200000", "mock.events_per_write": "200", "mock.keepalive": "0"}
    async with client.stream("POST", f"{server.base_url}/responses", json=body("mock/text", meta)):
        await wait_for(lambda: server.stats.streams_active == 1)
        last = -1
        with trio.fail_after(10):
            while True:
                now = server.stats.events_sent_total
                if now == last:
                    break
                last = now
                await trio.sleep(0.2)
        assert 0 < last < 200_000
    await wait_for(lambda: server.stats.streams_active == 0)


# --------------------------------------------------------------------------------------------
# non-streaming, catalogue, auth, stats endpoint
# --------------------------------------------------------------------------------------------


async def test_non_streaming_json(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "5"}
    r = await post(client, server, body("mock/reasoning", meta, stream=False))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    obj = r.json()
    for key in (
        "id", "object", "created_at", "model", "status", "completed_at", "output", "error",
        "incomplete_details", "temperature", "top_p", "presence_penalty", "frequency_penalty",
        "instructions", "metadata", "tools", "tool_choice", "parallel_tool_calls",
    ):  # fmt: skip
        assert key in obj
    assert obj["status"] == "completed"
    expected = plan("reasoning", meta)
    assert obj["output"][1]["content"][0]["text"] == expected.text
    assert obj["output"][0]["summary"][0]["text"] == expected.reasoning_text
    assert obj["usage"] == dict(expected.usage)


async def test_models_catalogue(server: MockServer, client: httpx.AsyncClient):
    r = await client.get(f"{server.base_url}/models")
    root = r.json()
    assert root["total_count"] == len(root["data"]) == len(CATALOGUE)
    assert root["links"] == {"next": None}
    by_id = {m["id"]: m for m in root["data"]}
    required = (
        "id", "canonical_slug", "name", "created", "context_length", "architecture", "pricing",
        "top_provider", "per_request_limits", "supported_parameters", "default_parameters",
        "supported_voices", "links",
    )  # fmt: skip
    for model in root["data"]:
        for key in required:
            assert key in model, (model["id"], key)
        assert all(isinstance(v, str) for v in model["pricing"].values())
        assert "is_moderated" in model["top_provider"]
    assert {"openai/gpt-4o", "openai/gpt-4o-2024-08-06", "deepseek/deepseek-r1:free"} <= set(by_id)
    assert "image" in by_id["openai/gpt-4o"]["architecture"]["input_modalities"]
    assert "file" in by_id["openai/gpt-4o"]["architecture"]["input_modalities"]
    assert any(float(m["pricing"]["web_search"]) > 0 for m in root["data"])
    assert any("reasoning" in m["supported_parameters"] for m in root["data"])
    assert any("tools" in m["supported_parameters"] for m in root["data"])
    assert any("tools" not in m["supported_parameters"] for m in root["data"])

    r = await client.get(f"{server.base_url}/models", params={"limit": "4"})
    page = r.json()
    assert [m["id"] for m in page["data"]] == [m["id"] for m in root["data"][:4]]
    assert page["total_count"] == len(CATALOGUE)
    assert page["links"]["next"] == "/api/v1/models?offset=4&limit=4"
    r = await client.get(f"{server.base_url}/models", params={"limit": "0"})
    assert r.status_code == 400


async def test_auth(nursery: trio.Nursery, client: httpx.AsyncClient):
    server: MockServer = await nursery.start(partial(serve_mock, api_key="sk-test"))
    r = await client.get(f"{server.base_url}/models")
    assert r.status_code == 401
    assert r.json() == {"error": {"code": 401, "message": "Missing Authentication header"}}
    r = await client.get(f"{server.base_url}/models", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "User not found."
    ok = {"Authorization": "Bearer sk-test"}
    r = await post(client, server, body("mock/text", {"mock.tokens": "2"}), headers=ok)
    assert r.status_code == 200


async def test_stats_endpoint(server: MockServer, client: httpx.AsyncClient):
    await post(client, server, body("mock/text", {"mock.tokens": "2"}))
    await wait_for(lambda: server.stats.streams_active == 0)
    root = server.base_url.removesuffix("/api/v1")
    stats = (await client.get(f"{root}/mock/stats")).json()
    assert stats["requests_total"] == 1
    assert stats["requests_by_scenario"] == {"text": 1}
    assert stats["streams_active"] == 0 and stats["streams_completed"] == 1
    assert stats["events_sent_total"] == 10
    assert stats["bytes_sent_total"] > 0
    assert stats["active_stream_events"] == {}
    assert stats["input_parts_by_type"] == {} and stats["input_parts_inline"] == 0


async def test_stats_count_the_input_parts_that_arrived(
    server: MockServer, client: httpx.AsyncClient
):
    content = [
        {"type": "input_text", "text": "what are these?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JV"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    message = {"type": "message", "role": "user", "content": content}
    await post(client, server, body("mock/text", {"mock.tokens": "2"}, input=[message]))
    assert server.stats.input_parts_by_type == {
        "input_text": 1, "input_image": 2, "input_file": 1, "input_audio": 1,
    }  # fmt: skip
    assert server.stats.input_parts_inline == 3  # the linked image is not inline


async def test_requests_endpoint_shows_what_each_request_carried(
    server: MockServer, client: httpx.AsyncClient
):
    await post(client, server, body("mock/reasoning", {"mock.tokens": "2"}))
    reasoning = {
        "type": "reasoning",
        "id": "rs_1_0",
        "summary": [{"type": "summary_text", "text": "thought"}],
        "encrypted_content": "gAAAAmock-rs_1_0-7",
    }
    second = [
        {"type": "message", "role": "user", "content": "first"},
        reasoning,
        {"type": "message", "role": "assistant", "content": "answer"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]},
    ]
    await post(client, server, body("mock/reasoning", {"mock.tokens": "2"}, input=second))
    await post(client, server, body("mock/http-429", {}))
    root = server.base_url.removesuffix("/api/v1")
    log = (await client.get(f"{root}/mock/requests")).json()["requests"]
    assert [r["seq"] for r in log] == [1, 2, 3]
    assert [r["response_id"] for r in log] == ["resp_mock_1", "resp_mock_2", None]
    assert log[0]["input"] == [{"type": "message", "role": "user", "text": "hello"}]
    assert log[0]["output"] == [
        {"type": "reasoning", "id": "rs_1_0"},
        {"type": "message", "id": "msg_1_0"},
    ]
    assert log[1]["input"][1] == {
        "type": "reasoning",
        "id": "rs_1_0",
        "encrypted_content": "gAAAAmock-rs_1_0-7",
        "text": "thought",
    }
    assert log[1]["input"][3] == {
        "type": "message",
        "role": "user",
        "parts": ["input_text"],
        "text": "again",
    }
    assert log[2]["scenario"] == "http-429" and log[2]["output"] == []


def test_summarize_input_keeps_ids_and_short_text_never_inline_data():
    items = [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "fc"},
        {"type": "function_call_output", "call_id": "c1", "output": "x" * 5000},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 9000},
            ],
        },
        "not a dict",
    ]
    out = summarize_input(items)
    assert out[0] == {
        "type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "text": "{}",
    }  # fmt: skip
    assert out[1]["text"] == "x" * SUMMARY_TEXT_CHARS
    assert out[2] == {"type": "message", "role": "user", "parts": ["input_image"]}
    assert out[3] == {"type": "str"}
    assert summarize_input(None) == []


async def test_default_params_apply_unless_the_request_names_them(
    nursery: trio.Nursery, client: httpx.AsyncClient
):
    server: MockServer = await nursery.start(
        partial(serve_mock, default_params={"tokens": "3", "seed": "2"})
    )
    r = await post(client, server, body("mock/text"))
    assert (
        "".join(text_deltas(parse_events(r.content)[0]))
        == plan("text", {"mock.tokens": "3", "mock.seed": "2"}).text
    )
    r = await post(client, server, body("mock/text", {"mock.tokens": "5"}))
    assert (
        "".join(text_deltas(parse_events(r.content)[0]))
        == plan("text", {"mock.tokens": "5", "mock.seed": "2"}).text
    )


async def test_default_params_are_checked_at_start():
    with pytest.raises(ValueError, match=r"mock\.tps"):
        await serve_mock(default_params={"tps": "fast"})


# --------------------------------------------------------------------------------------------
# /chat/completions and bench variants (the owui-real bench's built-in connection)
# --------------------------------------------------------------------------------------------


def chat_chunks(raw: bytes) -> list[dict[str, Any]]:
    events, _, done = parse_events(raw)
    assert done
    return events


async def post_chat(
    client: httpx.AsyncClient, server: MockServer, payload: dict[str, Any], **kw: Any
) -> httpx.Response:
    return await client.post(f"{server.base_url}/chat/completions", json=payload, **kw)


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_chat_completions_stream_the_same_plan(server: MockServer, client: httpx.AsyncClient):
    meta = {"mock.tokens": "12", "mock.seed": "3"}
    start = trio.current_time()
    r = await post_chat(
        client, server, chat_body("mock/text", stream=True, metadata=meta),
        headers={"X-Mock-Params": "tps=100"},
    )  # fmt: skip
    elapsed = trio.current_time() - start
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.content.startswith(b": OPENROUTER PROCESSING\n\n")
    chunks = chat_chunks(r.content)
    expected = plan("text", meta)
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]
    assert "".join(deltas) == expected.text
    assert deltas[:-1] == list(expected.text_deltas) and deltas[-1] == ""  # one chunk per token
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert elapsed >= 11 / 100  # paced like the Responses stream
    await wait_for(lambda: server.stats.streams_completed == 1)
    assert server.stats.requests_by_scenario == {"text": 1}


async def test_chat_completions_reasoning_json_and_refusals(
    server: MockServer, client: httpx.AsyncClient
):
    meta = {"mock.tokens": "3", "mock.reasoning_tokens": "2"}
    r = await post_chat(client, server, chat_body("mock/reasoning", stream=True, metadata=meta))
    chunks = chat_chunks(r.content)
    expected = plan("reasoning", meta)
    reasoning = [c["choices"][0]["delta"].get("reasoning") for c in chunks if c["choices"]]
    assert "".join(filter(None, reasoning)) == expected.reasoning_text
    r = await post_chat(client, server, chat_body("mock/incomplete", metadata=meta))
    answer = r.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == plan("incomplete", meta).text
    assert answer["choices"][0]["finish_reason"] == "length"
    r = await post_chat(client, server, chat_body("mock/tools", stream=True))
    assert r.status_code == 400 and "not served on /chat/completions" in r.text
    r = await post_chat(client, server, {"model": "mock/text"})
    assert r.status_code == 400 and "messages" in r.text
    r = await client.get(f"{server.base_url}/chat/completions")
    assert r.status_code == 405


async def test_variants_are_models_with_their_parameters(
    nursery: trio.Nursery, client: httpx.AsyncClient
):
    variants = {"d20": {"tokens": "4", "tps": "50"}, "d0": {"tokens": "3"}}
    server: MockServer = await nursery.start(
        partial(serve_mock, default_params={"seed": "2"}, variants=variants)
    )
    models = (await client.get(f"{server.base_url}/models")).json()
    ids = [m["id"] for m in models["data"]]
    assert ids[-2:] == ["mock/text:d20", "mock/text:d0"] and len(ids) == len(CATALOGUE) + 2
    r = await post(client, server, body("mock/text:d0"))
    want = plan("text", {"mock.tokens": "3", "mock.seed": "2"}).text
    assert "".join(text_deltas(parse_events(r.content)[0])) == want
    r = await post(client, server, body("mock/text:d0", {"mock.tokens": "1"}))  # metadata wins
    assert len(text_deltas(parse_events(r.content)[0])) == 1
    start = trio.current_time()
    r = await post_chat(client, server, chat_body("mock/text:d20", stream=True))
    assert trio.current_time() - start >= 3 / 50
    contents = [c["choices"][0]["delta"]["content"] for c in chat_chunks(r.content) if c["choices"]]
    assert len(contents) == 5  # four tokens and the finish chunk
    r = await post(client, server, body("mock/text:unknown"))  # not a variant: plain text
    assert len(text_deltas(parse_events(r.content)[0])) == 40


async def test_bad_variants_are_refused_at_start():
    with pytest.raises(ValueError, match=r"mock\.tps"):
        await serve_mock(variants={"d1": {"tps": "fast"}})


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


async def test_cli_prints_readiness_line(nursery: trio.Nursery, client: httpx.AsyncClient):
    cmd = [sys.executable, "-m", "orpipe.bench.mock_openrouter", "--port", "0"]
    proc: trio.Process = await nursery.start(
        partial(trio.run_process, cmd, stdout=subprocess.PIPE, check=False, cwd=REPO)
    )
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(15):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            assert chunk, "process exited before printing its readiness line"
            line += chunk
    match = re.fullmatch(
        r"mock-openrouter listening on (http://127\.0\.0\.1:(\d+)/api/v1)\n", line.decode()
    )
    assert match, line
    assert int(match.group(2)) > 0
    r = await client.get(f"{match.group(1)}/models")
    assert r.status_code == 200
    proc.terminate()
    with trio.fail_after(10):
        await proc.wait()
    assert proc.returncode == 0


async def test_the_peak_of_open_streams_outlives_the_streams(
    server: MockServer, client: httpx.AsyncClient
):
    """The workers bench reads the most streams ever open at once (``streams_peak``)."""
    request = body("mock/stall", {"mock.stall_s": "3600"})
    async with (
        client.stream("POST", f"{server.base_url}/responses", json=request),
        client.stream("POST", f"{server.base_url}/responses", json=request),
    ):
        await wait_for(lambda: server.stats.streams_active == 2)
    await wait_for(lambda: server.stats.streams_active == 0)
    assert server.stats.streams_peak == 2
    assert server.stats.snapshot()["streams_peak"] == 2
