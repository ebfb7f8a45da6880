"""The Open WebUI bench's event-loop side: chats driven on asyncio, as Open WebUI drives them.

The one bench module that imports asyncio (``tests/test_layering.py`` names
it): the pipe is an asyncio adapter, and measuring it the way Open WebUI
uses it means running it on an asyncio loop. Owns:

* ``new_loop``: uvloop, as Open WebUI runs under uvicorn; plain asyncio
  only when uvloop is missing (``loop_name`` says which, and the run prints it);
* ``run_phase``: one phase on a fresh loop, closed cleanly afterwards
  (every bridge and HTTP client of the loop closed, async generators shut
  down, the executor joined); Ctrl-C cancels the phase, which keeps what it
  measured;
* the closed loop on asyncio: ``concurrency`` tasks of ``bench.meter``'s
  worker, for the warm-up and the counted window, then a bounded drain; a
  sampler that reads RSS in a worker thread; the meter's progress line;
* the two clients: ``Pipe.pipe()`` of the real Function (``owui_pipe.Pipe``)
  called with Open WebUI's reserved arguments (a body with messages,
  ``__user__``, ``__metadata__``, an ``__event_emitter__`` that only counts
  event types) and its generator read to the end; and the baseline, bare
  httpx streaming on the same loop with a minimal SSE split and a JSON decode
  per event (``bench.baseline.read_stream``, the trio bench's own yardstick).

What is measured and how is ``bench.owui_measure``; this module only calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import itertools
import signal
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import httpx

from orpipe.adapters import owui_pipe
from orpipe.adapters.bridge import TransportFactory
from orpipe.adapters.openrouter.pool import ShardedClients
from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport
from orpipe.adapters.openwebui.model_registry import close_registries
from orpipe.adapters.openwebui.runtime import runtime_for_loop
from orpipe.adapters.openwebui.turn import PipeError, TurnContext
from orpipe.bench.baseline import read_stream
from orpipe.bench.meter import (
    LoopCalls,
    OneRequest,
    Outcome,
    RequestRecord,
    run_worker,
    show_progress,
    stderr_is_tty,
)
from orpipe.bench.owui_measure import ChatMeter
from orpipe.engine import EngineConfig, UpstreamTransport

__all__ = ["PhaseKind", "PhaseSpec", "loop_name", "new_loop", "run_phase"]

PhaseKind = Literal["baseline", "guest", "thread"]

#: How long chats still open when the window closes may take to finish.
_DRAIN_S = 30.0
_SAMPLE_EVERY_S = 0.25
_ASYNCIO_CALLS = LoopCalls(sleep=asyncio.sleep, to_thread=asyncio.to_thread)
_SYSTEM_PROMPT = "You are terse."
_USER_PROMPT = "Say something for the bench."


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSpec:
    """One phase to run: which client, against which mock, with what stream shape."""

    kind: PhaseKind
    base_url: str
    #: ``mock.*`` stream parameters without the prefix (tokens, tps, events_per_write).
    mock_params: Mapping[str, str]
    #: The mock scenario the model names (``mock/<scenario>``).
    model_scenario: str = "text"
    #: The Function's id: Open WebUI names its models ``<function id>.<sub id>``.
    function_id: str = "orpipe"
    #: The Function's valves for the pipe phases (BASE_URL, API_KEY, ENGINE_BRIDGE, ...).
    valves: Mapping[str, Any] = field(default_factory=dict)


def loop_name() -> str:
    """The loop ``new_loop`` makes: ``uvloop <version>``, or asyncio where uvloop is missing."""
    try:
        import uvloop  # noqa: PLC0415, F401 - optional, as in Open WebUI
    except ImportError:
        return "asyncio (no uvloop)"
    return f"uvloop {importlib.metadata.version('uvloop')}"


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_phase(spec: PhaseSpec, meter: ChatMeter) -> bool:
    """Run one phase on a fresh loop and close that loop; True if Ctrl-C stopped it.

    Blocking: call it with no loop running. A Ctrl-C that lands before the
    phase installed its own handler raises ``KeyboardInterrupt`` instead.
    """
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(_phase(spec, meter))


async def _phase(spec: PhaseSpec, meter: ChatMeter) -> bool:
    loop = asyncio.get_running_loop()
    driver = asyncio.create_task(_drive_phase(spec, meter), name=f"bench {spec.kind}")
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if not interrupted:  # a second Ctrl-C does not cut the cleanup short
            interrupted = True
            driver.cancel()

    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)  # main thread only
    try:
        await driver
    except asyncio.CancelledError:
        if not interrupted:
            raise
    finally:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
    return interrupted


async def _drive_phase(spec: PhaseSpec, meter: ChatMeter) -> None:
    client = _baseline_client(spec, meter) if spec.kind == "baseline" else _pipe_client(spec, meter)
    async with client as one_chat:
        await _drive(meter, one_chat)


# -- the closed loop ------------------------------------------------------------------


async def _drive(meter: ChatMeter, one_chat: OneRequest) -> None:
    """Warm up, count for ``duration_s``, drain (bounded), then stop every task."""
    meter.sample(await asyncio.to_thread(meter.probe))
    helpers = [asyncio.create_task(_sample_rss(meter), name="bench rss")]
    if stderr_is_tty():
        progress = show_progress(meter, _ASYNCIO_CALLS)
        helpers.append(asyncio.create_task(progress, name="bench progress"))
    workers = [
        asyncio.create_task(
            run_worker(meter, one_chat, _ASYNCIO_CALLS), name=f"bench {meter.name} {index}"
        )
        for index in range(meter.concurrency)
    ]
    try:
        await asyncio.sleep(meter.warmup_s)
        meter.open_window(await asyncio.to_thread(meter.probe))
        await asyncio.sleep(meter.duration_s)
        meter.close_window(await asyncio.to_thread(meter.probe))
        await asyncio.wait(workers, timeout=_DRAIN_S)
    finally:
        meter.close_window()  # a no-op unless cancelled inside the window
        for task in (*workers, *helpers):
            task.cancel()
        outcomes = await asyncio.gather(*workers, *helpers, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):  # a bug of the bench, not a chat outcome
            raise outcome


async def _sample_rss(meter: ChatMeter) -> None:
    while True:
        await asyncio.sleep(_SAMPLE_EVERY_S)
        meter.sample(await asyncio.to_thread(meter.probe))


# -- the pipe, as Open WebUI calls it -----------------------------------------------------


@asynccontextmanager
async def _pipe_client(spec: PhaseSpec, meter: ChatMeter) -> AsyncIterator[OneRequest]:
    """A fresh ``Pipe`` with the phase's valves; on the way out, the loop's engine closed."""
    pipe = owui_pipe.Pipe()
    pipe.valves = pipe.Valves(**spec.valves)
    api_key = pipe.valves.api_key()
    header = "&".join(f"{name}={value}" for name, value in spec.mock_params.items())
    model = f"{spec.function_id}.mock.{spec.model_scenario}"
    try:
        with _mock_parameters_through_pipe(_mock_transport(api_key, header)):
            yield _PipeChats(pipe, model, spec.function_id, meter)
            await _keep_engine_statistics(meter)
    finally:
        await runtime_for_loop().aclose()  # the bridge: trio guest run or trio thread
        await close_registries()  # the model catalogue's HTTP clients of this loop


@dataclass(slots=True)
class _PipeChats:
    """One chat per call, through ``Pipe.pipe()``, with arguments shaped as Open WebUI's."""

    pipe: owui_pipe.Pipe
    model: str
    function_id: str
    meter: ChatMeter
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def __call__(self, record: RequestRecord) -> tuple[Outcome, str]:
        return await _pipe_chat(self, record)


async def _pipe_chat(chats: _PipeChats, record: RequestRecord) -> tuple[Outcome, str]:
    pipe, model, meter = chats.pipe, chats.model, chats.meter
    number = next(chats.numbers)
    user_id = f"bench-user-{number % meter.concurrency}"
    emitted = meter.emitted

    async def event_emitter(event: dict[str, Any]) -> None:
        emitted[str(event.get("type"))] += 1

    async def event_call(event: dict[str, Any]) -> Any:
        emitted[f"call {event.get('type')}"] += 1
        return None

    body = {
        "stream": True,
        "model": model,
        "messages": [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": _USER_PROMPT},
        ],
    }
    metadata = {
        "user_id": user_id,
        "chat_id": f"bench-chat-{number}",
        "message_id": f"bench-message-{number}",
        "session_id": f"bench-session-{number % meter.concurrency}",
        "features": {},
        "model": {"id": model, "owned_by": chats.function_id},
    }
    user = {
        "id": user_id,
        "email": f"{user_id}@bench.invalid",
        "name": user_id,
        "role": "user",
        "valves": pipe.UserValves(),
    }
    try:
        result = await pipe.pipe(
            body,
            __user__=user,
            __request__=None,
            __event_emitter__=event_emitter,
            __event_call__=event_call,
            __metadata__=metadata,
            __tools__={},
            __task__=None,
            __task_body__=None,
        )
    except PipeError as exc:  # refused before streaming: busy, unknown model, ...
        return "rejected", _short(str(exc))
    except Exception as exc:
        return "failed", f"pipe() raised {type(exc).__name__}"
    if isinstance(result, str):
        return "failed", "pipe() returned text for a streaming chat"
    error = ""
    try:
        async with contextlib.aclosing(result) as chunks:
            async for chunk in chunks:
                record.mark_first()
                meter.count_chunk()
                if "error" in chunk:
                    error = _short(str(chunk["error"]))
    except Exception as exc:
        return "failed", f"the answer raised {type(exc).__name__}"
    return ("failed", error) if error else ("completed", "")


def _mock_transport(api_key: str, header: str) -> TransportFactory:
    """The Function's own HTTP transport, plus the header that gives the mock its parameters."""

    def factory(config: EngineConfig) -> AbstractAsyncContextManager[UpstreamTransport]:
        return OpenRouterHttpTransport(
            config, api_key=api_key, extra_headers={"X-Mock-Params": header}
        )

    return factory


@contextlib.contextmanager
def _mock_parameters_through_pipe(factory: TransportFactory) -> Iterator[None]:
    """Let ``Pipe.pipe()`` reach the mock with the phase's stream parameters.

    Open WebUI hands a Function no transport, and the mock reads its
    parameters (tokens, pacing) from a request header only our transport
    factory sets. So for the phase, the name ``TurnContext`` inside the
    Function module builds the same context plus that factory; everything
    ``Pipe.pipe()`` does runs unchanged, and the name is restored afterwards.
    """
    namespace = vars(owui_pipe)
    original = namespace["TurnContext"]

    def context_with_factory(**fields: Any) -> TurnContext:
        return TurnContext(**fields, transport_factory=factory)

    namespace["TurnContext"] = context_with_factory
    try:
        yield
    finally:
        namespace["TurnContext"] = original


async def _keep_engine_statistics(meter: ChatMeter) -> None:
    bridge = runtime_for_loop().current_bridge
    if bridge is None:
        return
    try:
        async with asyncio.timeout(5.0):
            meter.extra["engine_statistics"] = (await bridge.statistics()).as_dict()
    except Exception as exc:  # informative only: never fail a run over it
        meter.extra["engine_statistics"] = f"unavailable: {type(exc).__name__}"


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the baseline: bare httpx on the same kind of loop ------------------------------------


@asynccontextmanager
async def _baseline_client(spec: PhaseSpec, meter: ChatMeter) -> AsyncIterator[OneRequest]:
    """httpx clients laid out as the engine's transport lays them out (adapters.openrouter.pool)."""
    body = {
        "model": f"mock/{spec.model_scenario}",
        "input": [
            {"role": "system", "content": _SYSTEM_PROMPT},
            {"role": "user", "content": _USER_PROMPT},
        ],
        "stream": True,
        "metadata": {f"mock.{name}": value for name, value in spec.mock_params.items()},
    }
    # Built in a thread: creating an httpx client loads TLS certificates from disk.
    clients = await asyncio.to_thread(
        partial(
            ShardedClients,
            meter.concurrency + 8,
            base_url=spec.base_url.rstrip("/") + "/",
            headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(10.0, read=300.0),
        )
    )
    async with clients:
        yield partial(read_stream, clients, body, on_event=meter.count_chunk)
