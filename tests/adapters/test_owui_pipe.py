"""The Open WebUI Function, driven as Open WebUI drives it, against the mock OpenRouter.

A recording fake stands in for Open WebUI's side (``__user__``, ``__metadata__``,
``__event_emitter__``); the pipe talks to the mock over loopback through the
real engine. Every behavioural test runs on asyncio and uvloop, with both
bridges (trio guest mode and the dedicated trio thread).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orpipe.adapters import owui_pipe
from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport
from orpipe.adapters.openwebui.model_registry import close_registries
from orpipe.adapters.openwebui.runtime import runtime_for_loop
from orpipe.adapters.openwebui.turn import PipeError
from orpipe.bench.mock_scenarios import plan
from orpipe.engine import EngineConfig, UpstreamTransport
from orpipe.engine.artifacts import find_markers, strip_markers
from tests.adapters.asyncio_support import (
    Mock,
    mock_process,
    mock_streams_are,
    run_on,
    wait_until,
)
from tests.engine.support import API_KEY

REPO = Path(__file__).resolve().parents[2]
FUNCTION_FILE = REPO / "adapters" / "owui_pipe.py"
FUNCTION_ID = "orpipe"


@pytest.fixture(autouse=True)
def artifact_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Artifacts of these chats go to a SQLite file of this test (the default store:
    no ARTIFACT_DATABASE_URL, no Open WebUI DATABASE_URL, SQLite in DATA_DIR)."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return tmp_path / "orpipe-artifacts.db"


@pytest.fixture(params=["guest", "thread"])
def bridge_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- a recording fake of Open WebUI ----------------------------------------------------


@dataclass
class Owui:
    """What Open WebUI hands a pipe, and what it records of the pipe's events."""

    user_id: str = "user-1"
    role: str = "user"
    message_id: str = "msg-1"
    events: list[dict[str, Any]] = field(default_factory=list)

    async def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def kwargs(self, *, task: str | None = None, features: dict[str, Any] | None = None) -> dict:
        return {
            "__user__": {"id": self.user_id, "role": self.role, "name": "Ada", "valves": None},
            "__event_emitter__": self.emit,
            "__event_call__": None,
            "__metadata__": {
                "user_id": self.user_id,
                "chat_id": "chat-1",
                "message_id": "msg-1",
                "session_id": "sid-1",
                "features": features or {},
            },
            "__task__": task,
        }

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def statuses(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.of_type("status")]


def body(sub_id: str, text: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": f"{FUNCTION_ID}.{sub_id}",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text},
        ],
        "stream": True,
        **extra,
    }


def make_pipe(mock: Mock, bridge_kind: str, **valves: Any) -> owui_pipe.Pipe:
    pipe = owui_pipe.Pipe()
    settings = {
        "BASE_URL": mock.base_url,
        "API_KEY": API_KEY,
        "ENGINE_BRIDGE": bridge_kind,
        **valves,
    }
    pipe.valves = pipe.Valves(**settings)
    return pipe


@dataclass
class Answer:
    chunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(_delta(c).get("content") or "" for c in self.chunks)

    @property
    def reasoning(self) -> str:
        return "".join(_delta(c).get("reasoning_content") or "" for c in self.chunks)

    @property
    def usage(self) -> dict[str, Any] | None:
        found = [c["usage"] for c in self.chunks if c.get("usage")]
        return found[-1] if found else None

    @property
    def errors(self) -> list[Any]:
        return [c["error"] for c in self.chunks if "error" in c]


def _delta(chunk: dict[str, Any]) -> dict[str, Any]:
    choices = chunk.get("choices") or []
    return dict(choices[0].get("delta") or {}) if choices else {}


async def read(result: Any) -> Answer:
    answer = Answer()
    assert not isinstance(result, str), "a streaming request must return a generator"
    async for chunk in result:
        assert isinstance(chunk, dict)
        answer.chunks.append(chunk)
    return answer


async def cleanup() -> None:
    await runtime_for_loop().aclose()
    await close_registries()


def on_loop(loop_kind: str, scenario: Callable[[], Awaitable[None]], limit_s: float = 10) -> None:
    async def with_cleanup() -> None:
        try:
            await scenario()
        finally:
            await cleanup()

    run_on(loop_kind, with_cleanup, limit_s=limit_s)


def expected(scenario: str, **params: object) -> Any:
    return plan(scenario, {f"mock.{k}": str(v) for k, v in params.items()})


def with_params(**params: object) -> Callable[[EngineConfig], AbstractAsyncContextManager[Any]]:
    """A transport that asks the mock for scenario parameters (tokens, pacing, ...)."""
    header = "&".join(f"{k}={v}" for k, v in params.items())

    def factory(config: EngineConfig) -> AbstractAsyncContextManager[UpstreamTransport]:
        return OpenRouterHttpTransport(
            config, api_key=API_KEY, extra_headers={"X-Mock-Params": header}
        )

    return factory


#: The final status line: "5.99 s · 30.9 tokens/s · $0.0019 · 205 tokens (25 in, 180 out)".
FINAL_LINE = re.compile(
    r"\d+\.\d\d s( · \d+\.\d tokens/s)?( · \$[\d.]+)? · [\d,]+ tokens? "
    r"\([\d,]+ in(, [\d,]+ cached)?, [\d,]+ out(, [\d,]+ reasoning)?\)"
)


#: The line that ends the wait when the first thing shown is not a status of its own.
RESPONDED = re.compile(r"OpenRouter responded in \d+\.\d\d s")


def assert_statuses_closed(owui: Owui) -> None:
    """The status history Open WebUI keeps reads well and ends closed.

    Open WebUI appends every status to the message's list and shows the last
    one, shimmering while its ``done`` is false (``adapters.openwebui.events``): so
    every entry has text and none is hidden (either would be listed as a blank
    dot), no text is listed twice, and the last entry is done.
    """
    statuses = owui.statuses()
    texts = [s.get("description") for s in statuses]
    assert all(isinstance(t, str) and t.strip() for t in texts), statuses
    assert not any(s.get("hidden") for s in statuses), statuses
    assert len(set(texts)) == len(texts), texts
    assert not statuses or statuses[-1]["done"] is True, f"left shimmering: {statuses[-1]}"


async def start(pipe: owui_pipe.Pipe, owui: Owui, request: dict[str, Any], **kw: Any) -> Any:
    return await pipe.pipe(request, **owui.kwargs(**kw))


async def engine_idle(pipe: owui_pipe.Pipe) -> bool:
    bridge = runtime_for_loop().current_bridge
    assert bridge is not None
    stats = await bridge.statistics()
    return (
        stats.flow.open_requests == 0
        and stats.admission.in_flight == 0
        and stats.admission.waiting == 0
        and bridge.open_streams == 0
    )


# -- streaming ------------------------------------------------------------------------


def test_the_answer_streams_with_events_in_order(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        answer = await read(await start(pipe, owui, body("mock.text")))
        assert answer.text == expected("text").text
        assert not answer.errors
        usage = answer.usage
        assert usage is not None and usage["completion_tokens"] > 0 and usage["cost"] > 0
        assert_statuses_closed(owui)
        # The wait, its end when the first text came, the final line: nothing else.
        waiting, responded, final = owui.statuses()
        assert waiting == {"description": "Waiting for OpenRouter…", "done": False}
        assert responded["done"] and RESPONDED.fullmatch(responded["description"]), responded
        assert final["done"] and FINAL_LINE.fullmatch(final["description"]), final
        # Usage reaches the socket too, once, as totals.
        completions = owui.of_type("chat:completion")
        assert len(completions) == 1 and completions[0]["data"]["usage"] == usage
        # Open WebUI sends its own done=True; a pipe that did would run it twice.
        assert all("done" not in e["data"] for e in completions)

    on_loop(loop_kind, scenario)


def test_reasoning_streams_as_the_thinking_block(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        answer = await read(await start(pipe, owui, body("mock.reasoning")))
        want = expected("reasoning")
        assert answer.reasoning == want.reasoning_text != ""
        # The answer ends with an invisible reference to the stored reasoning item.
        assert strip_markers(answer.text) == want.text.rstrip()
        assert len(find_markers(answer.text)) == 1
        # Open WebUI's thinking block says "Thinking…": no status says it again.
        assert_statuses_closed(owui)
        waiting, responded, final = owui.statuses()
        assert waiting == {"description": "Waiting for OpenRouter…", "done": False}
        assert RESPONDED.fullmatch(responded["description"]), responded
        assert FINAL_LINE.fullmatch(final["description"]), final
        assert " reasoning)" in final["description"]

    on_loop(loop_kind, scenario)


def test_citations_become_sources_once_per_url(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        answer = await read(await start(pipe, owui, body("mock.annotations")))
        assert answer.text == expected("annotations").text
        urls = [e["data"]["source"]["url"] for e in owui.of_type("source")]
        planned = [c[0] for c in expected("annotations").citations]
        assert len(planned) > len(set(planned)), "the plan must repeat a URL to prove anything"
        assert urls == list(dict.fromkeys(planned))

    on_loop(loop_kind, scenario)


def test_a_user_streaming_profile_changes_only_that_users_batching(
    paced_mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    # Paced, so the reader keeps up: a reader that falls behind gets what waits
    # merged into one chunk (adapters.openwebui.turn.merged_deltas), whatever the limit.
    async def scenario() -> None:
        pipe = make_pipe(paced_mock, bridge_kind, STREAMING_UPDATE_CHAR_LIMIT=500)
        system, custom = Owui(), Owui(user_id="user-2")
        plain = await read(await start(pipe, system, body("mock.text:paced")))
        kwargs = custom.kwargs()
        kwargs["__user__"]["valves"] = pipe.UserValves(STREAMING_UPDATE_CHAR_LIMIT=10)
        mine = await read(await pipe.pipe(body("mock.text:paced"), **kwargs))
        assert plain.text == mine.text and len(plain.text) > 100
        text_chunks = [c for c in mine.chunks if _delta(c).get("content")]
        assert len(text_chunks) > 3 * len([c for c in plain.chunks if _delta(c).get("content")])

    on_loop(loop_kind, scenario)


def test_a_failed_answer_is_an_error_chunk_that_reads_like_advice(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        answer = await read(await start(pipe, owui, body("mock.failed")))
        assert len(answer.errors) == 1
        message = answer.errors[0]["message"]
        assert "OpenRouter" in message and "retry" in message.lower()
        assert owui.of_type("chat:completion")[-1]["data"]["error"]["message"] == message
        assert_statuses_closed(owui)

    on_loop(loop_kind, scenario)


# -- stop, concurrency, busy ---------------------------------------------------------


def test_closing_the_generator_cancels_the_upstream_request(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        await wait_until(lambda: mock_streams_are(mock, 0))
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        slow = await _start_with_transport(
            pipe, owui, body("mock.text"), with_params(tokens=5000, tps=500)
        )
        first = await anext(slow)
        assert _delta(first).get("content")
        await wait_until(lambda: mock_streams_are(mock, 1))
        await slow.aclose()  # what Open WebUI does when the user presses stop
        await wait_until(lambda: mock_streams_are(mock, 0))
        await wait_until(lambda: engine_idle(pipe))
        assert_statuses_closed(owui)

    on_loop(loop_kind, scenario)


def test_cancelling_the_consuming_task_cancels_the_upstream_request(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        await wait_until(lambda: mock_streams_are(mock, 0))
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        generator = await _start_with_transport(pipe, owui, body("mock.stall"), with_params())

        async def consume() -> None:
            async for _ in generator:
                pass

        task = asyncio.get_running_loop().create_task(consume())
        await wait_until(lambda: mock_streams_are(mock, 1))
        task.cancel()  # Open WebUI's stop: POST /api/tasks/chat/{id}/stop
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: mock_streams_are(mock, 0))
        await wait_until(lambda: engine_idle(pipe))
        assert_statuses_closed(owui)

    on_loop(loop_kind, scenario)


async def _start_with_transport(
    pipe: owui_pipe.Pipe, owui: Owui, request: dict[str, Any], factory: Any
) -> Any:
    """pipe() as Open WebUI calls it, with a transport that asks the mock for parameters."""
    from orpipe.adapters.openwebui import turn as owui_chat  # noqa: PLC0415

    context = owui_chat.TurnContext(
        user={"id": owui.user_id, "role": owui.role},
        metadata={"features": {}},
        emitter=owui.emit,
        transport_factory=factory,
    )
    return await owui_chat.run_turn(pipe.valves, request, context)


def test_two_hundred_concurrent_turns_all_finish(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, bridge_kind)

        async def one(i: int) -> str:
            owui = Owui(user_id=f"user-{i}")
            return (await read(await start(pipe, owui, body("mock.text")))).text

        texts = await asyncio.gather(*(one(i) for i in range(200)))
        assert texts == [expected("text").text] * 200
        await wait_until(lambda: engine_idle(pipe))

    on_loop(loop_kind, scenario, limit_s=30)


def test_the_701st_concurrent_turn_is_told_the_server_is_busy(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    """200 running + 500 waiting (the defaults); one more is refused at once, not queued."""

    async def scenario() -> None:
        await wait_until(lambda: mock_streams_are(mock, 0))
        pipe = make_pipe(mock, bridge_kind)
        factory = with_params()
        owuis = [Owui(user_id=f"user-{i}") for i in range(701)]
        generators = await asyncio.gather(
            *(_start_with_transport(pipe, o, body("mock.stall"), factory) for o in owuis[:700])
        )
        with pytest.raises(PipeError, match=r"The server is busy; retry in \d+ s"):
            await _start_with_transport(pipe, owuis[700], body("mock.stall"), factory)
        bridge = runtime_for_loop().current_bridge
        assert bridge is not None

        async def settled() -> bool:  # the admission actor works through its intake
            assert bridge is not None
            admission = (await bridge.statistics()).admission
            return (admission.in_flight, admission.waiting) == (200, 500)

        await wait_until(settled, limit_s=10)
        assert (await bridge.statistics()).admission.rejected_total == 1
        await asyncio.gather(*(g.aclose() for g in generators))
        await wait_until(lambda: engine_idle(pipe), limit_s=10)
        # Busy is not a failure of the user's requests: the breaker did not count it.
        assert runtime_for_loop().breaker.state("user-700") == "closed"

    on_loop(loop_kind, scenario, limit_s=40)


# -- errors that read like advice -------------------------------------------------------


def test_a_missing_key_says_where_to_put_one(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", API_KEY="")
        with pytest.raises(PipeError, match="API_KEY valve"):
            await start(pipe, Owui(), body("mock.text"))
        assert (await pipe.pipes())[0]["name"] == "OpenRouter unavailable: set the API_KEY valve"

    on_loop(loop_kind, scenario)


def test_a_rejected_key_says_so(loop_kind: str) -> None:
    with mock_process(api_key="the-right-key") as keyed:

        async def scenario() -> None:
            pipe = make_pipe(keyed, "guest", API_KEY="a-wrong-key")
            with pytest.raises(PipeError, match=r"rejected the API key \(HTTP 401\)") as caught:
                await start(pipe, Owui(), body("mock.text"))
            assert "a-wrong-key" not in str(caught.value)

        on_loop(loop_kind, scenario)


def test_an_unreachable_openrouter_says_so_and_is_retried_next_time(loop_kind: str) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = Mock(base_url=f"http://127.0.0.1:{port}/api/v1")

    async def scenario() -> None:
        pipe = make_pipe(dead, "guest")
        for _ in range(2):  # a failed warm-up never locks users out: each call tries again
            with pytest.raises(PipeError, match="unreachable"):
                await start(pipe, Owui(), body("mock.text"))

    on_loop(loop_kind, scenario, limit_s=30)


def test_an_unknown_model_is_named(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest")
        with pytest.raises(PipeError, match=r"'orpipe\.vendor\.nope' is not in OpenRouter's model"):
            await start(pipe, Owui(), body("vendor.nope"))

    on_loop(loop_kind, scenario)


def test_a_model_outside_model_id_is_refused_and_typos_are_reported(
    mock: Mock, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", MODEL_ID="mock/text, mock/typo")
        assert [m["id"] for m in await pipe.pipes()] == ["mock.text"]
        with pytest.raises(PipeError, match="not enabled for this Function"):
            await start(pipe, Owui(), body("mock.reasoning"))
        admin = Owui(role="admin")
        await read(await start(pipe, admin, body("mock.text")))
        warnings = [e["data"]["content"] for e in admin.of_type("notification")]
        assert warnings == ["MODEL_ID names models OpenRouter does not list: mock/typo"]

    on_loop(loop_kind, scenario)


def test_an_unreadable_encrypted_key_is_a_configuration_error(
    mock: Mock, loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBUI_SECRET_KEY", "the-first-secret")
    stored = owui_pipe.Pipe.Valves(API_KEY=API_KEY).model_dump()
    assert stored["API_KEY"].startswith("encrypted:")
    monkeypatch.setenv("WEBUI_SECRET_KEY", "a-rotated-secret")

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", API_KEY=stored["API_KEY"])
        with pytest.raises(PipeError, match="Paste the OpenRouter key into the API_KEY valve"):
            await start(pipe, Owui(), body("mock.text"))

    on_loop(loop_kind, scenario)


def test_valve_validation_errors_read_like_advice() -> None:
    from pydantic import ValidationError  # noqa: PLC0415

    from orpipe.adapters.openwebui.valves import describe_validation_error  # noqa: PLC0415

    with pytest.raises(ValidationError) as caught:
        owui_pipe.Pipe.Valves(MAX_CONCURRENT_REQUESTS=5000)
    assert "MAX_CONCURRENT_REQUESTS must be at most 2000 (got 5000)" in describe_validation_error(
        caught.value, "Valves"
    )


# -- the per-user breaker ------------------------------------------------------------------


def test_repeated_failures_pause_that_user_only(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", BREAKER_MAX_FAILURES=3)
        unlucky, other = Owui(user_id="unlucky"), Owui(user_id="other")
        for _ in range(3):
            assert (await read(await start(pipe, unlucky, body("mock.failed")))).errors
        with pytest.raises(PipeError, match=r"Temporarily paused after repeated errors; retry in"):
            await start(pipe, unlucky, body("mock.text"))
        assert (await read(await start(pipe, other, body("mock.text")))).text

    on_loop(loop_kind, scenario)


# -- tasks, non-streaming, valve changes -----------------------------------------------------


def test_a_title_task_returns_plain_text(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest")
        owui = Owui()
        request = body("mock.text", stream=False)
        title = await start(pipe, owui, request, task="title_generation")
        assert title == expected("text").text
        assert not owui.statuses(), "task requests stay quiet in the chat"
        # A task that fails returns "", and Open WebUI falls back to its own default.
        failed = body("mock.failed", stream=False)
        assert await start(pipe, owui, failed, task="tags_generation") == ""

    on_loop(loop_kind, scenario)


def test_a_non_streaming_chat_returns_the_whole_answer(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe, owui = make_pipe(mock, "guest"), Owui()
        assert await start(pipe, owui, body("mock.text", stream=False)) == expected("text").text
        assert FINAL_LINE.fullmatch(owui.statuses()[-1]["description"])

    on_loop(loop_kind, scenario)


def test_changing_valves_mid_answer_drops_nothing(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    async def scenario() -> None:
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        slow = await _start_with_transport(
            pipe, owui, body("mock.text"), with_params(tokens=150, tps=150)
        )
        first = await anext(slow)
        runtime = runtime_for_loop()
        bridge = runtime.current_bridge
        # Open WebUI assigns a new Valves object on the next dispatch.
        pipe.valves = pipe.Valves(**{**pipe.valves.model_dump(), "MAX_CONCURRENT_REQUESTS": 7})
        quick = await read(await start(pipe, Owui(user_id="u2"), body("mock.text")))
        assert quick.text == expected("text").text
        assert runtime.current_bridge is bridge, "same bridge, reconfigured engine"
        stats = await bridge.statistics() if bridge is not None else None
        assert stats is not None and stats.admission.max_concurrent == 7
        rest = await read(slow)
        assert _delta(first)["content"] + rest.text == expected("text", tokens=150).text

    on_loop(loop_kind, scenario)


def test_the_engine_stops_with_the_loop(mock: Mock, bridge_kind: str, loop_kind: str) -> None:
    seen: list[Any] = []

    async def scenario() -> None:
        pipe = make_pipe(mock, bridge_kind)
        await read(await start(pipe, Owui(), body("mock.text")))
        seen.append(runtime_for_loop().current_bridge)

    run_on(loop_kind, scenario)  # no explicit cleanup: the loop's shutdown does it
    assert seen and seen[0] is not None and not seen[0].running


# -- the Function file ---------------------------------------------------------------------


def test_the_function_file_is_what_open_webui_expects() -> None:
    text = FUNCTION_FILE.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == '"""', "Open WebUI reads frontmatter only after an exact first line"
    end = lines.index('"""', 1)
    front = dict(line.split(":", 1) for line in lines[1:end])
    front = {k.strip(): v.strip() for k, v in front.items()}
    assert {"title", "author", "version", "license", "description", "requirements"} <= set(front)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert front["version"] == version
    assert front["requirements"] == f"orpipe=={version}"
    for phrase in ("from utils", "from config", "from main", "from apps"):
        assert phrase not in text, f"Open WebUI would rewrite {phrase!r} in the Function source"
    tree = ast.parse(text)
    (pipe_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Pipe"]
    assert pipe_class


def test_every_reserved_argument_has_a_default() -> None:
    """Open WebUI passes only what the signature declares; a name it does not offer
    without a default would be a TypeError on every call."""
    import inspect  # noqa: PLC0415

    signature = inspect.signature(owui_pipe.Pipe.pipe)
    reserved = [p for name, p in signature.parameters.items() if name.startswith("__")]
    assert {p.name for p in reserved} == {
        "__user__", "__request__", "__event_emitter__", "__event_call__",
        "__metadata__", "__tools__", "__task__", "__task_body__",
    }  # fmt: skip
    assert all(p.default is None for p in reserved)


def test_no_request_state_lives_on_the_pipe(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest")
        before = set(vars(pipe))
        await read(await start(pipe, Owui(), body("mock.text")))
        assert set(vars(pipe)) == before == {"type", "valves"}

    on_loop(loop_kind, scenario)


def test_an_answer_closed_or_dropped_before_it_was_read_ends_its_request(
    mock: Mock, bridge_kind: str, loop_kind: str
) -> None:
    """Open WebUI may drop the generator before iterating it (a client gone early)."""
    import gc  # noqa: PLC0415

    async def scenario() -> None:
        pipe = make_pipe(mock, bridge_kind)
        closed = await _start_with_transport(pipe, Owui(), body("mock.stall"), with_params())
        dropped = await _start_with_transport(pipe, Owui(), body("mock.stall"), with_params())
        await wait_until(lambda: mock_streams_are(mock, 2))
        await closed.aclose()
        del dropped
        gc.collect()
        await wait_until(lambda: mock_streams_are(mock, 0))
        await wait_until(lambda: engine_idle(pipe))

    on_loop(loop_kind, scenario)


# -- artifacts across turns ------------------------------------------------------------------


class Recording:
    """A transport factory that remembers every request body sent upstream."""

    def __init__(self, **params: object) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._inner = with_params(**params) if params else None

    def __call__(self, config: EngineConfig) -> AbstractAsyncContextManager[UpstreamTransport]:
        import json  # noqa: PLC0415

        bodies = self.bodies
        inner = (
            self._inner(config) if self._inner else OpenRouterHttpTransport(config, api_key=API_KEY)
        )

        @asynccontextmanager
        async def opened() -> AsyncIterator[UpstreamTransport]:
            async with inner as transport:

                class Recorder:
                    def stream(self, body: bytes) -> Any:
                        bodies.append(json.loads(body))
                        return transport.stream(body)

                yield Recorder()  # type: ignore[misc]

        return opened()


def turn(owui: Owui, message_id: str, history: list[dict[str, Any]], text: str) -> dict[str, Any]:
    request = body("mock.reasoning")
    request["messages"] = [*history, {"role": "user", "content": text}]
    owui.message_id = message_id
    return request


async def _turn(
    pipe: owui_pipe.Pipe,
    owui: Owui,
    request: dict[str, Any],
    rec: Recording,
    *,
    chat_id: str = "chat-7",
    **context: Any,
) -> Any:
    """One turn through ``run_turn`` with a recording transport (``context``: more TurnContext)."""
    from orpipe.adapters.openwebui import turn as owui_chat  # noqa: PLC0415

    ctx = owui_chat.TurnContext(
        user={"id": owui.user_id, "role": owui.role},
        metadata={"chat_id": chat_id, "message_id": owui.message_id, "features": {}},
        emitter=owui.emit,
        transport_factory=rec,
        **context,
    )
    return await owui_chat.run_turn(pipe.valves, request, ctx)


def test_reasoning_is_replayed_next_turn_then_forgotten(
    mock: Mock, bridge_kind: str, loop_kind: str, artifact_database: Path
) -> None:
    """Turn 1 stores its reasoning and references it; turn 2 sends it back upstream
    in place, and (retention next_reply) deletes it after its own success."""

    async def scenario() -> None:
        pipe, owui, rec = make_pipe(mock, bridge_kind), Owui(), Recording()
        first = await read(await _turn(pipe, owui, turn(owui, "m1", [], "Hi"), rec))
        (stored_id,) = find_markers(first.text)
        history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": first.text}]
        await read(await _turn(pipe, owui, turn(owui, "m2", history, "More"), rec))
        sent = rec.bodies[-1]["input"]
        kinds = [(i.get("type"), i.get("role")) for i in sent]
        # The reference stood after the answer text, so the item follows that text.
        assert kinds == [
            ("message", "user"),
            ("message", "assistant"),
            ("reasoning", None),
            ("message", "user"),
        ]
        assert not any("]: #" in json_text(i) for i in sent), "markers never go upstream"
        # next_reply: turn 1's reasoning is gone once turn 2 succeeded.
        assert stored_id not in sqlite_ids(artifact_database)

    on_loop(loop_kind, scenario)


def test_a_cancelled_turns_artifacts_reach_the_next_turn(
    mock: Mock, bridge_kind: str, loop_kind: str, artifact_database: Path
) -> None:
    """Stop pressed after the reasoning: no reference lines were written, but the
    stored reasoning is found and replayed before the newest user message."""

    async def scenario() -> None:
        pipe, owui = make_pipe(mock, bridge_kind), Owui()
        slow = Recording(tokens=400, tps=400)
        answer = await _turn(pipe, owui, turn(owui, "m1", [], "Hi"), slow)
        async for chunk in answer:
            if _delta(chunk).get("content"):
                break  # the answer has started: the reasoning item is done
        await answer.aclose()  # the stop button
        await wait_until(lambda: _stored(artifact_database, 1))
        history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Par"}]
        rec = Recording()
        await read(await _turn(pipe, owui, turn(owui, "m2", history, "Again"), rec))
        kinds = [(i.get("type"), i.get("role")) for i in rec.bodies[-1]["input"]]
        assert kinds[-2:] == [("reasoning", None), ("message", "user")]

    on_loop(loop_kind, scenario)


async def _stored(database: Path, n: int) -> bool:
    return len(await asyncio.to_thread(sqlite_ids, database)) >= n


def sqlite_ids(database: Path) -> set[str]:
    import sqlite3  # noqa: PLC0415

    if not database.exists():
        return set()
    with contextlib.closing(sqlite3.connect(database)) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {r[0] for t in tables for r in db.execute(f'select artifact_id from "{t}"')}


def json_text(item: Any) -> str:
    import json  # noqa: PLC0415

    return json.dumps(item)


def test_a_failing_history_store_trips_that_users_db_breaker(mock: Mock, loop_kind: str) -> None:
    from orpipe.adapters.openwebui import turn as owui_chat  # noqa: PLC0415
    from tests.engine.support import MemoryStore  # noqa: PLC0415

    store = MemoryStore()
    store.down = True

    @asynccontextmanager
    async def store_factory() -> AsyncIterator[MemoryStore]:
        yield store

    async def scenario() -> None:
        pipe = make_pipe(
            mock, "guest", BREAKER_MAX_FAILURES=2, ENGINE_OVERRIDES="persist_flush_grace_s=0.2"
        )

        async def one(owui: Owui) -> Answer:
            context = owui_chat.TurnContext(
                user={"id": owui.user_id},
                metadata={"chat_id": "chat-9", "message_id": "m", "features": {}},
                emitter=owui.emit,
                store_factory=store_factory,
            )
            return await read(await owui_chat.run_turn(pipe.valves, body("mock.text"), context))

        told = [Owui(user_id="u") for _ in range(3)]
        for owui in told:
            assert (await one(owui)).text == expected("text").text  # the chat itself goes on
        notices = [e["data"]["content"] for e in told[0].of_type("notification")]
        assert notices and notices[0].startswith("History storage is degraded")
        assert not told[1].of_type("notification"), "the user is told once"
        skipped = [s["description"] for s in told[2].statuses()]
        assert "DB ops skipped due to repeated errors" in skipped
        other = Owui(user_id="someone-else")
        await one(other)
        assert "DB ops skipped due to repeated errors" not in [
            s["description"] for s in other.statuses()
        ]

    on_loop(loop_kind, scenario)
