"""decode_event: msgspec fast path, the lone-surrogate fallback, and ParseFailed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.event_decoder import decode_event
from engine.messages import DeltaEvent, ParseFailed, UpstreamEvent


def _payload(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_text_delta_fast_path() -> None:
    item = decode_event(7, _payload(type="response.output_text.delta", delta="Hé 😀"))
    assert item == DeltaEvent(seq=7, channel="text", text="Hé 😀")


def test_raw_utf8_delta() -> None:
    raw = '{"type":"response.output_text.delta","delta":"Hé 中 😀"}'.encode()
    assert decode_event(0, raw) == DeltaEvent(seq=0, channel="text", text="Hé 中 😀")


@pytest.mark.parametrize(
    ("kind", "channel"),
    [
        ("response.output_text.delta", "text"),
        ("response.refusal.delta", "text"),
        ("response.content_part.delta", "text"),
        ("response.reasoning_text.delta", "reasoning"),
        ("response.reasoning_summary_text.delta", "reasoning"),
        ("response.reasoning.delta", "reasoning"),
    ],
)
def test_delta_classification(kind: str, channel: str) -> None:
    item = decode_event(3, _payload(type=kind, delta="x", item_id="i", output_index=0))
    assert item == DeltaEvent(seq=3, channel=channel, text="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "response.function_call_arguments.delta", "delta": '{"a"'},
        {"type": "response.output_text.delta", "delta": None},
        {"type": "response.output_text.delta", "delta": ["x"]},
        {"type": "response.output_text.done", "text": "all"},
        {"type": "response.reasoning_summary_part.added", "part": {}},
        {"type": "response.created", "response": {"id": "resp_1"}},
        {"type": "response.image_generation_call.partial_image", "delta": "abc"},
        {"type": "error", "code": "server_error", "message": "boom"},
    ],
)
def test_other_events_are_upstream_events(fields: dict[str, object]) -> None:
    item = decode_event(5, _payload(**fields))
    assert isinstance(item, UpstreamEvent)
    assert item.seq == 5
    assert item.type == fields["type"]
    assert dict(item.data) == fields


def test_lone_surrogate_escape_falls_back_to_the_stdlib() -> None:
    # msgspec refuses a lone \\ud83d escape; providers send it when an emoji
    # is split across two deltas.
    high = decode_event(1, b'{"type":"response.output_text.delta","delta":"a\\ud83d"}')
    low = decode_event(2, b'{"type":"response.output_text.delta","delta":"\\ude00b"}')
    assert high == DeltaEvent(seq=1, channel="text", text="a\ud83d")
    assert low == DeltaEvent(seq=2, channel="text", text="\ude00b")


def test_escaped_pair_in_one_delta_is_one_character() -> None:
    item = decode_event(0, b'{"type":"response.output_text.delta","delta":"\\ud83d\\ude00"}')
    assert item == DeltaEvent(seq=0, channel="text", text="😀")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"type":"x","s":"\xc3\x28"}', "invalid UTF-8"),
        (b"\xff\xff\xff", "invalid UTF-8"),
        (b'{"type":"x", "a":', "malformed JSON"),
        (b"{not json}", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"delta":"x"}', "no event type"),
        (b'{"type":1}', "no event type"),
        (b'{"type":null}', "no event type"),
    ],
)
def test_failures_keep_their_sequence_number(payload: bytes, reason: str) -> None:
    item = decode_event(41, payload)
    assert isinstance(item, ParseFailed)
    assert item.seq == 41
    assert item.size == len(payload)
    assert item.reason.startswith(reason)


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(0, 2**40), payload=st.binary(max_size=64))
def test_any_bytes_give_an_item_with_their_seq(seq: int, payload: bytes) -> None:
    item = decode_event(seq, payload)
    assert isinstance(item, DeltaEvent | UpstreamEvent | ParseFailed)
    assert item.seq == seq


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["response.output_text.delta", "response.reasoning_text.delta"]),
    text=st.text(alphabet=st.characters(blacklist_categories=())),  # lone surrogates too
)
def test_any_delta_text_round_trips(kind: str, text: str) -> None:
    payload = json.dumps({"type": kind, "delta": text}).encode()  # ASCII, \\u escapes
    item = decode_event(0, payload)
    assert isinstance(item, DeltaEvent)
    assert item.text == text


def test_a_large_done_twin_is_recognised_without_decoding_its_text() -> None:
    text = "word " * 20_000  # ~100 KB, like the end of a long answer
    for kind in ("response.output_text.done", "response.content_part.done"):
        payload = json.dumps({"type": kind, "text": text, "part": {"text": text}}).encode()
        item = decode_event(7, payload)
        assert isinstance(item, UpstreamEvent)
        assert (item.seq, item.type, dict(item.data)) == (7, kind, {"type": kind})
    # Large events that matter are decoded in full; small twins too (nothing to save).
    done_item = {"type": "response.output_item.done", "item": {"type": "message", "text": text}}
    item = decode_event(8, json.dumps(done_item).encode())
    assert isinstance(item, UpstreamEvent) and item.data["item"]["text"] == text
    small = decode_event(9, b'{"type":"response.output_text.done","text":"hi"}')
    assert isinstance(small, UpstreamEvent) and small.data["text"] == "hi"
    # A large payload that is not valid JSON is still a ParseFailed with its reason.
    broken = decode_event(10, b'{"type":"response.output_text.done","text":"' + b"x" * 20_000)
    assert isinstance(broken, ParseFailed)


@pytest.mark.parametrize("kind", ["response.completed", "response.incomplete", "response.failed"])
def test_a_large_terminal_event_is_decoded_without_its_output(kind: str) -> None:
    text = "word " * 20_000
    response = {
        "id": "resp_1",
        "status": kind.removeprefix("response."),
        "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}],
        "usage": {"input_tokens": 3, "output_tokens": 20_000, "cost": 0.25},
        "incomplete_details": {"reason": "max_output_tokens"},
        "error": {"code": "server_error", "message": "boom"},
    }
    item = decode_event(11, _payload(type=kind, response=response, error_type="upstream"))
    assert isinstance(item, UpstreamEvent) and item.type == kind
    kept = item.data["response"]
    assert "output" not in kept
    assert {k: kept[k] for k in ("id", "usage", "incomplete_details", "error")} == {
        k: response[k] for k in ("id", "usage", "incomplete_details", "error")
    }
    assert item.data["error_type"] == "upstream"
    # Small ones are decoded whole; a large one of an unexpected shape falls back to
    # the full decode, so the mapper sees what was really sent.
    small = decode_event(12, _payload(type=kind, response={"id": "r", "output": []}))
    assert isinstance(small, UpstreamEvent) and small.data["response"]["output"] == []
    odd = decode_event(13, _payload(type=kind, response="not an object", pad=text))
    assert isinstance(odd, UpstreamEvent) and odd.data["response"] == "not an object"
