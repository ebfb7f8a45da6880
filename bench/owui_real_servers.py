"""The ``owui-real`` bench's Open WebUI servers: one per pipe, started once, set up over HTTP.

Owns what each server is (``PIPES``: which Function it carries, or none and Open WebUI's
own OpenAI connection), the environment every server gets (``server_env``, the same for
all but its data directory and port), starting them (``open-webui serve`` from Open WebUI's
virtualenv, each with its own throw-away ``DATA_DIR`` and log), and setting each one up
through Open WebUI's HTTP API as an administrator would: sign up the admin, create and
switch on the Function and set its valves, or point the OpenAI connection at the mock
(``POST /openai/config/update``); check that the background tasks are off
(``GET /api/v1/tasks/config``) and that the bench's models are listed; add the chat users
(``POST /api/v1/auths/add``, which hands back each user's token).

Background tasks (title, tags and follow-up generation; autocomplete; search and retrieval
query generation) are switched off through ``ENABLE_*`` variables, which seed Open WebUI's
config on first start, so no extra model call adds CPU; the page still asks for them, as a
browser does, and Open WebUI declines. Model access control is bypassed
(``BYPASS_MODEL_ACCESS_CONTROL``), so plain users may chat with every model without grants.
The store is Open WebUI's default, SQLite, with a longer wait for its write lock
(``DATABASE_SQLITE_PRAGMA_BUSY_TIMEOUT``, 120 s instead of 5 s): with the default, chats
fail with "database is locked" once a two-core machine is saturated (64 chats at once).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

__all__ = [
    "PIPES",
    "PipeKind",
    "Server",
    "SetupError",
    "model_id",
    "running_servers",
    "server_env",
    "set_up",
]

_REPO = Path(__file__).resolve().parents[1]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "bench-Pass-1"
USER_PASSWORD = "bench-Pass-2"
DUMMY_KEY = "sk-bench-dummy"
_ADD_USERS_AT_ONCE = 8
#: How long a write waits for SQLite's lock (Open WebUI's default is 5000 ms).
SQLITE_BUSY_TIMEOUT_MS = 120_000


@dataclass(frozen=True, slots=True)
class PipeKind:
    """One column of the table: what answers the chats on its server."""

    name: str  # "orpipe", "orpipe_guest", "builtin", "bare", "floor"
    title: str  # the table's column heading
    #: The Function's source (repository path) and id; None: no Function, the connection.
    source: str | None

    @property
    def function_id(self) -> str:
        return self.name


_ORPIPE_SOURCE = "adapters/owui_pipe.py"

PIPES: tuple[PipeKind, ...] = (
    PipeKind("orpipe", "orpipe", "adapters/owui_pipe.py"),
    # The same Function with the other bridge, ENGINE_BRIDGE=guest (the default is thread):
    # how the default was chosen, and how it is checked.
    PipeKind("orpipe_guest", "orpipe (guest)", "adapters/owui_pipe.py"),
    PipeKind("builtin", "built-in conn.", None),
    PipeKind("bare", "bare 1-client", "bench/owui_real_bare_pipe.py"),
    PipeKind("floor", "floor (no net)", "bench/owui_real_floor_pipe.py"),
)
PIPES_BY_NAME: Mapping[str, PipeKind] = {pipe.name: pipe for pipe in PIPES}


def model_id(pipe: PipeKind, upstream: str) -> str:
    """Open WebUI's id of the model that answers from ``upstream`` (``mock/text:d20``)."""
    if pipe.source is None:
        return upstream
    return f"{pipe.function_id}.{upstream.replace('/', '.')}"


class SetupError(Exception):
    """A server could not be started or set up; the message says which and why."""


@dataclass(slots=True)
class Server:
    """A running server: its pipe, address, process and, once set up, its users."""

    pipe: PipeKind
    base: str
    pid: int
    log: Path
    admin_token: str = ""
    users: list[dict[str, str]] = field(default_factory=list)


def server_env(data_dir: Path, secret: str) -> dict[str, str]:
    """The environment of every server (only ``DATA_DIR`` differs between them)."""
    inherited = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PORT"}
    }
    return inherited | {
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": secret,
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_VERSION_UPDATE_CHECK": "false",
        "ENABLE_OPENAI_API": "false",  # the built-in server turns it on through the API
        "ENABLE_OLLAMA_API": "false",
        "BYPASS_EMBEDDING_AND_RETRIEVAL": "true",
        "RAG_EMBEDDING_ENGINE": "openai",
        "ENABLE_TITLE_GENERATION": "false",
        "ENABLE_TAGS_GENERATION": "false",
        "ENABLE_FOLLOW_UP_GENERATION": "false",
        "ENABLE_AUTOCOMPLETE_GENERATION": "false",
        "ENABLE_SEARCH_QUERY_GENERATION": "false",
        "ENABLE_RETRIEVAL_QUERY_GENERATION": "false",
        "BYPASS_MODEL_ACCESS_CONTROL": "true",
        "UVICORN_WORKERS": "1",
        # SQLite (Open WebUI's default store) lets one writer in at a time; at 64 and more
        # chats at once on two cores the default 5 s wait for the lock runs out and chats
        # fail with "database is locked". A longer wait keeps them (and their cost) in.
        "DATABASE_SQLITE_PRAGMA_BUSY_TIMEOUT": str(SQLITE_BUSY_TIMEOUT_MS),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running_servers(
    venv: Path,
    pipes: Sequence[PipeKind],
    work: Path,
    *,
    say: Callable[[str], None],
    ready_timeout_s: float = 600.0,
) -> AsyncIterator[list[Server]]:
    """Start one ``open-webui serve`` per pipe (all at once), yield them once healthy, and
    always stop them (SIGTERM, then SIGKILL after 15 s)."""
    secret = secrets.token_urlsafe(32)
    processes: list[trio.Process] = []
    servers: list[Server] = []
    logs = []
    try:
        for pipe in pipes:
            port = _free_port()
            data_dir = work / pipe.name / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            log_path = work / pipe.name / "open-webui.log"
            log = log_path.open("wb")
            logs.append(log)
            argv = [str(venv / "bin" / "open-webui"), "serve", "--host", "127.0.0.1"]
            process = await trio.lowlevel.open_process(
                [*argv, "--port", str(port)],
                env=server_env(data_dir, secret),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(work / pipe.name),
                start_new_session=True,
            )
            processes.append(process)
            base = f"http://127.0.0.1:{port}"
            servers.append(Server(pipe=pipe, base=base, pid=process.pid, log=log_path))
        say(f"starting {len(servers)} Open WebUI servers (the first start takes a while)")
        with trio.fail_after(ready_timeout_s):
            async with trio.open_nursery() as nursery:
                for server, process in zip(servers, processes, strict=True):
                    nursery.start_soon(_await_healthy, server, process, say)
        yield servers
    except trio.TooSlowError:
        raise SetupError(
            f"Open WebUI did not become healthy within {ready_timeout_s:g} s (logs under {work})"
        ) from None
    finally:
        with trio.CancelScope(shield=True):
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                await _reap(process)
        for log in logs:
            log.close()


async def _await_healthy(server: Server, process: trio.Process, say: Callable[[str], None]) -> None:
    started = trio.current_time()
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise SetupError(
                    f"open-webui serve for {server.pipe.name} exited with {process.returncode} "
                    f"(its log: {server.log})"
                )
            try:
                if (await client.get(f"{server.base}/health")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await trio.sleep(1.0)
    say(
        f"  {server.pipe.name}: up at {server.base} (pid {server.pid}, "
        f"{trio.current_time() - started:.0f} s)"
    )


async def _reap(process: trio.Process) -> None:
    with trio.move_on_after(15):
        await process.wait()
    if process.poll() is None:
        process.kill()
        await process.wait()


# -- set-up through Open WebUI's HTTP API -----------------------------------------------------


def _ok(response: httpx.Response, what: str) -> Any:
    if response.status_code != 200:
        raise SetupError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


async def set_up(
    server: Server,
    *,
    mock_base: str,
    variants: Mapping[str, str],
    floor_plans: Mapping[str, Mapping[str, Any]],
    users: int,
    say: Callable[[str], None],
    orpipe_root: Path = _REPO,
) -> None:
    """Admin, Function or connection, checks, and ``users`` chat users with their tokens.

    ``variants`` maps each variant name to its upstream model (``mock/text:d20``);
    ``floor_plans`` is the floor pipe's ``PLAN_JSON`` (upstream model -> tps and deltas);
    ``orpipe_root`` is the tree the orpipe Function's source is read from (the bench's own
    pipes always come from this repository).
    """
    async with httpx.AsyncClient(base_url=server.base, timeout=60.0) as client:
        signup = _ok(
            await client.post(
                "/api/v1/auths/signup",
                json={"name": "Bench Admin", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            ),
            f"{server.pipe.name}: admin sign-up",
        )
        server.admin_token = str(signup["token"])
        client.headers["Authorization"] = f"Bearer {server.admin_token}"
        upstream = sorted(variants.values())
        if server.pipe.source is None:
            await _connect_openai(client, mock_base)
        else:
            valves = _valves(server.pipe, mock_base, upstream, floor_plans)
            root = orpipe_root if server.pipe.source == _ORPIPE_SOURCE else _REPO
            await _install_function(client, server.pipe, valves, root)
        await _check_tasks_off(client, server.pipe.name)
        listed = {m["id"] for m in _ok(await client.get("/api/models"), "models")["data"]}
        missing = [m for m in (model_id(server.pipe, u) for u in upstream) if m not in listed]
        if missing:
            raise SetupError(f"{server.pipe.name}: models not listed: {missing}")
        server.users = await _add_users(client, server.pipe.name, users)
    say(f"  {server.pipe.name}: set up ({len(server.users)} users)")


def _valves(
    pipe: PipeKind,
    mock_base: str,
    upstream: Sequence[str],
    floor_plans: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    if pipe.name == "orpipe":
        # Everything else at its default: what an administrator gets.
        return {"BASE_URL": mock_base, "API_KEY": DUMMY_KEY}
    if pipe.name == "orpipe_guest":
        return {"BASE_URL": mock_base, "API_KEY": DUMMY_KEY, "ENGINE_BRIDGE": "guest"}
    if pipe.name == "bare":
        return {"BASE_URL": mock_base, "API_KEY": DUMMY_KEY, "MODELS": ",".join(upstream)}
    if pipe.name == "floor":
        return {"PLAN_JSON": json.dumps(dict(floor_plans))}
    raise SetupError(f"no valves known for {pipe.name}")


async def _install_function(
    client: httpx.AsyncClient, pipe: PipeKind, valves: Mapping[str, Any], root: Path
) -> None:
    assert pipe.source is not None
    source = (root / pipe.source).read_text(encoding="utf-8")
    form = {
        "id": pipe.function_id,
        "name": pipe.function_id,
        "content": source,
        "meta": {"description": f"owui-real bench: {pipe.title}"},
    }
    _ok(await client.post("/api/v1/functions/create", json=form), f"{pipe.name}: create")
    toggled = _ok(
        await client.post(f"/api/v1/functions/id/{pipe.function_id}/toggle"),
        f"{pipe.name}: toggle",
    )
    if toggled.get("is_active") is not True:
        raise SetupError(f"{pipe.name}: the Function did not switch on")
    _ok(
        await client.post(f"/api/v1/functions/id/{pipe.function_id}/valves/update", json=valves),
        f"{pipe.name}: valves",
    )


async def _connect_openai(client: httpx.AsyncClient, mock_base: str) -> None:
    """Open WebUI's own OpenAI connection, pointed at the mock, as the admin page sets it."""
    form = {
        "ENABLE_OPENAI_API": True,
        "OPENAI_API_BASE_URLS": [mock_base],
        "OPENAI_API_KEYS": [DUMMY_KEY],
        "OPENAI_API_CONFIGS": {},
    }
    _ok(await client.post("/openai/config/update", json=form), "builtin: OpenAI connection")
    config = _ok(await client.get("/openai/config"), "builtin: OpenAI config")
    if config.get("OPENAI_API_BASE_URLS") != [mock_base] or not config.get("ENABLE_OPENAI_API"):
        raise SetupError(f"builtin: the OpenAI connection was not stored: {config}")


async def _check_tasks_off(client: httpx.AsyncClient, name: str) -> None:
    config = _ok(await client.get("/api/v1/tasks/config"), f"{name}: tasks config")
    keys = (
        "ENABLE_TITLE_GENERATION",
        "ENABLE_TAGS_GENERATION",
        "ENABLE_FOLLOW_UP_GENERATION",
        "ENABLE_AUTOCOMPLETE_GENERATION",
        "ENABLE_SEARCH_QUERY_GENERATION",
        "ENABLE_RETRIEVAL_QUERY_GENERATION",
    )
    on = [key for key in keys if config.get(key)]
    if on:
        raise SetupError(f"{name}: background tasks still on: {on}")


async def _add_users(client: httpx.AsyncClient, name: str, count: int) -> list[dict[str, str]]:
    users: list[dict[str, str] | None] = [None] * count
    limit = trio.CapacityLimiter(_ADD_USERS_AT_ONCE)

    async def add(index: int) -> None:
        async with limit:
            form = {
                "name": f"Bench User {index}",
                "email": f"user{index}@example.com",
                "password": USER_PASSWORD,
                "role": "user",
            }
            added = _ok(await client.post("/api/v1/auths/add", json=form), f"{name}: add user")
            users[index] = {"id": str(added["id"]), "token": str(added["token"])}

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(add, index)
    return [user for user in users if user is not None]
