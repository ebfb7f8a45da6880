"""The reorder window: in order for any permutation inside it, and it never waits forever."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpipe.actors.event_decoder import decode_event
from orpipe.actors.reorder_window import ReorderError, ReorderWindow, WindowOverflow
from orpipe.engine.pipeline_messages import ParsedBatch, ParseFailed, StreamEnded

_sizes = st.lists(st.integers(1, 6), max_size=25)


def _ranges(sizes: list[int]) -> list[tuple[int, int]]:
    out, seq = [], 0
    for size in sizes:
        out.append((seq, size))
        seq += size
    return out


@settings(max_examples=300, deadline=None)
@given(sizes=_sizes, data=st.data())
def test_any_permutation_inside_the_window_comes_out_in_order(
    sizes: list[int], data: st.DataObject
) -> None:
    items = [*_ranges(sizes), (sum(sizes), 0)]  # the ending: count 0 at the end seq
    biggest = max(sizes, default=1)
    capacity = data.draw(st.integers(biggest, sum(sizes) + 1), label="capacity")
    window: ReorderWindow[tuple[int, int]] = ReorderWindow(capacity)
    pending = list(items)
    offered: list[tuple[int, int]] = []
    released: list[tuple[int, int]] = []
    while pending:
        # Any item that fits the window may come next; the earliest always fits.
        fits = [it for it in pending if it[0] + it[1] - window.next_seq <= capacity]
        item = data.draw(st.sampled_from(fits))
        pending.remove(item)
        offered.append(item)
        out = window.offer(item[0], item[1], item)
        released.extend(out)
        # Released: always a prefix of the true order, ending where next_seq says.
        assert released == items[: len(released)]
        held = [it for it in offered if it not in released]
        assert window.held == len(held)
        assert window.held_events == sum(count for _, count in held)
    assert released == items
    assert window.held == 0
    assert window.held_events == 0
    assert window.next_seq == sum(sizes)


@st.composite
def _parsed_stream(draw: st.DrawFn) -> tuple[list[ParsedBatch | StreamEnded], int]:
    """Batches of decoded events for one request, some of which failed to parse."""
    payload = st.one_of(
        st.just(b'{"type":"response.output_text.delta","delta":"hi"}'),
        st.just(b'{"type":"response.in_progress"}'),
        st.binary(max_size=12),  # mostly garbage: ParseFailed
        st.just(b"[1,2]"),
        st.just(b'{"no":"type"}'),
    )
    batches: list[ParsedBatch | StreamEnded] = []
    seq = 0
    for payloads in draw(st.lists(st.lists(payload, min_size=1, max_size=5), max_size=12)):
        items = tuple(decode_event(seq + i, p) for i, p in enumerate(payloads))
        batches.append(ParsedBatch(request_id="r", first_seq=seq, items=items))
        seq += len(items)
    failure = draw(st.sampled_from([None, "cancelled"]))
    batches.append(StreamEnded(request_id="r", seq=seq, cancel_reason=failure))
    return batches, seq


@settings(max_examples=300, deadline=None)
@given(stream=_parsed_stream(), data=st.data())
def test_never_waits_forever_when_events_fail_to_parse(
    stream: tuple[list[ParsedBatch | StreamEnded], int], data: st.DataObject
) -> None:
    batches, total = stream
    order = data.draw(st.permutations(batches))
    window: ReorderWindow[ParsedBatch | StreamEnded] = ReorderWindow(max(total, 1))
    released: list[ParsedBatch | StreamEnded] = []
    for message in order:
        if isinstance(message, StreamEnded):
            released.extend(window.offer(message.seq, 0, message))
        else:
            released.extend(window.offer(message.first_seq, len(message.items), message))
    assert released == batches
    assert window.held == 0
    assert window.held_events == 0
    # Every sequence number came out, parsed or failed, exactly once and in order.
    seqs = [item.seq for m in released if isinstance(m, ParsedBatch) for item in m.items]
    assert seqs == list(range(total))
    assert isinstance(released[-1], StreamEnded)
    failed = [
        item.seq
        for m in released
        if isinstance(m, ParsedBatch)
        for item in m.items
        if isinstance(item, ParseFailed)
    ]
    assert failed == sorted(failed)  # failures keep their place in the order


def test_in_order_items_pass_straight_through() -> None:
    window: ReorderWindow[str] = ReorderWindow(4)
    assert window.offer(0, 2, "a") == ["a"]
    assert window.offer(2, 1, "b") == ["b"]
    assert window.offer(3, 0, "end") == ["end"]
    assert window.held == 0


def test_gap_is_held_then_released_in_order() -> None:
    window: ReorderWindow[str] = ReorderWindow(10)
    assert window.offer(3, 2, "c") == []
    assert window.offer(5, 0, "end") == []
    assert window.offer(1, 2, "b") == []
    assert (window.held, window.held_events) == (3, 4)
    assert window.offer(0, 1, "a") == ["a", "b", "c", "end"]
    assert (window.held, window.held_events, window.next_seq) == (0, 0, 5)


def test_duplicate_of_a_held_item_raises() -> None:
    window: ReorderWindow[str] = ReorderWindow(10)
    window.offer(2, 1, "x")
    with pytest.raises(ReorderError):
        window.offer(2, 1, "x again")
    assert (window.held, window.held_events, window.next_seq) == (1, 1, 0)


def test_already_released_item_raises() -> None:
    window: ReorderWindow[str] = ReorderWindow(10)
    window.offer(0, 3, "a")
    for seq in (0, 1, 2):
        with pytest.raises(ReorderError):
            window.offer(seq, 1, "again")
    assert window.next_seq == 3


def test_item_beyond_the_window_raises() -> None:
    window: ReorderWindow[str] = ReorderWindow(4)
    assert window.offer(2, 2, "fits exactly") == []
    with pytest.raises(WindowOverflow):
        window.offer(4, 1, "one past")
    with pytest.raises(WindowOverflow):
        window.offer(5, 0, "ending past the window")
    with pytest.raises(WindowOverflow):
        window.offer(0, 5, "too big from the start")
    assert issubclass(WindowOverflow, ReorderError)
    assert (window.held, window.held_events) == (1, 2)
    assert window.offer(0, 2, "a") == ["a", "fits exactly"]
    # The window slides: what overflowed before fits now.
    assert window.offer(4, 4, "b") == ["b"]


def test_overlapping_item_raises() -> None:
    window: ReorderWindow[str] = ReorderWindow(10)
    window.offer(5, 3, "covers 5..7")
    with pytest.raises(ReorderError):
        window.offer(6, 1, "inside 5..7")  # accepted today; never released
