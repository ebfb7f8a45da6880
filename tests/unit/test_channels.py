"""The named channel factory: bounds, summed per-request channels, the sampled peak."""

from __future__ import annotations

import gc

import pytest

from orpipe.engine.channels import ChannelRegistry


def test_a_channel_needs_a_whole_non_negative_size() -> None:
    registry = ChannelRegistry()
    with pytest.raises(ValueError, match=r"'fetch\.out': size must be a whole number"):
        registry.open("fetch.out", -1)


def test_channels_with_one_name_are_summed_and_the_peak_is_the_highest_sample() -> None:
    registry = ChannelRegistry()
    send_a, receive_a = registry.open("request.outbox", 4)
    send_b, receive_b = registry.open("request.outbox", 4)
    for n in range(3):
        send_a.send_nowait(n)
    send_b.send_nowait(9)
    first = registry.statistics()["request.outbox"]
    assert (first.current_buffer_used, first.max_buffer_size, first.instances) == (4, 8, 2)
    assert first.peak_buffer_used == 4

    for _ in range(3):
        receive_a.receive_nowait()
    later = registry.statistics()["request.outbox"]
    assert later.current_buffer_used == 1
    assert later.peak_buffer_used == 4  # the high-water mark stays

    # A channel that was filled and emptied between samples is not seen: sampled.
    for n in range(4):
        send_a.send_nowait(n)
    for _ in range(4):
        receive_a.receive_nowait()
    assert registry.statistics()["request.outbox"].peak_buffer_used == 4
    del send_b, receive_b


def test_finished_channels_drop_out_and_the_bound_falls_back_to_the_size() -> None:
    registry = ChannelRegistry()
    send, receive = registry.open("request.turns", 1)
    send.close()
    receive.close()
    del send, receive
    gc.collect()
    stats = registry.statistics()["request.turns"]
    assert (stats.instances, stats.current_buffer_used, stats.max_buffer_size) == (0, 0, 1)
