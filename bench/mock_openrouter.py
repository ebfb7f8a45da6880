"""Mock OpenRouter: a real HTTP server on loopback (hypercorn's trio worker + a small ASGI app).

This module owns the server: routing (``/api/v1/responses``, ``/api/v1/models``,
``/api/v1/chat/completions``, ``/mock/stats``, ``/mock/requests``), auth, paging of the
catalogue, disconnect handling, and serving. *What* is sent is decided by
``bench.mock_scenarios.plan`` so tests can predict it; the request side (parameters,
400 checks, counters) is ``bench.mock_requests``; the wire is ``bench.mock_sse`` for the
Responses API and ``bench.mock_chat`` for Chat Completions (``CHAT_SCENARIOS``).
Bench variants (``--variant d20=tokens=200&tps=50``) add models ``mock/text:d20`` to the
catalogue whose requests get those parameters, for clients that can only pick a model.

Public API: ``serve_mock`` (trio), ``MockServer``, and the CLI
``python -m bench.mock_openrouter --port N [--host H] [--api-key K] [--param tps=25]
[--variant NAME=tokens=200&tps=50]``. A stream whose client disconnects is cancelled.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from orpipe.bench.mock_catalogue import (
    CATALOGUE,
    parse_variant,
    resolve_scenario,
    variant_models,
    variant_of,
)
from orpipe.bench.mock_chat import ChatStreamRun, chat_completion
from orpipe.bench.mock_requests import (
    MockStats,
    count_tool_outputs,
    input_problem,
    tool_names,
    with_header_params,
)
from orpipe.bench.mock_responses import Job
from orpipe.bench.mock_scenarios import (
    CHAT_SCENARIOS,
    PARAM_PREFIX,
    ParamError,
    ScenarioError,
    ScenarioPlan,
    error_envelope,
    parse_params,
    plan,
)
from orpipe.bench.mock_sse import Dropped, Message, Send, SseWriter, StreamRun

__all__ = ["MockServer", "main", "serve_mock"]

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

API_PREFIX: Final = "/api/v1"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class MockServer:
    """A running mock: where it listens and its live counters."""

    host: str
    port: int
    stats: MockStats

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"


def _raw_headers(pairs: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


async def _send_json(
    send: Send, status: int, obj: object, headers: Sequence[tuple[str, str]] = ()
) -> None:
    body = _encode(obj)
    all_headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *headers,
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": _raw_headers(all_headers)}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class MockApp:
    """ASGI 3 app for the mock. One instance per server; holds the attempt counters."""

    def __init__(
        self,
        stats: MockStats,
        api_key: str | None = None,
        default_params: Mapping[str, str] | None = None,
        variants: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.stats = stats
        self.api_key = api_key
        self.default_params = dict(default_params or {})
        #: Variant name -> its ``mock.*`` parameters (no prefix), for ``mock/<scenario>:<name>``.
        self.variants = {name: dict(params) for name, params in (variants or {}).items()}
        self.catalogue = CATALOGUE + variant_models(list(self.variants))
        self._ids = itertools.count(1)
        self._attempts: dict[str, int] = {}

    def _param_defaults(self, model: object) -> dict[str, str]:
        """The server's ``--param`` defaults, overlaid with the model's variant, if any."""
        variant = variant_of(model)
        if variant is None or variant not in self.variants:
            return self.default_params
        return {**self.default_params, **self.variants[variant]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path == "/mock/stats" and method == "GET":
            await _send_json(send, 200, self.stats.snapshot())
            return
        if path == "/mock/requests" and method == "GET":
            await _send_json(send, 200, {"requests": list(self.stats.recent_requests)})
            return
        if path.startswith(API_PREFIX) and not await self._authorized(headers, send):
            return
        if path == f"{API_PREFIX}/responses":
            if method != "POST":
                await _send_json(send, 405, error_envelope(405, "Method not allowed"))
                return
            await self._responses(headers, receive, send)
        elif path == f"{API_PREFIX}/chat/completions":
            if method != "POST":
                await _send_json(send, 405, error_envelope(405, "Method not allowed"))
                return
            await self._chat_completions(headers, receive, send)
        elif path == f"{API_PREFIX}/models" and method == "GET":
            await self._models(scope["query_string"], send)
        else:
            await _send_json(send, 404, error_envelope(404, f"Not found: {path}"))

    async def _authorized(self, headers: Mapping[str, str], send: Send) -> bool:
        if self.api_key is None:
            return True
        auth = headers.get("authorization")
        if auth is None:
            await _send_json(send, 401, error_envelope(401, "Missing Authentication header"))
            return False
        if auth != f"Bearer {self.api_key}":
            await _send_json(send, 401, error_envelope(401, "User not found."))
            return False
        return True

    async def _models(self, query_string: bytes, send: Send) -> None:
        query = parse_qs(query_string.decode("latin-1"))
        models = list(self.catalogue)
        total = len(models)
        next_link: str | None = None
        if "limit" in query or "offset" in query:  # paging only when asked for (contract 1.12)
            try:
                limit = int(query.get("limit", ["1000"])[0])
                offset = int(query.get("offset", ["0"])[0])
                if not 1 <= limit <= 1000 or offset < 0:
                    raise ValueError
            except ValueError:
                await _send_json(send, 400, error_envelope(400, "Invalid limit or offset"))
                return
            models = models[offset : offset + limit]
            if offset + limit < total:
                next_link = f"{API_PREFIX}/models?offset={offset + limit}&limit={limit}"
        await _send_json(
            send, 200, {"data": models, "total_count": total, "links": {"next": next_link}}
        )

    async def _responses(self, headers: Mapping[str, str], receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        request, problem = self._parse_request(body)
        if request is None:
            await _send_json(send, 400, error_envelope(400, problem))
            return
        try:
            scenario = resolve_scenario(request.get("model"), headers.get("x-mock-scenario"))
            metadata = with_header_params(
                request.get("metadata"),
                headers.get("x-mock-params"),
                self._param_defaults(request.get("model")),
            )
            p = plan(
                scenario,
                metadata,
                tool_outputs=count_tool_outputs(request),
                tool_names=tool_names(request),
            )
        except (ScenarioError, ParamError) as exc:
            await _send_json(send, 400, error_envelope(400, str(exc)))
            return
        self.stats.count_input_parts(request)
        served = await self._attempt(p, scenario, metadata, request, send)
        if served is not None:
            streamed = request.get("stream") is True
            job = self._job(served, scenario, request)
            await self._answer(
                job, streamed, receive, send, runner=StreamRun, whole=Job.final_response
            )

    async def _chat_completions(
        self, headers: Mapping[str, str], receive: Receive, send: Send
    ) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        try:
            request = _decode(body)
        except msgspec.DecodeError as exc:
            await _send_json(send, 400, error_envelope(400, f"Invalid JSON body: {exc}"))
            return
        if not isinstance(request, dict) or not request.get("model"):
            problem = "Missing required parameter: 'model'."
            await _send_json(send, 400, error_envelope(400, problem))
            return
        messages = request.get("messages")
        if not isinstance(messages, list):
            await _send_json(send, 400, error_envelope(400, "'messages' must be a list"))
            return
        model = request["model"]
        try:
            scenario = resolve_scenario(model, headers.get("x-mock-scenario"))
            metadata = with_header_params(
                request.get("metadata"), headers.get("x-mock-params"), self._param_defaults(model)
            )
            p = plan(scenario, metadata)
        except (ScenarioError, ParamError) as exc:
            await _send_json(send, 400, error_envelope(400, str(exc)))
            return
        summary = {"model": model, "input": messages}
        served = await self._attempt(p, scenario, metadata, summary, send)
        if served is None:
            return
        if served.scenario not in CHAT_SCENARIOS:
            names = ", ".join(sorted(CHAT_SCENARIOS))
            problem = f"scenario {served.scenario!r} is not served on /chat/completions ({names})"
            await _send_json(send, 400, error_envelope(400, problem))
            return
        streamed = request.get("stream") is True
        job = self._job(served, scenario, summary)
        await self._answer(
            job, streamed, receive, send, runner=ChatStreamRun, whole=chat_completion
        )

    async def _attempt(
        self,
        p: ScenarioPlan,
        scenario: str,
        metadata: Mapping[str, Any],
        request: Mapping[str, Any],
        send: Send,
    ) -> ScenarioPlan | None:
        """Count the request; None if it got its planned HTTP error, else the plan to serve.

        Past its failures a request behaves like ``text`` with the same parameters.
        """
        stats = self.stats
        stats.requests_total += 1
        stats.requests_by_scenario[scenario] = stats.requests_by_scenario.get(scenario, 0) + 1
        if p.http_error is None:
            return p
        if self._should_fail(p):
            stats.record_request(scenario, request, None)
            err = p.http_error
            await _send_json(send, err.status, err.body, err.headers)
            return None
        return plan("text", metadata)

    def _job(self, p: ScenarioPlan, scenario: str, request: Mapping[str, Any]) -> Job:
        job = Job(plan=p, n=next(self._ids), request=request)
        self.stats.record_request(scenario, request, job)
        return job

    async def _answer(
        self,
        job: Job,
        streamed: bool,
        receive: Receive,
        send: Send,
        *,
        runner: Callable[[Job, SseWriter], StreamRun | ChatStreamRun],
        whole: Callable[[Job], dict[str, Any]],
    ) -> None:
        """The answer as a stream written by ``runner``, or as one JSON body, ``whole(job)``."""
        if streamed:
            await self._stream(job, receive, send, runner)
        else:
            await _send_json(send, 200, whole(job), [("X-Generation-Id", job.gen_id)])

    @staticmethod
    def _parse_request(body: bytes) -> tuple[dict[str, Any] | None, str]:
        try:
            request = _decode(body)
        except msgspec.DecodeError as exc:
            return None, f"Invalid JSON body: {exc}"
        if not isinstance(request, dict):
            return None, "Request body must be a JSON object"
        if request.get("store") is True:
            return None, "store must be false: the Responses API is stateless"
        if request.get("previous_response_id") is not None:
            return None, "previous_response_id is not supported: the Responses API is stateless"
        if "model" not in request and "models" not in request:
            return None, "Missing required parameter: 'model'."
        problem = input_problem(request.get("input"))
        if problem:
            return None, problem
        return request, ""

    def _should_fail(self, p: ScenarioPlan) -> bool:
        if p.knobs.fail_times < 0:
            return True
        key = p.knobs.attempt_key
        seen = self._attempts.get(key, 0)
        self._attempts[key] = seen + 1
        return seen < p.knobs.fail_times

    async def _stream(
        self,
        job: Job,
        receive: Receive,
        send: Send,
        runner: Callable[[Job, SseWriter], StreamRun | ChatStreamRun],
    ) -> None:
        stats = self.stats
        headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-generation-id", job.gen_id),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": _raw_headers(headers)})
        writer = SseWriter(send, stats, job.resp_id, job.plan.knobs.events_per_write)
        stats.streams_active += 1
        stats.streams_peak = max(stats.streams_peak, stats.streams_active)
        stats.active_stream_events[job.resp_id] = 0
        finished = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope, writer)
                # On Dropped we return without the final body message, so hypercorn closes
                # the connection mid chunked body: the client sees an incomplete message.
                with contextlib.suppress(Dropped):
                    await runner(job, writer).run()
                finished = True
                nursery.cancel_scope.cancel()
        finally:
            stats.streams_active -= 1
            del stats.active_stream_events[job.resp_id]
            if finished:
                stats.streams_completed += 1
            else:
                stats.streams_disconnected += 1


async def _cancel_on_disconnect(
    receive: Receive, scope: trio.CancelScope, writer: SseWriter
) -> None:
    # The body was read already, so the next message can only be http.disconnect. hypercorn
    # also sends it after a normal end of the response; that one is ignored.
    while (await receive())["type"] != "http.disconnect":
        pass
    if not writer.closing:
        scope.cancel()


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # per-request logging is too slow under load
    config.errorlog = "-"  # errors to stderr
    config.loglevel = "WARNING"  # no "Running on" banner: the CLI prints its own line
    config.backlog = 2048  # 200+ simultaneous connects must not overflow the accept queue
    config.keep_alive_timeout = 75
    config.graceful_timeout = 0
    return config


def _port_of(binds: Sequence[str]) -> int:
    # hypercorn reports binds like "http://127.0.0.1:54321" or "http://[::1]:54321".
    return int(binds[0].rsplit(":", 1)[1])


async def serve_mock(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    default_params: Mapping[str, str] | None = None,
    variants: Mapping[str, Mapping[str, str]] | None = None,
    task_status: trio.TaskStatus[MockServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the mock until cancelled; ``task_status.started(MockServer)`` once bound.

    ``default_params`` (``{"tps": "25"}``) are ``mock.*`` parameters for every request that
    does not name them itself; ``variants`` (``{"d20": {"tokens": "200", "tps": "50"}}``)
    add models ``mock/text:d20`` whose requests get those parameters over the defaults.
    Both are checked here, so a typo fails at start-up."""
    for params in (default_params or {}, *(variants or {}).values()):
        parse_params({PARAM_PREFIX + name: value for name, value in params.items()})
    stats = MockStats()
    # hypercorn types ASGI messages as TypedDicts; the app uses plain dicts, same wire shape.
    app: Any = MockApp(stats, api_key, default_params, variants)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, app, _config(host, port), mode="asgi")
        )
        task_status.started(MockServer(host=host, port=_port_of(binds), stats=stats))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


async def _main(
    host: str,
    port: int,
    api_key: str | None,
    default_params: Mapping[str, str],
    variants: Mapping[str, Mapping[str, str]],
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: MockServer = await nursery.start(
                partial(
                    serve_mock,
                    host=host,
                    port=port,
                    api_key=api_key,
                    default_params=default_params,
                    variants=variants,
                )
            )
            print(f"mock-openrouter listening on {server.base_url}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mock OpenRouter Responses API (loopback)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a mock.* parameter for every request that does not set it (repeatable), "
        "e.g. --param tps=25 paces answers so a browser can watch them stream",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PARAM=VALUE&...",
        help="a bench variant (repeatable): model mock/text:NAME is listed and its requests "
        "get these mock.* parameters, e.g. --variant d20=tokens=200&tps=50",
    )
    args = parser.parse_args(argv)
    variants: dict[str, dict[str, str]] = {}
    for spec in args.variant:
        try:
            name, params = parse_variant(spec)
        except ValueError as exc:
            parser.error(str(exc))
        variants[name] = params
    defaults: dict[str, str] = {}
    for pair in args.param:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--param takes NAME=VALUE, got {pair!r}")
        defaults[name.strip().removeprefix(PARAM_PREFIX)] = value.strip()
    try:
        parse_params({PARAM_PREFIX + name: value for name, value in defaults.items()})
    except ParamError as exc:
        parser.error(str(exc))
    trio.run(_main, args.host, args.port, args.api_key, defaults, variants)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
