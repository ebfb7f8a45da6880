"""actors.upstream_body: body kinds, events that end a response, bounded inflation, JSON answers."""

from __future__ import annotations

import gzip
import json
import zlib

import msgspec
import pytest

from orpipe.actors.event_types import ENDS_RESPONSE
from orpipe.actors.upstream_body import (
    Inflater,
    body_kind,
    describe_html,
    ends_response,
    inflater_for,
    json_body_events,
)
from orpipe.engine.errors import UpstreamNotAStream, UpstreamResponseFailed


@pytest.mark.parametrize(
    ("content_type", "first", "kind"),
    [
        ("text/event-stream; charset=utf-8", b"<html>", "sse"),  # the type is trusted
        ("text/html", b"data: x", "html"),
        ("application/json", b"data: x", "json"),
        ("application/problem+json", b"", "json"),
        ("", b"data: {}\n\n", "sse"),
        ("", b"\xef\xbb\xbfdata: {}\n\n", "sse"),
        ("", b": OPENROUTER PROCESSING\n\n", "sse"),
        ("text/plain", b"event: x\ndata: {}\n\n", "sse"),
        ("", b"  \r\n<!DOCTYPE html>", "html"),
        ("text/plain", b'{"error": 1}', "json"),
        ("application/octet-stream", b"\x00\x01", "unknown"),
    ],
)
def test_body_kind(content_type: str, first: bytes, kind: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    assert body_kind(headers, first) == kind


@pytest.mark.parametrize(
    ("event", "ends"),
    [
        ({"type": "response.completed", "response": {}}, True),
        ({"type": "response.incomplete", "response": {}}, True),
        ({"type": "response.failed", "response": {}}, True),
        ({"type": "response.done", "response": {}}, True),
        ({"type": "response.error", "error": {"message": "x"}}, True),
        ({"type": "error", "code": None, "message": "x"}, True),
        ({"error": {"code": 502, "message": "x"}}, True),
        ({"error": "overloaded"}, True),
        ({"error": None}, False),
        ({"type": "response.created", "response": {"error": None, "status": "in_progress"}}, False),
        (
            {"type": "response.output_text.delta", "delta": '"error" and "response.completed"'},
            False,
        ),
        ({"type": "response.output_item.done", "item": {"type": "message"}}, False),
    ],
)
def test_ends_response(event: dict[str, object], ends: bool) -> None:
    assert ends_response(json.dumps(event).encode()) is ends


@pytest.mark.parametrize("kind", sorted(ENDS_RESPONSE))
def test_every_type_that_ends_a_response_passes_the_quick_scan(kind: str) -> None:
    """The per-event pre-scan spells the types out; it must not miss one of them."""
    assert ends_response(json.dumps({"type": kind}).encode())


def test_ends_response_never_raises_on_junk() -> None:
    nested = b'{"error":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert ends_response(nested) in (True, False)
    assert ends_response(b'{"error": ') is False
    assert ends_response(b"\xff\xfe") is False


def test_inflation_comes_in_bounded_pieces() -> None:
    bomb = zlib.compress(b"a" * (8 * 1024 * 1024), 9)  # 8 MiB from a few KiB
    inflater = Inflater()
    pieces = inflater.feed(bomb) + inflater.close()
    assert sum(map(len, pieces)) == 8 * 1024 * 1024
    assert max(map(len, pieces)) <= 64 * 1024


def test_inflation_across_chunk_boundaries() -> None:
    body = b"data: " + b"x" * 100_000 + b"\n\n"
    packed = gzip.compress(body)
    inflater = Inflater()
    out = b"".join(b"".join(inflater.feed(packed[i : i + 7])) for i in range(0, len(packed), 7))
    assert out + b"".join(inflater.close()) == body


def test_only_gzip_and_deflate_are_read() -> None:
    assert inflater_for(200, {}) is None
    assert inflater_for(200, {"content-encoding": "identity"}) is None
    assert isinstance(inflater_for(200, {"content-encoding": "GZIP"}), Inflater)
    with pytest.raises(UpstreamNotAStream, match="compressed as 'zstd'"):
        inflater_for(200, {"content-encoding": "zstd", "content-type": "text/event-stream"})


def test_describe_html() -> None:
    assert describe_html(b"<html><TITLE>\n  Sign in  \n</TITLE>") == 'an HTML page titled "Sign in"'
    assert describe_html(b"<html><body>hi</body>") == "an HTML page"


def test_a_json_error_envelope_keeps_code_message_and_provider() -> None:
    body = json.dumps(
        {
            "error": {
                "code": "invalid_prompt",
                "message": "Input too long",
                "metadata": {"provider_name": "Anthropic"},
                "error_type": "context_length_exceeded",
            }
        }
    ).encode()
    with pytest.raises(UpstreamResponseFailed) as caught:
        json_body_events(body, 200, {"content-type": "application/json"})
    assert caught.value.code == "invalid_prompt"
    assert caught.value.error_type == "context_length_exceeded"
    assert "Input too long (provider: Anthropic)" in caught.value.message


def test_a_response_object_becomes_its_stream_events() -> None:
    response = {
        "id": "resp_1",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Hm."}],
            },
            {
                "type": "message",
                "content": [
                    {
                        "type": "output_text",
                        "text": "Cut",
                        "annotations": [{"type": "url_citation", "url": "https://a.example"}],
                    }
                ],
            },
        ],
    }
    events = [
        msgspec.json.decode(e) for e in json_body_events(json.dumps(response).encode(), 200, {})
    ]
    types = [e["type"] for e in events]
    assert types == [
        "response.created",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.output_item.done",
        "response.output_text.delta",
        "response.output_text.annotation.added",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert "output" not in events[-1]["response"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'{"object": "list"}', b"{nope"])
def test_other_json_is_named(body: bytes) -> None:
    with pytest.raises(UpstreamNotAStream, match="instead of a stream"):
        json_body_events(body, 200, {"content-type": "application/json"})
