"""One worker process of the ``workers`` bench: the engine as the Function runs it.

    python -m orpipe.bench.workers_child SETTINGS_JSON

Owns one engine with what the Open WebUI Function gives it when several
workers share a Redis: the HTTP transport to the (mock) OpenRouter, the Redis
admission ledger (``open_ledger``) and the artifact store with its Redis
write-behind over PostgreSQL (``open_store``). The parent (``bench.workers_run``)
is the open-loop driver; this process takes its requests as JSON lines on
stdin and answers each with one JSON line on stdout (a pipe: small, ordered,
and gone with the process when it is killed):

* ``{"op": "turn", "id", "chat"}``: a first turn of a reasoning model; the
  answer says how it ended, its time to first token or to rejection, and the
  ids of the artifacts the store accepted (after ``wait_persisted``, as the
  Function does before it writes the references).
* ``{"op": "replay", "id", "chat", "artifacts"}``: a second turn, on another
  worker than the first: the artifacts are read from this worker's store (the
  count of those missing is the answer's ``missing``) and sent back to the
  mock with the next question.

The first stdout line is ``{"ready": <ledger worker id>}``. End of stdin is
the way out: the commands still running are cancelled, then the engine, the
store (its flusher first) and the ledger close in that order. SIGKILL is what
the bench does to one of them: nothing closes, the leases expire in Redis.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

from orpipe.adapters.cluster.assembly import LedgerSettings, open_ledger
from orpipe.adapters.store.assembly import open_store
from orpipe.adapters.store.settings import StoreSettings
from orpipe.bench.engine_client import open_mock_engine
from orpipe.engine import (
    AdmissionRejected,
    ChatRequest,
    Completed,
    Engine,
    EngineConfig,
    Failed,
    OutputItem,
    TextDelta,
)
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.ports import ArtifactStore

__all__ = ["store_settings"]

#: How long a turn waits for its artifacts to be stored before it reports them unconfirmed.
PERSIST_WAIT_S = 10.0


def store_settings(settings: dict[str, Any], *, with_redis: bool = True) -> StoreSettings:
    """The store as the Function configures it (the parent reads SQL with ``with_redis=False``)."""
    return StoreSettings(
        pipe_id=settings["pipe_id"],
        database_url=settings["pg_url"],
        encryption_key="workers bench key, long enough to use",
        encrypt_all=False,
        lz4=True,
        min_compress_bytes=256,
        batch_size=50,
        db_threads=2,
        redis_url=settings["redis_url"] if with_redis else None,
        cache_ttl_s=600,
        pending_warn_threshold=10_000,
        flush_failure_limit=5,
    )


def _config(settings: dict[str, Any]) -> EngineConfig:
    return EngineConfig(
        base_url=settings["mock_url"],
        max_concurrent_requests=settings["limit"],
        queue_maxsize=settings["queue"],
    )


def _request(chat: str, message: str, params: dict[str, str], history: list[Any]) -> ChatRequest:
    question = {"type": "message", "role": "user", "content": "why?"}
    return ChatRequest(
        model="mock/reasoning",
        input=(*history, question),
        options={"metadata": {f"mock.{k}": v for k, v in params.items()}},
        # "conversation": kept until the age cleanup, so the bench can count them in SQL.
        artifacts=ArtifactContext(chat_id=chat, message_id=message, reasoning="conversation"),
    )


class Worker:
    """Runs the parent's commands on one engine; each command in its own task."""

    def __init__(self, engine: Engine, store: ArtifactStore, params: dict[str, str]) -> None:
        self.engine, self.store, self.params = engine, store, params
        self.out = trio.Lock()

    async def reply(self, answer: dict[str, Any]) -> None:
        async with self.out:  # one line at a time; the pipe is the parent's
            await trio.to_thread.run_sync(_write_line, json.dumps(answer))

    async def turn(self, command: dict[str, Any], history: list[Any]) -> dict[str, Any]:
        request = _request(command["chat"], command["id"], self.params, history)
        started = time.monotonic()
        answer: dict[str, Any] = {"id": command["id"], "artifacts": []}
        try:
            stream = self.engine.submit(request)
        except AdmissionRejected:
            return {**answer, "outcome": "rejected", "reject_s": time.monotonic() - started}
        async with stream:
            while events := await stream.receive_batch():
                for event in events:
                    if isinstance(event, TextDelta) and "ttft_s" not in answer:
                        answer["ttft_s"] = time.monotonic() - started
                    if isinstance(event, OutputItem) and event.artifact_id is not None:
                        answer["artifacts"].append(event.artifact_id)
        ending = stream.ending
        if isinstance(ending, Failed) and isinstance(ending.error, AdmissionRejected):
            return {**answer, "outcome": "rejected", "reject_s": time.monotonic() - started}
        if not isinstance(ending, Completed):
            return {**answer, "outcome": type(ending).__name__.lower()}
        if answer["artifacts"]:
            # As the Function does before it writes the references: wait until the
            # store has them (Redis or SQL), so the next turn on any worker finds them.
            failing = await self.engine.wait_persisted(PERSIST_WAIT_S)
            answer["confirmed"] = not failing
        return {**answer, "outcome": "completed"}

    async def replay(self, command: dict[str, Any]) -> dict[str, Any]:
        wanted: list[str] = command["artifacts"]
        found = await self.store.fetch(command["chat"], wanted)
        history = [dict(found[i].payload) for i in wanted if i in found]
        answer = await self.turn(command, history)
        return {**answer, "missing": len(wanted) - len(found)}

    async def run_one(self, command: dict[str, Any]) -> None:
        try:
            if command["op"] == "replay":
                answer = await self.replay(command)
            else:
                answer = await self.turn(command, [])
        except Exception as exc:  # reported to the parent, which counts it as failed
            answer = {"id": command["id"], "outcome": "error", "error": type(exc).__name__}
        await self.reply(answer)


def _write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main() -> None:
    settings: dict[str, Any] = json.loads(sys.argv[1])
    config = _config(settings)
    ledger_settings = LedgerSettings(
        redis_url=settings["redis_url"], prefix=settings["prefix"], lease_s=settings["lease_s"],
        workers=settings["workers"],
    )  # fmt: skip
    async with (
        open_ledger(ledger_settings, config) as ledger,
        open_store(store_settings(settings)) as store,
        open_mock_engine(config, artifacts=store, admission_ledger=ledger) as engine,
        trio.open_nursery() as nursery,
    ):
        worker = Worker(engine, store, settings["mock_params"])
        await worker.reply({"ready": ledger.worker_id})
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffered = b""
        while chunk := await stdin.receive_some():
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                nursery.start_soon(worker.run_one, json.loads(line))
        nursery.cancel_scope.cancel()  # the parent closed our stdin: the run is over


if __name__ == "__main__":
    trio.run(main)
