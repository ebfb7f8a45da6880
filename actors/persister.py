"""The persister: writes every artifact it accepted, even when its request or the engine ends.

Owns: the receive end of ``persist.in`` (bundles of ``Artifact`` from the
emitter and the tool executor), a ``Backlog`` of accepted, unwritten artifacts (bounded by
``persist_backlog_max``), and the ``ArtifactStore`` port it writes through.

* It writes in batches of ``persist_batch_size``. A store failure
  (``PersistenceError``) keeps the batch and retries with capped backoff; it
  never drops anything. While the backlog is full it takes nothing more from
  its inbox, so the emitter (and with it the answers) slows down: a store
  outage costs speed, not data.
* The flush guarantee (DESIGN.md §4): when its inbox ends (shutdown) or it is
  cancelled (the engine's grace ran out), its ``finally`` drains what is
  still in the inbox with ``receive_nowait``, then keeps writing under
  ``trio.move_on_after(persist_flush_grace_s, shield=True)`` — shield plus
  timeout, never a bare shield — and, within that grace, takes what senders
  still unwinding hand over until the last of them has closed its end. If
  the grace runs out, it logs the exact count and ids that were not written
  and counts them (``lost``). Inserts are idempotent by id, so a batch
  retried after an unclear failure never duplicates a row.
* "Flushed up to here" (``engine.persist_barrier``): its senders count what
  they hand over (``PersistBarrier.send``), it reports each write and each
  change of the store's health to the barrier, and a caller (the history
  loader, through ``Engine.wait_persisted``) waits there for what was sent
  before it asked, woken by those reports; nothing polls its counters.

Cancellation of one *request* does not concern it: artifacts are tied to
their chat, not to the request's lifetime, and are written all the same.

``artifact_cleanup`` is the age cleanup service (run under ``supervise``):
every ``artifact_cleanup_interval_hours`` (plus up to 10 % jitter, so
several processes do not all run it at once) it deletes artifacts older
than ``artifact_cleanup_days``.
"""

from __future__ import annotations

import random
import time

import trio

from orpipe.actors.persist_backlog import Backlog, RetryClock
from orpipe.engine.artifacts import Artifact
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import PersistenceError
from orpipe.engine.logs import logger
from orpipe.engine.persist_barrier import PersistBarrier
from orpipe.engine.ports import ArtifactStore
from orpipe.engine.statistics import ActorCounters

__all__ = ["artifact_cleanup", "persister"]

PersistIn = tuple[Artifact, ...]


class _Writer:
    """The shell's state: the backlog, the retry clock, the counters."""

    def __init__(
        self,
        store: ArtifactStore,
        config: EngineConfig,
        counters: ActorCounters,
        barrier: PersistBarrier,
    ):
        self.store = store
        self.config = config
        self.counters = counters
        self.barrier = barrier
        self.backlog = Backlog(config.persist_backlog_max)
        self.retry = RetryClock(config.persist_retry_initial_s, config.persist_retry_max_s)

    def take(self, bundle: PersistIn) -> None:
        self.backlog.add(bundle)
        self.counters.add("accepted", len(bundle))
        self._levels()

    async def write_one_batch(self) -> float:
        """Write the oldest batch; 0 on success, else the pause before retrying."""
        batch = self.backlog.batch(self.config.persist_batch_size)
        try:
            await self.store.write(batch)
        except PersistenceError as exc:
            pause = self.retry.failed()
            self.counters.add("write_failures")
            if self.retry.failures == 1:
                logger.warning(
                    "artifact store write failed ({}); {} artifacts kept and retried",
                    exc.message,
                    len(self.backlog),
                )
            self._levels()
            return pause
        if self.retry.failures:
            logger.info("artifact store writes again after {} failures", self.retry.failures)
        self.retry.succeeded()
        self.backlog.written(len(batch))
        self.counters.add("written", len(batch))
        self.counters.add("batches")
        self._levels()
        self.barrier.written(len(batch))
        return 0.0

    async def flush_all(self) -> None:
        """Write everything, retrying failures (the caller bounds the time)."""
        while len(self.backlog):
            pause = await self.write_one_batch()
            if pause:
                await trio.sleep(pause)

    def report_unwritten(self) -> None:
        ids = self.backlog.ids()
        if ids:
            self.counters.add("lost", len(ids))
            logger.error(
                "{} artifacts were not written before the persister's grace ran out: {}",
                len(ids),
                ", ".join(ids),
            )

    def _levels(self) -> None:
        self.counters.level("backlog", len(self.backlog))
        self.counters.level("backlog_peak", self.backlog.peak)
        self.counters.level("degraded", int(self.retry.failures > 0))
        self.barrier.set_failing(self.retry.failures > 0)


async def persister(
    inbox: trio.MemoryReceiveChannel[PersistIn],
    *,
    store: ArtifactStore,
    config: EngineConfig,
    counters: ActorCounters,
    barrier: PersistBarrier | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    writer = _Writer(store, config, counters, barrier or PersistBarrier())
    with inbox:
        task_status.started()
        try:
            await _serve(inbox, writer)
        finally:
            _drain(inbox, writer)
            with trio.move_on_after(config.persist_flush_grace_s, shield=True):
                await writer.flush_all()
                # Senders still unwinding (a tool round storing the outputs of
                # its cancelled calls) hand over their last bundle, then close.
                async for bundle in inbox:
                    writer.take(bundle)
                    await writer.flush_all()
            _drain(inbox, writer)  # what came too late is reported as lost
            writer.report_unwritten()


async def _serve(inbox: trio.MemoryReceiveChannel[PersistIn], writer: _Writer) -> None:
    """Until the inbox ends: accept what fits, write a batch, repeat."""
    open_ = True
    while open_ or len(writer.backlog):
        if not len(writer.backlog):
            try:
                writer.take(await inbox.receive())
            except trio.EndOfChannel:
                return
        open_ = _accept_waiting(inbox, writer) and open_
        pause = await writer.write_one_batch()
        if pause:
            await trio.sleep(pause)


def _accept_waiting(inbox: trio.MemoryReceiveChannel[PersistIn], writer: _Writer) -> bool:
    """Take bundles already waiting while there is room; False once the inbox ended."""
    while writer.backlog.room > 0:
        try:
            writer.take(inbox.receive_nowait())
        except trio.WouldBlock:
            return True
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return False
    return True


def _drain(inbox: trio.MemoryReceiveChannel[PersistIn], writer: _Writer) -> None:
    """Everything still in the inbox, regardless of the bound: it was accepted upstream."""
    while True:
        try:
            writer.take(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return


async def artifact_cleanup(
    store: ArtifactStore, config: EngineConfig, *, rng: random.Random | None = None
) -> None:
    """Delete old artifacts forever, every interval plus jitter (a supervised service)."""
    rng = rng or random.Random()
    interval_s = config.artifact_cleanup_interval_hours * 3600
    while True:
        await trio.sleep(interval_s + rng.uniform(0, interval_s * 0.1))
        cutoff = time.time() - config.artifact_cleanup_days * 86400
        try:
            removed = await store.delete_older_than(cutoff)
        except PersistenceError as exc:
            logger.warning("artifact cleanup skipped this round: {}", exc.message)
            continue
        if removed:
            logger.info(
                "artifact cleanup removed {} artifacts older than {:g} days",
                removed,
                config.artifact_cleanup_days,
            )
