"""``python -m bench run workers``: N engine processes sharing one Redis, one PostgreSQL, the mock.

Owns the run: a redis-server of the bench's own with Redis' default
persistence (it is killed on purpose), the machine's PostgreSQL (database
``test``, a fresh store namespace per run), the mock in its own process, and
N ``bench.workers_child`` processes. This process is the open-loop driver: it
sends each first turn at its seeded time to the next live worker (round
robin) over the worker's stdin pipe, whatever is still running; a completed
first turn whose artifacts were stored sends its second turn at once to
another worker, which reads them back from its store.

Phases (one progress line each on stderr): load; one worker SIGKILLed, its
permits watched in Redis until they are gone, the worker restarted; Redis
SIGKILLed and restarted on the same port; drain (in-flight answers); settle
(every accepted artifact in SQL, bounded); the count. Ctrl-C or an error
cancels the run; the workers, Redis and the mock are stopped on every way
out (workers by closing their stdin, SIGKILL if they do not leave).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import redis
import trio

from orpipe.adapters.store.assembly import open_store
from orpipe.bench.mock_process import MockProcess, mock_stats, running_mock
from orpipe.bench.report import default_out_dir
from orpipe.bench.services import RedisServer, redis_server
from orpipe.bench.workers_child import store_settings
from orpipe.bench.workers_figures import Tally, WorkersPlan, arrival_times, format_summary, results

__all__ = ["main"]

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Bounds on the ways out; generous, the machine is shared.
_DRAIN_S = 30.0
_SETTLE_S = 60.0
_WORKER_EXIT_S = 10.0
_PEAK_SAMPLE_S = 0.1


class WorkerProcess:
    """One child: commands go down its stdin, one answer per command comes back on stdout."""

    def __init__(self, slot: int, settings: dict[str, Any]) -> None:
        self.slot, self.settings = slot, settings
        self.worker_id = ""
        self.process: trio.Process | None = None
        self._pending: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._sending = trio.Lock()  # one writer at a time on the pipe

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, nursery: trio.Nursery) -> None:
        argv = [sys.executable, "-m", "orpipe.bench.workers_child", json.dumps(self.settings)]
        self.process = await trio.lowlevel.open_process(
            argv, stdin=-1, stdout=-1, start_new_session=True
        )
        ready = trio.Event()
        nursery.start_soon(self._read, self.process, ready)
        with trio.fail_after(60):
            await ready.wait()

    async def _read(self, process: trio.Process, ready: trio.Event) -> None:
        assert process.stdout is not None
        buffered = b""
        while chunk := await process.stdout.receive_some():
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                answer = json.loads(line)
                if "ready" in answer:
                    self.worker_id = answer["ready"]
                    ready.set()
                elif (send := self._pending.pop(answer["id"], None)) is not None:
                    send.send_nowait(answer)
        # The process is gone (killed, or at the end): what it had not answered is lost.
        for send in self._pending.values():
            send.send_nowait({"outcome": "lost_with_worker"})
        self._pending.clear()

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        if not self.alive:
            return {"outcome": "lost_with_worker"}
        assert self.process is not None and self.process.stdin is not None
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[command["id"]] = send
        try:
            async with self._sending:
                await self.process.stdin.send_all((json.dumps(command) + "\n").encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._pending.pop(command["id"], None)
            return {"outcome": "lost_with_worker"}
        return await receive.receive()

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()

    async def stop(self) -> None:
        if self.process is None:
            return
        with trio.CancelScope(shield=True):
            if self.process.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.process.stdin.aclose()
            with trio.move_on_after(_WORKER_EXIT_S):
                await self.process.wait()
            self.kill()
            await self.process.wait()


class WorkersRun:
    """The driver's state: workers, the tally, Redis' state, the dead worker's figures."""

    def __init__(
        self, plan: WorkersPlan, redis_srv: RedisServer, mock: MockProcess, pg_url: str
    ) -> None:
        self.plan, self.redis, self.mock = plan, redis_srv, mock
        mock_url = mock.base_url
        stamp = time.strftime("%Y%m%d%H%M%S")
        self.settings = {
            "redis_url": redis_srv.url, "pg_url": pg_url, "mock_url": mock_url,
            "pipe_id": f"workers-bench-{stamp}", "prefix": f"orpipe:admission:bench-{stamp}",
            "limit": plan.global_limit, "queue": plan.queue_maxsize, "lease_s": plan.lease_s,
            "workers": plan.workers, "mock_params": plan.mock_params(),
        }  # fmt: skip
        self.workers = [WorkerProcess(slot, self.settings) for slot in range(plan.workers)]
        self.tally = Tally()
        self.redis_up = True
        self.dead_worker: dict[str, Any] = {}
        self.phases: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._next = itertools.count()
        self.t0 = 0.0
        self.current_phase = ""
        #: Phase -> the mock's peak of open streams first reached during it.
        self.peak_by_phase: dict[str, int] = {}

    def phase(self, name: str, **figures: Any) -> None:
        at = round(trio.current_time() - self.t0, 2) if self.t0 else 0.0
        self.phases.append({"phase": name, "at_s": at, **figures})
        self.current_phase = name
        shown = "  ".join(f"{k} {v}" for k, v in figures.items())
        t = self.tally
        print(
            f"workers: {at:7.2f} s  {name:<16} offered {t.offered}  "
            f"answers {sum(t.outcomes.values())}  {shown}",
            file=sys.stderr,
            flush=True,
        )

    def _live(self, *, avoid: int | None = None) -> WorkerProcess | None:
        for _ in range(len(self.workers)):
            worker = self.workers[next(self._next) % len(self.workers)]
            if worker.alive and worker.slot != avoid:
                return worker
        return None

    async def first_turn(self, nursery: trio.Nursery) -> None:
        self.tally.offered += 1
        chat = f"chat-{next(self._ids)}"
        worker = self._live()
        answer = {"outcome": "no_live_worker"}
        if worker is not None:
            answer = await worker.ask({"op": "turn", "id": f"{chat}-1", "chat": chat})
        self.tally.on_answer(chat, answer, redis_up=self.redis_up)
        if answer.get("confirmed") and answer["artifacts"] and worker is not None:
            nursery.start_soon(self.second_turn, chat, answer["artifacts"], worker.slot)

    async def second_turn(self, chat: str, artifacts: Any, first_slot: int) -> None:
        worker = self._live(avoid=first_slot)
        if worker is None:
            return
        command = {"op": "replay", "id": f"{chat}-2", "chat": chat, "artifacts": artifacts}
        answer = await worker.ask(command)
        if answer.get("outcome") != "lost_with_worker":
            self.tally.on_answer(chat, answer, redis_up=self.redis_up)

    async def load(self, nursery: trio.Nursery) -> None:
        self.phase("load", offered_rps=round(self.plan.offered_rps, 1))
        for at in arrival_times(self.plan):
            await trio.sleep_until(self.t0 + at)
            nursery.start_soon(self.first_turn, nursery)

    async def chaos(self, nursery: trio.Nursery, workers_nursery: trio.Nursery) -> None:
        plan = self.plan
        await trio.sleep_until(self.t0 + plan.kill_at_s)
        # The worker holding the most permits, so that their recovery is what is measured.
        held_by = [
            (await trio.to_thread.run_sync(self._permits_of, w.worker_id), w.slot)
            for w in self.workers
        ]
        held, slot = max(held_by)
        victim = self.workers[slot]
        # Kept apart: the restarted worker, in the same slot, has a new id.
        dead_id = victim.worker_id
        victim.kill()
        killed = trio.current_time()
        self.dead_worker = {"worker": dead_id, "permits": held}
        self.phase("worker killed", slot=victim.slot, permits_held=held)
        # The restarted worker's reader lives as long as the workers, not the load.
        nursery.start_soon(self._restart, victim, workers_nursery)
        # The permits are in Redis and the holder is dead: nothing here to wait on but a poll.
        while await trio.to_thread.run_sync(self._permits_of, dead_id):  # noqa: ASYNC110
            await trio.sleep(0.05)
        self.dead_worker["recovered_s"] = round(trio.current_time() - killed, 3)
        self.phase("permits back", after_s=self.dead_worker["recovered_s"])
        await trio.sleep_until(self.t0 + max(plan.redis_kill_at_s, trio.current_time() - self.t0))
        self.redis_up = False
        await trio.to_thread.run_sync(self.redis.kill)
        self.phase("redis killed")
        await trio.sleep(plan.redis_down_s)
        await trio.to_thread.run_sync(self.redis.start)
        self.phase("redis restarted")
        await trio.sleep(plan.lease_s / 3)  # the ledgers' next heartbeat finds it again
        self.redis_up = True

    async def sample_peak(self) -> None:
        """Which phase each new peak of open streams at the mock came in (the mock keeps
        the exact peak; this only says when, within a sampling interval)."""
        peak = 0
        while True:
            stats = await trio.to_thread.run_sync(mock_stats, self.mock)
            if isinstance(stats, dict) and stats.get("streams_peak", 0) > peak:
                peak = stats["streams_peak"]
                self.peak_by_phase[self.current_phase] = peak
            await trio.sleep(_PEAK_SAMPLE_S)

    async def _restart(self, worker: WorkerProcess, nursery: trio.Nursery) -> None:
        await trio.sleep(self.plan.restart_after_s)
        await worker.start(nursery)
        self.phase("worker restarted", slot=worker.slot)

    def _permits_of(self, worker_id: str) -> int:
        """Members of this worker in the ledger's permits (blocking: a worker thread)."""
        key = "{" + str(self.settings["prefix"]) + "}:permits"
        client = redis.Redis.from_url(self.redis.url, socket_timeout=2)
        try:
            members = cast("list[bytes]", client.zrange(key, 0, -1))
        finally:
            client.close()
        return sum(1 for m in members if m.decode().startswith(worker_id + "/"))

    async def in_sql(self) -> dict[str, int]:
        """SQL rows per accepted artifact id, waiting (bounded) for the flushers."""
        chats = sorted(set(self.tally.chats.values()))
        counts: dict[str, int] = {}
        async with open_store(store_settings(self.settings, with_redis=False)) as sql:
            with trio.move_on_after(_SETTLE_S):
                while True:
                    counts.clear()
                    for chat in chats:
                        for artifact_id in await sql.list_ids(chat):
                            counts[artifact_id] = counts.get(artifact_id, 0) + 1
                    if all(i in counts for i in self.tally.accepted):
                        break
                    await trio.sleep(0.5)
        return counts


async def run_workers(plan: WorkersPlan, out_dir: Path, pg_url: str = PG_URL) -> dict[str, Any]:
    """The whole run; ``results.json`` is written when it ends or is interrupted."""
    await trio.Path(out_dir).mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        server = stack.enter_context(_redis())
        async with running_mock(log_path=out_dir / "mock.log") as mock:
            run = WorkersRun(plan, server, mock, pg_url)
            interrupted, in_sql = False, {}
            try:
                async with trio.open_nursery() as workers_nursery:
                    await _run(run, workers_nursery)
                    run.phase("settle", accepted=len(run.tally.accepted))
                    in_sql = await run.in_sql()
                    run.phase("counted", in_sql=len(in_sql))
                    for worker in run.workers:
                        await worker.stop()
            except* KeyboardInterrupt:  # Ctrl-C: what ran is still written, marked so
                interrupted = True
            finally:
                for worker in run.workers:
                    await worker.stop()
            stats = await trio.to_thread.run_sync(mock_stats, mock)
    peak = stats.get("streams_peak") if isinstance(stats, dict) else None
    document = results(
        plan, run.tally, upstream_max_concurrent=peak, in_sql=in_sql,
        dead_worker=run.dead_worker, phases=run.phases, interrupted=interrupted,
        peak_by_phase=run.peak_by_phase,
    )  # fmt: skip
    text = json.dumps(document, indent=2)
    await trio.Path(out_dir / "results.json").write_text(text, encoding="utf-8")
    return document


async def _run(run: WorkersRun, workers_nursery: trio.Nursery) -> None:
    for worker in run.workers:
        await worker.start(workers_nursery)
    run.phase("workers ready", workers=len(run.workers))
    run.t0 = trio.current_time()
    async with trio.open_nursery() as background:
        background.start_soon(run.sample_peak)
        async with trio.open_nursery() as requests:
            requests.start_soon(run.chaos, requests, workers_nursery)
            await run.load(requests)
            run.phase("drain")
            # In-flight turns (and second turns) end on their own, the chaos task too; what
            # is still running after the bound is cancelled (and counted as it ended).
            requests.cancel_scope.deadline = trio.current_time() + _DRAIN_S
        background.cancel_scope.cancel()
    run.redis_up = True


@contextlib.contextmanager
def _redis() -> Iterator[RedisServer]:
    # Redis' own defaults (RDB snapshots, no append-only file): a stock install.
    with redis_server(appendfsync=None) as server:
        yield server


def main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration")
    parser.add_argument("--workers", type=int, default=4, help="engine processes (default 4)")
    parser.add_argument("--pg-url", default=PG_URL, help="SQLAlchemy URL of the artifact table")
    parser.add_argument("--out", type=Path, help="output directory (default bench/results/...)")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.workers < 2:
        parser.error("--scale must be > 0 and --workers at least 2")
    plan = WorkersPlan(workers=args.workers).scaled(args.scale)
    out = args.out if args.out is not None else default_out_dir("workers")
    document = trio.run(run_workers, plan, out, args.pg_url)
    print(format_summary(document))
    print(f"bench workers done; results: {out / 'results.json'}", file=sys.stderr)
    return 130 if document["interrupted"] else 0
