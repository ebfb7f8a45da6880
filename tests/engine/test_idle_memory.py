"""An idle engine keeps nothing of the answers it finished.

A response's last events are its largest: ``output_text.done``,
``content_part.done``, ``output_item.done`` and ``response.completed`` each
repeat the whole answer. Every long-lived stage must let go of them once it
has passed them on; a stage that waits for its next message while still
holding the last one pins them for as long as the engine stays quiet.
Measured with tracemalloc (Python allocations, not wall time or RSS). Trio's
own allocations are left out: its deadline heap keeps the entries of
finished timeouts (one per socket read) until a lazy clean-up, which is
bounded, trio's business, and not the answer.
"""

from __future__ import annotations

import gc
import tracemalloc

import trio
import trio.testing

from orpipe.engine import Completed, Engine, TextDelta
from tests.engine.support import mock_server, request, running_engine, wait_until


async def _read(engine: Engine, tokens: int) -> tuple[object, int]:
    """Read one answer keeping only its length (the test must not hold it either)."""
    chars = 0
    async with engine.submit(request("text", tokens=tokens)) as stream:
        while batch := await stream.receive_batch():
            chars += sum(len(e.text) for e in batch if isinstance(e, TextDelta))
    return stream.ending, chars


async def test_an_idle_engine_keeps_nothing_of_a_long_answer() -> None:
    async with mock_server() as server, running_engine(server, parser_workers=3) as engine:
        await _read(engine, 200)  # warm up: connections, pools, first-use caches
        gc.collect()
        tracemalloc.start()
        try:
            ending, chars = await _read(engine, 12_000)
            await wait_until(lambda: engine.statistics().flow.open_requests == 0)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            peak = tracemalloc.get_traced_memory()[1]
            kept = tracemalloc.take_snapshot().filter_traces(_NOT_TRIO)
        finally:
            tracemalloc.stop()
    assert isinstance(ending, Completed)
    assert chars > 30_000
    # The answer did pass through (its terminal events alone are several copies)...
    assert peak > 2 * chars
    # ...and none of it stayed behind once the engine went quiet. What is left is
    # bookkeeping (pools, timers), about a fifth of the answer's length here; stages
    # that pinned their last messages kept seven times its length.
    kept_bytes = sum(stat.size for stat in kept.statistics("filename"))
    assert kept_bytes < chars // 2, f"{kept_bytes:,} bytes kept for a {chars:,}-char answer"


_NOT_TRIO = [tracemalloc.Filter(inclusive=False, filename_pattern="*/trio/*")]
