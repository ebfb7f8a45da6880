"""The research bench: scenario files, the open-loop plan, and every built-in scenario run
scaled down against the mock, with reports whose numbers must add up."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import trio

from orpipe.bench.lab_load import capacity_rps, plan_arrivals
from orpipe.bench.lab_run import LabOptions, run_lab
from orpipe.bench.lab_scenario import (
    LabScenario,
    ScenarioFileError,
    builtin_names,
    find_scenario,
    load_scenario,
)
from orpipe.bench.report_checks import consistency_problems
from orpipe.engine import EngineConfig


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
name = "tiny"
seed = 3
[[phase]]
duration_s = 2
rate_rps = 10
"""


# -- scenario files -------------------------------------------------------------------------


def test_every_builtin_loads_and_names_itself() -> None:
    names = builtin_names()
    assert {"steady", "ramp", "overload", "slow-consumer", "brownout", "cancel-storm"} <= set(names)
    for name in names:
        scenario = load_scenario(find_scenario(name))  # type: ignore[arg-type]
        assert scenario.name == name and scenario.description and scenario.phases


def test_a_path_works_in_place_of_a_name(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, MINIMAL)
    assert find_scenario(str(path)) == path
    assert find_scenario(str(tmp_path / "missing.toml")) is None
    scenario = load_scenario(path)
    assert (scenario.name, scenario.seed, scenario.mix) == ("tiny", 3, {"plain": 1.0})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name = 'x'", r"\[\[phase\]\] is missing"),
        ("name = 'x'\n[[phase]]\nduration_s = 1", "exactly one of rate_rps and capacity_x"),
        (
            "name = 'x'\n[[phase]]\nduration_s = 1\nrate_rps = 1\ncapacity_x = 1",
            "exactly one of rate_rps and capacity_x",
        ),
        (
            "name = 'x'\n[[phase]]\nduration_s = 1\nrate_rps = 1\narrival = 'bursty'",
            "constant or poisson",
        ),
        ("name = 'x'\n[[phase]]\nduration_s = 1\nrate_rps = -1", "at least 0"),
        ("name = 'x'\n[[phase]]\nduration_s = 'long'\nrate_rps = 1", "not a number"),
        ("[[phase]]\nduration_s = 1\nrate_rps = 1", "name must be a non-empty string"),
        (MINIMAL + "\n[mix]\nvideo = 1", r"mix\.video is not a request kind"),
        (MINIMAL + "\n[mix]\nplain = 0", "no positive weight"),
        (MINIMAL + "\n[cancel]\nfraction = 1.5", "a fraction is from 0 to 1"),
        (MINIMAL + "\n[[fault]]\nstart_s = 1\nend_s = 2\nscenario = 'http-999'", "use one of"),
        (
            MINIMAL + "\n[[fault]]\nstart_s = 3\nend_s = 2\nscenario = 'http-429'",
            "ends before it starts",
        ),
        ("turbo = true\n" + MINIMAL, "turbo is not a scenario key"),
        (MINIMAL + "\nspeed = 2", r"phase\[0\]\.speed is not a setting here"),
        (MINIMAL + "\n[stream]\ntoken = 2", "stream.token is not a setting here"),
        ("name = 'x'\n[[phase]\n", "cannot be read as TOML"),
    ],
)
def test_a_broken_file_says_which_key_and_why(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ScenarioFileError, match=problem) as caught:
        load_scenario(scenario_file(tmp_path, text))
    assert "s.toml" in str(caught.value)


def test_capacity_needs_a_paced_stream(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_file(tmp_path, MINIMAL))
    with pytest.raises(ValueError, match=r"stream\.tps > 0"):
        capacity_rps(scenario, 16)
    paced = load_scenario(scenario_file(tmp_path, MINIMAL + "\n[stream]\ntokens = 40\ntps = 80"))
    assert capacity_rps(paced, 16) == 32.0


# -- the plan ---------------------------------------------------------------------------------


def plan(text: str, tmp_path: Path, **kw: Any) -> list[Any]:
    scenario = load_scenario(scenario_file(tmp_path, text))
    return plan_arrivals(scenario, capacity=kw.pop("capacity", None), **kw)


def test_the_same_seed_gives_the_same_plan(tmp_path: Path) -> None:
    first, again = plan(MINIMAL, tmp_path), plan(MINIMAL, tmp_path)
    other = plan(MINIMAL.replace("seed = 3", "seed = 4"), tmp_path)
    assert first == again and first != other


def test_constant_arrivals_are_evenly_spaced_and_poisson_ones_are_not(tmp_path: Path) -> None:
    constant = plan(MINIMAL + "arrival = 'constant'\n", tmp_path)
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(constant)]
    assert len(constant) == 19 and all(math.isclose(g, 0.1) for g in gaps)
    poisson = plan(MINIMAL.replace("duration_s = 2", "duration_s = 200"), tmp_path)
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(poisson)]
    # Exponential gaps: mean 1/rate, standard deviation about the same.
    assert 0.09 < statistics.mean(gaps) < 0.11
    assert 0.08 < statistics.stdev(gaps) < 0.12


def test_a_ramp_sends_more_at_its_end_and_capacity_multiples_follow_the_engine(
    tmp_path: Path,
) -> None:
    text = (
        "name='r'\nseed=1\n[stream]\ntokens=40\ntps=80\n"
        "[[phase]]\nduration_s=100\ncapacity_x=0.1\ncapacity_x_to=1.0\n"
    )
    arrivals = plan(text, tmp_path, capacity=32.0)
    first_half = sum(1 for a in arrivals if a.at_s < 50)
    second_half = len(arrivals) - first_half
    assert second_half > 2 * first_half
    expected = (0.1 + 1.0) / 2 * 32 * 100  # the mean rate times the duration
    assert abs(len(arrivals) - expected) < 0.1 * expected


def test_faults_cancellations_and_the_mix_follow_the_file(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("duration_s = 2", "duration_s = 100").replace(
            "rate_rps = 10", "rate_rps = 50"
        )
        + "\n[mix]\nplain = 3\ntools = 1\n[cancel]\nfraction = 0.25\nafter_ms = 50\n"
        + "[[fault]]\nstart_s = 10\nend_s = 20\nscenario = 'http-503'\n"
        + "fraction = 1.0\nfail_times = 2\n"
    )
    arrivals = plan(text, tmp_path, time_scale=0.5)  # faults scale with the phases
    faulty = [a for a in arrivals if a.fault is not None]
    assert faulty and all(5 <= a.at_s < 10 for a in faulty)
    assert all(a.fault == "http-503" and a.fail_times == 2 for a in faulty)
    assert all(a.fault is not None for a in arrivals if 5 <= a.at_s < 10)
    cancelled = sum(1 for a in arrivals if a.cancel_after_s == 0.05) / len(arrivals)
    tools = sum(1 for a in arrivals if a.kind == "tools") / len(arrivals)
    assert 0.2 < cancelled < 0.3 and 0.2 < tools < 0.3
    assert [a.index for a in arrivals] == list(range(len(arrivals)))


# -- runs -------------------------------------------------------------------------------------


def consistent(document: dict[str, Any]) -> list[str]:
    """The invariants every report must keep (the report module checks the same)."""
    s = document["summary"]
    problems = []
    if s["offered"] != s["admitted"] + s["rejected"]:
        problems.append("offered != admitted + rejected")
    if s["admitted"] != s["completed"] + s["failed"] + s["cancelled"]:
        problems.append("admitted != completed + failed + cancelled")
    if sum(document["timeline"]["offered"]) != s["offered"]:
        problems.append("the timeline's offered does not add up")
    if sum(document["timeline"]["goodput"]) != s["completed"]:
        problems.append("the timeline's goodput does not add up")
    for key in ("ttft_ms", "e2e_ms", "admission_wait_ms", "rejection_ms"):
        values = [s[key][p] for p in ("p50", "p90", "p99", "p999", "max") if s[key][p] is not None]
        if values != sorted(values):
            problems.append(f"{key} percentiles out of order")
    lengths = {len(v) for k, v in document["timeline"].items() if isinstance(v, list)}
    if len(lengths) != 1:
        problems.append("timeline series differ in length")
    return problems


def run(scenario: LabScenario, tmp_path: Path, **kw: Any) -> Any:
    options = LabOptions(
        scenario=scenario,
        config=EngineConfig(),
        out_dir=tmp_path / scenario.name,
        progress=False,
        **kw,
    )
    return trio.run(run_lab, options)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", builtin_names())
def test_each_builtin_runs_scaled_down_and_its_report_adds_up(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(find_scenario(name))  # type: ignore[arg-type]
    outcome = run(scenario, tmp_path, time_scale=0.12, drain_s=20.0)
    document = outcome.document
    assert not outcome.interrupted
    assert consistent(document) == []
    assert consistency_problems(document) == []
    summary = document["summary"]
    assert summary["offered"] == document["planned_requests"] > 0  # open loop: all were sent
    assert summary["completed"] > 0
    saved = json.loads(outcome.results_path.read_text(encoding="utf-8"))
    assert saved["summary"] == json.loads(json.dumps(summary))
    channels = document["timeline"]["channels"]
    assert "parse.out" in channels and channels["parse.out"]["capacity"] > 0
    for kind in ("report", "results"):
        assert outcome.files[kind].is_file()
    html = outcome.files["report"].read_text(encoding="utf-8")
    assert scenario.name in html and "data:image/png;base64," in html
    if name == "brownout":
        assert document["engine_statistics"]["actors"]["fetcher"].get("retries", 0) > 0
    if name == "cancel-storm":
        assert summary["cancelled"] > 0
    if name == "overload":
        assert summary["rejected"] > 0
        assert {g["name"] for g in document["goals"]} >= {"rejection latency p99"}
    if name == "chaos":
        chaos = document["chaos"]
        assert [e["event"] for e in chaos["events"]] == [
            "redis_kill",
            "redis_restart",
            "postgres_pause",
            "postgres_resume",
        ]
        assert chaos["rows_in_sql"] == chaos["artifacts_accepted"] == summary["completed"]
        assert chaos["artifacts_lost"] == 0 and chaos["drained"]
        assert [g["met"] for g in document["goals"]] == [True]
    if name == "slow-consumer":
        assert [g["met"] is not None for g in document["goals"]] == [True]


def test_the_open_loop_keeps_sending_when_the_engine_cannot_keep_up(tmp_path: Path) -> None:
    """One slot, slow streams, no waiting room: arrivals still go out on time and are
    turned away fast, instead of the load shrinking to what the engine can take."""
    text = (
        "name='jam'\nseed=9\n[stream]\ntokens=40\ntps=40\n"
        "[engine]\nmax_concurrent_requests=1\nqueue_maxsize=0\n"
        "[[phase]]\nduration_s=2\nrate_rps=20\narrival='constant'\n"
    )
    scenario = load_scenario(scenario_file(tmp_path, text))
    document = run(scenario, tmp_path, report=False).document
    summary = document["summary"]
    assert summary["offered"] == 39
    assert summary["rejected"] >= 30 and summary["completed"] >= 1
    assert consistent(document) == []
    assert summary["rejection_ms"]["p99"] < 50  # refused at once, not after waiting
