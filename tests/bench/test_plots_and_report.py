"""Reporting of a research-bench run: PNG plots, the HTML report, the comparison, the checks.

Every test builds its results document by hand (a realistic run, a minimal
one, an interrupted one) and checks the files the reporting writes; nothing
here runs the engine or the network.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orpipe.bench.compare_report import (
    compare_rows,
    format_compare,
    format_ratio,
    write_compare_html,
)
from orpipe.bench.html_report import write_html
from orpipe.bench.plots import PLOT_CAPTIONS, PLOT_SIZE_PX, write_plots
from orpipe.bench.report_checks import consistency_problems

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"


def realistic_document() -> dict[str, Any]:
    """A consistent two-phase overload run: 20 buckets of 0.5 s, three channels."""
    n = 20
    offered = [10] * 10 + [40] * 10
    rejected = [0] * 10 + [15] * 10
    goodput = [10] * 10 + [24] * 9 + [25]
    failed = [0] * n
    admitted = sum(offered) - sum(rejected)
    completed = sum(goodput)
    return {
        "kind": "lab",
        "scenario": {
            "name": "overload",
            "description": "Four times capacity for 5 s.\nSecond line.",
            "seed": 7,
            "arrival": "poisson",
            "mix": {"plain": 0.7, "reasoning": 0.3},
            "tags": ["burst", "4x"],
        },
        "config": {"max_concurrent_requests": 8, "request_queue_maxsize": 16, "bridge": "guest"},
        "overrides": {"request_queue_maxsize": 16},
        "started_at": "2025-01-01T12:00:00+00:00",
        "finished_at": "2025-01-01T12:00:11.500000+00:00",
        "interrupted": False,
        "time_scale": 1.0,
        "machine": {"cpus": 8, "python": "3.11"},
        "summary": {
            "offered": sum(offered),
            "admitted": admitted,
            "rejected": sum(rejected),
            "completed": completed,
            "failed": sum(failed),
            "cancelled": admitted - completed - sum(failed),
            "failures": {},
            "offered_rps": 50.0,
            "goodput_rps": 34.2,
            "peak_goodput_rps": 50.0,
            "ttft_ms": _stats(300, 12.0, 30.0, 80.0, 95.0, 120.0),
            "e2e_ms": _stats(300, 150.0, 300.0, 700.0, 800.0, 900.0),
            "admission_wait_ms": _stats(330, 0.5, 4.0, 40.0, 60.0, 61.0),
            "rejection_ms": _stats(150, 0.05, 0.2, 1.5, 2.0, 2.1),
        },
        "latency_cdf": {
            "ttft_ms": [[0.0, 5.0], [50.0, 12.0], [90.0, 30.0], [99.0, 80.0], [100.0, 120.0]],
            "e2e_ms": [[0.0, 90.0], [50.0, 150.0], [99.0, 700.0], [100.0, 900.0]],
            "rejection_ms": [[0.0, 0.01], [50.0, 0.05], [99.0, 1.5], [100.0, 2.1]],
            "admission_wait_ms": [[0.0, 0.0], [50.0, 0.5], [99.0, 40.0], [100.0, 61.0]],
        },
        "timeline": {
            "interval_s": 0.5,
            "t_s": [i * 0.5 for i in range(n)],
            "offered": offered,
            "goodput": goodput,
            "rejected": rejected,
            "failed": failed,
            "cancelled": [0] * n,
            "in_flight": [3] * 10 + [16] * 10,
            "channels": {
                "admission": {"capacity": 16, "used": [0] * 10 + [16] * 10},
                "events": {"capacity": 64, "used": [i * 3 for i in range(n)]},
                "rendezvous": {"capacity": 0, "used": [0] * n},
            },
        },
        "phases": [
            {"name": "warm", "start_s": 0.0, "end_s": 5.0, "rate_rps": 20.0},
            {"name": "burst", "start_s": 5.0, "end_s": 10.0, "rate_rps": 80.0},
        ],
        "goals": [
            {"name": "goodput", "goal": ">= 95% of peak", "measured": "96%", "met": True},
            {"name": "rejection p99", "goal": "<= 5 ms", "measured": "1.5 ms", "met": True},
            {"name": "ttft p99", "goal": "<= 2x unloaded", "measured": "2.4x", "met": False},
            {"name": "memory", "goal": "flat within 10%", "measured": DASH, "met": None},
        ],
        "process": {"rss_mb": [100.0 + i for i in range(n)], "cpu_s": 3.25},
    }


def _stats(
    count: int, p50: float, p90: float, p99: float, p999: float, top: float
) -> dict[str, Any]:
    return {"count": count, "p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": top}


def minimal_document() -> dict[str, Any]:
    """What a run that measured nothing might leave: sections empty or absent."""
    return {
        "scenario": {"name": "empty"},
        "interrupted": False,
        "summary": {
            "offered": 0,
            "admitted": 0,
            "rejected": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "ttft_ms": _none_stats(),
            "e2e_ms": _none_stats(),
        },
        "latency_cdf": {"ttft_ms": [], "e2e_ms": []},
        "timeline": {"interval_s": 0.5, "t_s": [], "channels": {}},
        "phases": [],
        "goals": [],
        "process": {"rss_mb": [], "cpu_s": None},
    }


def _none_stats() -> dict[str, Any]:
    return {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None}


def interrupted_document() -> dict[str, Any]:
    """The realistic run cut short: 4 requests still streaming, the timeline shorter."""
    document = realistic_document()
    document["interrupted"] = True
    document["finished_at"] = None
    summary = document["summary"]
    summary["cancelled"] -= 4  # ... those 4 never ended
    timeline = document["timeline"]
    for key in ("offered", "goodput", "rejected", "failed", "cancelled", "in_flight"):
        timeline[key] = timeline[key][:12]
    timeline["t_s"] = timeline["t_s"][:12]
    for channel in timeline["channels"].values():
        channel["used"] = channel["used"][:12]
    document["process"]["rss_mb"] = document["process"]["rss_mb"][:12]
    return document


# --- plots -------------------------------------------------------------------------


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 1000, path
    with Image.open(path) as image:
        image.load()  # decodes the whole image, not just the header
        assert image.format == "PNG"
        assert image.size == PLOT_SIZE_PX
        # Something was drawn: more than a blank canvas.
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 10


def test_plots_realistic_writes_every_plot_as_a_real_png(tmp_path: Path) -> None:
    plots = write_plots(realistic_document(), tmp_path)
    assert set(plots) == set(PLOT_CAPTIONS)
    for name, path in plots.items():
        assert path == tmp_path / f"{name}.png"
        _assert_png(path)


def test_plots_minimal_document_writes_nothing_and_does_not_crash(tmp_path: Path) -> None:
    assert write_plots(minimal_document(), tmp_path / "out") == {}
    assert write_plots({}, tmp_path / "bare") == {}


def test_plots_interrupted_document(tmp_path: Path) -> None:
    plots = write_plots(interrupted_document(), tmp_path)
    assert set(plots) == set(PLOT_CAPTIONS)
    for path in plots.values():
        _assert_png(path)


def test_plots_partial_data_draws_what_exists(tmp_path: Path) -> None:
    document = realistic_document()
    document["latency_cdf"] = {"ttft_ms": [[50.0, 10.0]], "e2e_ms": "garbage"}
    timeline = document["timeline"]
    del timeline["goodput"], timeline["rejected"]
    timeline["failed"] = [None, 1, "x"]  # short and dirty: padded with gaps
    timeline["channels"] = {"only": {"capacity": 0, "used": [1, 2]}}
    document["phases"] = [{"name": "$x$ {weird", "start_s": 0, "end_s": None}, "junk"]
    document["scenario"]["name"] = "cost $5 and $_{oops"
    plots = write_plots(document, tmp_path)
    assert set(plots) == {"latency_cdf", "load", "rejections"}
    for path in plots.values():
        _assert_png(path)


def test_plots_one_bucket_run(tmp_path: Path) -> None:
    document = realistic_document()
    timeline = document["timeline"]
    for key in ("t_s", "offered", "goodput", "rejected", "failed", "cancelled", "in_flight"):
        timeline[key] = timeline[key][:1]
    for channel in timeline["channels"].values():
        channel["used"] = channel["used"][:1]
    document["phases"] = []
    timeline["interval_s"] = None
    plots = write_plots(document, tmp_path)
    assert {"load", "channels", "rejections"} <= set(plots)


# --- HTML report ---------------------------------------------------------------------


def _assert_self_contained(text: str) -> None:
    lowered = text.lower()
    assert 'src="http' not in lowered
    assert "<script" not in lowered  # no scripts at all, inline or not
    assert "url(http" not in lowered
    assert "@import" not in lowered
    assert "@font-face" not in lowered
    assert "<link" not in lowered


def test_html_report_is_self_contained_with_every_plot_embedded(tmp_path: Path) -> None:
    document = realistic_document()
    plots = write_plots(document, tmp_path)
    report = write_html(document, plots, tmp_path)
    assert report == tmp_path / "report.html"
    text = report.read_text(encoding="utf-8")
    _assert_self_contained(text)
    uris = re.findall(r'src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', text)
    assert len(uris) == len(PLOT_CAPTIONS)
    for name in PLOT_CAPTIONS:
        assert f'id="plot-{name}"' in text
    assert "The results do not add up" not in text
    assert 'class="banner interrupted"' not in text


def test_html_report_shows_scenario_config_summary(tmp_path: Path) -> None:
    text = write_html(realistic_document(), {}, tmp_path).read_text(encoding="utf-8")
    for expected in ("overload", "Four times capacity", "poisson", "burst", "7"):
        assert expected in text
    assert "request_queue_maxsize" in text
    assert 'class="overridden"' in text
    assert "34.20" in text  # goodput req/s
    assert '<td class="num">500</td>' in text  # offered, right-aligned
    assert "time to first token" in text
    assert "machine" in text  # structured extras are shown, folded
    assert "not drawn" in text  # no plots passed: each one says so


def test_html_report_escapes_document_strings(tmp_path: Path) -> None:
    document = realistic_document()
    document["scenario"]["description"] = XSS
    document["scenario"]["name"] = 'x"><img src=x onerror=alert(1)>'
    document["config"]["evil"] = XSS
    document["goals"][0]["measured"] = XSS
    document["machine"] = {"host": XSS}
    text = write_html(document, {}, tmp_path).read_text(encoding="utf-8")
    assert XSS not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text
    assert "onerror=alert(1)&gt;" in text
    _assert_self_contained(text)


def test_html_report_goals_rendering(tmp_path: Path) -> None:
    text = write_html(realistic_document(), {}, tmp_path).read_text(encoding="utf-8")
    assert "2 met, 1 missed, 1 not measured" in text
    assert '<td class="met">✔ met</td>' in text
    assert '<td class="missed">✘ missed</td>' in text
    assert f'<td class="unmeasured">{DASH} not measured</td>' in text


def test_html_report_interrupted_banner_and_problems(tmp_path: Path) -> None:
    document = interrupted_document()
    text = write_html(document, write_plots(document, tmp_path), tmp_path).read_text("utf-8")
    assert 'class="banner interrupted"' in text
    assert "The results do not add up" not in text  # still consistent for an interrupted run
    document["summary"]["offered"] += 1
    text = write_html(document, {}, tmp_path).read_text("utf-8")
    assert "The results do not add up" in text
    assert "offered (" in text


def test_html_report_minimal_and_empty_documents(tmp_path: Path) -> None:
    for index, document in enumerate((minimal_document(), {}, {"scenario": "not a mapping"})):
        out = tmp_path / str(index)
        text = write_html(document, write_plots(document, out), out).read_text("utf-8")
        _assert_self_contained(text)
        assert "data:image/png" not in text
        assert "No goals were evaluated" in text


def test_html_report_unreadable_plot_file_is_named(tmp_path: Path) -> None:
    not_png = tmp_path / "load.png"
    not_png.write_text("not a png")
    plots = {"load": not_png, "latency_cdf": tmp_path / "missing.png"}
    text = write_html(realistic_document(), plots, tmp_path).read_text("utf-8")
    assert "file unreadable" in text
    assert "data:image/png" not in text


# --- comparison ------------------------------------------------------------------------


def _row(rows: list[tuple[str, str, str, str]], metric: str) -> tuple[str, str, str, str]:
    matches = [row for row in rows if row[0] == metric]
    assert len(matches) == 1, (metric, [row[0] for row in rows])
    return matches[0]


def test_compare_rows_ratios() -> None:
    a, b = realistic_document(), realistic_document()
    a["summary"]["goodput_rps"] = 100
    b["summary"]["goodput_rps"] = 150
    b["summary"]["ttft_ms"]["p99"] = 40.0
    rows = compare_rows(a, b)
    assert _row(rows, "goodput (req/s)") == ("goodput (req/s)", "100.00", "150.00", f"1.50{TIMES}")
    assert _row(rows, "TTFT p99 (ms)")[3] == f"0.50{TIMES}"
    assert _row(rows, "max RSS (MB)")[1:] == ("119.00", "119.00", f"1.00{TIMES}")
    assert _row(rows, "peak occupancy admission")[1:] == ("100%", "100%", f"1.00{TIMES}")
    assert _row(rows, "peak occupancy events")[1] == "89%"  # 57 / 64
    # An unbuffered channel has no fraction: shown as not computable.
    assert _row(rows, "peak occupancy rendezvous")[1:] == (DASH, DASH, DASH)
    metrics = [row[0] for row in rows]
    for expected in (
        "offered (req/s)",
        "rejected",
        "failed",
        "TTFT p50 (ms)",
        "end to end p50 (ms)",
        "end to end p99 (ms)",
        "rejection p99 (ms)",
        "admission wait p99 (ms)",
        "CPU (s)",
    ):
        assert expected in metrics


def test_compare_rows_division_by_zero_and_missing() -> None:
    a, b = realistic_document(), minimal_document()
    a["summary"]["failed"] = 0
    rows = compare_rows(a, b)
    assert _row(rows, "failed")[3] == DASH  # 0 → 0: no ratio
    assert _row(rows, "TTFT p99 (ms)")[2:] == (DASH, DASH)  # B has None
    assert _row(rows, "CPU (s)")[2:] == (DASH, DASH)
    assert _row(rows, "max RSS (MB)")[2:] == (DASH, DASH)
    # A channel only A has still gets a row; B reads as missing.
    assert _row(rows, "peak occupancy events")[2:] == (DASH, DASH)
    assert compare_rows({}, {})[0] == ("offered (req/s)", DASH, DASH, DASH)
    assert format_ratio(0.0, 5.0) == DASH
    assert format_ratio(None, 5.0) == DASH
    assert format_ratio(2.0, 0.0) == f"0.00{TIMES}"


def test_format_compare_is_aligned() -> None:
    a, b = realistic_document(), realistic_document()
    b["interrupted"] = True
    text = format_compare(a, b, "parser_workers=1", "parser_workers=4")
    lines = text.splitlines()
    assert lines[0] == "compare overload: A = parser_workers=1, B = parser_workers=4"
    table = [line for line in lines[1:] if not line.startswith(("-", "warning"))]
    assert table[0].split() == ["metric", "parser_workers=1", "parser_workers=4", "B/A"]
    assert len({len(line) for line in table}) == 1  # every row padded to one width
    assert "warning: parser_workers=4 was interrupted" in lines


def test_compare_html_side_by_side(tmp_path: Path) -> None:
    a, b = realistic_document(), interrupted_document()
    b["scenario"]["description"] = XSS
    write_plots(a, tmp_path / "a")
    write_plots(b, tmp_path / "b")
    path = write_compare_html(a, b, "buffer=0", "<b>buffer=64</b>", tmp_path)
    assert path == tmp_path / "compare.html"
    text = path.read_text("utf-8")
    _assert_self_contained(text)
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2 * len(PLOT_CAPTIONS)
    assert "&lt;b&gt;buffer=64&lt;/b&gt;" in text
    assert "<b>buffer" not in text
    assert 'class="banner interrupted"' in text
    assert f"1.00{TIMES}" in text


def test_compare_html_without_plots(tmp_path: Path) -> None:
    text = write_compare_html({}, minimal_document(), "a", "b", tmp_path).read_text("utf-8")
    _assert_self_contained(text)
    assert "not drawn for either run" in text
    assert "data:image/png" not in text


# --- consistency checks ------------------------------------------------------------------


def test_consistency_good_documents_have_no_problems() -> None:
    assert consistency_problems(realistic_document()) == []
    assert consistency_problems(interrupted_document()) == []
    assert consistency_problems(minimal_document()) == []


def _break_offered(d: dict[str, Any]) -> None:
    d["summary"]["offered"] += 1
    d["timeline"]["offered"][0] += 1  # keep the timeline sum in step: only one invariant


def _break_ended(d: dict[str, Any]) -> None:
    d["summary"]["completed"] -= 1


def _break_percentiles(d: dict[str, Any]) -> None:
    d["summary"]["e2e_ms"]["p99"] = 850.0  # above p999 (800)


def _break_lengths(d: dict[str, Any]) -> None:
    d["timeline"]["in_flight"].append(1)


def _break_channel_length(d: dict[str, Any]) -> None:
    d["timeline"]["channels"]["events"]["used"].pop()


def _break_timeline_sum(d: dict[str, Any]) -> None:
    d["timeline"]["offered"][3] += 2


def _break_missing_count(d: dict[str, Any]) -> None:
    del d["summary"]["rejected"]


def _break_cdf(d: dict[str, Any]) -> None:
    d["latency_cdf"]["ttft_ms"][2] = [90.0, 1.0]


def _break_rss(d: dict[str, Any]) -> None:
    d["process"]["rss_mb"] = [1.0]


@pytest.mark.parametrize(
    ("breaker", "expected"),
    [
        (_break_offered, "offered (501) != admitted (350) + rejected (150)"),
        (_break_ended, "!= admitted"),
        (_break_percentiles, "summary.e2e_ms: p99 (850) > p999 (800)"),
        (_break_lengths, "timeline.in_flight: 21 entries, t_s has 20"),
        (_break_channel_length, "timeline.channels.events.used: 19 entries"),
        (_break_timeline_sum, "timeline.offered sums to"),
        (_break_missing_count, "count missing or not a whole number: rejected"),
        (_break_cdf, "latency_cdf.ttft_ms: not rising"),
        (_break_rss, "process.rss_mb: 1 entries"),
    ],
)
def test_consistency_catches_each_broken_invariant(
    breaker: Callable[[dict[str, Any]], None], expected: str
) -> None:
    document = realistic_document()  # a fresh copy each time
    breaker(document)
    problems = consistency_problems(document)
    assert len(problems) >= 1
    assert any(expected in problem for problem in problems), problems


def test_consistency_interrupted_allows_running_but_not_extra_endings() -> None:
    document = interrupted_document()
    # Timeline sums are not checked for an interrupted run.
    document["timeline"]["offered"][0] += 5
    assert consistency_problems(document) == []
    document["summary"]["completed"] += 10  # more ended than were admitted
    problems = consistency_problems(document)
    assert problems == [
        f"summary: completed + failed + cancelled ({_ended(document)}) > admitted"
        f" ({document['summary']['admitted']})"
    ]


def _ended(document: dict[str, Any]) -> int:
    s = document["summary"]
    return int(s["completed"] + s["failed"] + s["cancelled"])


def test_consistency_never_crashes_on_garbage() -> None:
    garbage: list[dict[str, Any]] = [
        {},
        {"summary": None, "timeline": "x", "latency_cdf": [1, 2]},
        {"summary": {"offered": True, "ttft_ms": {"p50": "fast"}}, "timeline": {"t_s": None}},
        {"latency_cdf": {"ttft_ms": [[1], "x"]}, "process": {"rss_mb": "big"}},
    ]
    for document in garbage:
        problems = consistency_problems(document)
        assert all(isinstance(p, str) for p in problems)
    assert any("not a list of" in p for p in consistency_problems(garbage[3]))
