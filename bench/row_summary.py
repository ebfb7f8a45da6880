"""One row's repetitions folded into the figures the table shows, and the verdict.

Owns the CPU goal and how it is judged. CPU per event on a 2-core machine
moves by a quarter from one run to the next, so a row is judged on the
*median* of its repetitions' ratios, each ratio taken between a baseline and
an engine phase that ran back to back (the drift between them is small); the
lowest and highest ratios are kept beside it to show how far to trust it.
Figures shown per side (CPU per event, events/s, TTFT p50) are medians over
the repetitions too.

A paced row is also checked for the load it claims: if either side
delivered much less than the events/s its streams ask for at their pace,
the machine could not keep that pace (the mock shares its CPU) and the row
measured a saturated load instead; ``pace_kept`` says so. Pure functions
over ``Phase.result()`` dictionaries.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

__all__ = ["CPU_RATIO_GOAL", "PACE_KEPT_SHARE", "Verdict", "cpu_ratio", "summarize_row", "verdict"]

#: Engine CPU per event ÷ baseline CPU per event must stay at or under this, in every row.
CPU_RATIO_GOAL = 1.15
#: A paced row kept its pace if both sides delivered at least this share of the offered
#: events/s (a closed loop loses a little between one stream and the next).
PACE_KEPT_SHARE = 0.9

Verdict = Literal["ok", "OVER", "n/a"]


def cpu_ratio(phases: Mapping[str, Mapping[str, Any]]) -> float | None:
    """Engine CPU per event over baseline CPU per event; None if either is missing."""
    try:
        engine = phases["engine"]["cpu_us_per_event"]
        baseline = phases["baseline"]["cpu_us_per_event"]
    except KeyError:
        return None
    if engine is None or not baseline:
        return None
    return float(engine) / float(baseline)


def verdict(ratio: float | None, goal: float = CPU_RATIO_GOAL) -> Verdict:
    if ratio is None:
        return "n/a"
    return "ok" if ratio <= goal else "OVER"


def summarize_row(
    reps: Sequence[Mapping[str, Any]], offered_events_per_s: float | None = None
) -> dict[str, Any]:
    """The row's summary from its repetitions (``{"phases": {name: result}}`` each).

    Only repetitions whose baseline and engine both measured CPU per event
    count towards the ratio; an interrupted one still adds its failures.
    ``offered_events_per_s`` is a paced row's load (None flat out).
    """
    ratios = [r for r in (cpu_ratio(rep["phases"]) for rep in reps) if r is not None]
    ratio = _median(ratios)
    sides = {**_side("baseline", reps), **_side("engine", reps)}
    return {
        "reps_measured": len(ratios),
        "cpu_ratios": ratios,
        "cpu_ratio": ratio,
        "cpu_ratio_min": min(ratios, default=None),
        "cpu_ratio_max": max(ratios, default=None),
        "cpu_ratio_goal": CPU_RATIO_GOAL,
        "verdict": verdict(ratio),
        **sides,
        "offered_events_per_s": offered_events_per_s,
        "pace_kept": _pace_kept(sides, offered_events_per_s),
        # Failed, cut off or rejected requests in any phase: a row with some is
        # not the load it claims to be, whatever its ratio.
        "requests_not_completed": sum(
            _not_completed(phase) for rep in reps for phase in rep["phases"].values()
        ),
    }


def _side(name: str, reps: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    phases = [rep["phases"][name] for rep in reps if name in rep["phases"]]
    return {
        f"{name}_cpu_us_per_event": _median(p["cpu_us_per_event"] for p in phases),
        f"{name}_events_per_s": _median(p["events_per_s"] for p in phases if p["window_s"] > 0),
        f"{name}_ttft_p50_ms": _median(p["ttft_ms"]["p50_ms"] for p in phases),
    }


def _pace_kept(sides: Mapping[str, float | None], offered: float | None) -> bool | None:
    """None where there is no pace to keep (flat out) or nothing was measured."""
    delivered = [sides["baseline_events_per_s"], sides["engine_events_per_s"]]
    if offered is None or None in delivered:
        return None
    return all(d is not None and d >= PACE_KEPT_SHARE * offered for d in delivered)


def _not_completed(phase: Mapping[str, Any]) -> int:
    requests = phase["requests"]
    return int(requests["failed"] + requests["unfinished"] + requests["rejected"])


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
