"""The dashboard in headless Chromium against a running engine: its charts receive data.

Chromium is driven over the DevTools protocol (its own WebSocket), so the test
polls the page's data attributes until they show drawn data, bounded by a
generous ``fail_after``, instead of guessing how long a page needs. Chromium
is Debian's ``chromium`` package, installed by ``tests/services.sh``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from orpipe.actors.telemetry_core import TelemetrySettings
from orpipe.bench.headless_chromium import DevToolsPage, open_chromium
from orpipe.bench.telemetry_run import DASHBOARD_DIR, open_telemetry
from orpipe.engine import AdmissionRejected
from tests.engine.support import mock_server, request, running_engine, wait_until

#: What the page reports about itself: frames received and, per chart, points and series.
PROBE = """JSON.stringify({
  status: document.body.dataset.status,
  frames: Number(document.body.dataset.frames),
  search: location.search,
  charts: Object.fromEntries([...document.querySelectorAll("canvas.chart")].map(
    (c) => [c.id, {points: Number(c.dataset.points), series: Number(c.dataset.series)}])),
  legend: [...document.querySelectorAll("#legend-occupancy li")].map((li) => li.textContent),
  rows: document.querySelectorAll("#channels tbody tr").length,
  breakers: [...document.querySelectorAll("#breakers tbody tr")].map(
    (tr) => [...tr.cells].map((td) => td.textContent)),
})"""


async def until(page: DevToolsPage, predicate: Any, *, limit_s: float = 90.0) -> dict[str, Any]:
    """Probe the page until ``predicate(state)`` holds; fails with the last state if never."""
    state: dict[str, Any] = {}
    with trio.move_on_after(limit_s):
        while True:
            value = await page.evaluate(PROBE)
            state = json.loads(value) if value else {}
            if predicate(state):
                return state
            await trio.sleep(0.1)
    raise AssertionError(f"the dashboard never got there; last state: {state}")


def _drawn(state: dict[str, Any]) -> bool:
    charts = state.get("charts", {})
    if set(charts) != {"chart-occupancy", "chart-inflight", "chart-rejections"}:
        return False  # not the dashboard (yet): about:blank, or still loading
    return (
        state.get("status") == "live"
        and state["frames"] >= 5
        and charts["chart-occupancy"]["points"] > 0
        and charts["chart-inflight"]["points"] > 0
        and charts["chart-rejections"]["points"] > 0
    )


@pytest.mark.timeout(300)
async def test_the_dashboard_in_chromium_draws_live_engine_telemetry(tmp_path: Path) -> None:
    async with (
        mock_server() as server,
        running_engine(
            server, max_concurrent_requests=2, queue_maxsize=1, shutdown_grace_s=0.1
        ) as engine,
        open_telemetry(engine, TelemetrySettings(interval_s=0.1)) as run,
    ):
        # Two answers stall (in flight), one waits, one is turned away.
        streams = [engine.submit(request("stall", stall_after=0)) for _ in range(3)]
        with pytest.raises(AdmissionRejected):
            engine.submit(request("text"))
        await wait_until(lambda: engine.statistics().admission.in_flight == 2)

        url = run.endpoints.dashboard_url
        async with open_chromium(url, tmp_path) as page:
            state = await until(page, _drawn)
            assert state["search"].startswith("?ws=ws://127.0.0.1:")
            charts = state["charts"]
            # One occupancy line per engine channel, one line each for in flight and waiting,
            # one each for rejected and shed.
            assert charts["chart-occupancy"]["series"] >= 5
            assert charts["chart-inflight"]["series"] == 2
            assert charts["chart-rejections"]["series"] == 2
            assert any(item.startswith("fetch.out:") for item in state["legend"])
            assert state["rows"] >= 5
            # The engine's tool breaker, with nothing tracked: name, tracked, closed, open,
            # half open.
            assert state["breakers"] == [["tools", "0", "0", "0", "0"]]

            # Without ?ws= the page finds the WebSocket through /config.json on its own host.
            await page.call("Page.navigate", url=f"{run.endpoints.http_url}/")
            state = await until(page, lambda s: s.get("search") == "" and _drawn(s))
            assert state["frames"] >= 5

        # The browser left: the server released its subscription.
        await wait_until(lambda: run.hub.subscribers == 0, limit_s=60)
        for stream in streams:
            await stream.aclose()


def test_the_dashboard_loads_nothing_from_elsewhere() -> None:
    """No CDN, no external library: every URL in the page's files is relative."""
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text), name
        assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", text), name
        assert "cdn" not in text.lower(), name
