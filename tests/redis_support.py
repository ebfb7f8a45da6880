"""Real ``redis-server`` processes for tests, owned by the test that starts them.

Each server runs on a free loopback port with its own data directory, so a
test can ``kill()`` it (SIGKILL, like a crash) and ``restart()`` it on the
same port; clients configured with its ``url`` then reconnect to it.

By default the server keeps nothing on disk (``--save '' --appendonly no``):
a kill loses everything. ``durable=True`` turns on the append-only file with
``appendfsync always``, so every write Redis acknowledged survives a kill.
``redis_defaults=True`` leaves persistence to Redis' own defaults (RDB
snapshots now and then, no append-only file): what a stock install does, so
a kill loses whatever came after the last snapshot. ``extra`` appends more
arguments (``--appendfsync everysec``, ``--rename-command CONFIG ""``).

Fixtures (plain, synchronous; usable from trio tests): ``redis_factory``
starts servers with options and stops them all at teardown; ``redis_server``
is one default server. A missing ``redis-server`` binary fails the test with
what to install: these tests never skip.

Everything here blocks (process start, PING polling): call ``kill``/``restart``
from trio code through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest
import redis

__all__ = ["RedisServer", "find_redis_server", "redis_factory", "redis_server"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_START_ATTEMPTS = 3


def find_redis_server() -> str:
    """The ``redis-server`` binary, or a test failure saying how to install it."""
    binary = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()),
        None,
    )
    if binary is None:
        pytest.fail(
            "redis-server is not installed, and the Redis tests need a real server: "
            "apt-get install redis-server (make test installs it)",
            pytrace=False,
        )
    return binary


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (see the module doc)."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        password: str | None = None,
        durable: bool = False,
        redis_defaults: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        if durable and redis_defaults:
            raise ValueError("a server is either durable or runs Redis' defaults")
        self.binary = binary
        self.directory = directory
        self.password = password
        self.durable = durable
        self.redis_defaults = redis_defaults
        self.extra = list(extra)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self) -> redis.Redis:
        """A new synchronous client for assertions (close it when done)."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, protocol=2)

    def start(self) -> None:
        """Start on a free port (a few attempts, in case another process takes it first)."""
        errors = []
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port()
            try:
                self._launch()
                return
            except RuntimeError as exc:
                errors.append(str(exc))
        raise RuntimeError("redis-server did not start: " + " | ".join(errors))

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save. What was not on disk is gone."""
        process = self._require_process()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=_STOP_TIMEOUT_S)
        self._forget_process()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing until ``resume``."""
        self._require_process().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        self._require_process().send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Start again on the same port, with the same directory (the AOF, if durable)."""
        if self.running:
            raise RuntimeError("redis-server is still running; kill() or stop() it first")
        self._launch()

    def stop(self) -> None:
        """Terminate (then kill, if it hangs) and wait. Safe to call twice."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_S)
        self._forget_process()

    def _launch(self) -> None:
        self._log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            self._arguments(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.directory
        )
        try:
            self._wait_until_ready()
        except RuntimeError:
            self.stop()
            raise

    def _arguments(self) -> list[str]:
        arguments = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.durable:
            arguments += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        elif not self.redis_defaults:
            arguments += ["--save", "", "--appendonly", "no"]
        arguments += self.extra
        if self.password:
            arguments += ["--requirepass", self.password]
        return arguments

    def _wait_until_ready(self) -> None:
        """Poll PING until it answers, the process exits, or the bound runs out."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        with self.client() as probe:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"exited at start on port {self.port}: {self._log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                time.sleep(0.01)
        raise RuntimeError(f"no PING answer within {_START_TIMEOUT_S:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        path = self.directory / "redis.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return " / ".join(lines[-5:])

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process

    def _forget_process(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """``start(password=None, durable=False, redis_defaults=False, extra=()) -> RedisServer``;
    all stopped at teardown."""
    binary = find_redis_server()
    servers: list[RedisServer] = []

    def start(
        *,
        password: str | None = None,
        durable: bool = False,
        redis_defaults: bool = False,
        extra: Sequence[str] = (),
    ) -> RedisServer:
        server = RedisServer(
            binary,
            tmp_path_factory.mktemp("redis"),
            password=password,
            durable=durable,
            redis_defaults=redis_defaults,
            extra=extra,
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """One default (non-durable, no password) server for this test."""
    return redis_factory()
