"""The persistence bench runs end to end on small numbers and reports every phase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpipe.bench import persistence
from tests.adapters.pg_support import postgres_url


def test_the_persistence_bench_reports_all_three_phases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    persistence.main(
        ["--artifacts", "60", "--requests", "8", "--pg-url", postgres_url(), "--out", str(tmp_path)]
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["direct"]["artifacts"] == results["write-behind"]["artifacts"] == 60
    assert results["direct"]["per_s"] > 0 and results["write-behind"]["in_sql_per_s"] > 0
    flush = results["cancel-flush"]
    assert flush["cancelled_with_artifact"] == 8 and flush["flush_ms"]["count"] == 8
    table = capsys.readouterr().out
    assert "write-behind/direct acceptance ratio" in table and "cancel → flushed" in table
