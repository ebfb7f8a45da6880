"""The Open WebUI bench (``python -m bench run owui``) end to end, scaled down.

A real mock process, the real Function driven through ``Pipe.pipe()`` on
uvloop with both bridges, and the bare asyncio baseline. Checks behaviour
and the shape of ``results.json`` (every phase ran chats and counted chunks,
the ratios and the RSS series are there, the mock got the stream parameters
through the pipe), never timings; plus the pure parts (slope, ratios, table).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orpipe.adapters import owui_pipe
from orpipe.adapters.openwebui import turn as owui_chat
from orpipe.bench.cli import main
from orpipe.bench.owui_measure import RATIO_PAIRS, phase_ratios, slope_per_1000
from orpipe.bench.owui_report import format_owui_report

REPO = Path(__file__).resolve().parents[2]
TOKENS = 20
#: The mock frames every stream with this many events besides the text deltas.
FRAMING_EVENTS = 8
SMALL_RUN = [
    *("--concurrency", "4", "--duration", "1", "--warmup", "0.3", "--tokens", str(TOKENS)),
]


def _check_phase(phase: dict[str, Any]) -> None:
    chats = phase["chats"]
    assert chats["completed"] > 0
    assert chats["failed"] == chats["rejected"] == chats["unfinished"] == 0, phase[
        "outcome_details"
    ]
    assert chats["submitted"] == chats["completed"]
    assert phase["chunks"] > 0 and phase["chats_finished_in_window"] > 0
    assert phase["cpu_s"] > 0
    assert math.isclose(phase["cpu_us_per_chunk"], phase["cpu_s"] * 1e6 / phase["chunks"])
    assert math.isclose(
        phase["cpu_us_per_chat"], phase["cpu_s"] * 1e6 / phase["chats_finished_in_window"]
    )
    for name in ("ttfc_ms", "chat_ms"):
        summary = phase[name]
        assert summary["count"] == chats["completed"]
        assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    rss = phase["rss_mib"]
    for key in ("start", "after_warmup", "end", "after_close"):
        assert rss[key] > 0, key
    assert math.isclose(rss["added"], rss["end"] - rss["start"])
    rows = phase["rss_series"]["rows"]
    assert len(rows) >= 3
    assert phase["rss_series"]["columns"] == ["seconds", "chats_finished", "rss_mib"]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)  # chats only ever finish
    assert rows[-1][1] > 0


def test_small_run_measures_both_bridges_against_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("run", "owui", *SMALL_RUN),
            *("--set", "parser_workers=2", "--set", "STREAMING_UPDATE_CHAR_LIMIT=40"),
            *("--out", str(tmp_path)),
        ]
    )
    assert code == 0
    document = json.loads((tmp_path / "results.json").read_text())

    assert document["interrupted"] is False and "error" not in document
    assert document["loop"].startswith("uvloop")  # uvloop is a test dependency
    assert document["scenario"]["driver"] == "owui"
    assert document["scenario"]["concurrency"] == 4
    # Lower-case names reach the engine through ENGINE_OVERRIDES, upper-case ones are valves.
    assert document["valves"]["ENGINE_OVERRIDES"] == "parser_workers=2"
    assert document["config"]["parser_workers"] == 2
    assert document["config"]["update_char_limit"] == 40
    assert list(document["phases"]) == ["baseline", "guest", "thread"]
    for phase in document["phases"].values():
        _check_phase(phase)

    baseline, guest, thread = (document["phases"][n] for n in ("baseline", "guest", "thread"))
    assert "Pipe.pipe()" in guest["client"] and "guest" in guest["client"]
    assert "thread" in thread["client"]
    for phase in (guest, thread):
        # The pipe mirrored progress through __event_emitter__, and the engine served it.
        assert phase["emitted_events"]["status"] > 0
        assert phase["engine_statistics"]["endings"]["completed"] >= phase["chats"]["completed"]
    assert baseline["emitted_events"] == {}

    ratios = document["ratios"]
    assert set(ratios) == {f"{a}/{b}" for a, b in RATIO_PAIRS}
    for pair, values in ratios.items():
        top, bottom = (document["phases"][n] for n in pair.split("/"))
        assert values["cpu_us_per_chat"] == pytest.approx(
            top["cpu_us_per_chat"] / bottom["cpu_us_per_chat"]
        )
        assert values["chats_per_s"] > 0 and values["ttfc_p50_ms"] > 0
    # Per chunk only between phases whose chunks are the same thing.
    assert "cpu_us_per_chunk" in ratios["guest/thread"]
    assert "cpu_us_per_chunk" not in ratios["guest/baseline"]

    # The stream parameters reached the mock through Pipe.pipe(): every stream of
    # every phase was TOKENS deltas plus the framing, as the baseline asked in its body.
    mock = document["mock"]
    before = {"requests_total": 0, "events_sent_total": 0}
    for name in ("baseline", "guest", "thread"):
        after = mock[f"after_{name}"]
        assert after["streams_active"] == 0
        streams = after["requests_total"] - before["requests_total"]
        events = after["events_sent_total"] - before["events_sent_total"]
        assert streams > 0 and events == streams * (TOKENS + FRAMING_EVENTS), name
        before = after
    # The Function module is left as it was found.
    assert owui_pipe.TurnContext is owui_chat.TurnContext

    out = capsys.readouterr().out
    for text in ("baseline", "guest", "thread", "guest/thread", "slope MiB/1000 chats"):
        assert text in out
    assert "sk-bench-dummy" not in (tmp_path / "results.json").read_text()
    assert (tmp_path / "owui.log").exists()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("BASE_URL=http://example.com", "--set BASE_URL is not allowed"),
        ("ENGINE_BRIDGE=thread", "--set ENGINE_BRIDGE is not allowed"),
        ("no_such_knob=1", "Invalid setting no_such_knob"),
        ("STREAMING_UPDATE_CHAR_LIMIT=abc", "Invalid valve setting: STREAMING_UPDATE_CHAR_LIMIT"),
        ("MAX_CONCURRENT_REQUESTS=0", "Invalid valve setting: MAX_CONCURRENT_REQUESTS"),
    ],
)
def test_bad_set_is_a_one_line_usage_error(
    setting: str, expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["run", "owui", "--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results.json").exists()


def test_ctrl_c_keeps_what_was_measured(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "orpipe.bench", "run", "owui", *SMALL_RUN, "--duration", "60"]
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        # mock.log appears once the mock is starting; then let the baseline count a little.
        while not (tmp_path / "mock.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err.decode()
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["interrupted"] is True
    baseline = document["phases"]["baseline"]
    assert baseline["chunks"] > 0 and baseline["chats"]["completed"] > 0
    assert baseline["window_s"] < 30
    assert baseline["rss_series"]["rows"]
    assert list(document["phases"]) == ["baseline"]
    assert not Path(f"/proc/{document['mock']['pid']}").exists()  # the mock was stopped
    assert b"interrupted" in err


# -- the pure parts --------------------------------------------------------------------


def test_slope_is_flat_for_level_memory_and_exact_for_a_leak() -> None:
    assert slope_per_1000([(0, 100.0), (500, 100.0), (1000, 100.0)]) == 0
    # 4 KiB per chat: 1000 chats add 3.90625 MiB.
    leak = [(n, 100.0 + n * 4 / 1024) for n in range(0, 2000, 100)]
    assert slope_per_1000(leak) == pytest.approx(1000 * 4 / 1024)
    assert slope_per_1000([(5, 1.0)]) is None
    assert slope_per_1000([(5, 1.0), (5, 2.0)]) is None  # no chats finished in between


def _phase(name: str, *, unit: str, cpu_chat: float | None, added: float) -> dict[str, Any]:
    latency = {"count": 1, "p50_ms": 10.0, "p99_ms": 20.0, "max_ms": 20.0}
    return {
        "phase": name,
        "chunk_unit": unit,
        "cpu_us_per_chat": cpu_chat,
        "cpu_us_per_chunk": 5.0,
        "chats_per_s": 100.0,
        "chats": {"completed": 3, "rejected": 0, "failed": 0, "unfinished": 0},
        "chunks": 30,
        "chunks_per_chat": 10.0,
        "ttfc_ms": latency,
        "chat_ms": latency,
        "rss_mib": {
            "start": 80.0,
            "after_warmup": 80.0 + added,
            "end": 80.0 + added,
            "after_close": 80.0 + added,
            "added": added,
            "slope_per_1000_chats": 0.01,
        },
        "rss_series": {"rows": [[0.0, 0, 80.0], [1.0, 3, 80.0 + added]]},
    }


def test_ratios_need_both_phases_and_a_positive_denominator() -> None:
    phases = {
        "baseline": _phase("baseline", unit="event", cpu_chat=1000.0, added=0.0),
        "guest": _phase("guest", unit="item", cpu_chat=1500.0, added=4.0),
        "thread": _phase("thread", unit="item", cpu_chat=None, added=2.0),
    }
    ratios = phase_ratios(phases)
    assert ratios["guest/baseline"]["cpu_us_per_chat"] == pytest.approx(1.5)
    assert ratios["guest/baseline"]["rss_added_mib"] is None  # the baseline added nothing
    assert ratios["thread/baseline"]["cpu_us_per_chat"] is None  # the thread figure is missing
    assert ratios["guest/thread"]["rss_added_mib"] == pytest.approx(2.0)
    assert ratios["guest/thread"]["cpu_us_per_chunk"] == pytest.approx(1.0)
    assert set(phase_ratios({"baseline": phases["baseline"], "guest": phases["guest"]})) == {
        "guest/baseline"
    }


def test_report_tables_line_up() -> None:
    phases = {
        "baseline": _phase("baseline", unit="event", cpu_chat=1000.0, added=1.0),
        "guest": _phase("guest", unit="item", cpu_chat=12345.0, added=4.0),
    }
    document = {"phase_order": ["baseline", "guest", "thread"], "phases": phases}
    document["ratios"] = phase_ratios(phases)
    blocks = format_owui_report(document).split("\n\n")
    assert len(blocks) == 3  # speed, memory, ratios (then the notes)
    for block in blocks:
        lines = block.splitlines()
        assert len({len(line) for line in lines[:3]}) == 1  # header, rule and first row align
    assert "guest/baseline" in blocks[2] and "12.35" in blocks[2].splitlines()[2]
    assert "thread" not in blocks[0]
