"""The SSE framer (contract §1.8): any split of a byte stream gives the same events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.sse_framer import EventTooLarge, SseFramer

LIMIT = 1 << 20

# One line of an event's data: any text without line breaks (the framer only
# splits on LF; CR is stripped only at the end of a line), weighted towards
# multi-byte UTF-8 so chunk boundaries fall inside characters.
_MULTIBYTE = st.sampled_from(["é", "ß", "€", "中", "😀", "𝄞", "\u2028", "\x85", " ", ":"])
_line_text = st.text(
    alphabet=st.one_of(
        _MULTIBYTE,
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    ),
    max_size=24,
)
_noise = st.sampled_from(
    [
        b": OPENROUTER PROCESSING",
        b":",
        b"event: response.output_text.delta",
        b"event:message",
        b"id: 42",
        b"id:",
        b"retry: 1000",
        b"foo: bar",
    ]
)
_newline = st.sampled_from([b"\n", b"\r\n"])


@st.composite
def _event(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """The lines of one event (without line ends) and its expected payload."""
    data_lines = draw(st.lists(_line_text, min_size=1, max_size=4))
    payload = "\n".join(data_lines).encode()
    if payload == b"[DONE]":
        payload = data_lines[0].encode() + b"x"
        data_lines = [data_lines[0] + "x"]
    lines: list[bytes] = []
    for text in data_lines:
        lines.extend(draw(st.lists(_noise, max_size=2)))
        raw = text.encode()
        # "data:value" only when the value has no leading space to lose.
        if not raw.startswith(b" ") and draw(st.booleans()):
            lines.append(b"data:" + raw)
        else:
            lines.append(b"data: " + raw)
    lines.extend(draw(st.lists(_noise, max_size=2)))
    return lines, payload


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid SSE body ending with ``data: [DONE]``, and its payloads."""
    events = draw(st.lists(_event(), max_size=8))
    body = bytearray()
    if draw(st.booleans()):
        body += b": OPENROUTER PROCESSING" + draw(_newline) + draw(_newline)
    expected: list[bytes] = []
    for lines, payload in events:
        for line in lines:
            body += line + draw(_newline)
        body += draw(_newline)  # the blank line that dispatches
        for _ in range(draw(st.integers(0, 1))):
            body += draw(_newline)  # extra blank lines dispatch nothing
        expected.append(payload)
    body += b"data: [DONE]" + draw(_newline) + draw(_newline)
    if draw(st.booleans()):
        # Anything after [DONE] is ignored.
        body += b"data: after-done" + draw(_newline) + draw(_newline)
    return bytes(body), expected


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks, start = [], 0
    for point in [*points, len(body)]:
        chunks.append(body[start:point])
        start = point
    return chunks


def _feed_all(chunks: list[bytes], limit: int = LIMIT) -> tuple[list[bytes], SseFramer]:
    framer = SseFramer(limit)
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    out.extend(framer.close())
    return out, framer


@settings(max_examples=300, deadline=None)
@given(stream=_stream(), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_events(
    stream: tuple[bytes, list[bytes]], cuts: list[int]
) -> None:
    body, expected = stream
    whole, whole_framer = _feed_all([body])
    split, split_framer = _feed_all(_split(body, cuts))
    assert whole == expected
    assert split == expected
    assert whole_framer.done and split_framer.done


@settings(max_examples=100, deadline=None)
@given(stream=_stream())
def test_byte_by_byte_feed(stream: tuple[bytes, list[bytes]]) -> None:
    body, expected = stream
    out, framer = _feed_all([body[i : i + 1] for i in range(len(body))])
    assert out == expected
    assert framer.done


@settings(max_examples=60, deadline=None)
@given(
    text=_line_text.filter(bool),
    extra=st.integers(min_value=0, max_value=2_000),
    newline=_newline,
    spaced=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_large_events_come_out_whole_whatever_the_split(
    text: str, extra: int, newline: bytes, spaced: bool, cuts: list[int]
) -> None:
    # Values from 16 KB on are copied out another way (a memoryview): same bytes.
    big = (text * (20_000 // len(text.encode()) + 1 + extra)).encode()
    assert len(big) >= 20_000
    if big.startswith(b" "):
        spaced = True  # "data:" + a leading space would lose it
    field = b"data: " if spaced else b"data:"
    body = (
        b"data: small" + newline + newline
        + field + big + newline + b"data: tail" + newline + newline
        + b"data: [DONE]" + newline + newline
    )  # fmt: skip
    out, framer = _feed_all(_split(body, cuts))
    assert out == [b"small", big + b"\ntail"]
    assert framer.done


def test_multiline_data_is_joined_with_lf() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: one\r\ndata:two\r\ndata:  three\r\n\r\n") == [b"one\ntwo\n three"]


def test_fields_and_comments_carry_nothing() -> None:
    framer = SseFramer(LIMIT)
    body = b": OPENROUTER PROCESSING\n\nevent: x\nid: 1\nretry: 5\n\ndata: {}\n\n"
    assert framer.feed(body) == [b"{}"]


def test_empty_data_line_is_an_empty_event() -> None:
    # WHATWG: a data buffer of "\n" is not empty, so an event with data "" is dispatched.
    assert SseFramer(LIMIT).feed(b"data:\n\n") == [b""]


def test_done_stops_the_stream() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\ndata: [DONE]\n\ndata: b\n\n") == [b"a"]
    assert framer.done
    assert framer.feed(b"data: c\n\n") == []
    assert framer.close() == []


def test_done_without_space_and_crlf() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data:[DONE]\r\n\r\n") == []
    assert framer.done


def test_done_split_across_chunks() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\ndata: [DO") == [b"a"]
    assert not framer.done
    assert framer.feed(b"NE]\r") == []
    assert framer.feed(b"\n\n") == []
    assert framer.done


def test_done_as_unterminated_last_line() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\ndata: [DONE]") == [b"a"]
    assert framer.close() == []
    assert framer.done


def test_close_delivers_an_unterminated_last_event() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\ndata: b\ndata: c") == [b"a"]
    assert framer.close() == [b"b\nc"]
    assert not framer.done


def test_done_inside_multiline_data_is_not_the_sentinel() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: [DONE]\ndata: more\n\n") == [b"[DONE]\nmore"]
    assert not framer.done


def test_bytes_after_done_in_the_same_chunk_are_ignored() -> None:
    framer = SseFramer(1024)
    assert framer.feed(b"data: a\n\ndata: [DONE]\n\n" + b"x" * 5000) == [b"a"]
    assert framer.done


def test_bytes_after_done_in_a_later_chunk_are_ignored() -> None:
    framer = SseFramer(1024)
    assert framer.feed(b"data: a\n\ndata: [DONE]\n\n") == [b"a"]
    assert framer.feed(b"x" * 5000) == []


# --- the memory bound -------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(64, 4096),
    chunk_size=st.integers(1, 512),
    line_size=st.integers(1, 300),
    partial=st.booleans(),
)
def test_oversized_event_raises_without_buffering_much_more(
    limit: int, chunk_size: int, line_size: int, partial: bool
) -> None:
    """An event that never ends is refused once it passes the limit.

    ``partial``: one endless line (no LF ever); otherwise many complete
    ``data:`` lines that never reach the blank line.
    """
    framer = SseFramer(limit)
    if partial:
        stream = b"data: " + b"y" * (limit * 4)
    else:
        stream = (b"data: " + b"z" * line_size + b"\n") * (limit * 4 // line_size + 4)
    fed = 0
    with pytest.raises(EventTooLarge) as info:
        for start in range(0, len(stream), chunk_size):
            chunk = stream[start : start + chunk_size]
            fed += len(chunk)
            assert framer.feed(chunk) == []
    assert info.value.limit == limit
    assert info.value.size > limit
    # What it held when it refused: no more than one chunk past the limit.
    assert info.value.size <= limit + chunk_size + 1
    if partial:
        # One endless line: every byte fed is held, so refusal is that early.
        assert fed <= limit + chunk_size


def test_many_small_events_are_not_limited_in_total() -> None:
    framer = SseFramer(1024)
    out: list[bytes] = []
    for _ in range(100):
        out.extend(framer.feed(b"data: " + b"q" * 500 + b"\n\n"))
    assert len(out) == 100


def test_event_just_under_the_limit_passes() -> None:
    framer = SseFramer(1024)
    payload = b"p" * 1000
    assert framer.feed(b"data: " + payload + b"\n\n") == [payload]


def test_event_over_the_limit_in_one_chunk_raises() -> None:
    with pytest.raises(EventTooLarge):
        SseFramer(1024).feed(b"data: " + b"p" * 2000 + b"\n\n")
