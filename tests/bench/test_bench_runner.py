"""The load bench end to end, scaled down: real mock process, real engine, real CLI.

Checks the shape and the internal consistency of ``results.json`` (counts add
up, percentiles are ordered, the ratio is engine ÷ baseline), the one-line
usage errors, and that Ctrl-C still leaves an ``interrupted`` result behind.
These runs are one row measured once (``--concurrency``/``--tps`` select it);
the grid of rows and repetitions has its own tests in ``test_bench_grid``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orpipe.bench.cli import main
from orpipe.bench.report import format_table

REPO = Path(__file__).resolve().parents[2]
SMALL_RUN = [
    *("--concurrency", "8", "--duration", "1.5", "--warmup", "0.3", "--tokens", "20", "--tps", "0")
]


def _only_rep(document: dict[str, Any]) -> dict[str, Any]:
    """The one repetition of the one row these runs measure."""
    (row,) = document["rows"]
    (rep,) = row["reps"]
    return rep


def _check_phase(phase: dict[str, Any]) -> None:
    requests = phase["requests"]
    assert requests["submitted"] > 0
    assert (
        requests["completed"] + requests["failed"] + requests["rejected"] + requests["unfinished"]
        == requests["submitted"]
    )
    assert requests["unfinished"] == 0  # flat-out 20-token streams finish well within the drain
    assert requests["failed"] == 0, phase["outcome_details"]
    assert requests["admitted"] == requests["submitted"] - requests["rejected"]
    assert phase["events"] > 0
    assert phase["events_per_s"] > 0
    assert phase["cpu_s"] > 0
    assert phase["cpu_us_per_event"] > 0
    assert math.isclose(
        phase["cpu_us_per_event"], phase["cpu_s"] * 1e6 / phase["events"], rel_tol=1e-9
    )
    for name in ("ttft_ms", "e2e_ms"):
        summary = phase[name]
        assert summary["count"] == requests["completed"]
        assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert phase["ttft_ms"]["p50_ms"] <= phase["e2e_ms"]["p99_ms"]


def test_small_run_writes_consistent_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "demo", *SMALL_RUN, "--set", "parser_workers=2", "--out", str(tmp_path)])
    assert code == 0
    document = json.loads((tmp_path / "results.json").read_text())

    assert document["interrupted"] is False
    assert document["scenario"]["concurrency"] == 8
    (row,) = document["rows"]
    assert (row["regime"], row["streams"], row["tps"]) == ("flat", 8, 0.0)
    assert document["overrides"] == {"parser_workers": "2"}
    assert document["config"]["parser_workers"] == 2
    assert document["config"]["base_url"].startswith("http://127.0.0.1:")
    assert document["machine"]["cpu_count"] >= 1
    rep = _only_rep(document)
    baseline, engine = rep["phases"]["baseline"], rep["phases"]["engine"]
    _check_phase(baseline)
    _check_phase(engine)
    assert rep["cpu_ratio"] == pytest.approx(
        engine["cpu_us_per_event"] / baseline["cpu_us_per_event"]
    )
    assert row["summary"]["cpu_ratio"] == rep["cpu_ratio"]
    assert engine["engine_statistics"]["endings"]["completed"] >= engine["requests"]["completed"]
    assert "sk-bench-dummy" not in (tmp_path / "results.json").read_text()

    out = capsys.readouterr().out
    # One row measured once: every phase's figures, then the grid's one row.
    assert "\nbaseline " in out and "\nengine " in out
    verdict = row["summary"]["verdict"]
    assert re.search(
        rf"^flat out\s+8\s+1\s.*\s{rep['cpu_ratio']:.2f}\s+≤1\.15\s+{verdict}\s", out, re.M
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("no_such_knob=1", "Invalid setting no_such_knob"),
        ("parser_workers=abc", "Invalid setting parser_workers='abc'"),
        ("parser_workers=0", "Invalid setting parser_workers=0"),
        ("parser_workers", "--set expects NAME=VALUE"),
    ],
)
def test_bad_set_is_a_one_line_usage_error(
    setting: str, expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["run", "demo", "--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results.json").exists()


def test_ctrl_c_keeps_what_was_measured(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "orpipe.bench", "run", "demo", *SMALL_RUN, "--duration", "60"]
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        # mock.log appears once the run handles SIGINT itself; then let it count a little.
        while not (tmp_path / "mock.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err.decode()
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["interrupted"] is True
    phases = _only_rep(document)["phases"]
    baseline = phases["baseline"]
    assert baseline["events"] > 0 and baseline["window_s"] < 5
    assert "engine" not in phases
    assert document["rows"][0]["summary"]["verdict"] == "n/a"
    assert b"interrupted" in err


def test_phase_table_lines_up() -> None:
    def phase(name: str, cpu: float) -> dict[str, Any]:
        latency = {"count": 1, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0}
        requests = {"admitted": 3, "rejected": 0, "failed": 0, "unfinished": 0, "completed": 3}
        return {
            "phase": name,
            "requests": requests,
            "events_per_s": 1000.0,
            "ttft_ms": latency,
            "e2e_ms": latency,
            "cpu_us_per_event": cpu,
        }

    table = format_table([phase("baseline", 10.0), phase("engine", 13.0)])
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # header, rules and rows align
    assert lines[2].startswith("baseline ") and lines[2].endswith("10.0")
    assert lines[3].startswith("engine ") and lines[3].endswith("13.0")


def test_tool_heavy_run_reports_throughput_saturation_and_latency_next_to_streaming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            "tools",
            *SMALL_RUN,
            "--set",
            "max_parallel_tools_per_request=2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    document = json.loads((tmp_path / "results.json").read_text())
    phases = _only_rep(document)["phases"]
    assert list(phases) == ["baseline", "engine", "engine+tools"]
    for phase in phases.values():
        _check_phase(phase)
    tools = phases["engine+tools"]["tools"]
    # 8 calls a turn, 2 turns a request: every completed request ran 16 calls.
    assert tools["completed"] == tools["calls"] > 0
    assert tools["rounds"] * 8 == tools["calls"]
    # Two slots per request for eight calls: most calls waited for one.
    assert 0.5 < tools["per_request_saturation"] <= 1
    assert tools["global_saturation"] == 0
    latency = tools["tool_latency_ms"]
    assert latency["count"] == tools["completed"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    # The plain phase streamed the same answers without calling anything.
    assert "tools" not in phases["engine"]
    out = capsys.readouterr().out
    assert "engine+tools" in out
    assert "tool calls:" in out and "slot waits: per request" in out
    assert "end-to-end p50 with tools / without:" in out


def test_tool_latency_is_seeded_and_shaped_as_asked() -> None:
    from orpipe.bench.fake_tools import LatencyModel  # noqa: PLC0415

    first = LatencyModel(0.05, 0.4, seed=7).draw()
    model = LatencyModel(0.05, 0.4, seed=7)
    sample = sorted(model.draw() for _ in range(20_000))
    assert sample[0] > 0
    assert sample[len(sample) // 2] == pytest.approx(0.05, rel=0.05)
    assert sample[int(len(sample) * 0.99)] == pytest.approx(0.4, rel=0.1)
    assert LatencyModel(0.05, 0.4, seed=7).draw() == first  # seeded: the same run again
    with pytest.raises(ValueError, match="median"):
        LatencyModel(0.5, 0.1)


def test_the_telemetry_command_is_handed_its_own_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["telemetry", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m bench telemetry")
    assert "--screenshot" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["telemetry", "--rate", "fast"])
    assert exit_info.value.code == 2
    assert "invalid float value: 'fast'" in capsys.readouterr().err
