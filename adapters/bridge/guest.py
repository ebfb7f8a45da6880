"""``GuestModeBridge``: trio as a guest on the running asyncio loop (asyncio or uvloop).

``trio.lowlevel.start_guest_run`` runs trio code on the loop's thread, between
asyncio callbacks; only trio's I/O wait happens in a helper thread. One guest
run per thread, so one bridge per loop.

Close: ``aclose()`` ends the guest run, and its done callback reports the
outcome (``last_outcome``). If the loop is closed *without* ``aclose()``, the
guest run is abandoned mid-flight: its tasks never run again, its sockets stay
open until the process exits, trio's I/O thread fails to post to the closed
loop, and the loop thread keeps trio's "inside a run" marker, so no other trio
run can start on that thread. Open WebUI's loop lives as long as the worker
process, so this does not matter there.
"""

from __future__ import annotations

import outcome
import trio

from orpipe.adapters.bridge.core import BridgeCore
from orpipe.adapters.bridge.trio_run import TrioRun
from orpipe.engine import UsageError

__all__ = ["GuestModeBridge"]


class GuestModeBridge(BridgeCore):
    """trio as a guest on the running asyncio loop; one bridge per loop."""

    #: The outcome the last guest run's done callback reported (None before).
    last_outcome: outcome.Outcome[None] | None = None

    def _launch(self, run: TrioRun) -> None:
        def done(result: outcome.Outcome[None]) -> None:
            self.last_outcome = result
            run.finished(result)

        run.on_loop_thread = True
        try:
            trio.lowlevel.start_guest_run(
                run.main,
                run_sync_soon_threadsafe=run.loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=run.loop.call_soon,
                done_callback=done,
                # Never take over the process-wide signal wakeup fd: uvloop
                # (and asyncio with signal handlers) already owns it, and the
                # engine handles no signals.
                host_uses_signal_set_wakeup_fd=True,
            )
        except RuntimeError as exc:
            self._run = None
            raise UsageError(
                "a trio run is already active on this event loop's thread "
                "(another GuestModeBridge?); use one bridge per loop"
            ) from exc

    async def _after_done(self) -> None:
        """Nothing: the done callback was the guest run's last act."""
