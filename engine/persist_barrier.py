"""``PersistBarrier``: "flushed up to here" for what was sent to the persister.

A sequence number on each side of ``persist.in``: senders count what they
hand to it (``send``), the persister counts what it wrote (``written``).
``wait_flushed`` takes the count sent at the moment of the call and waits
until that many have been written, woken by the persister after each write
or change of its store's health; nothing polls. It returns early when the
store is failing (the persister then holds its backlog and retries; an
artifact held for retry is not written), and in any case within its timeout.

Per request (read-after-write across workers): a sender that hands over a
request's artifacts passes that request's ``ArtifactMarks`` along, and each
artifact is noted there with its sequence number in ``persist.in``, in the
same step that counts it (no checkpoint in between, so the numbers are
exact). Because the persister writes in the order it received, "written
count >= an artifact's number" means that artifact is in the store;
``wait_written`` waits for that, and ``ArtifactMarks.unwritten`` names what
is not there yet (engine.durable_wait uses both for a request's ending).

Trio-flavoured; one per engine (``Engine.persist_barrier``). Without a
persister nothing is ever sent, so a wait returns at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import trio

__all__ = ["ArtifactMarks", "PersistBarrier"]

_T = TypeVar("_T")


class ArtifactMarks:
    """One request's artifacts handed to the persister, with their sequence numbers.

    Bounded by the request: one entry per artifact it stored, each of which
    its answer already carries as an ``OutputItem``.
    """

    __slots__ = ("_marks",)

    def __init__(self) -> None:
        self._marks: list[tuple[int, str]] = []

    def note(self, seq: int, artifact_id: str) -> None:
        self._marks.append((seq, artifact_id))

    def withdraw(self, artifact_ids: set[str]) -> None:
        """These were never handed over after all (the send raised): never written."""
        self._marks = [(0 if i in artifact_ids else s, i) for s, i in self._marks]

    @property
    def last(self) -> int:
        """Sequence number of the request's last artifact handed over (0: none)."""
        return max((seq for seq, _ in self._marks), default=0)

    def unwritten(self, written: int) -> tuple[str, ...]:
        """Ids of the artifacts not yet written when ``written`` artifacts are."""
        return tuple(i for seq, i in self._marks if seq == 0 or seq > written)


class PersistBarrier:
    """Counts sent and written artifacts; waits for "written up to what was sent"."""

    def __init__(self) -> None:
        self._sent = 0
        self._written = 0
        self._failing = False
        self._changed = trio.Event()

    @property
    def sent(self) -> int:
        """Artifacts handed to the persister (or being handed over right now)."""
        return self._sent

    @property
    def written_count(self) -> int:
        """Artifacts the persister has written to the store."""
        return self._written

    @property
    def failing(self) -> bool:
        """True while the store's writes fail (the persister retries them)."""
        return self._failing

    async def send(
        self,
        channel: trio.MemorySendChannel[tuple[_T, ...]],
        bundle: tuple[_T, ...],
        owners: Sequence[tuple[ArtifactMarks, str] | None] = (),
    ) -> None:
        """``channel.send(bundle)``, counted as sent before it can be received.

        Counted first, so the persister can never write more than was counted;
        if the send raises (cancelled, channel closed) nothing was delivered,
        the count is taken back and the marks are withdrawn (those artifacts
        will never be written). ``owners[i]``, when given, is the request's
        marks and the id of ``bundle[i]``, noted with its sequence number.
        """
        for offset, owner in enumerate(owners):
            if owner is not None:
                owner[0].note(self._sent + offset + 1, owner[1])
        self._sent += len(bundle)
        try:
            await channel.send(bundle)
        except BaseException:
            self._sent -= len(bundle)
            for owner in owners:
                if owner is not None:
                    owner[0].withdraw({owner[1]})
            raise

    def written(self, count: int) -> None:
        """The persister wrote ``count`` more artifacts (wakes waiters)."""
        self._written += count
        self._wake()

    def set_failing(self, failing: bool) -> None:
        """The persister's store began or stopped failing (wakes waiters on a change)."""
        if failing != self._failing:
            self._failing = failing
            self._wake()

    async def wait_flushed(self, timeout_s: float) -> bool:
        """Wait until everything sent before this call is written; True if writes are failing.

        Returns at once when nothing is pending or the store is failing, and
        after at most ``timeout_s`` otherwise. Cancellation leaves nothing
        behind (a waiter holds no state here but the shared event).
        """
        await self.wait_written(self._sent, timeout_s)
        return self._failing

    async def wait_written(self, upto: int, timeout_s: float) -> bool:
        """Wait until the first ``upto`` artifacts sent are written; True if they are.

        Returns early when the store is failing (it may stay down for long),
        and after at most ``timeout_s`` otherwise; never polls.
        """
        with trio.move_on_after(timeout_s):
            while self._written < upto and not self._failing:
                await self._changed.wait()
        return self._written >= upto

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
