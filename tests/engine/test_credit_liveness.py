"""Credits cannot deadlock: text held by the batcher never stops the fetcher.

Whatever the streaming settings a user may choose (``update_char_limit`` 10 to 500,
``idle_flush_ms`` 0 to 2000, any ``request_window_events``).

The bound, stated: with a consumer that keeps reading and an upstream that
sends the whole stream at once, a request ends without waiting on any timer.
The engine runs on trio's autojump ``MockClock``, where time moves only when
every task is blocked; so a request that had to wait for the idle flush (or
for nothing, forever) ends late in virtual time, or not at all, and one that
flows ends at the very instant it started. Before the fix, one-character
deltas with ``idle_flush_ms=0`` or ``update_char_limit=500`` hung for ever,
and with the defaults every window's worth waited 250 ms for the idle flush.
"""

from __future__ import annotations

import itertools
import json

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orpipe.actors import open_engine
from orpipe.engine import ChatRequest, Completed, EngineConfig, EnginePorts, TextDelta
from tests.actors.fakes import DONE, Attempt, FakeTransport

_PIECES = st.text(
    alphabet=st.sampled_from(["a", "é", "中", "😀", " ", "\n"]), min_size=1, max_size=8
)


def _halves(piece: str) -> list[str]:
    """A piece as deltas, each astral character split between two of them (two lone halves)."""
    deltas, current = [], ""
    for char in piece:
        if ord(char) > 0xFFFF:
            units = char.encode("utf-16-le")
            high = units[:2].decode("utf-16-le", "surrogatepass")
            low = units[2:].decode("utf-16-le", "surrogatepass")
            deltas.append(current + high)
            current = low
        else:
            current += char
    return [*deltas, current]


def _body(deltas: list[str], *, split_emoji: bool) -> bytes:
    """The stream: created, one delta event per piece, completed, [DONE].

    With ``split_emoji`` every astral character is sent as two lone ``\\u``
    escapes in two consecutive deltas, as providers do.
    """
    out = bytearray(b'data: {"type":"response.created","response":{"id":"resp_1"}}\n\n')
    for piece in deltas:
        for text in _halves(piece) if split_emoji else [piece]:
            raw = json.dumps({"type": "response.output_text.delta", "delta": text})
            out += b"data: " + raw.encode() + b"\n\n"
    completed = {"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}}
    out += b"data: " + json.dumps(completed).encode() + b"\n\n"
    out += DONE
    return bytes(out)


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    deltas=st.lists(_PIECES, min_size=1, max_size=700),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=40),
    char_limit=st.integers(10, 500),
    idle_ms=st.one_of(st.just(0.0), st.floats(1, 2000)),
    window=st.one_of(st.integers(1, 16), st.integers(17, 1024)),
    split_emoji=st.booleans(),
)
def test_every_request_ends_with_the_exact_text_without_waiting_on_a_timer(
    deltas: list[str],
    cuts: list[int],
    char_limit: int,
    idle_ms: float,
    window: int,
    split_emoji: bool,
) -> None:
    chunks = _split(_body(deltas, split_emoji=split_emoji), cuts)
    endings: list[object] = []

    async def main() -> tuple[str, float]:
        config = EngineConfig(base_url="http://upstream.invalid", request_window_events=window)
        transport = FakeTransport(
            [Attempt(headers={"content-type": "text/event-stream"}, chunks=chunks)]
        )
        async with open_engine(config, EnginePorts(transport=transport)) as engine:
            request = ChatRequest(
                model="m",
                input=({"type": "message", "role": "user", "content": "hi"},),
                update_char_limit=char_limit,
                idle_flush_ms=idle_ms,
            )
            started = trio.current_time()
            text = ""
            stream = engine.submit(request)
            with trio.fail_after(60):  # virtual seconds: only a true hang gets here
                async for event in stream:
                    if isinstance(event, TextDelta):
                        text += event.text
            endings.append(stream.ending)
            return text, trio.current_time() - started

    text, elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert text == "".join(deltas)
    assert isinstance(endings[0], Completed)
    assert elapsed == 0.0, f"the request waited {elapsed:.3f} s on a timer"


def test_one_character_deltas_with_the_idle_flush_off_end_at_once() -> None:
    """The issue's reproduction: idle_flush_ms=0 (off) and a burst of one-character deltas."""
    deltas = ["x"] * 5_000
    chunks = _split(_body(deltas, split_emoji=False), list(range(0, 400_000, 65_536)))

    async def main() -> None:
        config = EngineConfig(base_url="http://upstream.invalid")
        transport = FakeTransport([])
        async with open_engine(config, EnginePorts(transport=transport)) as engine:
            for char_limit, idle_ms in ((20, 0.0), (500, 250.0), (20, 250.0)):
                request = ChatRequest(
                    model="m",
                    input=({"type": "message", "role": "user", "content": "hi"},),
                    update_char_limit=char_limit,
                    idle_flush_ms=idle_ms,
                )
                transport.attempts.append(Attempt(chunks=chunks))
                started = trio.current_time()
                stream = engine.submit(request)
                text = ""
                with trio.fail_after(60):
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            text += event.text
                assert text == "x" * 5_000, (char_limit, idle_ms, len(text))
                assert isinstance(stream.ending, Completed)
                assert trio.current_time() == started, (char_limit, idle_ms)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
