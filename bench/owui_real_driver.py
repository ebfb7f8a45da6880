"""The ``owui-real`` bench's chats with a real Open WebUI, as a browser or an API client has them.

Owns one measured cell (``run_cell``): ``level`` workers, each a user of its own, each
running ``per_worker`` chats back to back against one server, and what the server's process
tree used across that window (``bench.owui_real_proc``). Socket.io connections are the
browser's (``bench.owui_real_socketio``): one per user, connected before the window and
kept for later cells, as an open tab keeps its socket.

Two ways a chat goes, as Open WebUI 0.12.4 serves them:

* ``socket`` (the browser's): ``POST /api/chat/completions`` with ``session_id`` (the
  socket's id), ``id`` (the new assistant message's id), ``parent_id: null`` and a
  ``user_message``, so Open WebUI creates the chat, answers at once with its task ids, and
  streams the answer as socket.io ``events`` to the user's room. Time to first token is the
  first event that carries answer text (``response:completion`` with a
  ``response.output_text.delta``); the end is ``chat:completion`` with ``done: true``, whose
  ``output`` must hold exactly the expected text. Chunks are the text-delta events.
* ``http`` (an API client's): the same endpoint with no chat and no session, read as the SSE
  stream Open WebUI sends back; chunks are the ``data:`` lines with content, and their
  concatenation must be the expected text.

Times are ``time.perf_counter()`` from just before the POST. Not measured here: the page's
own follow-up requests (the sidebar's chat list refresh) and its ``usage`` heartbeats.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio

from orpipe.adapters.openrouter.pool import ShardedClients
from orpipe.bench.owui_real_proc import TreeSample, machine_busy_s, sample_tree
from orpipe.bench.owui_real_socketio import SocketIoClient, open_socketio

__all__ = ["CellSpec", "ChatDriver", "output_text"]

PROMPT = "Say something for the bench."
_CONNECT_BATCH = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class CellSpec:
    """One measured cell against one server."""

    label: str
    base: str  # Open WebUI's address, http://127.0.0.1:PORT
    pid: int  # the server process whose tree is measured
    users: Sequence[Mapping[str, str]]  # {"id", "token"}, one per worker
    model: str  # Open WebUI's model id
    mode: str  # "socket" or "http"
    level: int
    per_worker: int
    expect: str  # the answer's exact text
    timeout_s: float
    settle_s: float = 0.5


@dataclass(slots=True)
class Chat:
    """One chat as the driver saw it."""

    started: float
    posted: float | None = None
    first: float | None = None
    done: float | None = None
    chunks: int = 0
    events: int = 0
    error: str = ""
    text: str | None = None
    #: The POST met a kept-alive connection the server had just closed and was sent again,
    #: as a browser does (Open WebUI's uvicorn closes idle connections after 5 s).
    resent: bool = False
    finished: trio.Event = field(default_factory=trio.Event)

    def fail(self, error: str) -> None:
        if not self.error:
            self.error = error
        self.finished.set()

    def record(self, expect: str) -> dict[str, Any]:
        error = self.error
        # Open WebUI strips the stored answer's trailing white space (the mock's ends in " ").
        if not error and (self.text is None or self.text.rstrip() != expect.rstrip()):
            got = "nothing" if self.text is None else f"{len(self.text)} chars"
            error = f"wrong text ({got}, expected {len(expect)})"
        return {
            "ok": not error,
            "error": error,
            "post_s": _since(self.started, self.posted),
            "ttft_s": _since(self.started, self.first),
            "e2e_s": _since(self.started, self.done),
            "chunks": self.chunks,
            "events": self.events,
            "resent": self.resent,
        }


def _since(start: float, at: float | None) -> float | None:
    return None if at is None else at - start


def output_text(output: object) -> str | None:
    """The text of the message items of a Responses-shaped ``output`` list, or None."""
    if not isinstance(output, list):
        return None
    return "".join(
        str(part.get("text", ""))
        for item in output
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "output_text"
    )


def on_socket_event(watching: Mapping[str, Chat], name: str, event: Any) -> None:
    """Route one socket.io event to the chat it belongs to (by assistant message id)."""
    if name != "events" or not isinstance(event, dict):
        return
    chat = watching.get(str(event.get("message_id")))
    if chat is None:
        return
    now = time.perf_counter()
    chat.events += 1
    payload = event.get("data") or {}
    kind = payload.get("type")
    data = payload.get("data") or {}
    if kind == "response:completion":
        if data.get("type") == "response.output_text.delta" and data.get("delta"):
            chat.chunks += 1
            if chat.first is None:
                chat.first = now
    elif kind == "chat:completion":
        if data.get("content") and chat.first is None:  # an older event shape
            chat.first = now
        if data.get("error"):
            chat.done = now
            chat.fail(f"error event: {str(data['error'])[:160]}")
        elif data.get("done") is True:
            chat.done = now
            chat.text = output_text(data.get("output"))
            if chat.text is None and isinstance(data.get("content"), str):
                chat.text = data["content"]
            chat.finished.set()
    elif kind in ("chat:message:error", "chat:tasks:cancel"):
        chat.done = now
        chat.fail(f"{kind}: {str(data)[:160]}")


class ChatDriver:
    """Runs cells; keeps one socket.io connection per (server, user) for the whole run.

    The connections' reader tasks live in ``nursery`` (the run's), so they outlive cells.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._sockets: dict[tuple[str, str], SocketIoClient] = {}
        #: The chats being watched, by assistant message id (unique across servers).
        self.watching: dict[str, Chat] = {}
        self._on_event: Callable[[str, Any], None] = partial(on_socket_event, self.watching)

    async def socket_for(self, base: str, user: Mapping[str, str]) -> SocketIoClient:
        key = (base, user["id"])
        client = self._sockets.get(key)
        if client is None or not client.connected:
            client = await self._nursery.start(
                partial(open_socketio, base, {"token": user["token"]}, self._on_event)
            )
            # What the page sends once connected.
            await client.emit("user-join", {"auth": {"token": user["token"]}})
            self._sockets[key] = client
        return client

    async def connect(self, base: str, users: Sequence[Mapping[str, str]]) -> None:
        for start in range(0, len(users), _CONNECT_BATCH):
            async with trio.open_nursery() as nursery:
                for user in users[start : start + _CONNECT_BATCH]:
                    nursery.start_soon(self.socket_for, base, user)

    async def run_cell(
        self, spec: CellSpec, progress: Callable[[int, int, int], None] | None = None
    ) -> dict[str, Any]:
        """One cell: the chats' records and the server's CPU and RSS across the window."""
        users = list(spec.users[: spec.level])
        if len(users) < spec.level:
            raise ValueError(f"{spec.level} workers need {spec.level} users, got {len(users)}")
        sockets: list[SocketIoClient | None] = [None] * spec.level
        if spec.mode == "socket":
            await self.connect(spec.base, users)
            sockets = [await self.socket_for(spec.base, user) for user in users]
        records: list[dict[str, Any]] = []
        total = spec.level * spec.per_worker
        timeout = httpx.Timeout(30.0, read=spec.timeout_s)
        async with ShardedClients(spec.level + 8, base_url=spec.base, timeout=timeout) as pool:

            async def worker(index: int) -> None:
                user, socket = users[index], sockets[index]
                for _ in range(spec.per_worker):
                    if socket is not None:
                        record = await self._socket_chat(pool.next(), socket, user, spec)
                    else:
                        record = await _http_chat(pool.next(), user, spec)
                    records.append(record)
                    if progress is not None:
                        progress(len(records), total, sum(1 for r in records if not r["ok"]))

            before = await trio.to_thread.run_sync(_sample, spec.pid)
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for index in range(spec.level):
                    nursery.start_soon(worker, index)
            end = time.perf_counter()
            await trio.sleep(spec.settle_s)
            after = await trio.to_thread.run_sync(_sample, spec.pid)
        ours = after[1].cpu_s - before[1].cpu_s
        return {
            "label": spec.label,
            "window_s": end - start,
            "settle_s": spec.settle_s,
            "cpu_s": after[0].cpu_s - before[0].cpu_s,
            "rss_before_mib": before[0].rss_mib,
            "rss_after_mib": after[0].rss_mib,
            "processes": after[0].pids,
            # This process with its children (the mock, every server), and the machine's
            # busy time: what is left went to other programs during the window.
            "bench_cpu_s": ours,
            "others_cpu_s": max(after[2] - before[2] - ours, 0.0),
            "chats": records,
        }

    async def _socket_chat(
        self,
        http: httpx.AsyncClient,
        socket: SocketIoClient,
        user: Mapping[str, str],
        spec: CellSpec,
    ) -> dict[str, Any]:
        message_id, user_message_id = str(uuid.uuid4()), str(uuid.uuid4())
        chat = Chat(started=time.perf_counter())
        self.watching[message_id] = chat
        try:
            with trio.move_on_after(spec.timeout_s) as deadline:
                body = browser_body(spec.model, socket.sid, message_id, user_message_id)
                try:
                    response = await http.post(
                        "/api/chat/completions", json=body, headers=_auth(user)
                    )
                except httpx.RemoteProtocolError:  # a kept-alive connection closed under us
                    chat.resent = True
                    response = await http.post(
                        "/api/chat/completions", json=body, headers=_auth(user)
                    )
                chat.posted = time.perf_counter()
                if response.status_code != 200:
                    chat.fail(f"HTTP {response.status_code}: {response.text[:160]}")
                elif not response.json().get("task_ids"):
                    chat.fail(f"no task started: {response.text[:160]}")
                await chat.finished.wait()
            if deadline.cancelled_caught:
                chat.fail(f"timed out after {spec.timeout_s:g} s")
        except httpx.HTTPError as exc:
            chat.fail(f"{type(exc).__name__}: {exc}")
        finally:
            self.watching.pop(message_id, None)
        return chat.record(spec.expect)


def _sample(pid: int) -> tuple[TreeSample, TreeSample, float]:
    """The server's tree, this process's tree and the machine's busy seconds, now."""
    return sample_tree(pid), sample_tree(os.getpid()), machine_busy_s()


def browser_body(
    model: str, session_id: str, message_id: str, user_message_id: str
) -> dict[str, Any]:
    """What Open WebUI 0.12.4's page posts for the first message of a new chat."""
    return {
        "stream": True,
        "model": model,
        "params": {},
        "features": {},
        "variables": {},
        "model_item": {"id": model},
        "session_id": session_id,
        "id": message_id,
        "parent_id": None,
        "user_message": {
            "id": user_message_id,
            "parentId": None,
            "childrenIds": [message_id],
            "role": "user",
            "content": PROMPT,
            "timestamp": int(time.time()),
            "models": [model],
        },
        # What the page asks for by default; the bench's servers have these tasks off.
        "background_tasks": {
            "title_generation": True,
            "tags_generation": True,
            "follow_up_generation": True,
        },
    }


def _auth(user: Mapping[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['token']}"}


async def _http_chat(
    http: httpx.AsyncClient, user: Mapping[str, str], spec: CellSpec
) -> dict[str, Any]:
    chat = Chat(started=time.perf_counter())
    body = {"model": spec.model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    parts: list[str] = []
    try:
        with trio.move_on_after(spec.timeout_s) as deadline:
            try:
                await _http_answer(http, user, body, chat, parts)
            except httpx.RemoteProtocolError:
                if chat.posted is not None:  # the answer had begun: a real failure
                    raise
                chat.resent = True  # a kept-alive connection closed under us: send again
                await _http_answer(http, user, body, chat, parts)
        if deadline.cancelled_caught:
            chat.fail(f"timed out after {spec.timeout_s:g} s")
    except (httpx.HTTPError, ValueError) as exc:
        chat.fail(f"{type(exc).__name__}: {exc}")
    chat.text = "".join(parts)
    return chat.record(spec.expect)


async def _http_answer(
    http: httpx.AsyncClient,
    user: Mapping[str, str],
    body: Mapping[str, Any],
    chat: Chat,
    parts: list[str],
) -> None:
    async with http.stream(
        "POST", "/api/chat/completions", json=body, headers=_auth(user)
    ) as response:
        chat.posted = time.perf_counter()
        if response.status_code != 200:
            await response.aread()
            chat.fail(f"HTTP {response.status_code}: {response.text[:160]}")
        else:
            await _read_sse(response, chat, parts)


async def _data_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The payload of every ``data:`` line of an SSE body, ``[DONE]`` included."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()


async def _read_sse(response: httpx.Response, chat: Chat, parts: list[str]) -> None:
    async for data in _data_lines(response):
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        chat.events += 1
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            chat.fail(f"error chunk: {str(chunk['error'])[:160]}")
            break
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                chat.chunks += 1
                parts.append(content)
                if chat.first is None:
                    chat.first = time.perf_counter()
    chat.done = time.perf_counter()
