"""The PNG plots of one research-bench run, drawn from its results document.

Owns the figures only: which plots exist (``PLOT_CAPTIONS``), what each one
draws and the files' names (``<out_dir>/<name>.png``). ``bench.html_report``
and ``bench.compare_report`` embed the files; neither draws.

Each figure is a ``matplotlib.figure.Figure`` with its own Agg canvas, never
``pyplot``: no global figure registry, no backend switch, nothing that needs a
display, and safe to call from a worker thread. A plot with nothing to draw is
not written (the report says so); a plot with some of its series missing is
drawn with a note naming what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orpipe.bench.report_checks import (
    LATENCY_KEYS,
    LATENCY_LABELS,
    as_number,
    as_numbers,
    scenario_name,
    section,
    sequence,
)

__all__ = ["PLOT_CAPTIONS", "PLOT_SIZE_PX", "write_plots"]

#: Every plot this module can draw, by file stem, in the order reports show them.
PLOT_CAPTIONS: Mapping[str, str] = {
    "latency_cdf": "Latency CDF (log-scale milliseconds)",
    "load": "Offered load vs goodput over time, phases shaded",
    "channels": "Channel occupancy over time (used / capacity)",
    "rejections": "Rejections and failures over time",
}

_FIGSIZE_IN = (9.0, 4.5)
_DPI = 100
#: Width and height of every PNG, in pixels (figure inches times dots per inch).
PLOT_SIZE_PX = (int(_FIGSIZE_IN[0] * _DPI), int(_FIGSIZE_IN[1] * _DPI))

#: Matplotlib reads ``$…$`` as mathematics, and a stray ``$`` in a user's name
#: would fail at draw time; titles longer than this are cut.
_MAX_LABEL = 80

_Drawer = Callable[[Figure, Mapping[str, Any]], bool]


def write_plots(document: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write each plot that has data as ``out_dir/<name>.png``; return name → path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, draw in _DRAWERS.items():
        figure = Figure(figsize=_FIGSIZE_IN, dpi=_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        if not draw(figure, document):
            continue
        path = out_dir / f"{name}.png"
        figure.savefig(path, format="png", dpi=_DPI)
        written[name] = path
    return written


# --- latency CDF -----------------------------------------------------------------


def _draw_latency_cdf(figure: Figure, document: Mapping[str, Any]) -> bool:
    cdfs = section(document, "latency_cdf")
    summary = section(document, "summary")
    ax = figure.add_subplot()
    drawn, empty = [], []
    for key in LATENCY_KEYS:
        points = _positive_cdf(sequence(cdfs, key))
        label = LATENCY_LABELS[key]
        if not points:
            empty.append(label)
            continue
        count = as_number(section(summary, key).get("count"))
        suffix = f" (n={int(count):,})" if count is not None else ""
        ax.plot([ms for _, ms in points], [p for p, _ in points], marker=".", label=label + suffix)
        drawn.append(key)
    if not drawn:
        return False
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("percentile")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _title(ax, document, "latency CDF")
    _note_missing(ax, "no samples", empty, top=True)
    return True


def _positive_cdf(raw: Sequence[Any]) -> list[tuple[float, float]]:
    """``(percentile, ms)`` pairs a log axis can show: well formed, ms above zero."""
    points = []
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        percentile, ms = as_number(pair[0]), as_number(pair[1])
        if percentile is not None and ms is not None and ms > 0:
            points.append((percentile, ms))
    return sorted(points)


# --- offered load vs goodput -------------------------------------------------------


def _draw_load(figure: Figure, document: Mapping[str, Any]) -> bool:
    series = {"offered": "offered", "goodput": "goodput (completed)"}
    return _rate_plot(figure, document, series, "offered load vs goodput", planned_rate=True)


def _rate_plot(
    figure: Figure,
    document: Mapping[str, Any],
    series: Mapping[str, str],
    title: str,
    *,
    planned_rate: bool = False,
) -> bool:
    """Per-interval counts as steps over the phases; False when none was recorded."""
    timeline = section(document, "timeline")
    t_s = _times(timeline)
    interval = _interval_s(timeline, t_s)
    phases = sequence(document, "phases")
    ax = figure.add_subplot()
    _shade_phases(ax, phases)
    drawn, missing = _step_series(ax, timeline, t_s, interval, series)
    if not drawn:
        return False
    if planned_rate:
        _planned_rate(ax, phases)
    _time_axis(ax, t_s, interval, phases)
    ax.set_ylabel("requests / s" if interval else "requests per interval")
    _headroom(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _title(ax, document, title)
    _note_missing(ax, "not recorded", missing)
    return True


def _shade_phases(ax: Axes, phases: Sequence[Any]) -> None:
    """Alternate light bands per phase, each named at the top of the plot."""
    for index, phase in enumerate(phases):
        if not isinstance(phase, Mapping):
            continue
        start, end = as_number(phase.get("start_s")), as_number(phase.get("end_s"))
        if start is None or end is None or end <= start:
            continue
        ax.axvspan(start, end, color="tab:gray", alpha=0.08 if index % 2 else 0.18, lw=0)
        name = phase.get("name")
        if isinstance(name, str) and name:
            ax.text(
                (start + end) / 2,
                0.98,
                _plain(name),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=8,
                color="dimgray",
            )


def _planned_rate(ax: Axes, phases: Sequence[Any]) -> None:
    """The scenario's planned arrival rate, dashed, so a shortfall in offered shows."""
    xs: list[float] = []
    ys: list[float] = []
    for phase in phases:
        if not isinstance(phase, Mapping):
            continue
        start, end = as_number(phase.get("start_s")), as_number(phase.get("end_s"))
        rate = as_number(phase.get("rate_rps"))
        if start is None or end is None or rate is None:
            continue
        # A ramp names where it ends; a flat phase does not.
        rate_to = as_number(phase.get("rate_to_rps"))
        xs += [start, end]
        ys += [rate, rate if rate_to is None else rate_to]
    if xs:
        ax.plot(xs, ys, linestyle="--", color="black", lw=1, alpha=0.6, label="planned rate")


# --- channel occupancy -------------------------------------------------------------


def _draw_channels(figure: Figure, document: Mapping[str, Any]) -> bool:
    timeline = section(document, "timeline")
    t_s = _times(timeline)
    channels = section(timeline, "channels")
    interval = _interval_s(timeline, t_s)
    ax = figure.add_subplot()
    peak, unbuffered, drawn = 0.0, [], False
    for name in sorted(channels):
        channel = section(channels, name)
        capacity = as_number(channel.get("capacity"))
        if capacity is None or capacity <= 0:
            # used / 0 has no meaning; an unbuffered channel is named instead.
            unbuffered.append(str(name))
            continue
        used = _aligned(sequence(channel, "used"), len(t_s))
        fractions = [math.nan if u is None else u / capacity for u in used]
        if not t_s or all(math.isnan(f) for f in fractions):
            continue
        _step(ax, t_s, fractions, interval, _plain(f"{name} (cap {capacity:g})"))
        peak = max([peak, *(f for f in fractions if not math.isnan(f))])
        drawn = True
    if not drawn:
        return False
    _time_axis(ax, t_s, interval, sequence(document, "phases"))
    ax.axhline(1.0, color="black", lw=0.8, linestyle=":")
    ax.set_ylim(0, max(1.05, peak * 1.05))
    ax.set_ylabel("occupancy (used / capacity)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    _title(ax, document, "channel occupancy")
    _note_missing(ax, "capacity 0, not drawn", unbuffered)
    return True


# --- rejections and failures -----------------------------------------------------


def _draw_rejections(figure: Figure, document: Mapping[str, Any]) -> bool:
    series = {"rejected": "rejected", "failed": "failed"}
    # Older documents have no cancelled series; it is drawn only when present.
    if "cancelled" in section(document, "timeline"):
        series["cancelled"] = "cancelled"
    return _rate_plot(figure, document, series, "rejections and failures")


# --- shared pieces -----------------------------------------------------------------


def _times(timeline: Mapping[str, Any]) -> list[float]:
    """``t_s`` up to its first unusable entry: a time axis must not have holes."""
    times: list[float] = []
    for value in as_numbers(sequence(timeline, "t_s")):
        if value is None:
            break
        times.append(value)
    return times


def _interval_s(timeline: Mapping[str, Any], t_s: Sequence[float]) -> float | None:
    """Seconds per timeline bucket: as recorded, else the spacing of ``t_s``."""
    interval = as_number(timeline.get("interval_s"))
    if interval is not None and interval > 0:
        return interval
    if len(t_s) >= 2 and t_s[1] > t_s[0]:
        return t_s[1] - t_s[0]
    return None


def _aligned(values: Sequence[Any], length: int) -> list[float | None]:
    """``values`` cut or padded with gaps to ``length``, so a short list still plots."""
    numbers = as_numbers(values[:length])
    return numbers + [None] * (length - len(numbers))


def _step_series(
    ax: Axes,
    timeline: Mapping[str, Any],
    t_s: Sequence[float],
    interval: float | None,
    series: Mapping[str, str],
) -> tuple[list[str], list[str]]:
    """Draw each per-interval count series as a rate; return (drawn, missing) labels."""
    drawn, missing = [], []
    for key, label in series.items():
        raw = sequence(timeline, key)
        if not t_s or not raw:
            missing.append(label)
            continue
        counts = _aligned(raw, len(t_s))
        # Counts are events per bucket; dividing by the bucket width gives req/s.
        scale = 1.0 / interval if interval else 1.0
        values = [math.nan if c is None else c * scale for c in counts]
        _step(ax, t_s, values, interval, label)
        drawn.append(label)
    return drawn, missing


def _step(
    ax: Axes, t_s: Sequence[float], values: Sequence[float], interval: float | None, label: str
) -> None:
    """One bucketed series as steps, each bucket drawn across its whole width.

    ``where="post"`` holds each value until the next time; without one more
    point the last bucket would shrink to a vertical line.
    """
    xs, ys = list(t_s), list(values)
    if interval and xs:
        xs.append(xs[-1] + interval)
        ys.append(ys[-1])
    ax.step(xs, ys, where="post", label=label)


def _headroom(ax: Axes) -> None:
    """Start the y axis at zero and leave room above the data for the phase names."""
    _, top = ax.get_ylim()
    # An all-zero series still gets a readable axis (0 to 1), not 0 to 0.05.
    ax.set_ylim(0, max(top * 1.12, 1.0))


def _time_axis(
    ax: Axes, t_s: Sequence[float], interval: float | None, phases: Sequence[Any]
) -> None:
    """Span the whole run: the last bucket's end, or the last phase's end if later."""
    ends = [t_s[-1] + (interval or 0.0)] if t_s else []
    ends += [
        end
        for phase in phases
        if isinstance(phase, Mapping) and (end := as_number(phase.get("end_s"))) is not None
    ]
    start = min(0.0, t_s[0]) if t_s else 0.0
    end = max(ends, default=start)
    # Equal limits make matplotlib warn; a one-bucket run still gets a width.
    ax.set_xlim(start, end if end > start else start + (interval or 1.0))
    ax.set_xlabel("time since start (s)")


def _title(ax: Axes, document: Mapping[str, Any], what: str) -> None:
    title = f"{scenario_name(document)}: {what}"
    if document.get("interrupted") is True:
        title += " (interrupted run)"
    ax.set_title(_plain(title), fontsize=11)


def _note_missing(ax: Axes, reason: str, labels: Sequence[str], *, top: bool = False) -> None:
    """Name, inside the plot, the series this run has no data for.

    Bottom left by default (over the time axis, below most curves); a CDF's
    empty corner is the top left instead.
    """
    if labels:
        ax.text(
            0.01,
            0.97 if top else 0.03,
            _plain(f"{reason}: {', '.join(labels)}"),
            transform=ax.transAxes,
            fontsize=8,
            color="firebrick",
            ha="left",
            va="top" if top else "bottom",
        )


def _plain(text: str) -> str:
    """``text`` shown literally by matplotlib: no mathtext, bounded length."""
    if len(text) > _MAX_LABEL:
        text = text[: _MAX_LABEL - 1] + "…"
    return text.replace("$", r"\$")


_DRAWERS: Mapping[str, _Drawer] = {
    "latency_cdf": _draw_latency_cdf,
    "load": _draw_load,
    "channels": _draw_channels,
    "rejections": _draw_rejections,
}
