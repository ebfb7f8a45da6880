"""The ``chaos`` part of a research run: artifacts stored through services that get hurt.

``chaos_store`` starts the run's own PostgreSQL and Redis (``bench.services``),
opens the artifact store the Open WebUI pipe uses in production (codec →
Redis write-behind + its flusher → SQL), and yields it with a ``Chaos``
driver. ``Chaos.run`` follows the scenario's ``[chaos]`` times: SIGKILL
Redis, start it again on the same port and append-only file; SIGSTOP every
PostgreSQL process, SIGCONT them. Every event is noted with its run time.

At the end ``Chaos.settle`` brings both services back if the schedule left
them down, waits (bounded) until the engine's persister and the Redis queue
are empty, and ``count_rows`` reads how many artifacts really are in SQL:
the run's report compares that with what the engine accepted.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.redis_writebehind import RedisWriteBehind
from orpipe.adapters.store.rows import CodecStore
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.bench.persistence import sql_row_count
from orpipe.bench.services import PgServer, RedisServer, pg_server, redis_server
from orpipe.engine import Engine

__all__ = ["Chaos", "chaos_store"]

#: How long the end of a run waits for the persister and the Redis queue to empty.
_SETTLE_S = 60.0


@dataclass
class Chaos:
    pg: PgServer
    redis: RedisServer
    rows: RedisWriteBehind
    sql: SqlRowStore
    times: Mapping[str, float]
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Events that would undo what the schedule left hurt (``settle`` runs them).
    pending: set[str] = field(default_factory=set)

    async def run(self, now: Callable[[], float], t0: float, time_scale: float) -> None:
        steps = sorted((at * time_scale, name) for name, at in self.times.items())
        for at, name in steps:
            await trio.sleep_until(t0 + at)
            await self._do(name)
            self.events.append({"t_s": round(now(), 3), "event": name.removesuffix("_s")})

    async def _do(self, name: str) -> None:
        """Run one scheduled event; what it leaves hurt is undone by ``settle``."""
        actions: Mapping[str, tuple[Callable[[], None], str | None]] = {
            "redis_kill_s": (self.redis.kill, "redis_restart_s"),
            "redis_restart_s": (self.redis.start, None),
            "postgres_pause_s": (self.pg.pause, "postgres_resume_s"),
            "postgres_resume_s": (self.pg.resume, None),
        }
        action, remedy = actions[name]
        await trio.to_thread.run_sync(action)
        # The remedy of the opposite event is no longer pending once it ran.
        self.pending.discard(name)
        if remedy is not None:
            self.pending.add(remedy)

    async def settle(self, engine: Engine) -> dict[str, Any]:
        """Services back up; wait for the persister and the queue to drain (bounded)."""
        for remedy in sorted(self.pending):  # sorted: PostgreSQL resumes before Redis restarts
            await self._do(remedy)
        drained = False
        with trio.move_on_after(_SETTLE_S):
            while True:
                persister = engine.statistics().actors.get("persister", {})
                if persister.get("backlog", 0) == 0 and self.rows.statistics()["pending"] == 0:
                    drained = True
                    break
                await trio.sleep(0.2)
        return {"drained": drained, "write_behind": dict(self.rows.statistics())}

    async def count_rows(self) -> int:
        return await trio.to_thread.run_sync(sql_row_count, self.pg.url, self.sql.table.name)


@contextlib.asynccontextmanager
async def chaos_store(times: Mapping[str, float]) -> AsyncIterator[tuple[CodecStore, Chaos]]:
    """The run's own services and the production store over them (see the module docstring)."""
    async with contextlib.AsyncExitStack() as stack:
        pg = await trio.to_thread.run_sync(stack.enter_context, pg_server())
        redis = await trio.to_thread.run_sync(stack.enter_context, redis_server())
        namespace = f"chaos{secrets.token_hex(4)}"
        sql = await stack.enter_async_context(SqlRowStore(pg.url, namespace=namespace))
        rows = await stack.enter_async_context(
            RedisWriteBehind(redis.url, namespace=namespace, sql=sql, retry_backoff_s=0.2)
        )
        nursery = await stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(rows.run_flusher)
        codec = ArtifactCodec(secrets.token_urlsafe(32), encrypt_all=True)
        try:
            yield CodecStore(rows, codec), Chaos(pg, redis, rows, sql, times)
        finally:
            nursery.cancel_scope.cancel()
