"""The persistence bench: artifacts per second direct vs. write-behind, and cancel → flush time.

``python -m bench.persistence [--artifacts N] [--requests N] [--pg-url URL] [--out DIR]``

Three phases, one run, so the figures compare with each other:

* ``direct``: N artifacts through the real persister actor into
  ``CodecStore`` → ``SqlRowStore`` on PostgreSQL (the machine's test
  database; a fresh table per run). Artifacts/s until the last is written.
* ``write-behind``: the same through ``RedisWriteBehind`` (a redis-server
  of the bench's own, on a free port) over the same SQL store: artifacts/s
  until accepted (in Redis), and until the flusher has them all in SQL.
* ``cancel-flush``: requests against the mock (in process) whose client
  goes away right after the reasoning item; the time from that
  cancellation until the artifact is written (p50 / p99, HDR histogram).

Results are printed as a table and written to ``results.json`` under
``bench/results/persistence-<time>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import trio

from orpipe.actors.persister import persister
from orpipe.adapters.store.codec import ArtifactCodec
from orpipe.adapters.store.redis_writebehind import RedisWriteBehind
from orpipe.adapters.store.rows import CodecStore, RowStore
from orpipe.adapters.store.sql import SqlRowStore
from orpipe.bench.engine_client import open_mock_engine
from orpipe.bench.meter import Latency
from orpipe.bench.mock_openrouter import serve_mock
from orpipe.bench.services import ServiceMissing, redis_server
from orpipe.engine import ChatRequest, EngineConfig, OutputItem
from orpipe.engine.artifacts import Artifact, ArtifactContext
from orpipe.engine.ports import ArtifactStore
from orpipe.engine.statistics import ActorCounters

KEY = "bench artifact key, long enough"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _artifacts(n: int, run: str) -> list[Artifact]:
    payload = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "x" * 400}]}
    return [
        Artifact(chat_id=f"{run}-{i % 50}", message_id=f"m{i}", item_type="reasoning",
                 payload=payload)
        for i in range(n)
    ]  # fmt: skip


async def _through_persister(store: ArtifactStore, artifacts: Sequence[Artifact]) -> float:
    """Seconds for the persister actor to accept and write every artifact."""
    counters = ActorCounters()
    send, receive = trio.open_memory_channel[tuple[Artifact, ...]](100)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: persister(
                receive, store=store, config=EngineConfig(), counters=counters,
                task_status=task_status,
            )
        )  # fmt: skip
        async with send:
            for i in range(0, len(artifacts), 10):
                await send.send(tuple(artifacts[i : i + 10]))
    return time.perf_counter() - started


def sql_row_count(url: str, table: str) -> int:
    """Rows in ``table`` (a blocking call: run it in a thread)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as db:
            return int(db.execute(sa.text(f'select count(*) from "{table}"')).scalar_one())
    finally:
        engine.dispose()


def _drop(url: str, table: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as db:
            db.execute(sa.text(f'drop table if exists "{table}"'))
    finally:
        engine.dispose()


@asynccontextmanager
async def _redis() -> AsyncIterator[str]:
    """A redis-server of the bench's own (``bench.services``), fsynced every second as
    production runs it; started and stopped in a worker thread, off the loop."""
    stack = contextlib.ExitStack()
    try:
        server = await trio.to_thread.run_sync(
            stack.enter_context, redis_server(appendfsync="everysec")
        )
    except ServiceMissing as exc:
        raise SystemExit(str(exc)) from None
    try:
        yield server.url
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stack.close)


async def _direct_and_write_behind(n: int, pg_url: str) -> dict[str, Any]:
    codec = ArtifactCodec(KEY, encrypt_all=True)
    run = f"bench{int(time.time())}"
    results: dict[str, Any] = {}
    namespace = codec.namespace(run)
    async with SqlRowStore(pg_url, namespace=namespace) as sql:
        table = sql.table.name
        try:
            seconds = await _through_persister(CodecStore(sql, codec), _artifacts(n, run + "d"))
            results["direct"] = {"artifacts": n, "seconds": seconds, "per_s": n / seconds}
            async with (
                _redis() as redis_url,
                RedisWriteBehind(redis_url, namespace=namespace, sql=sql) as rows,
            ):
                results["write-behind"] = await _write_behind(
                    rows, codec, n, run + "w", pg_url=pg_url, table=table, before=n
                )
        finally:
            await trio.to_thread.run_sync(_drop, pg_url, table)
    return results


async def _write_behind(
    rows: RedisWriteBehind,
    codec: ArtifactCodec,
    n: int,
    run: str,
    *,
    pg_url: str,
    table: str,
    before: int,
) -> dict[str, Any]:
    store: RowStore = rows
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rows.run_flusher)
        accepted_s = await _through_persister(CodecStore(store, codec), _artifacts(n, run))
        with trio.fail_after(300):
            # Polling another store's row count: there is no event to wait on.
            while await trio.to_thread.run_sync(sql_row_count, pg_url, table) < before + n:  # noqa: ASYNC110
                await trio.sleep(0.05)
        in_sql_s = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return {
        "artifacts": n,
        "seconds": accepted_s,
        "per_s": n / accepted_s,
        "in_sql_seconds": in_sql_s,
        "in_sql_per_s": n / in_sql_s,
    }


class _TimedStore:
    """An ``ArtifactStore`` that notes when each artifact id was written."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.written_at: dict[str, float] = {}

    async def write(self, artifacts: Sequence[Artifact]) -> None:
        await self.inner.write(artifacts)
        now = time.perf_counter()
        for artifact in artifacts:
            self.written_at.setdefault(artifact.artifact_id, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _cancel_flush(requests: int, pg_url: str) -> dict[str, Any]:
    codec = ArtifactCodec(KEY, encrypt_all=True)
    latency = Latency()
    cancelled_at: dict[str, float] = {}
    async with (
        SqlRowStore(pg_url, namespace=codec.namespace(f"cancel{int(time.time())}")) as sql,
        trio.open_nursery() as mock_nursery,
    ):
        store = _TimedStore(CodecStore(sql, codec))
        server = await mock_nursery.start(serve_mock)
        config = EngineConfig(base_url=server.base_url)
        try:
            async with open_mock_engine(config, artifacts=store) as engine:

                async def one(i: int) -> None:
                    req = ChatRequest(
                        model="mock/reasoning",
                        input=({"type": "message", "role": "user", "content": "hi"},),
                        options={"metadata": {"mock.tokens": "200", "mock.seed": str(i)}},
                        artifacts=ArtifactContext(chat_id="bench", message_id=f"m{i}"),
                    )
                    async with engine.submit(req) as stream:
                        async for event in stream:
                            if isinstance(event, OutputItem) and event.artifact_id:
                                cancelled_at[event.artifact_id] = time.perf_counter()
                                break  # the client goes away right after the reasoning item

                async with trio.open_nursery() as nursery:
                    for i in range(requests):
                        nursery.start_soon(one, i)
                with trio.fail_after(60):
                    while not set(cancelled_at) <= set(store.written_at):  # noqa: ASYNC110
                        await trio.sleep(0.01)
        finally:
            await trio.to_thread.run_sync(_drop, pg_url, sql.table.name)
            mock_nursery.cancel_scope.cancel()
    for artifact_id, at in cancelled_at.items():
        latency.record(max(0.0, store.written_at[artifact_id] - at))
    return {
        "requests": requests,
        "cancelled_with_artifact": len(cancelled_at),
        "flush_ms": latency.summary(),
    }


def _table(results: dict[str, Any]) -> str:
    direct, behind = results["direct"], results["write-behind"]
    flush = results["cancel-flush"]["flush_ms"]
    lines = [
        f"{'phase':<14}{'artifacts':>10}{'artifacts/s':>14}{'in SQL /s':>12}",
        f"{'direct':<14}{direct['artifacts']:>10}{direct['per_s']:>14.0f}{direct['per_s']:>12.0f}",
        f"{'write-behind':<14}{behind['artifacts']:>10}{behind['per_s']:>14.0f}"
        f"{behind['in_sql_per_s']:>12.0f}",
        f"write-behind/direct acceptance ratio: {behind['per_s'] / direct['per_s']:.2f}",
        f"cancel → flushed: p50 {flush.get('p50_ms')} ms, p99 {flush.get('p99_ms')} ms "
        f"({results['cancel-flush']['cancelled_with_artifact']} cancelled requests)",
    ]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    print(f"persistence bench: {args.artifacts} artifacts direct, then write-behind…",
          file=sys.stderr, flush=True)  # fmt: skip
    results = await _direct_and_write_behind(args.artifacts, args.pg_url)
    print(f"persistence bench: {args.requests} requests cancelled after their reasoning…",
          file=sys.stderr, flush=True)  # fmt: skip
    results["cancel-flush"] = await _cancel_flush(args.requests, args.pg_url)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="orpipe persistence bench")
    parser.add_argument("--artifacts", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = trio.run(_main, args)
    out: Path = args.out or Path("bench/results") / time.strftime("persistence-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(_table(results))
    print(f"results: {out / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
