"""
title: bench floor pipe
description: The owui-real bench's floor: yields the mock's answer tokens with the mock's
  pacing and no network at all, so what is left is Open WebUI's own cost. Not for use.
version: 0.1.0
"""

# The source of a Function the ``owui-real`` bench (``bench.owui_real``) installs into a
# real Open WebUI through its HTTP API. Self-contained on purpose: Open WebUI executes this
# text, so it imports nothing of this project.
#
# ``PLAN_JSON`` (a valve the bench sets) maps each model this pipe offers to the tokens the
# mock would send for it and their pacing: ``{"mock/text:d20": {"tps": 50, "deltas": [...]}}``.
# Token ``k`` is yielded ``k / tps`` seconds after the answer started, exactly as the mock
# schedules its writes; flat out (``tps`` 0) each token still passes through the event loop
# once (``anyio.lowlevel.checkpoint()``), the least an answer arriving from anywhere costs.
# The pacing goes through anyio, which Open WebUI runs on (Starlette), on Open WebUI's loop.

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import BaseModel, Field


class Pipe:
    class Valves(BaseModel):
        PLAN_JSON: str = Field(
            default="{}", description='{"<upstream model id>": {"tps": 50, "deltas": [...]}}'
        )

    def __init__(self) -> None:
        self.valves = self.Valves()
        self._parsed: tuple[str, dict[str, Any]] = ("", {})

    def _plans(self) -> dict[str, Any]:
        raw = self.valves.PLAN_JSON
        if self._parsed[0] != raw:  # Open WebUI sets new valves on the instance
            self._parsed = (raw, json.loads(raw))
        return self._parsed[1]

    def pipes(self) -> list[dict[str, str]]:
        return [
            {"id": model.replace("/", "."), "name": f"floor {model}"} for model in self._plans()
        ]

    async def pipe(self, body: dict[str, Any]) -> AsyncIterator[str] | str:
        sub_id = str(body.get("model", "")).split(".", 1)[-1]
        entry = self._plans().get(sub_id.replace(".", "/", 1))
        if entry is None:
            return f"[floor pipe: no plan for {sub_id!r}]"
        return _paced(list(entry["deltas"]), float(entry.get("tps", 0)))


async def _paced(deltas: list[str], tps: float) -> AsyncIterator[str]:
    start = anyio.current_time()
    for k, delta in enumerate(deltas):
        if tps > 0:
            await anyio.sleep_until(start + k / tps)
        else:
            await anyio.lowlevel.checkpoint()
        yield delta
