"""Recorded-shape Responses streams, played through a real engine over loopback HTTP.

The fixtures (``tests/fixtures/streams``, see its README) copy the *shapes* of streams that
public projects keep as recorded test data: OpenRouter's keep-alive comments and ``[DONE]``,
OpenAI's ``event:`` lines, CRLF, reasoning summaries, raw reasoning text, web-search
citations, function calls, incomplete and failed endings, xAI's field order and usage, and
emoji split across deltas as surrogate escapes. Each has a manifest of what the engine must
report.

Two checks per fixture:

* the manifest agrees with the stream, as read by a small parser written here, independent
  of the engine (so neither can drift silently), and the stream agrees with itself (deltas
  against their ``.done`` twins, sequence numbers counting from 0);
* the engine, fed the bytes whole, line by line and in 7-byte pieces by a small h11 server,
  reports the manifest's text, reasoning, citations, usage, output items and ending, and no
  notice of an unreadable event.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.lowlevel

from orpipe.actors import open_engine
from orpipe.adapters import OpenRouterHttpTransport
from orpipe.engine import (
    Cancelled,
    ChatRequest,
    Citation,
    Completed,
    Ending,
    EngineConfig,
    EnginePorts,
    Failed,
    Incomplete,
    Notice,
    OutputItem,
    Status,
    Usage,
)
from tests.engine.support import API_KEY, Collected, collect

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"
NAMES = sorted(path.stem for path in FIXTURES.glob("*.sse"))
TERMINALS = ("response.completed", "response.incomplete", "response.failed", "response.done")


def load(name: str) -> tuple[bytes, dict[str, Any]]:
    raw = (FIXTURES / f"{name}.sse").read_bytes()
    manifest = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return raw, manifest


def test_the_fixture_set_is_complete() -> None:
    assert len(NAMES) >= 8
    assert sorted(path.stem for path in FIXTURES.glob("*.json")) == NAMES


# --------------------------------------------------------------------------
# An independent reading of a fixture (no engine code)
# --------------------------------------------------------------------------


def read_sse(raw: bytes) -> tuple[list[str], dict[str, Any]]:
    """The data payloads up to ``[DONE]``, and the stream's framing."""
    text = raw.decode("utf-8")
    crlf = "\r\n" in text
    assert not crlf or "\n" not in text.replace("\r\n", ""), "mixed line ends"
    payloads: list[str] = []
    data: list[str] = []
    comments = event_lines = 0
    done = False
    for line in re.split(r"\r\n|\n", text):
        if line == "":
            if data:
                payload = "\n".join(data)
                data = []
                if payload == "[DONE]":
                    done = True
                    break
                payloads.append(payload)
        elif line.startswith(":"):
            comments += 1
        elif line.startswith("event:"):
            event_lines += 1
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        else:
            raise AssertionError(f"unexpected SSE line {line[:60]!r}")
    assert not data, "an event without its blank line"
    framing = {
        "line_end": "CRLF" if crlf else "LF",
        "event_lines": event_lines > 0,
        "done_sentinel": done,
        "keepalive_comments": comments,
    }
    if event_lines:
        assert event_lines == len(payloads), "an event: line before every data: line"
    return payloads, framing


def joined(text: str) -> str:
    """Surrogate halves that arrived in different deltas, paired up again."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def expected_from_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the stream says, in the manifest's terms.

    Rules that are choices of presentation, not facts of the stream: reasoning summary
    parts are shown as paragraphs (a blank line between them); a citation's empty title
    is shown as its URL; each URL is cited once, with its first title; anything after
    the terminal event does not count.
    """
    text = reasoning = ""
    citations: dict[str, dict[str, Any]] = {}
    output_items: list[str] = []
    calls: list[dict[str, Any]] = []
    statuses: list[bool] = []
    searching = False
    usage: dict[str, Any] | None = None
    ending: dict[str, Any] | None = None
    response_id: str | None = None
    for event in events:
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.content_part.delta"):
            text += event["delta"]
        elif isinstance(kind, str) and kind.startswith("response.reasoning"):
            if kind.endswith(".delta"):
                reasoning += event["delta"]
            elif kind == "response.reasoning_summary_part.added" and reasoning:
                reasoning += "\n\n"
        elif kind == "response.output_text.annotation.added":
            note = event["annotation"]
            if note["type"] == "url_citation" and note["url"] not in citations:
                citations[note["url"]] = {
                    "url": note["url"],
                    "title": note.get("title") or note["url"],
                    "start_index": note.get("start_index"),
                    "end_index": note.get("end_index"),
                }
        elif isinstance(kind, str) and kind.startswith("response.web_search_call."):
            now = not kind.endswith(".completed")
            if now != searching:
                searching = now
                statuses.append(not now)
        elif kind == "response.output_item.done":
            item = event["item"]
            if item["type"] != "message":
                output_items.append(item["type"])
            if item["type"] == "function_call":
                calls.append({k: item[k] for k in ("call_id", "name", "arguments")})
        elif kind == "response.created":
            response_id = event["response"]["id"]
        elif kind in TERMINALS:
            response = event["response"]
            response_id = response.get("id", response_id)
            usage = usage_of(response.get("usage"))
            status = kind.removeprefix("response.")
            if kind == "response.done":
                status = response["status"]
            if status == "completed":
                ending = {"kind": "completed", "response_id": response_id}
            elif status == "incomplete":
                ending = {"kind": "incomplete", "reason": response["incomplete_details"]["reason"]}
            else:
                ending = failure(response["error"], response.get("error_type"))
            break
        elif kind in ("error", "response.error") or (kind is None and "error" in event):
            nested = event.get("error")
            ending = failure(nested if isinstance(nested, dict) else event, event.get("error_type"))
            break
    return {
        "text": joined(text),
        "reasoning": joined(reasoning),
        "citations": list(citations.values()),
        "output_items": output_items,
        "function_calls": calls,
        "statuses": statuses,
        "usage": usage,
        "ending": ending,
    }


def usage_of(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {
        "input_tokens": raw["input_tokens"],
        "output_tokens": raw["output_tokens"],
        "total_tokens": raw["total_tokens"],
        "cached_tokens": (raw.get("input_tokens_details") or {}).get("cached_tokens", 0),
        "reasoning_tokens": (raw.get("output_tokens_details") or {}).get("reasoning_tokens", 0),
        "cost": raw.get("cost"),
    }


def failure(error: Mapping[str, Any], error_type: str | None) -> dict[str, Any]:
    return {
        "kind": "failed",
        "error": "UpstreamResponseFailed",
        "code": error.get("code"),
        "error_type": error_type,
    }


def check_self_consistency(events: list[dict[str, Any]]) -> None:
    """Deltas add up to their ``.done`` twins; sequence numbers count 0, 1, 2, ..."""
    numbers = [e["sequence_number"] for e in events if "sequence_number" in e]
    if numbers:
        assert numbers == list(range(len(numbers)))
    twins = {
        "response.output_text.done": ("response.output_text.delta", "content_index", "text"),
        "response.reasoning_text.done": ("response.reasoning_text.delta", "content_index", "text"),
        "response.reasoning_summary_text.done": (
            "response.reasoning_summary_text.delta",
            "summary_index",
            "text",
        ),
        "response.function_call_arguments.done": (
            "response.function_call_arguments.delta",
            "",
            "arguments",
        ),
    }
    index_of = {delta: index for delta, index, _ in twins.values()}
    runs: dict[tuple[str, str, int], str] = {}
    closed: set[tuple[str, str, int]] = set()
    for event in events:
        kind = event.get("type", "")
        if kind in index_of:
            key = (kind, event["item_id"], event.get(index_of[kind], 0))
            runs[key] = runs.get(key, "") + event["delta"]
        elif kind in twins:
            delta, index, field = twins[kind]
            key = (delta, event["item_id"], event.get(index, 0))
            assert joined(runs.get(key, "")) == event[field], f"{kind} disagrees with its deltas"
            closed.add(key)
        elif kind == "response.output_item.done" and event["item"]["type"] == "message":
            item = event["item"]
            parts = [p["text"] for p in item["content"] if p["type"] == "output_text"]
            streamed = [
                joined(runs.get(("response.output_text.delta", item["id"], i), ""))
                for i in range(len(parts))
            ]
            if any(streamed):
                assert streamed == parts, "the message item disagrees with its deltas"
        elif kind == "response.output_item.done" and event["item"]["type"] == "function_call":
            item = event["item"]
            key = ("response.function_call_arguments.delta", item["id"], 0)
            assert runs.get(key, item["arguments"]) == item["arguments"]
    if any(e.get("type") == "response.completed" for e in events):
        assert set(runs) == closed, f"deltas without a .done twin: {sorted(set(runs) - closed)}"


@pytest.mark.parametrize("name", NAMES)
def test_the_manifest_says_what_the_stream_carries(name: str) -> None:
    raw, manifest = load(name)
    payloads, framing = read_sse(raw)
    events = [json.loads(p) for p in payloads]
    assert all(isinstance(e, dict) for e in events)
    check_self_consistency(events)
    assert framing == manifest["framing"]
    assert expected_from_stream(events) == manifest["expected"]


# --------------------------------------------------------------------------
# A loopback server that sends a fixture's bytes in given pieces
# --------------------------------------------------------------------------

Chunker = Callable[[bytes], list[bytes]]


def whole(raw: bytes) -> list[bytes]:
    return [raw]


def per_line(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True)


def seven_bytes(raw: bytes) -> list[bytes]:
    return [raw[i : i + 7] for i in range(0, len(raw), 7)]


CHUNKINGS: dict[str, Chunker] = {"whole": whole, "lines": per_line, "7-byte": seven_bytes}


class RecordingServer:
    """Answers ``POST .../responses`` with the pieces filed under the request's model.

    Chunked transfer encoding, one chunk per piece, a checkpoint between pieces so the
    reader sees them apart as far as the kernel allows.
    """

    def __init__(self) -> None:
        self.pieces: dict[str, list[bytes]] = {}
        self.requests: list[tuple[bytes, bytes, dict[str, Any]]] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = bytearray()
        request: h11.Request | None = None
        try:
            async with stream:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed before a whole request
                        return
                assert request is not None
                sent = json.loads(body)
                self.requests.append((request.method, request.target, sent))
                head = h11.Response(
                    status_code=200,
                    headers=[
                        ("content-type", "text/event-stream; charset=utf-8"),
                        ("cache-control", "no-cache"),
                        ("connection", "close"),
                    ],
                )
                await stream.send_all(conn.send(head) or b"")
                for piece in self.pieces[sent["model"]]:
                    await stream.send_all(conn.send(h11.Data(data=piece)) or b"")
                    await trio.lowlevel.checkpoint()
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the engine hung up (it may stop reading at [DONE])


async def play(name: str, pieces: list[bytes]) -> tuple[Collected, RecordingServer]:
    server = RecordingServer()
    model = f"recorded/{name}"
    server.pieces[model] = pieces
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        config = EngineConfig(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            retry_attempts=0,
            read_idle_timeout_s=10,
        )
        request = ChatRequest(
            model=model, input=({"type": "message", "role": "user", "content": "hello"},)
        )
        with trio.fail_after(30):
            async with (
                OpenRouterHttpTransport(config, api_key=API_KEY) as transport,
                open_engine(config, EnginePorts(transport=transport)) as engine,
            ):
                got = await collect(engine.submit(request))
        nursery.cancel_scope.cancel()
    return got, server


def reported(got: Collected) -> dict[str, Any]:
    """What the engine told its consumer, in the manifest's terms (plus its notices)."""
    usages = [e for e in got.events if isinstance(e, Usage)]
    assert len(usages) <= 1, "one Usage per request"
    items = [e.item for e in got.events if isinstance(e, OutputItem)]
    return {
        "text": got.text,
        "reasoning": got.reasoning,
        "citations": [
            {
                "url": e.url,
                "title": e.title,
                "start_index": e.start_index,
                "end_index": e.end_index,
            }
            for e in got.events
            if isinstance(e, Citation)
        ],
        "output_items": [item["type"] for item in items],
        "function_calls": [
            {k: item[k] for k in ("call_id", "name", "arguments")}
            for item in items
            if item["type"] == "function_call"
        ],
        "statuses": [e.done for e in got.events if isinstance(e, Status)],
        "usage": usage_reported(usages[0]) if usages else None,
        "ending": ending_reported(got.ending),
        "notices": [e.message for e in got.events if isinstance(e, Notice)],
    }


def usage_reported(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": usage.cost,
    }


def ending_reported(ending: Ending | None) -> dict[str, Any]:
    match ending:
        case Completed(response_id=response_id):
            return {"kind": "completed", "response_id": response_id}
        case Incomplete(reason=reason):
            return {"kind": "incomplete", "reason": reason}
        case Failed(error=error, message=message):
            return {
                "kind": "failed",
                "error": type(error).__name__,
                "code": getattr(error, "code", None),
                "error_type": getattr(error, "error_type", None),
                "message": message,
            }
        case Cancelled(reason=reason):
            return {"kind": "cancelled", "reason": reason}
    return {"kind": repr(ending)}


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("name", NAMES)
async def test_the_engine_reports_what_the_stream_carries(name: str, chunking: str) -> None:
    raw, manifest = load(name)
    pieces = CHUNKINGS[chunking](raw)
    assert b"".join(pieces) == raw
    got, server = await play(name, pieces)

    [(method, target, sent)] = server.requests
    assert (method, target) == (b"POST", b"/api/v1/responses")
    assert sent["stream"] is True

    expected = {**manifest["expected"], "notices": []}
    observed = reported(got)
    if observed["ending"]["kind"] == "failed" and expected["ending"]["kind"] == "failed":
        observed["ending"].pop("message")  # worded for people; checked below
    assert observed == expected
    if isinstance(got.ending, Completed):
        assert got.ending.text_chars == len(got.text)
    if isinstance(got.ending, Failed) and got.text:
        assert "partial" in got.ending.message
