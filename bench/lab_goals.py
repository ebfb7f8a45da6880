"""The goals a research run can judge, each with the figure it was judged on.

Owns ``goals(document, recorder)``: the issue's goals that the scenario's
phases make measurable (overload: goodput at 4x capacity, rejection latency,
admitted TTFT under overload; slow consumer: memory flat from short to long
streams; chaos: no artifact lost). Each is a ``Goal`` (what is promised and
the test of the figure), judged into the ``{name, goal, measured, met}``
entries of ``results.json``; ``met`` is None when the figure is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orpipe.bench.lab_load import Recorder

__all__ = ["Goal", "goals"]


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal: its name, what it promises, and the test the figure must pass."""

    name: str
    goal: str
    met: Callable[[float], bool]
    #: How the figure is added to what was measured ("{:.2f}x"); None: not added.
    ratio_text: str | None = None

    def judge(self, measured: str, value: float | None) -> dict[str, Any]:
        if value is not None and self.ratio_text is not None:
            measured = f"{measured} ({self.ratio_text.format(value)})"
        met = None if value is None else self.met(value)
        return {"name": self.name, "goal": self.goal, "measured": measured, "met": met}


_GOODPUT = Goal(
    "goodput at 4x capacity",
    "at least 95% of the run's peak",
    lambda r: r >= 0.95,
    "{:.0%} of peak",
)
_REJECTION = Goal("rejection latency p99", "at most 5 ms", lambda ms: ms <= 5.0)
_TTFT = Goal(
    "admitted TTFT p99 under overload", "at most 2x the unloaded p99", lambda r: r <= 2.0, "{:.2f}x"
)
_MEMORY = Goal(
    "slow consumer: memory flat from 1,000- to 100,000-event streams",
    "peak RSS within 10%",
    lambda r: r <= 1.10,
    "{:.2f}x",
)
_NO_LOSS = Goal(
    "no artifact lost through Redis killed and PostgreSQL paused",
    "every accepted artifact in SQL, none reported lost",
    lambda lost: lost == 0,
)


def goals(document: Mapping[str, Any], recorder: Recorder) -> list[dict[str, Any]]:
    """The issue's goals that this scenario can measure, each with its figure."""
    names = [p["name"] for p in document["phases"]]
    out: list[dict[str, Any]] = []
    if "calibrate" in names and "burst" in names:
        out += _overload_goals(document, recorder, names)
    if "short" in names and "long" in names:
        out.append(_memory_goal(document, names))
    if "chaos" in document:
        out.append(_chaos_goal(document["chaos"]))
    return out


def _chaos_goal(chaos: Mapping[str, Any]) -> dict[str, Any]:
    accepted, rows = chaos["artifacts_accepted"], chaos.get("rows_in_sql")
    missing = None if rows is None else accepted - rows
    return _NO_LOSS.judge(
        f"{accepted} accepted, {rows} in SQL, {chaos['artifacts_lost']} reported lost",
        None if missing is None else float(missing + chaos["artifacts_lost"]),
    )


def _overload_goals(
    document: Mapping[str, Any], recorder: Recorder, names: list[str]
) -> list[dict[str, Any]]:
    summary = document["summary"]
    calibrate, burst = names.index("calibrate"), names.index("burst")
    phase = document["phases"][burst]
    burst_s = phase["end_s"] - phase["start_s"]
    burst_goodput = recorder.phase_goodput.get(burst, 0) / burst_s if burst_s else 0.0
    peak = summary["peak_goodput_rps"] or 0.0
    rejection_p99 = summary["rejection_ms"]["p99"]
    unloaded = recorder.phase_ttft.get(calibrate)
    loaded = recorder.phase_ttft.get(burst)
    u99 = unloaded.percentile_ms(99) if unloaded else None
    l99 = loaded.percentile_ms(99) if loaded else None
    ttft = "-" if u99 is None or l99 is None else f"{l99:.1f} ms vs unloaded {u99:.1f} ms"
    return [
        _GOODPUT.judge(
            f"{burst_goodput:.1f} req/s vs peak {peak:.1f} req/s",
            burst_goodput / peak if peak else None,
        ),
        _REJECTION.judge(
            "-" if rejection_p99 is None else f"{rejection_p99:.2f} ms", rejection_p99
        ),
        _TTFT.judge(ttft, None if u99 is None or l99 is None or u99 == 0 else l99 / u99),
    ]


def _memory_goal(document: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    rss = document["process"]["rss_mb"]
    t_s = document["timeline"]["t_s"]
    peaks = []
    for name in ("short", "long"):
        index = names.index(name)
        phase = document["phases"][index]
        # The last phase's streams go on into the drain: their memory counts there too.
        end = math.inf if index == len(names) - 1 else phase["end_s"]
        inside = [m for t, m in zip(t_s, rss, strict=False) if phase["start_s"] <= t < end]
        peaks.append(max(inside) if inside else None)
    short, long = peaks
    ratio = None if short is None or long is None or short == 0 else long / short
    return _MEMORY.judge("-" if ratio is None else f"{long:.1f} MB vs {short:.1f} MB", ratio)
