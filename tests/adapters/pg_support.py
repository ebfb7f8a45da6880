"""PostgreSQL for the tests: the machine's server on loopback, required, never skipped.

``postgres_url()`` returns the SQLAlchemy URL of the test database after
checking (once per process) that the server answers; if it does not, the
calling test fails with the command that starts it. The ``pg_url`` fixture
wraps it; import it into a test module as ``pg_url = pg_support.pg_url``.
``ORPIPE_TEST_PG_URL`` overrides the default URL.
"""

from __future__ import annotations

import os

import psycopg
import pytest
import sqlalchemy as sa

__all__ = ["DEFAULT_PG_URL", "PG_URL_ENV", "pg_url", "postgres_url"]

PG_URL_ENV = "ORPIPE_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_ADVICE = (
    "These tests need PostgreSQL (they are never skipped). Start the local server with "
    "`pg_ctlcluster --skip-systemctl-redirect 15 main start` (where no cluster exists, "
    "create a throwaway one with initdb), make sure database `test` exists with trust "
    "auth for user postgres on 127.0.0.1:5432, or point "
    f"{PG_URL_ENV} at another server."
)

#: url -> None when reachable, else why not (probed once per process).
_probed: dict[str, str | None] = {}


def postgres_url() -> str:
    """The test database URL; fails the calling test if the server does not answer."""
    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    if url not in _probed:
        _probed[url] = _probe(url)
    problem = _probed[url]
    if problem is not None:
        shown = sa.make_url(url).render_as_string(hide_password=True)
        pytest.fail(f"PostgreSQL at {shown} is not reachable ({problem}). {_ADVICE}", pytrace=False)
    return url


def _probe(url: str) -> str | None:
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    return None


@pytest.fixture
def pg_url() -> str:
    """The reachable test database's SQLAlchemy URL (see ``postgres_url``)."""
    return postgres_url()
