"""Telemetry inside Open WebUI: the TELEMETRY_* valves and the server the Function starts.

The valves: off by default, loopback by default, a token required for any
other address (stored encrypted, never echoed). The Function: with
TELEMETRY_ENABLED its engine serves ``/metrics`` on loopback, and a port
already taken costs the telemetry, never the chat.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from orpipe.adapters.openwebui.valves import Valves
from orpipe.adapters.openwebui.valves.engine_settings import telemetry_service_for
from orpipe.adapters.openwebui.valves.errors import describe_validation_error
from tests.adapters.asyncio_support import Mock
from tests.adapters.test_owui_pipe import Owui, body, make_pipe, on_loop, read, start

TOKEN = "a-long-random-telemetry-token"


@pytest.fixture(autouse=True)
def no_shared_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Artifacts in this test's SQLite file; no Redis (this worker alone)."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


def _free_port_pair() -> int:
    """A port whose next port is free too (the WebSocket's), both on loopback."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65534:
                continue
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    pytest.fail("no two consecutive free loopback ports")


# -- valves ------------------------------------------------------------------------------


def test_telemetry_is_off_and_on_loopback_by_default() -> None:
    valves = Valves()
    assert valves.TELEMETRY_ENABLED is False
    assert valves.TELEMETRY_HOST == "127.0.0.1"
    assert telemetry_service_for(valves) is None
    assert telemetry_service_for(Valves(TELEMETRY_ENABLED=True)) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    Valves(TELEMETRY_ENABLED=True, TELEMETRY_HOST=host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "metrics.internal"])
def test_any_other_host_without_a_token_is_a_valve_error(host: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Valves(TELEMETRY_ENABLED=True, TELEMETRY_HOST=host)
    message = describe_validation_error(refused.value, "Valves")
    assert message.startswith("Valves: TELEMETRY_TOKEN is required because TELEMETRY_HOST")
    assert "127.0.0.1" in message  # says what to do instead
    # Off, the address does not matter yet; with a token, it is accepted.
    Valves(TELEMETRY_HOST=host)
    Valves(TELEMETRY_ENABLED=True, TELEMETRY_HOST=host, TELEMETRY_TOKEN=TOKEN)


def test_the_token_is_stored_encrypted_and_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBUI_SECRET_KEY", "test-secret")
    valves = Valves(TELEMETRY_ENABLED=True, TELEMETRY_HOST="0.0.0.0", TELEMETRY_TOKEN=TOKEN)
    assert valves.TELEMETRY_TOKEN.startswith("encrypted:")
    assert valves.telemetry_token() == TOKEN
    assert TOKEN not in repr(valves)
    service = telemetry_service_for(valves)
    assert service is not None and TOKEN not in repr(service) and TOKEN not in repr(service.plan)
    with pytest.raises(ValidationError) as short:
        Valves(TELEMETRY_TOKEN="short-secret")
    message = describe_validation_error(short.value, "Valves")
    assert "at least 16 characters" in message and "short-secret" not in message


# -- the Function ------------------------------------------------------------------------


def test_the_function_serves_metrics_on_loopback_when_enabled(mock: Mock, loop_kind: str) -> None:
    port = _free_port_pair()

    async def scenario() -> None:
        owui = Owui()
        pipe = make_pipe(mock, "thread", TELEMETRY_ENABLED=True, TELEMETRY_PORT=port)
        answer = await read(await start(pipe, owui, body("mock.text")))
        assert answer.errors == []
        url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient() as client:
            # The server starts beside the engine, in the trio run: poll, bounded by run_on.
            while True:
                try:
                    response = await client.get(url)
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
        assert response.status_code == 200
        assert "orpipe_admission_admitted_total 1" in response.text

    on_loop(loop_kind, scenario)


class _Recorder(logging.Handler):
    """Keeps the messages of one logger (the Function routes ``orpipe`` logs to its own
    sinks, so pytest's caplog on the root logger would not see them)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_port_in_use_costs_the_telemetry_not_the_chat(mock: Mock) -> None:
    recorder = _Recorder()
    telemetry_log = logging.getLogger("orpipe.telemetry")
    telemetry_log.addHandler(recorder)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])

        def told() -> list[str]:
            return [m for m in recorder.messages if "is in use" in m]

        async def scenario() -> None:
            owui = Owui()
            pipe = make_pipe(mock, "thread", TELEMETRY_ENABLED=True, TELEMETRY_PORT=port)
            answer = await read(await start(pipe, owui, body("mock.text")))
            assert answer.errors == []
            assert answer.text
            while not told():  # noqa: ASYNC110 - a log line from the trio thread; bounded
                await asyncio.sleep(0.02)

        try:
            on_loop("asyncio", scenario)
        finally:
            telemetry_log.removeHandler(recorder)
    assert len(told()) == 1
    assert f"port {port}" in told()[0] and "keeps answering chats" in told()[0]
