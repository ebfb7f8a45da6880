"""The door between Open WebUI's asyncio loop and the trio engine: the only code on both.

Callers type against ``EngineBridge`` (``protocol.py``); the runtime picks an
implementation by ``BridgeMode``: ``GuestModeBridge`` (``guest.py``, trio on
the loop's thread) or ``ThreadBridge`` (``thread.py``, trio in a thread of its
own). Both share ``core.py`` (the asyncio API), ``trio_run.py`` (the trio run and
the crossings), ``generation.py`` (one engine with its transport and store)
and ``stream.py`` (one answer's hand-off, bounded by credits). The other way
round, ``loop_calls.run_on_loop`` lets trio await a coroutine on the loop
(Open WebUI's tools). DESIGN.md §6 has the whole story.
"""

from orpipe.adapters.bridge.guest import GuestModeBridge
from orpipe.adapters.bridge.loop_calls import LoopGone, run_on_loop
from orpipe.adapters.bridge.protocol import (
    BRIDGE_CHANNEL,
    BridgeMode,
    EngineBridge,
    EngineServices,
    LedgerFactory,
    SideService,
    StoreFactory,
    TransportFactory,
)
from orpipe.adapters.bridge.stream import BridgedStream
from orpipe.adapters.bridge.thread import ThreadBridge

__all__ = [
    "BRIDGE_CHANNEL",
    "BridgeMode",
    "BridgedStream",
    "EngineBridge",
    "EngineServices",
    "GuestModeBridge",
    "LedgerFactory",
    "LoopGone",
    "SideService",
    "StoreFactory",
    "ThreadBridge",
    "TransportFactory",
    "run_on_loop",
]
