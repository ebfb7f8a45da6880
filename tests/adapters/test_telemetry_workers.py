"""One view of all workers: frames through a real Redis, the ``worker`` label, the token.

Each test runs a real engine against the mock with its sampler; the other
"workers" are ``WorkerFrames`` publishers in this process, writing to a
``redis-server`` of the test's own (``tests.redis_support``), as separate
Open WebUI workers would.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from orpipe.actors.telemetry import TelemetryHub, telemetry_sampler
from orpipe.actors.telemetry_core import TelemetrySettings
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.adapters.telemetry.fan_in import WorkerFrames, publish_frames
from orpipe.adapters.telemetry.metrics import render_workers
from orpipe.adapters.telemetry.server import (
    TelemetryEndpoints,
    TelemetryServerSettings,
    serve_telemetry,
)
from orpipe.adapters.telemetry.service import TelemetryPlan, TelemetryService
from orpipe.bench.headless_chromium import DevToolsPage, open_chromium
from orpipe.bench.telemetry_run import DASHBOARD_DIR
from orpipe.engine import Engine
from tests.adapters.test_telemetry_server import _refused
from tests.engine.support import collect, mock_server, request, running_engine, wait_until

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]

TOKEN = "a-long-random-telemetry-token"
PREFIX = "orpipe:telemetry:test"
TTL_S = 60.0  # long: a worker disappears in these tests because its key is expired on purpose


@dataclass
class Running:
    engine: Engine
    hub: TelemetryHub
    endpoints: TelemetryEndpoints
    frames: WorkerFrames | None


@asynccontextmanager
async def serving(
    tmp_path: Path | None = None, *, redis_url: str | None = None, token: str | None = None
) -> AsyncIterator[Running]:
    """A real engine, its sampler, and the server (with the fan-in when ``redis_url``)."""
    async with mock_server() as mock, running_engine(mock) as engine:
        hub = TelemetryHub(engine.statistics, TelemetrySettings(interval_s=0.05))
        frames = None
        if redis_url is not None:
            frames = WorkerFrames(
                RedisLink(redis_url), ttl_s=TTL_S, prefix=PREFIX, worker="host-c:3"
            )
        settings = TelemetryServerSettings(dashboard_dir=tmp_path, token=token)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(telemetry_sampler, hub)
                endpoints = await nursery.start(
                    functools.partial(serve_telemetry, hub, settings, workers=frames)
                )
                yield Running(engine, hub, endpoints, frames)
                nursery.cancel_scope.cancel()
        finally:
            if frames is not None:
                frames.link.close()


async def _get(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, headers=headers)


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


# -- the bearer token --------------------------------------------------------------------


async def test_with_a_token_every_endpoint_wants_the_right_bearer(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>", encoding="utf-8")
    async with serving(tmp_path, token=TOKEN) as run:
        base = run.endpoints.http_url
        for path in ("/metrics", "/", "/config.json"):
            missing = await _get(base + path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in missing.text  # says what to send
            wrong = await _get(base + path, authorization="Bearer not-the-token")
            assert wrong.status_code == 401, path
            assert TOKEN not in wrong.text
            basic = await _get(base + path, authorization=f"Basic {TOKEN}")
            assert basic.status_code == 401, path
            right = await _get(base + path, authorization=f"Bearer {TOKEN}")
            assert right.status_code == 200, path

        status, body = await _refused(run.endpoints.ws_port)
        assert status == 401 and b"Authorization: Bearer" in body
        async with open_websocket_url(
            run.endpoints.ws_url, extra_headers=[(b"authorization", f"Bearer {TOKEN}".encode())]
        ) as ws:
            assert '"seq"' in await ws.get_message()


async def test_without_a_token_nothing_is_asked() -> None:
    async with serving() as run:
        assert (await _get(run.endpoints.metrics_url)).status_code == 200


# -- fan-in through Redis ------------------------------------------------------------------


async def test_metrics_show_every_live_worker_with_a_worker_label(
    redis_server: RedisServer,
) -> None:
    async with serving(redis_url=redis_server.url) as run:
        await collect(run.engine.submit(request("text", tokens=5)))
        own = run.hub.snapshot()
        link = RedisLink(redis_server.url)
        try:
            for name, admitted in (("host-a:1", 4), ("host-b:2", 7)):
                other = WorkerFrames(link, ttl_s=TTL_S, prefix=PREFIX, worker=name)
                admission = {**own["admission"], "admitted_total": admitted}
                await other.publish({**own, "admission": admission})

            response = await _get(run.endpoints.metrics_url)
            assert response.status_code == 200
            families = _families(response.text)
            workers = {"host-a:1", "host-b:2", "host-c:3"}
            for name, family in families.items():
                for sample in family.samples:
                    if name.startswith("orpipe_cluster_"):
                        assert "worker" not in sample.labels, sample
                    else:
                        assert sample.labels["worker"] in workers, sample
            admitted = {
                s.labels["worker"]: s.value for s in families["orpipe_admission_admitted"].samples
            }
            assert admitted == {"host-a:1": 4, "host-b:2": 7, "host-c:3": 1}
            assert families["orpipe_cluster_admission_admitted"].samples[0].value == 12
            assert families["orpipe_cluster_workers"].samples[0].value == 3
            assert families["orpipe_fanin_workers_seen"].type == "gauge"

            # Worker a stops: its key expires, and it is gone from the next scrape.
            client = redis_server.client()
            try:
                client.pexpire(f"{PREFIX}:frame:host-a:1", 1)
            finally:
                client.close()

            async def a_is_gone() -> bool:
                text = (await _get(run.endpoints.metrics_url)).text
                return 'worker="host-a:1"' not in text

            with trio.fail_after(10):  # a generous bound: a key expired 1 ms after being told
                while not await a_is_gone():  # noqa: ASYNC110 - another process's state
                    await trio.sleep(0.02)
            families = _families((await _get(run.endpoints.metrics_url)).text)
            assert families["orpipe_cluster_workers"].samples[0].value == 2
            assert families["orpipe_cluster_admission_admitted"].samples[0].value == 8

            listed = (await _get(run.endpoints.http_url + "/workers.json")).json()
            assert set(listed["workers"]) == {"host-b:2", "host-c:3"}
        finally:
            link.close()


async def test_the_publisher_writes_the_hubs_frames_with_a_ttl(redis_server: RedisServer) -> None:
    async with mock_server() as mock, running_engine(mock) as engine:
        hub = TelemetryHub(engine.statistics, TelemetrySettings(interval_s=0.05))
        frames = WorkerFrames(RedisLink(redis_server.url), ttl_s=3.0, prefix=PREFIX)
        client = redis_server.client()
        key = f"{PREFIX}:frame:{frames.worker}"
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(telemetry_sampler, hub)
                nursery.start_soon(publish_frames, hub, frames)

                await wait_until(lambda: frames.counters.published_total >= 2)
                nursery.cancel_scope.cancel()
            assert 0 < client.pttl(key) <= 3000
            assert frames.worker in (await frames.live())
        finally:
            client.close()
            frames.link.close()


async def test_without_redis_the_scrape_shows_this_worker_and_counts_the_failure() -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    async with serving(redis_url="redis://127.0.0.1:1/0") as run:
        response = await _get(run.endpoints.metrics_url)
        assert response.status_code == 200
        families = _families(response.text)
        assert families["orpipe_cluster_workers"].samples[0].value == 1
        assert {s.labels["worker"] for s in families["orpipe_admission_in_flight"].samples} == {
            "host-c:3"
        }
        assert run.frames is not None and run.frames.counters.read_errors_total == 1


async def test_an_oversized_frame_is_not_published(redis_server: RedisServer) -> None:
    link = RedisLink(redis_server.url)
    try:
        frames = WorkerFrames(link, ttl_s=TTL_S, prefix=PREFIX, max_frame_bytes=64)
        await frames.publish({"channels": {"x" * 100: {}}})
        assert frames.counters.oversize_total == 1
        assert await frames.live() == {}
    finally:
        link.close()


# -- rendering and the service's boundary --------------------------------------------------


def test_the_ledger_renders_per_worker_and_its_global_view_once() -> None:
    def ledger(in_use: int) -> dict[str, object]:
        return {"mode": "global", "limit": 8, "global_in_use": in_use, "admitted_total": in_use}

    text = render_workers(
        {
            "a:1": {"unix_s": 10.0, "ledger": ledger(3)},
            "b:2": {"unix_s": 20.0, "ledger": ledger(5)},  # the freshest view
        }
    )
    families = _families(text)
    modes = {(s.labels["worker"], s.labels["mode"]) for s in families["orpipe_ledger_mode"].samples}
    assert modes == {("a:1", "global"), ("b:2", "global")}
    assert families["orpipe_ledger_admitted"].type == "counter"
    assert families["orpipe_cluster_ledger_global_in_use"].samples[0].value == 5
    assert families["orpipe_cluster_ledger_limit"].samples[0].value == 8


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_a_server_that_cannot_listen_is_logged_and_never_raised() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding fails at once.
    service = TelemetryService(TelemetryPlan(host="192.0.2.1", port=0, interval_s=0.05))
    recorder = _Recorder()
    telemetry_log = logging.getLogger("orpipe.telemetry")
    telemetry_log.addHandler(recorder)
    try:
        async with mock_server() as mock, running_engine(mock) as engine:
            with trio.fail_after(10):
                await service(engine.statistics)  # returns instead of raising
            assert (await collect(engine.submit(request("text", tokens=3)))).text
    finally:
        telemetry_log.removeHandler(recorder)
    assert len(recorder.messages) == 1
    assert recorder.messages[0].startswith("telemetry stopped (OSError")
    assert "the Function keeps working without it" in recorder.messages[0]


# -- the dashboard's Workers panel -------------------------------------------------------

WORKERS_PROBE = """JSON.stringify({
  hidden: document.getElementById("workers-panel").hidden,
  workers: [...document.querySelectorAll("#workers tbody tr")].map((tr) => tr.cells[0].textContent),
})"""


async def _probe_until(page: DevToolsPage, predicate: Any) -> dict[str, Any]:
    state: dict[str, Any] = {}
    with trio.move_on_after(90):  # generous: Chromium on a busy machine
        while True:
            value = await page.evaluate(WORKERS_PROBE)
            state = json.loads(value) if value else {}
            if predicate(state):
                return state
            await trio.sleep(0.1)
    raise AssertionError(f"the dashboard never got there; last state: {state}")


@pytest.mark.timeout(300)
async def test_the_dashboard_lists_every_live_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with serving(DASHBOARD_DIR, redis_url=redis_server.url) as run:
        link = RedisLink(redis_server.url)
        try:
            other = WorkerFrames(link, ttl_s=TTL_S, prefix=PREFIX, worker="host-a:1")
            await other.publish(run.hub.snapshot())
            async with open_chromium(run.endpoints.dashboard_url, tmp_path) as page:
                state = await _probe_until(
                    page, lambda s: s.get("hidden") is False and len(s.get("workers", [])) == 2
                )
            assert sorted(state["workers"]) == ["host-a:1", "host-c:3"]
        finally:
            link.close()
