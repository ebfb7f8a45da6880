"""The multi-worker step of ``make owui-smoke`` (``--workers N``): one Open WebUI, N workers.

Owns the deployment Open WebUI documents for several workers, started for real and
checked from the outside: ``open-webui serve`` with ``UVICORN_WORKERS=N``, a fresh
PostgreSQL database (``DATABASE_URL``, created and dropped here; Open WebUI's
``postgres`` extra, psycopg2, is installed into its virtualenv when missing), a
redis-server of its own with Redis' default persistence (``REDIS_URL``,
``WEBSOCKET_MANAGER=redis``) and the mock. The Function is installed as the
single-worker smoke does (``owui_smoke.install_function``), so its artifact store is
Open WebUI's PostgreSQL with the Redis write-behind.

Then ``--chats`` two-turn chats with the mock's reasoning model, in chats Open WebUI
keeps (created through ``/api/v1/chats/new``; each turn posted to
``/api/chat/completions`` with the chat and message ids the page sends, but no socket:
Open WebUI answers within the request, stores the answer, and the next turn reads it
from the chat), each turn on a new connection so the kernel hands it to either worker.
Which worker served a turn is read while its connection is open: the client's port
names the server's socket in ``/proc/net/tcp``, and that socket's inode is among one
worker's open files (``/proc/<pid>/fd``); a turn whose worker cannot be read says so.
From the mock's request log (``/mock/requests``) every second turn must have carried
its first turn's reasoning item, whichever worker served either turn; at least one
chat must have crossed workers, or the run proved nothing about replay across workers.

Blocking, run by hand (``python -m orpipe.bench.owui_smoke --workers 2``). Every
process and the database are removed on the way out, whatever happened.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from orpipe.bench.mock_process import running_mock_child
from orpipe.bench.owui_browser_checks import replay_problem
from orpipe.bench.owui_real_proc import process_tree
from orpipe.bench.owui_smoke import (
    MOCK_KEY,
    OWUI_VERSION,
    SmokeFailure,
    check,
    free_port,
    healthy,
    install_function,
    owui_env,
    process,
    say,
    serve_argv,
    wait_for,
)
from orpipe.bench.services import redis_server

__all__ = [
    "is_worker_cmdline",
    "parse_tcp_table",
    "run_workers",
    "served_by",
    "tally",
    "turn_body",
]

#: The server that owns the test databases (trust auth, as ``make services`` sets it up).
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Open WebUI's ``postgres`` extra: the synchronous driver its SQLAlchemy engine loads.
PSYCOPG2_PIN = "psycopg2-binary==2.9.12"
#: Quick answers: 40 turns of about 100 tokens each should not take minutes.
MOCK_TPS = "200"
MODEL = "orpipe.mock.reasoning"

# -- which worker served a connection (pure helpers, then /proc) ---------------------------


def parse_tcp_table(text: str) -> dict[tuple[int, int], int]:
    """``(local port, remote port) -> socket inode`` from the text of ``/proc/net/tcp``.

    Addresses are ``HEXIP:HEXPORT``; the inode is the tenth column. The header line and
    malformed lines are skipped.
    """
    table: dict[tuple[int, int], int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            inode = int(fields[9])
        except (IndexError, ValueError):
            continue
        if inode:
            table[(local, remote)] = inode
    return table


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed between listing and reading
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:  # the process ended
        pass
    return inodes


def served_by(server_pid: int, server_port: int, client_port: int) -> int | None:
    """The pid in ``server_pid``'s tree that holds the server side of the connection from
    ``client_port`` (call it while the connection is open), or None if none is found."""
    text = Path("/proc/net/tcp").read_text()
    inode = parse_tcp_table(text).get((server_port, client_port))
    if inode is None:
        return None
    for pid in process_tree(server_pid):
        if inode in _socket_inodes(pid):
            return pid
    return None


# -- the chats -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where the chats go: Open WebUI (its address, port and uvicorn's pid) and the mock."""

    owui: str
    port: int
    pid: int
    token: str
    mock: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One answer as Open WebUI stored it (its text and reasoning items) and its worker."""

    text: str
    reasoning: int
    worker: int | None


@dataclass(frozen=True, slots=True)
class ChatResult:
    index: int
    first: Turn
    second: Turn
    replayed: bool
    what: str

    @property
    def crossed(self) -> bool:
        return None not in (self.first.worker, self.second.worker) and (
            self.first.worker != self.second.worker
        )


def tally(results: Sequence[ChatResult]) -> dict[str, Any]:
    """The summary's figures: replays, chats whose turns crossed workers, turns per worker."""
    workers: Counter[str] = Counter()
    for result in results:
        for turn in (result.first, result.second):
            workers["unknown" if turn.worker is None else f"pid {turn.worker}"] += 1
    return {
        "chats": len(results),
        "replayed": sum(r.replayed for r in results),
        "crossed": sum(r.crossed for r in results),
        "crossed_replayed": sum(r.crossed and r.replayed for r in results),
        "unknown_worker": workers.get("unknown", 0),
        "turns_by_worker": dict(sorted(workers.items())),
    }


def turn_body(
    chat_id: str,
    history: Sequence[tuple[str, str]],
    question: str,
    *,
    parent_id: str | None,
    user_message_id: str,
    message_id: str,
) -> dict[str, Any]:
    """What Open WebUI's page posts for a turn of a chat it keeps, minus the socket.

    ``history`` is the earlier turns as ``(question, answer)``; ``parent_id`` the previous
    answer's message id (None on the first turn). With ``chat_id`` and no ``session_id``
    Open WebUI adds the user message and the answer's placeholder to the stored chat,
    answers within the request and stores the answer, so the Function finds the earlier
    answers' artifacts by their message ids, as it does for the page.
    """
    messages: list[dict[str, str]] = []
    for asked, answered in history:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    messages.append({"role": "user", "content": question})
    return {
        "model": MODEL,
        "stream": True,
        "chat_id": chat_id,
        "id": message_id,
        "parent_id": parent_id,
        "user_message": {
            "id": user_message_id,
            "parentId": parent_id,
            "childrenIds": [message_id],
            "role": "user",
            "content": question,
            "models": [MODEL],
        },
        "messages": messages,
    }


def _post_turn(target: Target, body: Mapping[str, Any]) -> int | None:
    """Post one turn on a connection of its own (so the kernel picks the worker each
    time); returns the worker that served it. With a kept chat Open WebUI answers in the
    request, sends the answer to the user's socket room and stores it, then responds with
    ``null``: the answer is read from the chat afterwards (``_stored_answer``)."""
    headers = {"Authorization": f"Bearer {target.token}"}
    with (
        httpx.Client(base_url=target.owui, headers=headers, timeout=120) as client,
        client.stream("POST", "/api/chat/completions", json=body) as response,
    ):
        # The response has begun and the connection is still open: its server side is
        # in the worker's open files.
        client_addr = response.extensions["network_stream"].get_extra_info("client_addr")
        worker = served_by(target.pid, target.port, int(client_addr[1]))
        response.read()
        if response.status_code != 200:
            raise SmokeFailure(f"chat returned HTTP {response.status_code}: {response.text!r}")
    return worker


def _stored_answer(target: Target, chat_id: str, message_id: str) -> tuple[str, int]:
    """The answer's text and its number of reasoning items, as Open WebUI stored them."""
    chat = httpx.get(
        f"{target.owui}/api/v1/chats/{chat_id}",
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=60,
    )
    if chat.status_code != 200:
        raise SmokeFailure(f"chat {chat_id} could not be read (HTTP {chat.status_code})")
    message = chat.json()["chat"]["history"]["messages"].get(message_id) or {}
    if message.get("error"):
        raise SmokeFailure(f"Open WebUI stored an error for the answer: {message['error']}")
    output = message.get("output") or []
    reasoning = sum(isinstance(item, dict) and item.get("type") == "reasoning" for item in output)
    return str(message.get("content") or ""), reasoning


def _turn(target: Target, body: Mapping[str, Any]) -> Turn:
    worker = _post_turn(target, body)
    text, reasoning = _stored_answer(target, str(body["chat_id"]), str(body["id"]))
    return Turn(text=text, reasoning=reasoning, worker=worker)


def _mock_log(mock_base: str) -> list[Mapping[str, Any]]:
    root = mock_base.removesuffix("/api/v1")
    log: list[Mapping[str, Any]] = httpx.get(f"{root}/mock/requests", timeout=10).json()["requests"]
    return log


def _new_chat(target: Target, index: int) -> str:
    """An empty chat Open WebUI keeps (as the page creates one), its id."""
    form = {"chat": {"title": f"Workers smoke {index}", "models": [MODEL], "messages": []}}
    created = httpx.post(
        f"{target.owui}/api/v1/chats/new",
        json=form,
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=60,
    )
    if created.status_code != 200:
        raise SmokeFailure(f"chat {index}: not created (HTTP {created.status_code})")
    return str(created.json()["id"])


def _chat(index: int, target: Target) -> ChatResult:
    first_q = f"Workers smoke chat {index}: the first question."
    second_q = f"Workers smoke chat {index}: the second question."
    chat_id = _new_chat(target, index)
    ids = [str(uuid.uuid4()) for _ in range(4)]  # user 1, answer 1, user 2, answer 2
    body = turn_body(
        chat_id, [], first_q, parent_id=None, user_message_id=ids[0], message_id=ids[1]
    )
    first = _turn(target, body)
    if not first.text:
        raise SmokeFailure(f"chat {index}: Open WebUI stored no text for the first answer")
    body = turn_body(
        chat_id,
        [(first_q, first.text)],
        second_q,
        parent_id=ids[1],
        user_message_id=ids[2],
        message_id=ids[3],
    )
    second = _turn(target, body)
    replayed, what = replay_problem(_mock_log(target.mock), first_q, second_q)
    return ChatResult(index, first, second, replayed, what)


def _worker_name(pid: int | None) -> str:
    return "an unknown worker" if pid is None else f"worker pid {pid}"


# -- the services ----------------------------------------------------------------------------


def ensure_postgres_driver(venv: Path) -> None:
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import psycopg2"], check=False, capture_output=True)
    if probe.returncode:
        say(f"installing {PSYCOPG2_PIN} (Open WebUI's postgres extra)")
        subprocess.run([python, "-m", "pip", "install", "--quiet", PSYCOPG2_PIN], check=True)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database for this run (its URL), dropped afterwards."""
    name = f"orpipe_owui_workers_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise SmokeFailure(
            f"cannot create a database on {PG_ADMIN_URL} ({exc}); start PostgreSQL "
            "(tests/services.sh) and retry"
        ) from exc
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stored_rows(database_url: str) -> dict[str, int]:
    """Rows in each of the Function's artifact tables (``orpipe_artifacts_*``) now."""
    with psycopg.connect(database_url, autocommit=True) as db:
        tables = [
            str(row[0])
            for row in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_name LIKE 'orpipe\\_artifacts\\_%'"
            ).fetchall()
        ]
        counts = {}
        for table in tables:
            found = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            counts[table] = int(found[0]) if found else 0
    return counts


def write_behind_streams(redis_url: str) -> list[str]:
    """The Function's write-behind streams in Redis (``orpipe:<ns>:artifacts``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sorted(key.decode() for key in client.scan_iter(match="orpipe:*:artifacts"))
    finally:
        client.close()


def _check_store(database_url: str, redis_url: str, chats: int) -> None:
    """The artifacts went through Redis into Open WebUI's PostgreSQL: at least one row per
    chat (its last reasoning item; the first may be deleted once replayed, as
    ``PERSIST_REASONING_TOKENS=next_reply`` does) once the flushers caught up."""
    streams = write_behind_streams(redis_url)
    check(bool(streams), f"the workers queued artifacts through Redis: {streams}")
    rows = wait_for(
        lambda: (found := stored_rows(database_url)) and sum(found.values()) >= chats and found,
        f"{chats} artifact rows in PostgreSQL",
        60,
    )
    say(f"ok: the artifacts reached PostgreSQL: {rows}")


def is_worker_cmdline(cmdline: bytes) -> bool:
    """Whether ``/proc/<pid>/cmdline`` is a uvicorn worker: a process multiprocessing
    spawned (``spawn_main``), not its resource tracker nor uvicorn's supervisor."""
    return b"multiprocessing.spawn" in cmdline and b"spawn_main" in cmdline


def _worker_pids(pid: int) -> list[int]:
    found = []
    for child in process_tree(pid)[1:]:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # it ended
            continue
        if is_worker_cmdline(cmdline):
            found.append(child)
    return found


def run_workers(venv: Path, *, workers: int = 2, chats: int = 20) -> None:
    """The whole step; raises ``SmokeFailure`` naming the first check that failed."""
    if workers < 2:
        raise SmokeFailure("--workers needs at least 2 workers to say anything about them")
    ensure_postgres_driver(venv)

    work = Path(tempfile.mkdtemp(prefix="orpipe-owui-workers-"))
    say(f"workers step: logs and DATA_DIR under {work}")
    with (
        fresh_database() as database_url,
        redis_server(appendfsync=None) as redis_service,
        running_mock_child(
            params={"tps": MOCK_TPS}, api_key=MOCK_KEY, log_path=work / "mock.log"
        ) as mock,
    ):
        say(f"PostgreSQL database {database_url.rsplit('/', 1)[1]}, Redis at {redis_service.url}")
        say(f"mock OpenRouter at {mock.base_url}")
        port = free_port()
        owui = f"http://127.0.0.1:{port}"
        env = owui_env(work) | {
            "UVICORN_WORKERS": str(workers),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_service.url,
            "WEBSOCKET_MANAGER": "redis",
            "ENABLE_TITLE_GENERATION": "false",
            "ENABLE_TAGS_GENERATION": "false",
            "ENABLE_FOLLOW_UP_GENERATION": "false",
        }
        say(f"starting Open WebUI {OWUI_VERSION} with {workers} workers at {owui}")
        with process(serve_argv(venv, port), env=env, log=work / "open-webui.log") as proc:
            wait_for(lambda: healthy(owui), "Open WebUI /health", 300)
            pids = wait_for(
                lambda: len(_worker_pids(proc.pid)) >= workers and _worker_pids(proc.pid),
                f"{workers} uvicorn workers",
                120,
            )
            say(f"Open WebUI is up: uvicorn pid {proc.pid}, worker pids {pids}")
            with httpx.Client(base_url=owui, timeout=60) as client:
                install_function(client, mock.base_url)
                token = client.headers["Authorization"].removeprefix("Bearer ")
            target = Target(owui, port, proc.pid, token, mock.base_url)
            results = []
            for index in range(1, chats + 1):
                result = _chat(index, target)
                results.append(result)
                say(
                    f"chat {index}/{chats}: turn 1 on {_worker_name(result.first.worker)}, "
                    f"turn 2 on {_worker_name(result.second.worker)} (stored reasoning "
                    f"items: {result.first.reasoning}/{result.second.reasoning}): "
                    f"{'ok' if result.replayed else 'FAIL'}: {result.what}"
                )
            _check_store(database_url, redis_service.url, chats)
    _verdict(tally(results))


def _verdict(figures: Mapping[str, Any]) -> None:
    chats = figures["chats"]
    say(f"turns by worker: {figures['turns_by_worker']}")
    if figures["unknown_worker"]:
        say(f"note: the worker of {figures['unknown_worker']} turns could not be read from /proc")
    check(
        figures["replayed"] == chats,
        f"{figures['replayed']} of {chats} second turns carried the first turn's reasoning item",
    )
    check(
        figures["crossed"] > 0,
        f"{figures['crossed']} of {chats} chats had their turns on different workers "
        f"({figures['crossed_replayed']} of them replayed)",
    )
    say(
        f"ok: {chats} two-turn chats on {len(figures['turns_by_worker'])} workers, "
        f"{figures['crossed']} across workers, every second turn replayed its reasoning"
    )
