"""Settings for the whole suite.

Hypothesis: no per-example deadline and no "too slow" health check. Both are
wall-clock judgements, and this suite runs on a 2-core machine next to other
work (CI, the mock, Open WebUI); speed is the bench's business, never a
test's. The number of examples stays Hypothesis's default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("orpipe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("orpipe")


@pytest.fixture
def loguru_records() -> Iterator[list[dict[str, Any]]]:
    """Every loguru record logged during the test: level, message (redacted) and context."""
    from orpipe.engine.logs import logger  # noqa: PLC0415

    records: list[dict[str, Any]] = []

    def keep(message: Any) -> None:
        record = message.record
        records.append(
            {"level": record["level"].name, "message": record["message"], **record["extra"]}
        )

    handler = logger.add(keep, level=0, format="{message}")
    try:
        yield records
    finally:
        logger.remove(handler)


@pytest.fixture(autouse=True)
def _engine_logging_is_per_test() -> Iterator[None]:
    """A test that set up the engine's logging (an Open WebUI turn does) hands the
    standard-library loggers back afterwards, so later tests' ``caplog`` sees them."""
    yield
    from orpipe.engine.logs import stop_logging  # noqa: PLC0415

    stop_logging()
