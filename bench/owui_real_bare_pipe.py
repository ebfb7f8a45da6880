"""
title: bench bare pipe
description: The owui-real bench's naive baseline: one shared httpx client, SSE split by
  lines, one JSON decode per event, each text delta yielded as it arrives. Not for use.
version: 0.1.0
"""

# The source of a Function the ``owui-real`` bench (``bench.owui_real``) installs into a
# real Open WebUI through its HTTP API. Self-contained on purpose: Open WebUI executes this
# text, so it imports nothing of this project, only what Open WebUI itself depends on.
#
# What it does is the least a pipe can do and still talk to OpenRouter's Responses API:
# one ``httpx.AsyncClient`` for the whole process (created on first use, on Open WebUI's
# loop), ``POST {BASE_URL}/responses`` with ``stream: true``, lines split by httpx, ``data:``
# lines decoded with ``json.loads``, and every ``response.output_text.delta`` yielded as a
# plain string, which Open WebUI wraps into a chat chunk. No retries, no batching, no
# status events, no usage: the floor of work that every real pipe adds to.

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel, Field

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

_client: httpx.AsyncClient | None = None


def _shared_client() -> httpx.AsyncClient:
    """The one client of the process; its pool has room for every concurrent chat."""
    global _client  # noqa: PLW0603 - one client per process is the point of this pipe
    if _client is None:
        _client = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, read=300.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
        )
    return _client


def _input(messages: object) -> list[dict[str, str]]:
    """Open WebUI's messages as Responses input items (text only)."""
    items: list[dict[str, str]] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        role = message.get("role")
        items.append(
            {"role": role if isinstance(role, str) else "user", "content": str(content or "")}
        )
    return items


class Pipe:
    class Valves(BaseModel):
        BASE_URL: str = Field(default="http://127.0.0.1:9/api/v1", description="The mock.")
        API_KEY: str = Field(default="sk-bench-dummy")
        MODELS: str = Field(
            default="mock/text", description="Comma-separated upstream model ids to offer."
        )

    def __init__(self) -> None:
        self.valves = self.Valves()

    def pipes(self) -> list[dict[str, str]]:
        ids = [m.strip() for m in self.valves.MODELS.split(",") if m.strip()]
        return [{"id": model.replace("/", "."), "name": f"bare {model}"} for model in ids]

    async def pipe(self, body: dict[str, Any]) -> AsyncIterator[str]:
        # Open WebUI names the model "<function id>.<sub id>"; the sub id is ours.
        sub_id = str(body.get("model", "")).split(".", 1)[-1]
        payload = {
            "model": sub_id.replace(".", "/", 1),
            "input": _input(body.get("messages")),
            "stream": True,
        }
        return self._stream(payload)

    async def _stream(self, payload: dict[str, Any]) -> AsyncIterator[str]:
        headers = {"Authorization": f"Bearer {self.valves.API_KEY}"}
        url = self.valves.BASE_URL.rstrip("/") + "/responses"
        async with _shared_client().stream("POST", url, json=payload, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                yield f"[bare pipe: HTTP {response.status_code}: {text[:200]}]"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                kind = event.get("type")
                if kind == "response.output_text.delta":
                    yield event["delta"]
                elif kind in _TERMINAL:
                    return
                elif kind == "error":
                    yield f"[bare pipe: {event.get('message') or event.get('error')}]"
                    return
