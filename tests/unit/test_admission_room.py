"""The waiting room: bounded places in front of a concurrency limit."""

from __future__ import annotations

import math

import pytest

from orpipe.actors.admission_room import WaitingRoom
from orpipe.engine.errors import AdmissionRejected, EngineClosed

INF = math.inf


def _room(max_in_flight: int = 2, maxsize: int = 3) -> WaitingRoom[str]:
    return WaitingRoom(max_in_flight=max_in_flight, maxsize=maxsize, retry_after_s=5.0)


def test_the_701st_concurrent_entry_is_rejected() -> None:
    room = _room(max_in_flight=200, maxsize=500)
    for i in range(700):
        room.enter(f"r{i}", f"r{i}", now=0.0, deadline=INF)
    with pytest.raises(AdmissionRejected) as info:
        room.enter("r700", "r700", now=0.0, deadline=INF)
    assert info.value.retry_after_s == 5.0
    admitted = [room.admit_next(0.0) for _ in range(201)]
    assert admitted[:200] == [f"r{i}" for i in range(200)]
    assert admitted[200] is None  # every slot is taken
    assert (room.in_flight, room.waiting) == (200, 500)
    with pytest.raises(AdmissionRejected):
        room.enter("late", "late", now=0.0, deadline=INF)
    stats = room.statistics()
    assert (stats.admitted_total, stats.rejected_total) == (200, 2)
    assert (stats.max_concurrent, stats.queue_maxsize) == (200, 500)


def test_free_slots_count_as_places() -> None:
    room = _room(max_in_flight=2, maxsize=3)
    room.enter("a", "a", now=0, deadline=INF)
    assert room.admit_next(0) == "a"  # one slot used, one free
    for key in "bcde":  # 3 places + 1 free slot
        room.enter(key, key, now=0, deadline=INF)
    with pytest.raises(AdmissionRejected):
        room.enter("f", "f", now=0, deadline=INF)
    room.release()  # a finishes: a slot frees, so one more place
    room.enter("f", "f", now=0, deadline=INF)


def test_zero_sized_room_admits_only_into_free_slots() -> None:
    room = _room(max_in_flight=1, maxsize=0)
    room.enter("a", "a", now=0, deadline=INF)
    with pytest.raises(AdmissionRejected):
        room.enter("b", "b", now=0, deadline=INF)
    assert room.admit_next(0) == "a"
    with pytest.raises(AdmissionRejected):
        room.enter("b", "b", now=0, deadline=INF)


def test_withdraw_frees_a_place() -> None:
    room = _room(max_in_flight=1, maxsize=1)
    room.enter("a", "A", now=0, deadline=INF)
    room.enter("b", "B", now=0, deadline=INF)
    with pytest.raises(AdmissionRejected):
        room.enter("c", "C", now=0, deadline=INF)
    assert room.withdraw("b") == "B"
    assert room.withdraw("b") is None
    assert room.withdraw("unknown") is None
    room.enter("c", "C", now=0, deadline=INF)
    assert room.statistics().withdrawn_total == 1


def test_withdraw_of_an_admitted_entry_is_none() -> None:
    room = _room()
    room.enter("a", "A", now=0, deadline=INF)
    assert room.admit_next(0) == "A"
    assert room.withdraw("a") is None
    assert room.in_flight == 1


def test_fifo_admission_and_queue_wait_statistics() -> None:
    room = _room(max_in_flight=1, maxsize=10)
    for i, key in enumerate("abcd"):
        room.enter(key, key, now=float(i), deadline=INF)
    admitted = []
    for now in (10.0, 11.0, 12.0, 13.0):
        item = room.admit_next(now)
        assert room.admit_next(now) is None  # the one slot is taken
        admitted.append(item)
        room.release()
    assert admitted == ["a", "b", "c", "d"]
    stats = room.statistics()
    assert stats.queue_wait_max_s == 10.0  # a: entered 0, admitted 10
    assert stats.queue_wait_total_s == 10.0 * 4
    assert stats.waiting == 0 and stats.in_flight == 0


def test_release_without_admission_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        _room().release()


def test_queue_deadline_sheds_oldest_first() -> None:
    room = _room(max_in_flight=1, maxsize=10)
    room.enter("a", "a", now=0.0, deadline=INF)
    room.enter("b", "b", now=1.0, deadline=INF)
    room.enter("c", "c", now=2.0, deadline=INF)
    assert room.next_expiry(queue_deadline_s=5.0) == 5.0
    assert room.next_expiry(queue_deadline_s=None) == INF
    assert room.expired(4.9, queue_deadline_s=5.0) == []
    assert room.expired(6.0, queue_deadline_s=5.0) == [("a", 6.0, True), ("b", 5.0, True)]
    assert room.waiting == 1
    assert room.next_expiry(queue_deadline_s=5.0) == 7.0
    assert room.statistics().shed_total == 2
    assert room.expired(100.0, queue_deadline_s=None) == []  # no queue deadline: kept


def test_request_deadline_expires_without_shedding() -> None:
    room = _room(max_in_flight=1, maxsize=10)
    room.enter("a", "a", now=0.0, deadline=3.0)
    room.enter("b", "b", now=1.0, deadline=4.0)
    assert room.next_expiry(queue_deadline_s=None) == 3.0
    assert room.next_expiry(queue_deadline_s=10.0) == 3.0
    assert room.expired(3.0, queue_deadline_s=None) == [("a", 3.0, False)]
    assert room.expired(10.0, queue_deadline_s=60.0) == [("b", 9.0, False)]
    assert room.statistics().shed_total == 0
    assert room.next_expiry(queue_deadline_s=1.0) == INF


def test_close_returns_the_waiting_and_refuses_more() -> None:
    room = _room(max_in_flight=1, maxsize=5)
    for key in "abc":
        room.enter(key, key.upper(), now=0, deadline=INF)
    assert room.admit_next(0) == "A"
    assert room.close() == ["B", "C"]
    assert room.closed and room.waiting == 0
    with pytest.raises(EngineClosed):
        room.enter("d", "D", now=0, deadline=INF)
    assert room.admit_next(0) is None
    room.release()  # the admitted one can still finish
    assert room.in_flight == 0
