"""Logging through the Open WebUI pipe: the failure's log lines as a source, per-user
levels, and a scan of everything a workload produces for configured secrets.

The mock OpenRouter runs in its own process; the pipe runs on real asyncio and
uvloop loops. The engine's console sink writes to the process's stderr from
its worker thread, which ``capfd`` captures at the file descriptor.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport
from orpipe.adapters.openwebui.runtime import runtime_for_loop
from orpipe.engine import EngineConfig
from orpipe.engine.logs import request_logs, stop_logging
from tests.adapters.asyncio_support import Mock
from tests.adapters.test_owui_pipe import (  # noqa: F401 - fixtures used by name
    Owui,
    artifact_database,
    body,
    make_pipe,
    on_loop,
    read,
)
from tests.engine.support import API_KEY


@pytest.fixture(autouse=True)
def engine_logging_reset() -> Any:
    yield
    stop_logging()


def log_sources(owui: Owui) -> list[dict[str, Any]]:
    return [
        e["data"]
        for e in owui.of_type("source")
        if str(e["data"]["source"].get("id", "")).startswith("orpipe-log-")
    ]


async def turn(pipe: Any, owui: Owui, request: dict[str, Any], user_valves: Any = None) -> Any:
    kwargs = owui.kwargs()
    kwargs["__user__"]["valves"] = user_valves
    return await read(await pipe.pipe(request, **kwargs))


async def http_error_turn(pipe: Any, owui: Owui, scenario: str) -> Any:
    """A turn whose upstream answers with one of the mock's HTTP error scenarios."""
    from orpipe.adapters.openwebui import turn as owui_chat  # noqa: PLC0415

    def factory(config: EngineConfig) -> Any:
        headers = {"X-Mock-Scenario": scenario, "X-Mock-Params": "retry_after=0"}
        return OpenRouterHttpTransport(config, api_key=API_KEY, extra_headers=headers)

    context = owui_chat.TurnContext(
        user={"id": owui.user_id, "role": owui.role},
        metadata={"features": {}},
        emitter=owui.emit,
        transport_factory=factory,
    )
    try:
        return await read(await owui_chat.run_turn(pipe.valves, body("mock.text"), context))
    except owui_chat.PipeError as exc:  # refused up front: the message is what the user reads
        return exc.args[0]


def test_a_failed_answer_carries_its_log_lines_as_a_source(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest")
        failed_owui, fine_owui = Owui(), Owui(user_id="user-2")
        failed = await turn(pipe, failed_owui, body("mock.failed"))
        fine = await turn(pipe, fine_owui, body("mock.text"))
        assert failed.errors and not fine.errors
        (source,) = log_sources(failed_owui)
        (document,) = source["document"]
        lines = document.splitlines()
        assert any(
            "request failed: OpenRouter reported" in line and "[WARNING]" in line for line in lines
        )
        assert source["source"]["name"].startswith("Request log ")
        assert source["metadata"][0]["name"] == f"orpipe request log ({len(lines)} lines)"
        assert log_sources(fine_owui) == []  # only failures carry their log
        assert request_logs().statistics()["requests"] == 0  # both let go of

    on_loop(loop_kind, scenario)


def test_a_users_debug_level_shows_in_their_requests_only(
    mock: Mock, loop_kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", LOG_LEVEL="INFO")
        curious, other = Owui(user_id="curious"), Owui(user_id="other")
        await turn(pipe, curious, body("mock.failed"), user_valves={"LOG_LEVEL": "debug"})
        await turn(pipe, other, body("mock.failed"))
        (mine,) = log_sources(curious)
        (theirs,) = log_sources(other)
        assert "[DEBUG]" in mine["document"][0] and "fetching" in mine["document"][0]
        assert "[DEBUG]" not in theirs["document"][0]

    on_loop(loop_kind, scenario)
    from orpipe.engine.logs import logger  # noqa: PLC0415

    logger.complete()
    console = capfd.readouterr().err
    debug_lines = [line for line in console.splitlines() if "| DEBUG" in line]
    assert debug_lines and all("user=curious" in line for line in debug_lines)


SECRET_KEY_TEXT = "orpipe-artifact-secret-" + "k3y" * 6


def forms_of(secret: str) -> list[str]:
    """The secret, and its base64 at the start of a value (what leaks most often)."""
    raw = secret.encode()
    encoded = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    return [secret, encoded.rstrip("="), urlsafe.rstrip("=")]


def test_no_configured_secret_reaches_logs_errors_events_or_statistics(
    mock: Mock, loop_kind: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A representative workload: answers, failures, a busy upstream, reasoning, tools,
    inline attachments, a DEBUG user, and artifacts encrypted with a key."""
    monkeypatch.setenv("WEBUI_SECRET_KEY", "webui-secret-for-the-valves-0123456789")
    produced: list[str] = []

    async def scenario() -> None:
        pipe = make_pipe(
            mock,
            "guest",
            LOG_LEVEL="DEBUG",
            ARTIFACT_ENCRYPTION_KEY=SECRET_KEY_TEXT,
        )
        owui = Owui()
        image = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(600)).decode()
        attachment = body("openai.gpt-4o")
        attachment["messages"][-1]["content"] = [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": image}},
        ]
        for request, valves in [
            (body("mock.text"), None),
            (body("mock.reasoning"), {"LOG_LEVEL": "DEBUG"}),
            (body("mock.failed"), None),
            (body("mock.tools"), None),
            (attachment, None),
        ]:
            answer = await turn(pipe, owui, request, user_valves=valves)
            produced.append(json.dumps(answer.chunks))
        for scenario_name in ("http-401", "http-429", "http-500"):
            answer = await http_error_turn(pipe, owui, scenario_name)
            produced.append(json.dumps(getattr(answer, "chunks", answer)))
        produced.append(json.dumps(owui.events))
        bridge = runtime_for_loop().current_bridge
        assert bridge is not None
        produced.append(json.dumps((await bridge.statistics()).as_dict(), default=str))
        produced.append(repr(pipe.valves))

    on_loop(loop_kind, scenario, limit_s=60)
    from orpipe.engine.logs import logger  # noqa: PLC0415

    logger.complete()
    captured = capfd.readouterr()
    produced += [captured.out, captured.err]
    everything = "\n".join(produced)
    assert "request failed:" in everything  # the scan did see the engine's log lines
    for secret in (API_KEY, SECRET_KEY_TEXT):
        for form in forms_of(secret):
            assert form not in everything, f"a form of a configured secret leaked: {form[:6]}…"
