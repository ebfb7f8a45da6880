"""A throwaway PostgreSQL server of the test's own, on a free loopback port, that can be stopped.

The machine's shared server must not be stopped by a test, so fault tests
start their own: ``initdb`` into a temporary directory (as the ``postgres``
user when the tests run as root, since PostgreSQL refuses to run as root),
then ``pg_ctl start`` / ``stop -m fast`` on the same port. A missing binary
fails the test with what to install; it never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PgInstance", "pg_instance"]

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str:
    for directory in _BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is missing: install PostgreSQL (apt-get install postgresql); "
            "`make test` does this by itself"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgInstance:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _binary("pg_ctl"), "-D", str(self.data_dir / "db"), "-o", options, "-w", "start",
            "-l", str(self.data_dir / "log"),
        )  # fmt: skip

    def stop(self) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data_dir / "db"), "-m", "fast", "-w", "stop")


@contextmanager
def pg_instance() -> Iterator[PgInstance]:
    """initdb + start on a free port; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="orpipe-pg-"))
    instance = PgInstance(directory, _free_port())
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    try:
        instance._run(
            _binary("initdb"), "-D", str(directory / "db"), "--auth=trust", "-U", "postgres"
        )
        instance.start()
        yield instance
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped by the test already
            instance.stop()
        shutil.rmtree(directory, ignore_errors=True)
