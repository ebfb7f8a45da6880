"""The model catalogue: ids, selection, resolution, the refresh schedule and the registry.

The pure parts are plain tests. The registry tests are asyncio tests (plain sync
functions that run a loop, ``asyncio`` and ``uvloop``) against real loopback
HTTP: the mock OpenRouter in a subprocess for the normal catalogue and the key
check, and ``TinyServer`` below (scripted replies, counted requests) for
failures, delays and fetch counts. Time-driven behaviour uses a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from orpipe.adapters.openrouter.catalogue import (
    Catalogue,
    CatalogueError,
    ModelInfo,
    RefreshSchedule,
    parse_catalogue,
    sub_id_for,
)
from orpipe.adapters.openwebui import model_registry as model_catalog
from orpipe.adapters.openwebui.model_registry import (
    CatalogueAuthError,
    CatalogueUnreachable,
    ModelCatalogRegistry,
    close_registries,
    registry_for,
)
from orpipe.bench.mock_catalogue import CATALOGUE
from orpipe.engine.async_resource import AsyncResource
from orpipe.engine.errors import ConfigError, EngineError
from tests.adapters.asyncio_support import Mock, mock_process, run_on, wait_until

KEY = "sk-or-v1-TOPSECRET-0123456789abcdef"
RIGHT_KEY = "sk-or-v1-the-right-one-42"
AUTH_MESSAGE = (
    "OpenRouter rejected the API key (HTTP 401). Paste a valid key into the API_KEY valve."
)


# --------------------------------------------------------------------------- helpers


def entry(model_id: str, name: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": model_id, "name": name or model_id, **fields}


def payload(*ids: str) -> dict[str, Any]:
    return {"data": [entry(model_id) for model_id in ids]}


MOCK = parse_catalogue({"data": list(CATALOGUE)})


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b'{"data": [{"id": "openai/gpt-4o", "name": "GPT-4o"}]}'
    delay_s: float = 0.0


def ok(*ids: str) -> Reply:
    return Reply(body=json.dumps(payload(*(ids or ("openai/gpt-4o",)))).encode())


def error(status: int, message: str = "upstream trouble") -> Reply:
    envelope = {"error": {"code": status, "message": message}}
    return Reply(status=status, body=json.dumps(envelope).encode())


class TinyServer(AsyncResource):
    """A real HTTP/1.1 server on loopback, on the running loop.

    Answers each request with the next scripted reply (the last one repeats),
    one request per connection, and records each request's path and headers.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies = replies or (ok(),)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.base_url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def hits(self) -> int:
        return len(self.requests)

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/api/v1"

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        # Handlers still delaying a reply are cancelled: wait_closed would wait for them.
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = head[0].split(" ")[1]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head[1:] if line)
            }
            self.requests.append((path, headers))
            reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            writer.write(
                b"HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (reply.status, len(reply.body), reply.body)
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()
            self._handlers.discard(handler)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """Warm-up's sleep: records the delays and yields once instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def closed_port_url() -> str:
    with socket.socket() as probe:  # bound, never listening, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v1"


async def settled(registry: ModelCatalogRegistry) -> None:
    async def idle() -> bool:
        return not registry.refreshing

    await wait_until(idle)


async def raised(call: Callable[[], Awaitable[object]]) -> CatalogueError:
    with pytest.raises(CatalogueError) as info:
        await call()
    return info.value


def assert_no_key(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text)


@pytest.fixture(scope="module")
def keyed_mock() -> Iterator[Mock]:
    """A mock OpenRouter that answers 401 unless given RIGHT_KEY."""
    with mock_process(api_key=RIGHT_KEY) as server:
        yield server


# --------------------------------------------------------------------------- ids


def test_sub_ids_turn_slashes_into_dots_and_keep_everything_else() -> None:
    assert sub_id_for("openai/gpt-4o-2024-08-06") == "openai.gpt-4o-2024-08-06"
    assert sub_id_for("deepseek/deepseek-r1:free") == "deepseek.deepseek-r1:free"
    assert sub_id_for("Vendor/Model/X") == "Vendor.Model.X"
    assert sub_id_for("meta-llama/llama-3.1-8b-instruct") == "meta-llama.llama-3.1-8b-instruct"


def test_dated_undated_and_free_variants_stay_distinct() -> None:
    dated = MOCK.get("openai.gpt-4o-2024-08-06")
    undated = MOCK.get("openai.gpt-4o")
    assert dated is not None and dated.openrouter_id == "openai/gpt-4o-2024-08-06"
    assert undated is not None and undated.openrouter_id == "openai/gpt-4o"
    free = MOCK.get("deepseek.deepseek-r1:free")
    assert free is not None and free.openrouter_id == "deepseek/deepseek-r1:free"
    paid = MOCK.get("deepseek.deepseek-r1")
    assert paid is not None and paid.openrouter_id == "deepseek/deepseek-r1"
    # Every model maps back by table lookup, in both directions.
    assert len(MOCK) == len(CATALOGUE)
    for model in MOCK.models:
        assert MOCK.get(model.sub_id) is model
        assert MOCK.by_openrouter_id(model.openrouter_id) is model


def test_clashing_sub_ids_are_disambiguated_whatever_the_payload_order() -> None:
    ids = ["a/b.c", "a.b/c", "a.b.c", "x/y", "x.y", "x/y~2"]
    forward = parse_catalogue(payload(*ids))
    backward = parse_catalogue(payload(*reversed(ids)))
    for catalogue in (forward, backward):
        subs = {m.openrouter_id: m.sub_id for m in catalogue.models}
        # Sorted by id, the first owns the plain sub id; "~n" never takes a plain one.
        assert subs == {
            "a.b.c": "a.b.c",
            "a.b/c": "a.b.c~2",
            "a/b.c": "a.b.c~3",
            "x.y": "x.y",
            "x/y": "x.y~3",
            "x/y~2": "x.y~2",
        }
        assert dict(catalogue.renamed) == {"a.b/c": "a.b.c~2", "a/b.c": "a.b.c~3", "x/y": "x.y~3"}
        found = catalogue.resolve("orpipe.a.b.c~2")
        assert found is not None and found.openrouter_id == "a.b/c"


# --------------------------------------------------------------------------- parsing


def test_fields_and_capabilities_come_from_the_catalogue() -> None:
    gpt4o = MOCK.by_openrouter_id("openai/gpt-4o")
    assert gpt4o is not None
    assert gpt4o.name == "OpenAI: GPT-4o"
    assert gpt4o.vision and gpt4o.file_input and gpt4o.tools and not gpt4o.reasoning
    assert gpt4o.context_length == 128_000 and gpt4o.max_output_tokens == 16_384
    assert gpt4o.pricing["prompt"] == "0.0000025"
    with pytest.raises(TypeError):
        gpt4o.pricing["prompt"] = "0"  # type: ignore[index]
    r1 = MOCK.by_openrouter_id("deepseek/deepseek-r1")
    assert r1 is not None and r1.reasoning and r1.reasoning_summary and not r1.vision
    sonar = MOCK.by_openrouter_id("perplexity/sonar")
    assert sonar is not None and sonar.web_search


def test_malformed_entries_are_skipped_and_counted_odd_fields_default() -> None:
    catalogue = parse_catalogue(
        {
            "data": [
                "not an object",
                {"name": "no id"},
                {"id": 42, "name": "numeric id"},
                {"id": "", "name": "blank id"},
                {"id": "has space/x"},
                {"id": "a/b,c"},
                entry("good/one", "Good"),
                entry("good/one", "Repeated id"),
                entry(
                    "odd/fields",
                    name=None,
                    architecture={"input_modalities": "image", "output_modalities": ["text", 3]},
                    supported_parameters=None,
                    context_length=True,
                    top_provider={"max_completion_tokens": -1},
                    pricing={"prompt": "0.1", "discount": 0.5, "overrides": [], "flag": True},
                ),
            ]
        }
    )
    assert catalogue.skipped == 7
    assert [m.openrouter_id for m in catalogue.models] == ["good/one", "odd/fields"]
    good = catalogue.by_openrouter_id("good/one")
    assert good is not None and good.name == "Good"
    odd = catalogue.by_openrouter_id("odd/fields")
    assert odd is not None
    assert odd == ModelInfo(
        openrouter_id="odd/fields",
        sub_id="odd.fields",
        name="odd/fields",
        input_modalities=frozenset({"text"}),
        output_modalities=frozenset({"text"}),
        supported_parameters=frozenset(),
        context_length=None,
        max_output_tokens=None,
        pricing=odd.pricing,
    )
    assert dict(odd.pricing) == {"prompt": "0.1", "discount": "0.5"}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"data": []}, "no usable model"),
        ({"data": [{"name": "x"}, 5]}, r"no usable model \(2 malformed entries skipped\)"),
        ({"models": []}, "not shaped like"),
        ([], "not shaped like"),
        ({"data": {"id": "a/b"}}, "not shaped like"),
    ],
)
def test_an_empty_or_misshapen_catalogue_is_an_error(body: object, match: str) -> None:
    with pytest.raises(CatalogueError, match=match) as info:
        parse_catalogue(body)
    assert isinstance(info.value, EngineError)
    assert "BASE_URL" in info.value.message


def test_models_are_sorted_by_name_then_id() -> None:
    catalogue = parse_catalogue(
        {
            "data": [
                entry("z/1", "beta"),
                entry("b/2", "Alpha"),
                entry("a/2", "Alpha"),
                entry("c/3", "alpha 2"),
            ]
        }
    )
    assert [m.openrouter_id for m in catalogue.models] == ["a/2", "b/2", "c/3", "z/1"]


def test_a_catalogue_refuses_two_models_with_one_sub_id() -> None:
    one = ModelInfo(openrouter_id="a/b", sub_id="a.b", name="one")
    two = ModelInfo(openrouter_id="a.b", sub_id="a.b", name="two")
    with pytest.raises(ValueError, match="sub id"):
        Catalogue([one, two])


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("valve", ["auto", "AUTO", " auto ", "", "   "])
def test_auto_or_blank_selects_every_model(valve: str) -> None:
    selection = MOCK.select(valve)
    assert selection.models == MOCK.models
    assert selection.unknown == ()


def test_a_list_selects_by_either_id_reports_unknowns_and_is_not_widened() -> None:
    selection = MOCK.select(
        " openai/gpt-4o, openai.gpt-4o-2024-08-06 ,DeepSeek/DeepSeek-R1:FREE,"
        " openai/gpt-4o-typo,, openai/gpt-4o "
    )
    assert [m.openrouter_id for m in selection.models] == [
        "openai/gpt-4o",
        "openai/gpt-4o-2024-08-06",
        "deepseek/deepseek-r1:free",
    ]
    assert selection.unknown == ("openai/gpt-4o-typo",)


def test_a_list_of_typos_selects_nothing_rather_than_everything() -> None:
    selection = MOCK.select("nope, openai/gpt-5")
    assert selection.models == ()
    assert selection.unknown == ("nope", "openai/gpt-5")


def test_an_ambiguous_case_insensitive_match_selects_nothing() -> None:
    catalogue = parse_catalogue(payload("Acme/X", "acme/x"))
    assert catalogue.select("acme/X").unknown == ("acme/X",)
    assert [m.openrouter_id for m in catalogue.select("Acme/X").models] == ["Acme/X"]


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    ("model_field", "expected"),
    [
        ("orpipe.openai.gpt-4o-2024-08-06", "openai/gpt-4o-2024-08-06"),
        ("orpipe.openai.gpt-4o", "openai/gpt-4o"),
        ("orpipe.meta-llama.llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b-instruct"),
        ("my_fn.deepseek.deepseek-r1:free", "deepseek/deepseek-r1:free"),
        ("openai.gpt-4o", "openai/gpt-4o"),  # a bare sub id
        ("openai/gpt-4o", "openai/gpt-4o"),  # a bare OpenRouter id
        ("meta-llama/llama-3.1-8b-instruct", "meta-llama/llama-3.1-8b-instruct"),
        ("orpipe.openai.gpt-5", None),
        ("orpipe.OPENAI.GPT-4O", None),  # Open WebUI sends the id exactly as listed
        ("", None),
    ],
)
def test_resolve_strips_the_function_id_up_to_the_first_dot(
    model_field: str, expected: str | None
) -> None:
    found = MOCK.resolve(model_field)
    assert (found.openrouter_id if found else None) == expected


# --------------------------------------------------------------------------- schedule


def test_backoff_doubles_from_5_to_160_then_stays() -> None:
    schedule = RefreshSchedule(3600)
    assert [schedule.record_failure(float(i)) for i in range(8)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        160,
        160,
    ]
    assert schedule.failures == 8
    assert RefreshSchedule.backoff_s(10_000, 3600) == 160


def test_backoff_is_capped_by_the_ttl() -> None:
    schedule = RefreshSchedule(30)
    assert [schedule.record_failure(0.0) for _ in range(5)] == [5, 10, 20, 30, 30]


def test_schedule_due_stale_and_retry_in_reset_on_success() -> None:
    schedule = RefreshSchedule(100)
    assert schedule.stale(0) and schedule.due(0) and schedule.retry_in(0) == 0
    schedule.record_success(0)
    assert not schedule.stale(99.9) and not schedule.due(99.9)
    assert schedule.retry_in(50) == 50
    assert schedule.stale(100) and schedule.due(100)
    schedule.record_failure(100)  # stale data, first failure: 5 s
    assert schedule.stale(102) and not schedule.due(104.9) and schedule.retry_in(102) == 3
    assert schedule.due(105)
    schedule.record_failure(105)  # second: 10 s
    assert not schedule.due(114.9) and schedule.due(115)
    schedule.record_success(115)
    assert schedule.failures == 0
    assert not schedule.stale(214) and schedule.retry_in(115) == 100
    schedule.record_failure(215)
    assert schedule.retry_in(215) == 5  # the backoff starts over
    schedule.ttl_s = 2  # a changed TTL applies at once, and caps the backoff
    assert schedule.retry_in(215) == 2


@pytest.mark.parametrize("ttl", [0, -1, math.nan])
def test_a_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ConfigError, match="MODEL_CATALOG_REFRESH_SECONDS"):
        RefreshSchedule(ttl)


# --------------------------------------------------------------------------- registry: fetching


def test_the_mock_catalogue_is_fetched_and_resolvable(mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        async with ModelCatalogRegistry(mock.base_url, "") as registry:
            catalogue = await registry.warm_up()
            assert await registry.get() is catalogue  # fresh: served from the cache
            assert {m.openrouter_id for m in catalogue.models} == {m["id"] for m in CATALOGUE}
            found = catalogue.resolve("orpipe.openai.gpt-4o-2024-08-06")
            assert found is not None and found.openrouter_id == "openai/gpt-4o-2024-08-06"
            assert registry.fetched_at is not None and registry.last_error is None

    run_on(loop_kind, scenario)


def test_the_key_is_sent_as_a_bearer_token(keyed_mock: Mock, loop_kind: str) -> None:
    async def scenario() -> None:
        async with ModelCatalogRegistry(keyed_mock.base_url, RIGHT_KEY) as registry:
            assert len(await registry.get()) == len(CATALOGUE)
        async with TinyServer() as server:
            async with ModelCatalogRegistry(server.base_url, KEY) as registry:
                await registry.get()
            async with ModelCatalogRegistry(server.base_url + "/", "") as registry:
                await registry.get()
        (path, keyed), (_, anonymous) = server.requests
        assert path == "/api/v1/models"
        assert keyed["authorization"] == f"Bearer {KEY}"
        assert "authorization" not in anonymous  # /models is public: no key, no header

    run_on(loop_kind, scenario)


def test_a_wrong_key_is_an_auth_error_that_says_what_to_do(
    keyed_mock: Mock, loop_kind: str
) -> None:
    async def scenario() -> None:
        async with ModelCatalogRegistry(keyed_mock.base_url, KEY) as registry:
            failure = await raised(registry.get)
        assert isinstance(failure, CatalogueAuthError)
        assert failure.message == AUTH_MESSAGE and failure.status == 401
        assert not failure.retryable
        assert_no_key(failure, repr(failure), repr(registry))
        async with (
            TinyServer(error(403)) as server,
            ModelCatalogRegistry(server.base_url, KEY) as registry,
        ):
            forbidden = await raised(registry.get)
        assert isinstance(forbidden, CatalogueAuthError)
        assert "(HTTP 403)" in forbidden.message

    run_on(loop_kind, scenario)


def test_an_unreachable_openrouter_says_where_and_what_to_do(loop_kind: str) -> None:
    base = closed_port_url()

    async def scenario() -> None:
        async with ModelCatalogRegistry(base, KEY) as registry:
            failure = await raised(registry.get)
        assert isinstance(failure, CatalogueUnreachable)
        assert failure.message.startswith(f"OpenRouter is unreachable at {base} (")
        assert failure.message.endswith(
            "). Check BASE_URL and the network; retrying automatically."
        )
        assert failure.retryable
        assert isinstance(failure.__cause__, httpx.HTTPError)  # chained, never raised itself
        assert_no_key(failure, repr(registry))

    run_on(loop_kind, scenario)


def test_a_silent_server_times_out_quickly(loop_kind: str) -> None:
    async def scenario() -> None:
        async with (
            TinyServer(Reply(delay_s=30)) as server,
            ModelCatalogRegistry(server.base_url, KEY, timeout_s=0.2) as registry,
        ):
            started = time.monotonic()
            failure = await raised(registry.get)
            assert time.monotonic() - started < 1.5
        assert isinstance(failure, CatalogueUnreachable)
        assert "within 0.2 s" in failure.message

    run_on(loop_kind, scenario)


@pytest.mark.parametrize(
    ("reply", "match", "retryable"),
    [
        (Reply(body=b'{"data": []}'), "no usable model", False),
        (Reply(body=b"<html>a proxy login page</html>"), "not JSON", False),
        (Reply(body=b'{"data": [{"id": "a/b"'), "not JSON", False),
        (error(500, "internal"), r"HTTP 500\); retrying automatically. OpenRouter said", True),
        (error(429, "slow down"), "rate-limited", True),
        (error(404, "no route"), "ends in /api/v1", False),
        (error(418, "teapot"), "HTTP 418", False),
    ],
)
def test_bad_answers_are_catalogue_errors(
    reply: Reply, match: str, retryable: bool, loop_kind: str
) -> None:
    async def scenario() -> None:
        async with (
            TinyServer(reply) as server,
            ModelCatalogRegistry(server.base_url, KEY) as registry,
        ):
            failure = await raised(registry.get)
        assert type(failure) is CatalogueError
        assert failure.retryable is retryable
        assert failure.status == (None if reply.status == 200 else reply.status)
        assert registry.last_error is failure and registry.refresh_failures == 1
        with pytest.raises(CatalogueError, match=match):
            raise failure

    run_on(loop_kind, scenario)


def test_an_oversized_catalogue_is_refused(loop_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_catalog, "_BODY_LIMIT", 64)

    async def scenario() -> None:
        async with (
            TinyServer(ok(*(f"vendor/model-{i}" for i in range(10)))) as server,
            ModelCatalogRegistry(server.base_url, KEY) as registry,
        ):
            failure = await raised(registry.get)
        assert "larger than" in failure.message and not failure.retryable

    run_on(loop_kind, scenario)


def test_a_base_url_without_a_scheme_is_named_as_the_problem(loop_kind: str) -> None:
    async def scenario() -> None:
        async with ModelCatalogRegistry("openrouter.ai/api/v1", KEY) as registry:
            failure = await raised(registry.get)
        assert type(failure) is CatalogueError and not failure.retryable
        assert failure.message.startswith("BASE_URL 'openrouter.ai/api/v1' is not a usable URL")

    run_on(loop_kind, scenario)


def test_credentials_in_the_base_url_are_not_shown(loop_kind: str) -> None:
    base = closed_port_url()
    with_userinfo = base.replace("http://", f"http://user:{KEY}@")

    async def scenario() -> None:
        async with ModelCatalogRegistry(with_userinfo, "") as registry:
            failure = await raised(registry.get)
            assert_no_key(failure, repr(registry))
        assert f"unreachable at {base} (" in failure.message

    run_on(loop_kind, scenario)


def test_the_key_never_appears_in_an_error_a_repr_or_a_log(
    keyed_mock: Mock, loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included

    async def scenario() -> None:
        failures: list[CatalogueError] = []
        async with TinyServer(
            error(500, f"bad header Authorization: Bearer {KEY}"),
            Reply(body=b"garbage"),
            Reply(delay_s=30),
        ) as server:
            for base, timeout_s in [
                (keyed_mock.base_url, 10.0),
                (server.base_url, 10.0),
                (server.base_url, 10.0),
                (server.base_url, 0.2),
                (closed_port_url(), 10.0),
            ]:
                async with ModelCatalogRegistry(base, KEY, timeout_s=timeout_s) as registry:
                    failures.append(await raised(registry.get))
                    assert_no_key(repr(registry), str(registry), vars(registry))
        echoed = failures[1]
        assert "[secure]" in echoed.message  # the server echoed the key; it was masked
        for failure in failures:
            assert_no_key(failure, repr(failure), failure.args, failure.__cause__)

    run_on(loop_kind, scenario)
    assert any(record.name == "orpipe.catalogue" for record in caplog.records)
    for record in caplog.records:
        assert_no_key(record.getMessage())


# --------------------------------------------------------------------------- registry: refresh


def test_concurrent_callers_without_data_share_one_fetch(loop_kind: str) -> None:
    async def scenario() -> None:
        async with (
            TinyServer(Reply(body=ok().body, delay_s=0.1)) as server,
            ModelCatalogRegistry(server.base_url, KEY) as registry,
        ):
            results = await asyncio.gather(*(registry.get() for _ in range(20)))
            assert server.hits == 1
            assert all(result is results[0] for result in results)

    run_on(loop_kind, scenario)


def test_a_failed_first_fetch_locks_nobody_out(loop_kind: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with (
            TinyServer(Reply(status=503, body=b"{}", delay_s=0.05), ok()) as server,
            ModelCatalogRegistry(server.base_url, KEY, clock=clock) as registry,
        ):
            # Five callers share the failing attempt and see the same error.
            results = await asyncio.gather(
                *(registry.get() for _ in range(5)), return_exceptions=True
            )
            assert server.hits == 1
            assert all(isinstance(r, CatalogueError) and r.status == 503 for r in results)
            # No data: the next call tries again at once, backoff or not.
            assert len(await registry.get()) == 1
            assert server.hits == 2 and registry.refresh_failures == 0

    run_on(loop_kind, scenario)


def test_stale_data_is_served_while_refreshes_fail_with_backoff(loop_kind: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        replies = (ok("a/one"), error(500), error(502), error(503), ok("a/one", "b/two"))
        async with (
            TinyServer(*replies) as server,
            ModelCatalogRegistry(server.base_url, KEY, ttl_s=60, clock=clock) as registry,
        ):

            async def get_at(t: float) -> Catalogue:
                clock.now = t
                catalogue = await registry.get()
                await settled(registry)
                return catalogue

            first = await get_at(0)
            assert await get_at(59.9) is first and server.hits == 1  # fresh
            assert await get_at(60) is first  # stale: served at once, refreshed behind
            assert server.hits == 2 and registry.refresh_failures == 1
            failure = registry.last_error
            assert failure is not None and failure.status == 500
            # Failure n waits 5, 10, 20 s before the next attempt; stale data meanwhile.
            for wait, hits_after in [(5, 3), (10, 4)]:
                start = clock.now
                assert await get_at(start + wait - 0.1) is first
                assert server.hits == hits_after - 1
                assert await get_at(start + wait) is first
                assert server.hits == hits_after
            assert registry.refresh_failures == 3
            assert await get_at(clock.now + 19.9) is first and server.hits == 4
            await get_at(clock.now + 0.1)  # 20 s after the third failure: success
            assert server.hits == 5 and registry.refresh_failures == 0
            assert registry.last_error is None and registry.fetched_at == clock.now
            fresh = await registry.get()
            assert [m.openrouter_id for m in fresh.models] == ["a/one", "b/two"]
            assert await get_at(clock.now + 59.9) is fresh and server.hits == 5

    run_on(loop_kind, scenario)


def test_stale_data_starts_one_background_refresh_for_many_callers(loop_kind: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        slow = Reply(body=ok("a/new").body, delay_s=0.1)
        async with (
            TinyServer(ok("a/old"), slow) as server,
            ModelCatalogRegistry(server.base_url, KEY, ttl_s=10, clock=clock) as registry,
        ):
            old = await registry.get()
            clock.now += 10
            results = await asyncio.gather(*(registry.get() for _ in range(20)))
            assert all(result is old for result in results)  # nobody waited
            assert registry.refreshing
            await settled(registry)
            assert server.hits == 2
            new = await registry.get()
            assert [m.openrouter_id for m in new.models] == ["a/new"]

    run_on(loop_kind, scenario)


def test_a_caller_giving_up_does_not_cancel_the_shared_fetch(loop_kind: str) -> None:
    async def scenario() -> None:
        async with (
            TinyServer(Reply(body=ok().body, delay_s=0.2)) as server,
            ModelCatalogRegistry(server.base_url, KEY) as registry,
        ):
            impatient = asyncio.ensure_future(registry.get())
            patient = asyncio.ensure_future(registry.get())
            await asyncio.sleep(0.05)
            impatient.cancel()
            assert len(await patient) == 1
            assert impatient.cancelled() and server.hits == 1

    run_on(loop_kind, scenario)


def test_aclose_cancels_the_fetch_and_waiting_callers_get_an_error(loop_kind: str) -> None:
    async def scenario() -> None:
        async with TinyServer(Reply(delay_s=30)) as server:
            registry = ModelCatalogRegistry(server.base_url, KEY)
            waiting = asyncio.ensure_future(registry.get())

            async def fetching() -> bool:
                return server.hits == 1

            await wait_until(fetching)
            await registry.aclose()
            assert not registry.refreshing and registry.closed
            with pytest.raises(CatalogueError, match="closed"):
                await waiting
            with pytest.raises(CatalogueError, match="closed"):
                await registry.get()
            await registry.aclose()  # idempotent

    run_on(loop_kind, scenario)


# --------------------------------------------------------------------------- registry: warm-up


def test_warm_up_retries_transient_failures_then_succeeds(loop_kind: str) -> None:
    async def scenario() -> None:
        sleep = RecordingSleep()
        async with (
            TinyServer(error(503), error(429), ok()) as server,
            ModelCatalogRegistry(server.base_url, KEY, sleep=sleep) as registry,
        ):
            catalogue = await registry.warm_up(attempts=3)
            assert len(catalogue) == 1 and server.hits == 3
        assert sleep.delays == [0.5, 1.0]

    run_on(loop_kind, scenario)


def test_warm_up_retries_an_unreachable_openrouter_then_reports_it(loop_kind: str) -> None:
    async def scenario() -> None:
        sleep = RecordingSleep()
        async with ModelCatalogRegistry(closed_port_url(), KEY, sleep=sleep) as registry:
            failure = await raised(registry.warm_up)
        assert isinstance(failure, CatalogueUnreachable)
        assert sleep.delays == [0.5, 1.0] and registry.refresh_failures == 3

    run_on(loop_kind, scenario)


def test_warm_up_delays_double_up_to_4_s(loop_kind: str) -> None:
    async def scenario() -> None:
        sleep = RecordingSleep()
        async with (
            TinyServer(error(500)) as server,
            ModelCatalogRegistry(server.base_url, KEY, sleep=sleep) as registry,
        ):
            await raised(lambda: registry.warm_up(attempts=6))
            assert server.hits == 6
        assert sleep.delays == [0.5, 1.0, 2.0, 4.0, 4.0]
        with pytest.raises(ConfigError):
            await registry.warm_up(attempts=0)

    run_on(loop_kind, scenario)


def test_warm_up_never_retries_a_rejected_key(loop_kind: str) -> None:
    async def scenario() -> None:
        sleep = RecordingSleep()
        async with (
            TinyServer(error(401), ok()) as server,
            ModelCatalogRegistry(server.base_url, KEY, sleep=sleep) as registry,
        ):
            failure = await raised(registry.warm_up)
            assert isinstance(failure, CatalogueAuthError) and failure.message == AUTH_MESSAGE
            assert server.hits == 1
        assert sleep.delays == []

    run_on(loop_kind, scenario)


# --------------------------------------------------------------------------- registry_for


def test_one_registry_per_base_url_and_key(loop_kind: str) -> None:
    async def scenario() -> None:
        url = "http://127.0.0.1:9/api/v1"
        first = registry_for(url, KEY)
        assert registry_for(url + "/", KEY) is first
        assert registry_for(url, "another key") is not first
        assert registry_for("http://127.0.0.1:10/api/v1", KEY) is not first
        assert registry_for(url, KEY, ttl_s=30) is first and first.ttl_s == 30
        table = model_catalog._REGISTRIES[asyncio.get_running_loop()]
        assert_no_key(repr(table), list(table))  # keyed by a fingerprint, not the key
        await close_registries()
        assert first.closed
        assert registry_for(url, KEY) is not first
        await close_registries()

    run_on(loop_kind, scenario)


def test_each_loop_has_its_own_registries(loop_kind: str) -> None:
    seen: list[ModelCatalogRegistry] = []

    async def scenario() -> None:
        seen.append(registry_for("http://127.0.0.1:9/api/v1", KEY))
        assert registry_for("http://127.0.0.1:9/api/v1", KEY) is seen[-1]
        await close_registries()

    run_on(loop_kind, scenario)
    run_on(loop_kind, scenario)
    assert seen[0] is not seen[1]


def test_registries_per_loop_are_bounded_least_recently_used_first(loop_kind: str) -> None:
    async def scenario() -> None:
        url = "http://127.0.0.1:9/api/v1"
        registries = [registry_for(url, f"key-{i}") for i in range(16)]
        registry_for(url, "key-0")  # used again: now the most recent
        registry_for(url, "key-16")  # one too many: key-1 goes

        async def evicted() -> bool:
            return registries[1].closed

        await wait_until(evicted)
        assert not any(r.closed for i, r in enumerate(registries) if i != 1)
        assert registry_for(url, "key-0") is registries[0]
        assert registry_for(url, "key-1") is not registries[1]
        await close_registries()
        assert all(r.closed for r in registries)

    run_on(loop_kind, scenario)


def test_registry_for_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        registry_for("http://127.0.0.1:9/api/v1", KEY)
