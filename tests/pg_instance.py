"""A throwaway PostgreSQL server of the test's own (``bench.services.PgServer``).

The machine's shared server must not be stopped by a test, so fault tests
start their own on a free loopback port. A missing binary fails the test
with what to install; it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from orpipe.bench.services import PgServer, ServiceMissing, pg_server

__all__ = ["PgInstance", "pg_instance"]

PgInstance = PgServer


@contextmanager
def pg_instance() -> Iterator[PgServer]:
    """initdb + start on a free port; stopped and removed afterwards."""
    try:
        server_cm = pg_server()
        server = server_cm.__enter__()
    except ServiceMissing as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server_cm.__exit__(None, None, None)
