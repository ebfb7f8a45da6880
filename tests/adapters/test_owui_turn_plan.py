"""The turn planner, pure (no loop runs), and what a whole turn costs before it streams.

``plan_turn`` builds one complete ``ChatRequest``; a turn through ``run_turn``
constructs ``ChatRequest`` once (twice only when the intake pass rewrites
the input) and crosses from asyncio into trio, before the answer streams,
only where the history and the submit need it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui import turn as owui_chat
from orpipe.adapters.openwebui.artifact_replay import ReplayPlan
from orpipe.adapters.openwebui.history import Loaded
from orpipe.adapters.openwebui.runtime import PipeRuntime
from orpipe.adapters.openwebui.turn_context import TurnContext
from orpipe.adapters.openwebui.turn_plan import TurnHistory, TurnSettings, plan_turn
from orpipe.adapters.openwebui.valves import Valves, effective_settings
from orpipe.engine import ChatRequest
from orpipe.engine.artifacts import Artifact, ArtifactContext, marker_line
from tests.adapters import test_owui_pipe as pipe_tests
from tests.adapters.asyncio_support import Mock
from tests.adapters.test_owui_pipe import artifact_database  # noqa: F401 - a fixture
from tests.adapters.test_owui_tool_turns import WeatherTool

TOOL_MODEL = ModelInfo(
    openrouter_id="openai/gpt-4o",
    sub_id="openai.gpt-4o",
    name="OpenAI: GPT-4o",
    input_modalities=frozenset({"text", "image"}),
    supported_parameters=frozenset({"tools", "reasoning"}),
)
CONTEXT = ArtifactContext(chat_id="chat-1", message_id="answer-2", reasoning="next_reply")
HELLO = {"role": "user", "content": "Hello"}


@pytest.fixture
def constructions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The request id of every ``ChatRequest`` constructed (``replace`` constructs too)."""
    built: list[str] = []
    post_init = ChatRequest.__post_init__

    def counted(self: ChatRequest) -> None:
        built.append(self.request_id)
        post_init(self)

    monkeypatch.setattr(ChatRequest, "__post_init__", counted)
    yield built


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Where engine-mode tools would run; the planner only names it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def settings(**valves: Any) -> TurnSettings:
    form = Valves(API_KEY="sk-or-test", **valves)
    return TurnSettings(form, "sk-or-test", form.engine_config(), effective_settings(form, None))


def context(**more: Any) -> TurnContext:
    return TurnContext(user={"id": "user-1"}, metadata={"session_id": "sid-1"}, **more)


def test_the_plan_holds_one_complete_request(
    constructions: list[str], loop: asyncio.AbstractEventLoop
) -> None:
    tool = WeatherTool()
    plan = plan_turn(
        settings(),
        {"messages": [HELLO]},
        context(tools={"get_weather": tool.entry()}),
        TOOL_MODEL,
        TurnHistory(CONTEXT),
        loop=loop,
    )
    request = plan.request
    assert constructions == [request.request_id]
    assert request.model == "openai/gpt-4o" and request.user_id == "user-1"
    assert request.tools is not None and list(request.tools) == ["get_weather"]
    assert request.artifacts == CONTEXT
    effective = effective_settings(Valves(), None)
    assert request.update_char_limit == effective.update_char_limit
    assert request.idle_flush_ms == effective.idle_flush_ms
    assert request.log_level == effective.log_level
    assert not plan.needs_intake and not plan.keyed_by_branch and plan.forget == ()


def test_pass_through_announces_the_tools_and_leaves_their_calls_to_open_webui(
    loop: asyncio.AbstractEventLoop,
) -> None:
    tool = WeatherTool()
    plan = plan_turn(
        settings(TOOL_EXECUTION_MODE="open-webui"),
        {"messages": [HELLO]},
        context(tools={"get_weather": tool.entry()}),
        TOOL_MODEL,
        TurnHistory(CONTEXT),
        loop=loop,
    )
    assert plan.request.tools is None
    assert [t["name"] for t in plan.request.options["tools"]] == ["get_weather"]
    assert plan.request.artifacts is not None and not plan.request.artifacts.function_calls


def test_a_task_gets_no_tools(loop: asyncio.AbstractEventLoop) -> None:
    tool = WeatherTool()
    plan = plan_turn(
        settings(),
        {"messages": [HELLO]},
        context(task="title_generation", tools={"get_weather": tool.entry()}),
        TOOL_MODEL,
        TurnHistory(None),
        loop=loop,
    )
    assert plan.request.tools is None and "tools" not in plan.request.options
    assert plan.request.artifacts is None and plan.tool_notes == ()


def test_the_plan_says_when_the_intake_pass_has_work(loop: asyncio.AbstractEventLoop) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    message = {"role": "user", "content": [{"type": "text", "text": "this?"}, image]}
    plan = plan_turn(
        settings(), {"messages": [message]}, context(), TOOL_MODEL, TurnHistory(None), loop=loop
    )
    assert plan.needs_intake


def test_replayed_reasoning_is_forgotten_after_a_good_reply_under_next_reply(
    loop: asyncio.AbstractEventLoop,
) -> None:
    reasoning = Artifact(
        chat_id="chat-1",
        message_id="answer-1",
        item_type="reasoning",
        payload={"type": "reasoning", "id": "rs_1", "summary": []},
    )
    branch_placed = (
        HELLO,
        {"role": "assistant", "content": f"{marker_line(reasoning.artifact_id)}\nHi"},
        {"role": "user", "content": "More"},
    )
    history = TurnHistory(
        CONTEXT,
        Loaded(
            plan=ReplayPlan(artifacts={reasoning.artifact_id: reasoning}, chat_id="chat-1"),
            messages=branch_placed,
        ),
    )
    plan = plan_turn(settings(), {"messages": []}, context(), TOOL_MODEL, history, loop=loop)
    assert plan.keyed_by_branch
    assert [item.get("type") for item in plan.request.input] == [
        "message",
        "reasoning",
        "message",
        "message",
    ]
    assert plan.forget == (reasoning.artifact_id,)


# -- a whole turn: constructions and crossings ----------------------------------------


class _CrossingCounter:
    """The turn's bridge, recording each call that crosses into trio, in order."""

    CROSSINGS = (
        "start",
        "submit",
        "statistics",
        "wait_persisted",
        "call_store",
        "call_store_when_persisted",
        "reconfigure",
    )

    def __init__(self, bridge: Any, calls: list[str]) -> None:
        self._bridge = bridge
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._bridge, name)
        if name not in self.CROSSINGS:
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            return await value(*args, **kwargs)

        return counted


@pytest.fixture
def crossings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls: list[str] = []
    chosen = PipeRuntime.bridge

    async def counted_bridge(self: PipeRuntime, target: Any) -> Any:
        return _CrossingCounter(await chosen(self, target), calls)

    monkeypatch.setattr(PipeRuntime, "bridge", counted_bridge)
    yield calls


def _before_submit(calls: list[str]) -> list[str]:
    return calls[: calls.index("submit") + 1]


def test_a_turn_builds_its_request_once_and_crosses_only_for_history_and_submit(
    mock: Mock,
    loop_kind: str,
    artifact_database: Path,  # noqa: F811 - the fixture imported above
    constructions: list[str],
    crossings: list[str],
) -> None:
    async def scenario() -> None:
        pipe, owui = pipe_tests.make_pipe(mock, "thread"), pipe_tests.Owui()
        rec = pipe_tests.Recording()

        async def chat(message_id: str, history: list[dict[str, Any]], text: str) -> Any:
            request = pipe_tests.turn(owui, message_id, history, text)
            return await pipe_tests.read(await pipe_tests._turn(pipe, owui, request, rec))

        first = await chat("m1", [], "Hi")
        assert len(constructions) == 1
        # History is the persister's barrier, then the load next to the store (a chat
        # Open WebUI does not keep reads the store on its first answer too); then submit.
        assert _before_submit(crossings) == ["call_store_when_persisted", "submit"]
        constructions.clear()
        crossings.clear()
        history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": first.text}]
        await chat("m2", history, "More")
        assert len(constructions) == 1
        assert _before_submit(crossings) == ["call_store_when_persisted", "submit"]
        assert "reasoning" in [item.get("type") for item in rec.bodies[-1]["input"]]

    pipe_tests.on_loop(loop_kind, scenario, limit_s=30)  # two turns on a busy machine


def test_a_title_task_builds_its_request_once_and_only_submits(
    mock: Mock, loop_kind: str, constructions: list[str], crossings: list[str]
) -> None:
    async def scenario() -> None:
        pipe, owui = pipe_tests.make_pipe(mock, "thread"), pipe_tests.Owui()
        ctx = owui_chat.TurnContext(
            user={"id": owui.user_id}, metadata={"chat_id": "chat-1"}, task="title_generation"
        )
        await owui_chat.run_turn(pipe.valves, pipe_tests.body("mock.text"), ctx)
        assert len(constructions) == 1
        assert _before_submit(crossings) == ["submit"]

    pipe_tests.on_loop(loop_kind, scenario, limit_s=30)  # a busy machine
