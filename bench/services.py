"""Throwaway Redis and PostgreSQL servers of the bench's own, that can be hurt on purpose.

The machine's shared servers must never be killed or paused, so fault runs
(the ``chaos`` scenario, the persistence tests) start their own on free
loopback ports:

* ``PgServer``: ``initdb`` into a temporary directory (as the ``postgres``
  user when running as root: PostgreSQL refuses root), ``pg_ctl start`` /
  ``stop``; ``pause`` sends SIGSTOP to the postmaster and every backend (a
  database that stops answering without closing anything), ``resume``
  SIGCONT.
* ``RedisServer``: ``redis-server`` with an append-only file fsynced on every
  write (by default), so ``kill`` (SIGKILL) and ``restart`` on the same port
  and directory lose nothing Redis acknowledged; ``appendfsync=None`` runs
  Redis' own persistence defaults instead (RDB snapshots, no append-only
  file), what a stock install does: a kill loses what came after the last
  snapshot, and the write-behind's writers must hold their rows.

A missing binary is a ``ServiceMissing`` that says what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PgServer", "RedisServer", "ServiceMissing", "free_port", "pg_server", "redis_server"]


class ServiceMissing(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pg_binary(name: str) -> str:
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise ServiceMissing(
            f"{name} is missing: install PostgreSQL (apt-get install postgresql); "
            "`make test` does this by itself"
        )
    return found


@dataclass
class PgServer:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *argv: str) -> None:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            _pg_binary("pg_ctl"), "-D", str(self.data_dir / "db"), "-o", options, "-w", "start",
            "-l", str(self.data_dir / "log"),
        )  # fmt: skip

    def stop(self) -> None:
        self.run(_pg_binary("pg_ctl"), "-D", str(self.data_dir / "db"), "-m", "fast", "-w", "stop")

    def pause(self) -> None:
        """Freeze the server: connections stay open, nothing answers."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: int) -> None:
        postmaster = int((self.data_dir / "db" / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *_children(postmaster)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("PPid:") and int(line.split()[1]) == pid:
                    found.append(int(status.parent.name))
                    break
    return found


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    """initdb + start on a free port; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="orpipe-pg-"))
    server = PgServer(directory, free_port())
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    try:
        server.run(
            _pg_binary("initdb"), "-D", str(directory / "db"), "--auth=trust", "-U", "postgres"
        )
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            server.resume()  # a paused server cannot stop
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class RedisServer:
    workdir: Path
    port: int
    #: ``always`` loses nothing on ``kill``; ``everysec`` is what a production Redis runs;
    #: None: Redis' defaults (no append-only file, RDB snapshots).
    appendfsync: str | None = "always"
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceMissing("redis-server is missing: apt-get install redis-server")
        arguments = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        arguments += ["--dir", str(self.workdir)]
        if self.appendfsync is not None:
            arguments += ["--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync]
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (an ``always`` append-only file has every
        write; Redis' defaults keep only the last snapshot)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


@contextlib.contextmanager
def redis_server(appendfsync: str | None = "always") -> Iterator[RedisServer]:
    """A server of its own on a free port (``appendfsync=None``: Redis' persistence defaults)."""
    workdir = Path(tempfile.mkdtemp(prefix="orpipe-redis-"))
    server = RedisServer(workdir, free_port(), appendfsync)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
