"""Fixtures for the asyncio adapter tests (see ``asyncio_support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adapters.asyncio_support import Mock, mock_process


@pytest.fixture(scope="session")
def mock() -> Iterator[Mock]:
    """One mock OpenRouter (no key required) for the whole session."""
    with mock_process() as server:
        yield server


@pytest.fixture(scope="session")
def paced_mock() -> Iterator[Mock]:
    """A mock whose ``mock/text:paced`` answers at 200 tokens/s, slower than any reader."""
    with mock_process(variants=("paced=tokens=60&tps=200",)) as server:
        yield server


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Every asyncio adapter test runs on both loops: asyncio, and uvloop as in Open WebUI."""
    return str(request.param)
