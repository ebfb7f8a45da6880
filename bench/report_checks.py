"""Reading a research-bench results document safely, and checking that it adds up.

Owns two things the reporting modules (``bench.plots``, ``bench.html_report``,
``bench.compare_report``) share:

* **defensive accessors**: a document may come from an interrupted run, an
  older runner or a hand-edited ``results.json``, so every section may be
  missing, every list empty and every number ``None``. The accessors turn
  whatever is there into plain, typed values and never raise;
* **``consistency_problems``**: the invariants a finished run must satisfy
  (counts add up, percentiles ordered, timeline lists aligned). The HTML
  report shows its findings prominently and the runner's tests call it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

__all__ = [
    "LATENCY_KEYS",
    "LATENCY_LABELS",
    "PERCENTILE_KEYS",
    "as_count",
    "as_number",
    "as_numbers",
    "consistency_problems",
    "scenario_name",
    "section",
    "sequence",
]

#: The latency summaries a results document carries, in the order reports show them.
LATENCY_KEYS: tuple[str, ...] = ("ttft_ms", "e2e_ms", "admission_wait_ms", "rejection_ms")

#: How reports name each latency.
LATENCY_LABELS: Mapping[str, str] = {
    "ttft_ms": "time to first token",
    "e2e_ms": "end to end",
    "admission_wait_ms": "admission wait",
    "rejection_ms": "rejection",
}

#: Percentile keys of one latency summary, smallest first; each may be ``None``.
PERCENTILE_KEYS: tuple[str, ...] = ("p50", "p90", "p99", "p999", "max")

_COUNT_KEYS: tuple[str, ...] = (
    "offered",
    "admitted",
    "rejected",
    "completed",
    "failed",
    "cancelled",
)


def section(container: Any, key: str) -> Mapping[str, Any]:
    """``container[key]`` when both are mappings, else an empty mapping."""
    if not isinstance(container, Mapping):
        return {}
    value = container.get(key)
    return value if isinstance(value, Mapping) else {}


def sequence(container: Any, key: str) -> Sequence[Any]:
    """``container[key]`` when it is a list or tuple, else an empty list.

    Strings are sequences too, but never the list a report wants.
    """
    if not isinstance(container, Mapping):
        return []
    value = container.get(key)
    return value if isinstance(value, list | tuple) else []


def scenario_name(document: Mapping[str, Any]) -> str:
    """The scenario's name for titles, or a placeholder when the document has none."""
    name = section(document, "scenario").get("name")
    return name if isinstance(name, str) and name else "(unnamed scenario)"


def as_number(value: Any) -> float | None:
    """A finite int or float as ``float``; ``None`` for anything else.

    ``bool`` is an ``int`` subclass, but ``True`` is no measurement.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_count(value: Any) -> int | None:
    """A whole number (an ``int``, or a float with no fraction) as ``int``."""
    number = as_number(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def as_numbers(values: Sequence[Any]) -> list[float | None]:
    """Each element through ``as_number``, keeping positions (``None`` for gaps)."""
    return [as_number(value) for value in values]


def consistency_problems(document: Mapping[str, Any]) -> list[str]:
    """Every broken invariant of ``document``, one sentence each; ``[]`` when it adds up.

    Checks: counts present and not negative; ``offered == admitted + rejected``;
    every admitted request ended (``completed + failed + cancelled``), or, for
    an interrupted run, no more ended than were admitted; percentiles ordered
    ``p50 <= p90 <= p99 <= p999 <= max`` where present; latency CDFs rising;
    timeline lists as long as ``t_s``; and, when the run was not interrupted,
    the timeline's offered counts summing to the summary's.
    """
    summary = section(document, "summary")
    interrupted = document.get("interrupted") is True
    counts = {key: as_count(summary.get(key)) for key in _COUNT_KEYS}
    problems = _count_problems(counts, interrupted)
    problems += _percentile_problems(summary)
    problems += _cdf_problems(section(document, "latency_cdf"))
    problems += _timeline_problems(document)
    if not interrupted:
        problems += _timeline_sum_problems(section(document, "timeline"), counts["offered"])
    return problems


def _count_problems(counts: Mapping[str, int | None], interrupted: bool) -> list[str]:
    missing = [key for key, value in counts.items() if value is None]
    problems = []
    if missing:
        problems.append(f"summary: count missing or not a whole number: {', '.join(missing)}")
    negative = [key for key, value in counts.items() if value is not None and value < 0]
    if negative:
        problems.append(f"summary: negative count: {', '.join(negative)}")
    offered, admitted, rejected = counts["offered"], counts["admitted"], counts["rejected"]
    if (
        offered is not None
        and admitted is not None
        and rejected is not None
        and offered != admitted + rejected
    ):
        problems.append(
            f"summary: offered ({offered}) != admitted ({admitted}) + rejected ({rejected})"
        )
    ended_parts = [counts["completed"], counts["failed"], counts["cancelled"]]
    if admitted is None or any(part is None for part in ended_parts):
        return problems
    ended = sum(part for part in ended_parts if part is not None)
    # A finished run waits for (or cancels) every admitted request, so each one
    # ended; an interrupted run may have left some still streaming.
    if interrupted and ended > admitted:
        problems.append(
            f"summary: completed + failed + cancelled ({ended}) > admitted ({admitted})"
        )
    elif not interrupted and ended != admitted:
        problems.append(
            f"summary: completed + failed + cancelled ({ended}) != admitted ({admitted})"
            " in a run that was not interrupted"
        )
    return problems


def _percentile_problems(summary: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in LATENCY_KEYS:
        stats = section(summary, key)
        present = [
            (name, value)
            for name in PERCENTILE_KEYS
            if (value := as_number(stats.get(name))) is not None
        ]
        for (low_name, low), (high_name, high) in pairwise(present):
            if low > high:
                problems.append(f"summary.{key}: {low_name} ({low:g}) > {high_name} ({high:g})")
    return problems


def _cdf_problems(cdfs: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in sorted(cdfs):
        points = _cdf_points(sequence(cdfs, key))
        if points is None:
            problems.append(f"latency_cdf.{key}: not a list of [percentile, ms] pairs")
            continue
        for (p_low, ms_low), (p_high, ms_high) in pairwise(points):
            if p_low > p_high or ms_low > ms_high:
                problems.append(
                    f"latency_cdf.{key}: not rising at percentile {p_high:g}"
                    f" ({ms_low:g} ms before {ms_high:g} ms)"
                )
                break
    return problems


def _cdf_points(raw: Sequence[Any]) -> list[tuple[float, float]] | None:
    """The ``[percentile, ms]`` pairs of one CDF, or ``None`` if any pair is malformed."""
    points = []
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            return None
        percentile, ms = as_number(pair[0]), as_number(pair[1])
        if percentile is None or ms is None:
            return None
        points.append((percentile, ms))
    return points


def _timeline_problems(document: Mapping[str, Any]) -> list[str]:
    timeline = section(document, "timeline")
    if not timeline:
        return []
    length = len(sequence(timeline, "t_s"))
    problems = [
        f"timeline.{key}: {len(value)} entries, t_s has {length}"
        for key, value in sorted(timeline.items())
        if isinstance(value, list | tuple) and len(value) != length
    ]
    channels = section(timeline, "channels")
    for name in sorted(channels):
        for key, value in sorted(section(channels, name).items()):
            if isinstance(value, list | tuple) and len(value) != length:
                problems.append(
                    f"timeline.channels.{name}.{key}: {len(value)} entries, t_s has {length}"
                )
    rss = sequence(section(document, "process"), "rss_mb")
    # An empty memory series means "not sampled", which is allowed.
    if rss and len(rss) != length:
        problems.append(f"process.rss_mb: {len(rss)} entries, t_s has {length}")
    return problems


def _timeline_sum_problems(timeline: Mapping[str, Any], offered: int | None) -> list[str]:
    series = sequence(timeline, "offered")
    if offered is None or not timeline or "offered" not in timeline:
        return []
    counts = [as_count(value) for value in series]
    if any(value is None for value in counts):
        return ["timeline.offered: an entry is not a whole number"]
    total = sum(value for value in counts if value is not None)
    if total != offered:
        return [f"timeline.offered sums to {total}, summary.offered is {offered}"]
    return []
