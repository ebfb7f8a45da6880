"""The streaming actor graph, and ``open_engine`` with it filled in.

::

    admission ─▶ fetcher ─fetch.out─▶ parser pool ─parse.out─▶ reorderer
                    │      ─reorder.out─▶ delta batcher ─batch.out─▶ emitter ─▶ request.outbox
                    │                                       ▲  (per request)
                    └──────────────batch.out────────────────┘
                      the express lane (default): parsed and merged in the fetcher
         ▲                                         ├─tools.in─▶ tool executor ─▶ request.outbox
         └──────── request.turns (per request) ◀───┼──────────────┘   │
                                                   └─persist.in─▶ persister ◀┘ ─▶ ArtifactStore

Request handles travel in messages, not in a shared table: the fetcher
announces each turn (``TurnStarted``: on ``parse.out``, or on ``batch.out``
with the express lane) ahead of its items, and the emitter hands the
handle on in each ``ToolRound`` (``engine.pipeline_messages``).

The persister (and the age cleanup service) exist only when the ports
carry an ``ArtifactStore``. The tool loop returns to the fetcher through
each request's one-slot turn mailbox, not through a channel into the
fetcher's intake, so closing the intake still shuts the graph down from
admission downwards (see ``actors.upstream_fetcher``).

Actors start downstream-first (``nursery.start`` waits for each to be
ready), so nothing ever sends into an actor that is not there yet. Every
channel comes from the engine's named factory and is sized from the config.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from orpipe.actors.admission import AdmissionDesk, admission
from orpipe.actors.admission_ledger import LedgerGate, return_all, send_leaves
from orpipe.actors.batcher import delta_batcher
from orpipe.actors.emitter import emitter
from orpipe.actors.idle_flush import IdleFlushes
from orpipe.actors.parser import parser_pool
from orpipe.actors.persister import artifact_cleanup, persister
from orpipe.actors.reorderer import reorderer
from orpipe.actors.tool_executor import tool_executor
from orpipe.actors.upstream_fetcher import upstream_fetcher
from orpipe.engine.config import EngineConfig
from orpipe.engine.ports import EnginePorts
from orpipe.engine.supervisor import (
    ActorGraph,
    AdmissionDoor,
    Engine,
    ServiceSpec,
    Wiring,
    open_engine_with_graph,
)

__all__ = ["open_engine", "streaming_graph"]


async def streaming_graph(
    wiring: Wiring,
    *,
    gate: LedgerGate | None = None,
    task_status: trio.TaskStatus[AdmissionDoor] = trio.TASK_STATUS_IGNORED,
) -> None:
    config, channels, counters = wiring.config, wiring.channels, wiring.counters
    admit_send, admit_receive = channels.open("admission.out", config.admitted_buffer_size)
    fetch_send, fetch_receive = channels.open("fetch.out", config.chunk_buffer_size)
    parse_send, parse_receive = channels.open("parse.out", config.event_buffer_size)
    order_send, order_receive = channels.open("reorder.out", config.ordered_buffer_size)
    batch_send, batch_receive = channels.open("batch.out", config.batched_buffer_size)
    # The fetcher announces each turn (TurnStarted) where one request's messages
    # keep their order; cloned now, before the parser pool takes parse.out's end.
    announce = (batch_send if config.express_lane else parse_send).clone()
    if gate is not None:
        gate.bind(channels, counters("admission"))
    desk = AdmissionDesk(config, gate)
    # The batch role's idle-flush timers, for its actor and the express lane alike.
    flushes = IdleFlushes(counters("batcher"))
    start = functools.partial
    store = wiring.ports.artifacts
    async with trio.open_nursery() as nursery:
        persist_send = None
        if store is not None:
            persist_send, persist_receive = channels.open("persist.in", config.persist_buffer_size)
            await nursery.start(
                start(
                    persister,
                    persist_receive,
                    store=store,
                    config=config,
                    counters=counters("persister"),
                    barrier=wiring.persist_barrier,
                )
            )
        tools_send, tools_receive = channels.open("tools.in", config.tool_intake_buffer_size)
        await nursery.start(
            start(
                tool_executor,
                tools_receive,
                persist_send.clone() if persist_send is not None else None,
                config=config,
                counters=counters("tools"),
                report_breaker=wiring.breakers,
                persist_barrier=wiring.persist_barrier,
            )
        )
        await nursery.start(
            start(
                emitter,
                batch_receive,
                persist_send,
                tools_send,
                config=config,
                counters=counters("emitter"),
                persist_barrier=wiring.persist_barrier,
            )
        )
        await nursery.start(
            start(
                delta_batcher,
                order_receive,
                batch_send,
                config=config,
                counters=counters("batcher"),
                flushes=flushes,
            )
        )
        await nursery.start(
            start(
                reorderer, parse_receive, order_send, config=config, counters=counters("reorderer")
            )
        )
        await nursery.start(
            start(
                parser_pool,
                fetch_receive,
                parse_send,
                workers=config.parser_workers,
                counters=counters("parser"),
            )
        )
        # The express lane: the fetcher parses and merges inline and hands
        # finished bundles straight to the emitter (see actors.upstream_fetcher).
        express = batch_send.clone() if config.express_lane else None
        await nursery.start(
            start(
                upstream_fetcher,
                admit_receive,
                fetch_send,
                express,
                announce=announce,
                config=config,
                ports=wiring.ports,
                counters=counters("fetcher"),
                parse_counters=counters("parser"),
                batch_counters=counters("batcher"),
                flushes=flushes,
            )
        )
        await nursery.start(admission, desk, admit_send)
        task_status.started(desk)


@asynccontextmanager
async def open_engine(
    config: EngineConfig, ports: EnginePorts, *, services: tuple[ServiceSpec, ...] = ()
) -> AsyncIterator[Engine]:
    """``engine.supervisor.open_engine_with_graph`` with the streaming graph: the usual way in.

    With ``ports.admission_ledger``, the ledger's upkeep (``run``) and the giving back of
    permits (``send_leaves``) run as supervised services, and whatever is still owed
    when the engine stops is given back before this returns (``return_all``).
    """
    graph: ActorGraph = streaming_graph
    gate = None
    ledger = ports.admission_ledger
    if ledger is not None:
        gate = LedgerGate(ledger, config)
        graph = functools.partial(streaming_graph, gate=gate)
        services = (
            *services,
            ServiceSpec(name="admission_ledger", run=ledger.run),
            ServiceSpec(name="admission_leaves", run=functools.partial(send_leaves, gate)),
        )
    store = ports.artifacts
    if store is not None:
        cleanup = ServiceSpec(
            name="artifact_cleanup",
            run=functools.partial(artifact_cleanup, store, config, rng=ports.rng),
        )
        services = (*services, cleanup)
    try:
        async with open_engine_with_graph(config, ports, graph=graph, services=services) as engine:
            yield engine
    finally:
        if gate is not None:
            await return_all(gate, config.shutdown_grace_s)
