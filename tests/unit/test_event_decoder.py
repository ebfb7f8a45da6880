"""decode_event: msgspec fast path, the lenient fallback, hostile input, and ParseFailed."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpipe.actors import event_decoder
from orpipe.actors.event_decoder import MAX_FALLBACK_NESTING, decode_event
from orpipe.actors.response_mapper import ResponseMapper
from orpipe.engine.errors import UpstreamResponseFailed
from orpipe.engine.messages import Failed
from orpipe.engine.pipeline_messages import DeltaEvent, ParseFailed, StreamEnded, UpstreamEvent


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


# --- hostile input: nothing a payload holds may escape as an exception ------------

_DEEP = 3_000  # far past the interpreter's recursion limit (msgspec's and json's)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"x","a":' + b"[" * _DEEP + b"]" * _DEEP + b"}",  # 6 KB, the reported one
        b"[" * _DEEP + b"]" * _DEEP,
        b"[" * _DEEP,  # never closed
        b'{"a":' * _DEEP,
        b'{"type":"x","a":' + b'[{"b":' * _DEEP,
        # Large enough (> 16 KB) for the type-only and terminal pre-decodes to run first.
        b'{"type":"response.output_text.done","a":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"type":"response.completed","response":{"output":' + b"[" * 20_000 + b"]" * 20_000,
        b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b',"type":"response.completed"}',
        # Deep and refused by msgspec for another reason too.
        b'{"type":"x","s":"\\ud83d","a":' + b"[" * _DEEP + b"]" * _DEEP + b"}",
    ],
)
def test_absurd_nesting_is_that_events_failure(payload: bytes) -> None:
    item = decode_event(17, payload)
    assert isinstance(item, ParseFailed)
    assert (item.seq, item.size) == (17, len(payload))
    assert item.reason == f"JSON nested deeper than {MAX_FALLBACK_NESTING} levels"


def _nested(levels: int, *, lone_surrogate: bool) -> bytes:
    """An event whose object nests ``levels`` deep (the event itself is one)."""
    extra = b'"s":"\\ud83d",' if lone_surrogate else b""
    inner = b"[" * (levels - 1) + b"]" * (levels - 1)
    return b'{"type":"x",' + extra + b'"a":' + inner + b"}"


def test_the_nesting_limit_applies_to_every_payload() -> None:
    # msgspec refuses the lone surrogate, so the standard library decodes it: the limit.
    at_limit = decode_event(1, _nested(MAX_FALLBACK_NESTING, lone_surrogate=True))
    assert isinstance(at_limit, UpstreamEvent) and at_limit.data["s"] == "\ud83d"
    past = decode_event(2, _nested(MAX_FALLBACK_NESTING + 1, lone_surrogate=True))
    assert isinstance(past, ParseFailed) and past.reason.startswith("JSON nested deeper")
    # msgspec itself would take 500 levels; the limit refuses them before it runs.
    deep = decode_event(3, _nested(500, lone_surrogate=False))
    assert isinstance(deep, ParseFailed) and deep.reason.startswith("JSON nested deeper")
    shallow = decode_event(4, _nested(MAX_FALLBACK_NESTING, lone_surrogate=False))
    assert isinstance(shallow, UpstreamEvent)


def test_brackets_inside_strings_do_not_nest() -> None:
    # Forced onto the fallback by the lone surrogate; 3,000 brackets, all in strings.
    brackets = "[{" * (_DEEP // 2)
    payload = json.dumps(
        {"type": "response.output_text.delta", "delta": "\ud83d" + brackets, "k": 'a"[\\'}
    ).encode()
    assert payload.count(b"[") > MAX_FALLBACK_NESTING
    assert decode_event(4, payload) == DeltaEvent(seq=4, channel="text", text="\ud83d" + brackets)


_OPENERS = st.sampled_from([b"[", b'{"k":', b'[1,"]",', b'{"a":"}","b":'])
_CLOSERS = {b"[": b"]", b'{"k":': b"}", b'[1,"]",': b"]", b'{"a":"}","b":': b"}"}


@settings(max_examples=200, deadline=None)
@given(
    openers=st.lists(_OPENERS, max_size=1_500),
    repeat=st.integers(1, 4),
    closed=st.booleans(),
    extra=st.sampled_from([b"", b'"s":"\\ud800",', b'"c":NaN,', b'"n":1e999,', b'"x":"\\q",']),
    seq=st.integers(0, 2**40),
)
def test_any_nesting_gives_an_item_with_its_seq(
    openers: list[bytes], repeat: int, closed: bool, extra: bytes, seq: int
) -> None:
    openers = openers * repeat
    inner = b"".join(openers) + b"0"
    if closed:
        inner += b"".join(_CLOSERS[opener] for opener in reversed(openers))
    payload = b'{"type":"x",' + extra + b'"a":' + inner + b"}"
    item = decode_event(seq, payload)
    assert isinstance(item, UpstreamEvent | ParseFailed)
    assert item.seq == seq
    if closed and len(openers) < MAX_FALLBACK_NESTING and extra != b'"x":"\\q",':
        assert isinstance(item, UpstreamEvent)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RecursionError("maximum recursion depth exceeded"), "JSON nested too deeply"),
        (MemoryError(), "too large to decode"),
        (OverflowError("boom"), "undecodable (OverflowError)"),
        (ValueError("Exceeds the limit (4300 digits): value"), "unusable JSON value (Exceeds"),
    ],
)
def test_whatever_the_decoders_raise_is_that_events_failure(
    monkeypatch: pytest.MonkeyPatch, error: Exception, reason: str
) -> None:
    def refuse(payload: bytes) -> object:
        raise error

    monkeypatch.setattr(event_decoder, "_decode", refuse)
    monkeypatch.setattr(event_decoder, "_decode_leniently", refuse)
    monkeypatch.setattr(event_decoder, "_decode_type", refuse)
    for payload in (
        b'{"type":"x"}',
        b'{"type":"response.completed","pad":"' + b"p" * 20_000 + b'"}',
    ):
        item = decode_event(9, payload)
        assert isinstance(item, ParseFailed)
        assert item.reason.startswith(reason)


def test_msgspec_refusing_anything_still_gets_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(payload: bytes) -> object:
        raise MemoryError

    monkeypatch.setattr(event_decoder, "_decode", exhausted)
    assert decode_event(1, b'{"type":"x","a":1}') == UpstreamEvent(
        seq=1, type="x", data={"type": "x", "a": 1}
    )


def test_an_error_outside_the_decode_calls_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bug (here: a RecursionError building the message) must surface, not pass for
    # a bad payload.
    def broken(**fields: object) -> object:
        raise RecursionError("a bug")

    monkeypatch.setattr(event_decoder, "UpstreamEvent", broken)
    with pytest.raises(RecursionError, match="a bug"):
        decode_event(1, b'{"type":"x"}')


def test_a_huge_integer_is_a_failure_not_a_crash() -> None:
    # msgspec: "Integer value out of range"; json: the interpreter's 4,300-digit limit.
    item = decode_event(5, b'{"type":"x","n":' + b"9" * 5_000 + b"}")
    assert isinstance(item, ParseFailed)
    assert item.reason.startswith("unusable JSON value")


# --- untyped error lines ---------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"error": {"code": 502, "message": "Provider returned error"}},
        {"error": {"code": "server_error", "message": "boom", "metadata": {"raw": "x"}}},
        {"error": {"code": 429, "message": "Rate limit exceeded"}, "user_id": "u1"},
        {"type": None, "error": {"code": 500, "message": "typed null"}},
        {"type": 3, "error": {"message": "typed number"}},
        {"error": "Provider returned error"},
    ],
)
def test_an_untyped_error_object_is_an_error_event(fields: dict[str, object]) -> None:
    item = decode_event(6, _payload(**fields))
    assert item == UpstreamEvent(seq=6, type="error", data=fields)


@pytest.mark.parametrize(
    "fields", [{"error": None}, {"error": 502}, {"error": ["x"]}, {"message": "no error member"}]
)
def test_other_untyped_objects_still_have_no_event_type(fields: dict[str, object]) -> None:
    item = decode_event(6, _payload(**fields))
    assert isinstance(item, ParseFailed) and item.reason == "no event type"


def test_an_untyped_error_line_fails_the_request_with_the_providers_message() -> None:
    mapper = ResponseMapper("r1")
    event = decode_event(0, b'{"error": {"code": 502, "message": "Provider returned error"}}')
    assert mapper.map(event) == []
    ending = mapper.finish(StreamEnded(request_id="r1", seq=1))[1]
    assert isinstance(ending, Failed)
    assert isinstance(ending.error, UpstreamResponseFailed)
    assert (ending.error.code, ending.error.detail) == (502, "Provider returned error")


# --- non-finite numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "check"),
    [
        (b"NaN", math.isnan),
        (b"Infinity", lambda value: value == math.inf),
        (b"-Infinity", lambda value: value == -math.inf),
        (b"1e999", lambda value: value == math.inf),
    ],
)
def test_non_finite_numbers_decode_through_the_fallback(
    literal: bytes, check: Callable[[float], bool]
) -> None:
    """What each decoder does with them, as of writing (the usage mapper must cope).

    msgspec refuses NaN and Infinity (not JSON) and 1e999 (out of range); the
    standard library accepts all of them, as nan and inf, so the event arrives
    with a non-finite float in it.
    """
    payload = b'{"type":"response.completed","response":{"usage":{"cost":' + literal + b"}}}"
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        msgspec.json.decode(payload)
    assert check(json.loads(payload)["response"]["usage"]["cost"])
    item = decode_event(8, payload)
    assert isinstance(item, UpstreamEvent) and item.type == "response.completed"
    assert check(item.data["response"]["usage"]["cost"])
    # A large terminal event (decoded without its output when it can be) too.
    large = (
        b'{"type":"response.completed","response":{"output":["'
        + b"x" * 20_000
        + b'"],"usage":{"cost":'
        + literal
        + b"}}}"
    )
    item = decode_event(9, large)
    assert isinstance(item, UpstreamEvent) and item.type == "response.completed"
    assert check(item.data["response"]["usage"]["cost"])


def test_a_non_finite_number_without_a_type_is_still_no_event() -> None:
    item = decode_event(1, b'{"cost": NaN}')
    assert isinstance(item, ParseFailed) and item.reason == "no event type"


def test_deep_nesting_that_msgspec_would_take_is_refused_before_decoding() -> None:
    """500 levels: msgspec decodes it, but freezing or storing it later would recurse."""
    item = "[" * 500 + "]" * 500
    payload = (
        '{"type":"response.output_item.done","item":{"type":"reasoning","x":' + item + "}}"
    ).encode()
    decoded = decode_event(4, payload)
    assert isinstance(decoded, ParseFailed)
    assert decoded.seq == 4
    assert "nested deeper than" in decoded.reason


def test_many_shallow_brackets_are_not_too_deep() -> None:
    parts = ",".join(["[1]"] * 500)
    payload = (
        '{"type":"response.output_item.done","item":{"type":"x","a":[' + parts + "]}}"
    ).encode()
    decoded = decode_event(0, payload)
    assert isinstance(decoded, UpstreamEvent)
