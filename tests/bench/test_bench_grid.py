"""The closed-loop bench's grid: rows of (regime, streams), repetitions, the verdict.

The pure parts first (the order phases run in, the grid a command line asks
for, the per-row medians and the verdict against the goal, the table), then
the command line's errors, then one short real run through the mock.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from orpipe.bench.cli import main
from orpipe.bench.grid import Grid, Row, phase_names, plan_steps, resolve_grid
from orpipe.bench.report import format_grid_table, goal_line, pace_notes
from orpipe.bench.row_summary import CPU_RATIO_GOAL, summarize_row, verdict
from orpipe.bench.scenarios import SCENARIOS

PACED_16 = Row("paced", 16, 50.0)
FLAT_200 = Row("flat", 200, 0.0)

# -- the order of a run ---------------------------------------------------------------------


def test_repetitions_alternate_the_phase_order_and_interleave_the_rows() -> None:
    grid = Grid((PACED_16, Row("paced", 64, 50.0), FLAT_200), reps=3)
    steps = plan_steps(grid, ("baseline", "engine"))
    assert [(s.rep, s.row_index) for s in steps] == [
        (rep, row) for rep in range(3) for row in range(3)
    ]
    orders = {s.rep: s.phases for s in steps}
    assert orders == {
        0: ("baseline", "engine"),
        1: ("engine", "baseline"),
        2: ("baseline", "engine"),
    }
    # Within a repetition every row runs its phases in the same order, back to back.
    assert all(s.phases == orders[s.rep] for s in steps)


def test_tool_scenarios_reverse_all_three_phases() -> None:
    names = phase_names(SCENARIOS["tools"])
    assert names == ("baseline", "engine", "engine+tools")
    steps = plan_steps(Grid((FLAT_200,), reps=2), names)
    assert [s.phases for s in steps] == [names, tuple(reversed(names))]


# -- the grid a command line asks for ---------------------------------------------------------


def _pairs(grid: Grid) -> list[tuple[str, int, float]]:
    return [(row.regime, row.streams, row.tps) for row in grid.rows]


def test_streaming_and_demo_grids_by_default() -> None:
    streaming = resolve_grid(SCENARIOS["streaming"])
    assert streaming.reps == 3
    assert _pairs(streaming) == [
        ("paced", 16, 50.0),
        ("paced", 64, 50.0),
        ("paced", 200, 50.0),
        ("flat", 16, 0.0),
        ("flat", 64, 0.0),
        ("flat", 200, 0.0),
    ]
    demo = resolve_grid(SCENARIOS["demo"])
    assert demo.reps == 1
    assert _pairs(demo) == [("paced", 64, 50.0), ("flat", 200, 0.0)]
    tools = resolve_grid(SCENARIOS["tools"])
    assert (tools.reps, _pairs(tools)) == (1, [("flat", 100, 0.0)])


def test_levels_regimes_reps_and_tps_shape_the_grid() -> None:
    streaming = SCENARIOS["streaming"]
    grid = resolve_grid(streaming, levels=(8, 32), regimes=("flat", "paced"), reps=2, tps=20)
    assert grid.reps == 2
    assert _pairs(grid) == [
        ("flat", 8, 0.0),
        ("flat", 32, 0.0),
        ("paced", 8, 20.0),
        ("paced", 32, 20.0),
    ]
    # One regime keeps the scenario's levels; --concurrency with --regimes is one level.
    assert _pairs(resolve_grid(streaming, regimes=("paced",))) == [
        ("paced", 16, 50.0),
        ("paced", 64, 50.0),
        ("paced", 200, 50.0),
    ]
    assert _pairs(resolve_grid(streaming, concurrency=32, regimes=("flat", "paced"))) == [
        ("flat", 32, 0.0),
        ("paced", 32, 50.0),
    ]
    # --tps 0 is fine when no row is paced.
    assert _pairs(resolve_grid(streaming, levels=(4,), regimes=("flat",), tps=0)) == [
        ("flat", 4, 0.0)
    ]


def test_concurrency_or_tps_alone_select_one_row_as_before_the_grid() -> None:
    streaming = SCENARIOS["streaming"]
    assert _pairs(resolve_grid(streaming, concurrency=200)) == [("flat", 200, 0.0)]
    assert _pairs(resolve_grid(streaming, concurrency=8, tps=0)) == [("flat", 8, 0.0)]
    assert _pairs(resolve_grid(streaming, tps=20)) == [("paced", 200, 20.0)]
    assert resolve_grid(streaming, concurrency=8).reps == 3  # the scenario's reps still
    assert resolve_grid(streaming, concurrency=8, reps=1).reps == 1


def test_grid_requests_that_do_not_fit_say_why() -> None:
    streaming = SCENARIOS["streaming"]
    with pytest.raises(ValueError, match="--levels or --concurrency, not both"):
        resolve_grid(streaming, levels=(16,), concurrency=16)
    with pytest.raises(ValueError, match="paced rows' rate and must be more than 0"):
        resolve_grid(streaming, levels=(16,), tps=0)


def test_a_paced_row_warms_up_for_at_least_one_stream() -> None:
    demo = SCENARIOS["demo"]  # 200 tokens, 2 s warm-up
    assert PACED_16.stream_s(demo.tokens) == 4.0
    assert PACED_16.scenario(demo).warmup_s == 4.0
    assert PACED_16.scenario(demo.replace(warmup_s=6)).warmup_s == 6
    assert FLAT_200.scenario(demo).warmup_s == demo.warmup_s
    assert FLAT_200.stream_s(demo.tokens) == 0.0
    with pytest.raises(ValueError, match="paced row cannot have tps 0"):
        Row("paced", 16, 0.0)


# -- a row's summary and verdict --------------------------------------------------------------


def _phase(cpu: float | None, *, events_per_s: float = 1000.0, ttft: float = 5.0) -> dict[str, Any]:
    return {
        "cpu_us_per_event": cpu,
        "events_per_s": events_per_s,
        "window_s": 1.0,
        "ttft_ms": {"p50_ms": ttft},
        "requests": {"failed": 0, "unfinished": 0, "rejected": 0},
    }


def _rep(baseline: float | None, engine: float | None, **engine_extra: Any) -> dict[str, Any]:
    return {"phases": {"baseline": _phase(baseline), "engine": _phase(engine, **engine_extra)}}


def test_a_row_is_the_median_of_its_repetitions_with_their_spread() -> None:
    reps = [
        _rep(100.0, 130.0, ttft=9.0),  # 1.30
        _rep(200.0, 220.0, ttft=3.0),  # 1.10
        _rep(100.0, 112.0, ttft=4.0),  # 1.12
    ]
    summary = summarize_row(reps)
    assert summary["reps_measured"] == 3
    assert summary["cpu_ratio"] == pytest.approx(1.12)
    assert summary["cpu_ratio_min"] == pytest.approx(1.10)
    assert summary["cpu_ratio_max"] == pytest.approx(1.30)
    # Each side's figures are medians of their own, not derived from the ratio.
    assert summary["baseline_cpu_us_per_event"] == 100.0
    assert summary["engine_cpu_us_per_event"] == 130.0
    assert summary["engine_ttft_p50_ms"] == 4.0
    assert summary["verdict"] == "ok"
    assert summary["requests_not_completed"] == 0


def test_an_unfinished_repetition_counts_its_failures_but_not_its_ratio() -> None:
    broken = _rep(100.0, None)
    broken["phases"]["engine"]["requests"]["unfinished"] = 3
    interrupted = {"phases": {"baseline": _phase(100.0)}}  # Ctrl-C before the engine ran
    summary = summarize_row([_rep(100.0, 120.0), broken, interrupted])
    assert summary["reps_measured"] == 1
    assert summary["cpu_ratio"] == pytest.approx(1.2)
    assert summary["verdict"] == "OVER"
    assert summary["requests_not_completed"] == 3
    empty = summarize_row([])
    assert (empty["cpu_ratio"], empty["verdict"], empty["reps_measured"]) == (None, "n/a", 0)


def test_a_paced_row_that_could_not_keep_its_pace_is_called_saturated() -> None:
    # 200 streams of 200 tokens (+ 8 framing events) at 50 tokens/s: 10,400 events/s asked.
    assert Row("paced", 200, 50.0).offered_events_per_s(200) == pytest.approx(10_400)
    assert FLAT_200.offered_events_per_s(200) is None  # flat out asks for all there is

    def delivered(baseline: float, engine: float) -> list[dict[str, Any]]:
        rep = _rep(100.0, 110.0)
        rep["phases"]["baseline"]["events_per_s"] = baseline
        rep["phases"]["engine"]["events_per_s"] = engine
        return [rep]

    kept = summarize_row(delivered(9_500.0, 10_300.0), 10_400.0)
    assert kept["pace_kept"] is True
    short = summarize_row(delivered(9_500.0, 5_000.0), 10_400.0)
    assert short["pace_kept"] is False
    assert summarize_row(delivered(9_500.0, 5_000.0))["pace_kept"] is None  # flat out

    row = {"regime_label": "paced", "streams": 200}
    (note,) = pace_notes([{**row, "summary": short}])
    assert note.startswith("note: paced 200 streams offered 10,400 events/s and got 91%")
    assert "48% (engine)" in note and "saturated load" in note
    assert pace_notes([{**row, "summary": kept}]) == []


def test_the_goal_is_1_15_at_most() -> None:
    assert CPU_RATIO_GOAL == 1.15
    assert verdict(1.15) == "ok"
    assert verdict(0.8) == "ok"
    assert verdict(1.1501) == "OVER"
    assert verdict(None) == "n/a"


def test_the_grid_table_lines_up_with_a_row_per_row() -> None:
    rows = [
        {
            "regime_label": label,
            "streams": streams,
            "reps": reps,
            "summary": summarize_row(reps),
        }
        for label, streams, reps in (
            ("paced", 16, [_rep(210.0, 250.0), _rep(200.0, 262.0), _rep(215.0, 240.0)]),
            ("flat out", 200, [_rep(80.0, 88.0)]),
            ("flat out", 64, [_rep(80.0, 88.0), {"phases": {"baseline": _phase(81.0)}}]),
        )
    ]
    table = format_grid_table(rows)
    lines = table.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1 and lines[1] == lines[-1]
    assert lines[0].split()[:3] == ["regime", "streams", "reps"]
    paced, flat, partial = lines[2:5]
    assert re.match(
        r"paced\s+16\s+3\s+210\.0\s+250\.0\s+1\.19 \(1\.12\N{EN DASH}1\.31\)\s+≤1\.15\s+OVER",
        paced,
    )
    assert re.match(r"flat out\s+200\s+1\s+80\.0\s+88\.0\s+1\.10\s+≤1\.15\s+ok", flat)
    assert re.match(r"flat out\s+64\s+1/2\s", partial)  # one of two repetitions measured
    assert goal_line(rows).endswith(": 2 ok, 1 OVER")


# -- the command line -------------------------------------------------------------------------


def _exit_code(argv: list[str]) -> int:
    """``main``'s exit code, whether returned or raised by argparse (a bad argument type)."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--levels", "0"], "argument --levels: must be at least 1, got 0"),
        (["--levels", "16,x"], "argument --levels: expected whole numbers separated by commas"),
        (["--levels", "16,64,16"], "argument --levels: 16 is given twice in '16,64,16'"),
        (["--regimes", "fast"], "argument --regimes: expected paced and/or flat"),
        (["--regimes", "paced,paced"], "argument --regimes: a regime is named twice"),
        (["--reps", "0"], "argument --reps: must be at least 1, got 0"),
        (["--levels", "16", "--concurrency", "8"], "give --levels or --concurrency, not both"),
        (["--regimes", "paced", "--tps", "0"], "--tps is the paced rows' rate"),
    ],
)
def test_bad_grid_arguments_are_one_line_usage_errors(
    arguments: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert _exit_code(["run", "streaming", *arguments, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("scenario", ["owui", "steady"])
def test_grid_flags_are_refused_where_there_is_no_grid(
    scenario: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert _exit_code(["run", scenario, "--reps", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--reps only apply to demo, streaming, tools, not {scenario}" in err


# -- one short real run -----------------------------------------------------------------------

_NUMBER = r"[\d,]+(?:\.\d+)?"


def test_a_short_grid_run_prints_a_row_per_regime_and_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            "streaming",
            *("--levels", "2,4", "--reps", "1", "--duration", "0.5", "--warmup", "0.2"),
            *("--tokens", "20", "--out", str(tmp_path)),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    # A line per finished phase, numbered, with the row, the repetition and the figure.
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert len(progress) == 8
    assert re.match(r"\[1/8\] paced 2 streams rep 1/1 baseline: [\d.]+ µs/event", progress[0])
    assert "; engine/baseline " in progress[1]
    assert progress[-1].startswith("[8/8] flat out 4 streams rep 1/1 engine: ")

    lines = captured.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("regime"))
    rows = lines[header + 2 : header + 6]
    expected = [("paced", 2), ("paced", 4), ("flat out", 2), ("flat out", 4)]
    for line, (regime, streams) in zip(rows, expected, strict=True):
        pattern = (
            rf"{regime}\s+{streams}\s+1\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s+≤1\.15\s+(ok|OVER)"
            rf"\s+{_NUMBER} / {_NUMBER}\s+{_NUMBER} / {_NUMBER}\s+0$"
        )
        assert re.match(pattern, line), line
    assert lines[header + 6].startswith("---")
    assert lines[header + 7].startswith("goal: engine/baseline CPU per event ≤ 1.15 in every row")

    document = json.loads((tmp_path / "results.json").read_text())
    assert document["cpu_ratio_goal"] == 1.15
    assert [(r["regime"], r["streams"]) for r in document["rows"]] == [
        ("paced", 2),
        ("paced", 4),
        ("flat", 2),
        ("flat", 4),
    ]
    for row in document["rows"]:
        (rep,) = row["reps"]
        assert rep["order"] == ["baseline", "engine"]
        baseline, engine = rep["phases"]["baseline"], rep["phases"]["engine"]
        assert baseline["concurrency"] == engine["concurrency"] == row["streams"]
        assert rep["cpu_ratio"] == pytest.approx(
            engine["cpu_us_per_event"] / baseline["cpu_us_per_event"]
        )
        assert row["summary"]["cpu_ratio"] == rep["cpu_ratio"]
        assert "engine_statistics" in engine  # every phase keeps its full figures
    paced = document["rows"][0]
    # 20 tokens at 50 tokens/s: workers start spread over 0.4 s, the warm-up lasts as long.
    assert paced["stagger_s"] == paced["reps"][0]["phases"]["engine"]["stagger_s"] == 0.4
    assert paced["reps"][0]["phases"]["engine"]["warmup_s"] == 0.4
    # 2 streams, each 28 events (20 deltas + 8 framing) in 0.4 s.
    assert paced["offered_events_per_s"] == pytest.approx(140)
    assert paced["summary"]["pace_kept"] in (True, False)
    assert document["rows"][2]["summary"]["pace_kept"] is None  # flat out
    assert document["verdicts"]["n/a"] == 0
