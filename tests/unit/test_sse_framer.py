"""The SSE framer (contract §1.8, WHATWG event-stream parsing): any split gives the same events."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpipe.actors.sse_framer import EventTooLarge, SseFramer

LIMIT = 1 << 20
BOM = b"\xef\xbb\xbf"

# One line of an event's data: any text without line breaks (CR and LF both end
# a line), weighted towards multi-byte UTF-8 so chunk boundaries fall inside
# characters, and towards the bytes the framer looks at.
_MULTIBYTE = st.sampled_from(["é", "ß", "€", "中", "😀", "𝄞", "\u2028", "\x85", "\ufeff", " ", ":"])
_line_text = st.text(
    alphabet=st.one_of(
        _MULTIBYTE,
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    ),
    max_size=24,
)
_data_text = st.one_of(_line_text, st.sampled_from(["", "[DONE]", " [DONE]", "[DONE] "]))
# Lines that carry no data: comments, tolerated fields, unknown and look-alike fields.
_noise = st.sampled_from(
    [
        b": OPENROUTER PROCESSING",
        b":",
        b":data: not data",
        b"event: response.output_text.delta",
        b"event:message",
        b"event",
        b"id: 42",
        b"id:",
        b"id",
        b"retry: 1000",
        b"retry",
        b"foo: bar",
        b"Data: capitalised",
        b"data : space before the colon",
        b"datum: x",
        b"dat",
        b"data\xef\xbb\xbf: a BOM inside the field name",
    ]
)
_newline = st.sampled_from([b"\n", b"\r\n", b"\r"])


@dataclass
class _Event:
    lines: list[bytes]  # without line ends
    payload: bytes | None  # None: nothing is dispatched


@st.composite
def _event(draw: st.DrawFn) -> _Event:
    """The lines of one event and its expected payload (None if it carries no data)."""
    data_lines = draw(st.lists(_data_text, max_size=4))
    if data_lines == ["[DONE]"]:
        data_lines = ["[DONE]x"]  # the sentinel has its own tests
    lines: list[bytes] = []
    for text in data_lines:
        lines.extend(draw(st.lists(_noise, max_size=2)))
        raw = text.encode()
        if not raw:
            lines.append(draw(st.sampled_from([b"data", b"data:", b"data: "])))
        elif not raw.startswith(b" ") and draw(st.booleans()):
            lines.append(b"data:" + raw)  # no space to lose
        else:
            lines.append(b"data: " + raw)
    lines.extend(draw(st.lists(_noise, max_size=2)))
    payload = "\n".join(data_lines).encode()
    return _Event(lines, payload if any(data_lines) else None)


@dataclass
class _Stream:
    body: bytes
    expected: list[bytes]
    done: bool
    boundaries: list[int]  # offsets where an event (with its blank line) ends


class _Writer:
    """Serialises lines with any line ends, never writing a CR then an LF-ended blank
    line: that is a CRLF, one line end, and no serialiser can say otherwise."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.body = bytearray()

    def line(self, line: bytes, *, end: bool = True) -> None:
        self.body += line
        if not end:
            return
        newline = self.draw(_newline)
        if not line and self.body.endswith(b"\r") and newline == b"\n":
            newline = self.draw(st.sampled_from([b"\r", b"\r\n"]))
        self.body += newline


@st.composite
def _stream(draw: st.DrawFn) -> _Stream:
    """A valid SSE body, its payloads, and whether it ends with ``data: [DONE]``."""
    events = draw(st.lists(_event(), max_size=8))
    ending = draw(st.sampled_from(["done", "done+garbage", "eof", "eof-unterminated"]))
    out = _Writer(draw)
    if draw(st.booleans()):
        out.body += BOM
    if draw(st.booleans()):
        out.line(b": OPENROUTER PROCESSING")
        out.line(b"")
    expected: list[bytes] = []
    boundaries: list[int] = [len(out.body)]
    for index, event in enumerate(events):
        last = index == len(events) - 1
        for number, line in enumerate(event.lines):
            unterminated = ending == "eof-unterminated" and last and number == len(event.lines) - 1
            out.line(line, end=not (unterminated and draw(st.booleans())))
        if not (last and ending == "eof-unterminated"):
            out.line(b"")  # the blank line that dispatches
            for _ in range(draw(st.integers(0, 1))):
                out.line(b"")  # extra blank lines dispatch nothing
            boundaries.append(len(out.body))
        if event.payload is not None:
            expected.append(event.payload)
    if ending.startswith("done"):
        out.line(draw(st.sampled_from([b"data: [DONE]", b"data:[DONE]"])))
        out.line(b"")
        boundaries.append(len(out.body))
        if ending == "done+garbage":
            out.body += b"data: after-done\n\n\xff\xfe garbage"  # ignored
    return _Stream(bytes(out.body), expected, ending.startswith("done"), boundaries)


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


@settings(max_examples=500, deadline=None)
@given(stream=_stream(), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_gives_the_same_events(stream: _Stream, cuts: list[int]) -> None:
    whole, whole_framer = _feed_all([stream.body])
    split, split_framer = _feed_all(_split(stream.body, cuts))
    assert whole == stream.expected
    assert split == whole
    assert whole_framer.done is split_framer.done is stream.done


@settings(max_examples=150, deadline=None)
@given(stream=_stream())
def test_byte_by_byte_feed(stream: _Stream) -> None:
    out, framer = _feed_all([stream.body[i : i + 1] for i in range(len(stream.body))])
    assert out == stream.expected
    assert framer.done is stream.done


@settings(max_examples=300, deadline=None)
@given(stream=_stream(), data=st.data())
def test_event_aligned_chunks_take_the_fast_path_to_the_same_events(
    stream: _Stream, data: st.DataObject
) -> None:
    # Chunks of whole events (what a server writes per flush) are the fast path's case.
    cuts = data.draw(st.lists(st.sampled_from(stream.boundaries), max_size=12))
    out, framer = _feed_all(_split(stream.body, cuts))
    assert out == stream.expected
    assert framer.done is stream.done


@settings(max_examples=500, deadline=None)
@given(
    value=st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"", b"[DONE]", b"x\r", b"a\rdata: b", b"a\rb", b"\r", b"[DONE]\r"]),
    ),
    prelude=st.sampled_from([b"data: warm\n\n", b": ping\n\n", b"data: warm\r\n\r\n"]),
)
def test_one_event_chunk_is_framed_as_the_general_path_frames_it(
    value: bytes, prelude: bytes
) -> None:
    chunk = b"data: " + value + b"\n\n"
    fast = SseFramer(LIMIT)
    fast.feed(prelude)  # past the start of the stream, nothing pending
    slow = SseFramer(LIMIT)
    slow.feed(prelude)
    assert fast.feed(chunk) == [out for byte in chunk for out in slow.feed(bytes([byte]))]
    assert fast.done is slow.done
    assert fast.close() == slow.close()


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


# --- the rules, one by one -------------------------------------------------


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_each_line_end_alone(newline: bytes) -> None:
    body = b"data: a" + newline + b"data: b" + newline + newline + b"data: c" + newline + newline
    assert SseFramer(LIMIT).feed(body) == [b"a\nb", b"c"]


def test_mixed_line_ends() -> None:
    assert SseFramer(LIMIT).feed(b"data: a\rdata: b\r\ndata: c\n\r\n") == [b"a\nb\nc"]
    # CR then LF is one line end; LF then CR is two (here: a blank line).
    assert SseFramer(LIMIT).feed(b"data: a\n\rdata: b\r\n\n") == [b"a", b"b"]


def test_cr_ending_a_chunk_and_lf_starting_the_next_are_one_line_end() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\r") == []
    # Were the LF a line end of its own, it would be a blank line and dispatch "a".
    assert framer.feed(b"\ndata: b\n\n") == [b"a\nb"]


def test_an_empty_chunk_between_cr_and_lf_changes_nothing() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\r") == []
    assert framer.feed(b"") == []
    assert framer.feed(b"\ndata: b\n\n") == [b"a\nb"]


def test_a_lone_cr_at_the_end_of_a_chunk_is_a_complete_line_end() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\r") == []
    # The next chunk does not start with LF: the CR ended "data: a" on its own.
    assert framer.feed(b"data: b\r") == []
    assert framer.feed(b"\r") == [b"a\nb"]  # this CR is a blank line: dispatched at once
    assert framer.feed(b"\n") == []  # the LF of that blank line's CRLF, nothing more
    assert framer.feed(b"data: c\r\r") == [b"c"]
    assert framer.close() == []


def test_cr_at_the_very_end_of_the_body() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\r") == []
    assert framer.close() == [b"a"]  # lenient: the event had no blank line


def test_one_leading_bom_is_dropped() -> None:
    assert SseFramer(LIMIT).feed(BOM + b"data: a\n\n") == [b"a"]
    # Without the BOM removed the first line would be a field named "\ufeffdata".
    assert SseFramer(LIMIT).feed(BOM + BOM + b"data: a\n\ndata: b\n\n") == [b"b"]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_bom_split_across_chunks_is_dropped(cut: int) -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(BOM[:cut]) == []
    assert framer.feed(BOM[cut:]) == []
    assert framer.feed(b"data: a\n\n") == [b"a"]


def test_a_bom_byte_by_byte() -> None:
    framer = SseFramer(LIMIT)
    assert [framer.feed(bytes([byte])) for byte in BOM + b"data: a\n\n"][-1] == [b"a"]


def test_a_bom_later_in_the_stream_is_kept() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\n") == [b"a"]
    assert framer.feed(BOM + b"data: b\n\n") == []  # field "\ufeffdata": not data
    assert framer.feed(b"data: " + BOM + b"c\n\n") == [BOM + b"c"]  # in a value: data


def test_an_incomplete_bom_is_not_a_bom() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(BOM[:2]) == []
    assert framer.feed(b"data: a\n\ndata: b\n\n") == [b"b"]  # first field "\xef\xbbdata"
    only_part = SseFramer(LIMIT)
    assert only_part.feed(BOM[:2]) == []
    assert only_part.close() == []


def test_comments_are_skipped() -> None:
    body = b": OPENROUTER PROCESSING\n:\n:data: x\ndata: a\n: between\ndata: b\n\n"
    assert SseFramer(LIMIT).feed(body) == [b"a\nb"]


def test_event_id_and_retry_fields_are_tolerated() -> None:
    body = b"event: x\nid: 1\nretry: 5\ndata: {}\nevent\nid\nretry: nonsense\n\n"
    assert SseFramer(LIMIT).feed(body) == [b"{}"]


def test_look_alike_fields_are_not_data() -> None:
    body = b"Data: a\ndata : b\ndatum: c\ndat\ndata: d\n\n"
    assert SseFramer(LIMIT).feed(body) == [b"d"]


def test_a_field_without_a_colon_has_an_empty_value() -> None:
    assert SseFramer(LIMIT).feed(b"data\ndata: x\ndata\n\n") == [b"\nx\n"]


def test_exactly_one_leading_space_is_removed() -> None:
    body = b"data:a\ndata: b\ndata:  c\ndata:\td\ndata: e \n\n"
    assert SseFramer(LIMIT).feed(body) == [b"a\nb\n c\n\td\ne "]
    assert SseFramer(LIMIT).feed(b"data:  x\n\n") == [b" x"]  # (one data line: fast path)


def test_multiline_data_is_joined_with_lf() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: one\r\ndata:two\r\ndata:  three\r\n\r\n") == [b"one\ntwo\n three"]


@pytest.mark.parametrize(
    "body",
    [
        b"data:\n\n",
        b"data: \n\n",  # (the fast path's shape)
        b"data\n\n",
        b"data:\r\n\r\n",
        b"data:\ndata: \ndata\n\n",
        b"event: ping\n\n",
        b"event: ping\nid: 7\nretry: 10\n\n",
        b": keep-alive\n\n",
        b"\n\n\n",
    ],
)
def test_an_event_without_data_is_not_dispatched(body: bytes) -> None:
    # A heartbeat "data:" line would otherwise reach the parser as an empty, broken
    # event. (WHATWG dispatches an empty message here; the engine has no use for one.)
    framer = SseFramer(LIMIT)
    framer.feed(b"data: warm\n\n")
    assert framer.feed(body) == []
    assert framer.feed(b"data: next\n\n") == [b"next"]
    assert framer.close() == []


def test_an_unterminated_event_without_data_is_not_delivered_at_close() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\nevent: x\ndata:") == [b"a"]
    assert framer.close() == []


def test_events_come_out_in_arrival_order_whatever_their_ids() -> None:
    body = b"id: 2\ndata: second\n\nid: 1\ndata: first\n\n"
    assert SseFramer(LIMIT).feed(body) == [b"second", b"first"]


def test_fields_and_comments_carry_nothing() -> None:
    framer = SseFramer(LIMIT)
    body = b": OPENROUTER PROCESSING\n\nevent: x\nid: 1\nretry: 5\n\ndata: {}\n\n"
    assert framer.feed(body) == [b"{}"]


def test_done_stops_the_stream() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data: a\n\ndata: [DONE]\n\ndata: b\n\n") == [b"a"]
    assert framer.done
    assert framer.feed(b"data: c\n\n") == []
    assert framer.close() == []


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_done_without_space_and_any_line_end(newline: bytes) -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(b"data:[DONE]" + newline + newline + b"data: x" + newline) == []
    assert framer.done
    assert framer.close() == []


def test_done_after_a_bom() -> None:
    framer = SseFramer(LIMIT)
    assert framer.feed(BOM + b"data: [DONE]\n\n") == []
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
    newline=_newline,
)
def test_oversized_event_raises_without_buffering_much_more(
    limit: int, chunk_size: int, line_size: int, partial: bool, newline: bytes
) -> None:
    """An event that never ends is refused once it passes the limit.

    ``partial``: one endless line (no LF ever); otherwise many complete
    ``data:`` lines that never reach the blank line.
    """
    framer = SseFramer(limit)
    if partial:
        stream = b"data: " + b"y" * (limit * 4)
    else:
        stream = (b"data: " + b"z" * line_size + newline) * (limit * 4 // line_size + 4)
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
