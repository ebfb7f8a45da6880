"""Two runs of one scenario side by side: the metrics, their ratio B/A, and the plots.

Owns the comparison only: which metrics are compared (``compare_rows``), the
terminal table (``format_compare``) and ``compare.html``
(``write_compare_html``). The runs themselves, and their plots in
``<out_dir>/a`` and ``<out_dir>/b``, come from ``bench.lab_run``; the page
pieces come from ``bench.html_report``, so it is as self-contained as the
single-run report.

A ratio is only printed when both sides have a number and A is not zero;
otherwise the cell reads ``MISSING`` (an en dash) rather than a misleading 0 or infinity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orpipe.bench.html_report import (
    MISSING,
    esc,
    format_count,
    format_ms,
    format_rate,
    format_value,
    goals_html,
    html_table,
    interrupted_banner,
    plot_figure,
    problems_html,
    render_page,
)
from orpipe.bench.plots import PLOT_CAPTIONS
from orpipe.bench.report_checks import (
    as_number,
    consistency_problems,
    scenario_name,
    section,
    sequence,
)

__all__ = [
    "COMPARE_NAME",
    "TIMES",
    "compare_rows",
    "format_compare",
    "format_ratio",
    "peak_occupancy",
    "write_compare_html",
]

#: The sign after a ratio ("1.50" then this: read "1.50 times").
TIMES = "\N{MULTIPLICATION SIGN}"

#: File name of the comparison page inside the compare run's directory.
COMPARE_NAME = "compare.html"

Row = tuple[str, str, str, str]

# metric label, how to read it from a document, how to show it.
_Metric = tuple[str, Callable[[Mapping[str, Any]], float | None], Callable[[Any], str]]


def _summary_value(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda document: as_number(section(document, "summary").get(key))


def _percentile(latency: str, percentile: str) -> Callable[[Mapping[str, Any]], float | None]:
    def read(document: Mapping[str, Any]) -> float | None:
        return as_number(section(section(document, "summary"), latency).get(percentile))

    return read


def _cpu_s(document: Mapping[str, Any]) -> float | None:
    return as_number(section(document, "process").get("cpu_s"))


def _max_rss_mb(document: Mapping[str, Any]) -> float | None:
    samples = [as_number(v) for v in sequence(section(document, "process"), "rss_mb")]
    present = [v for v in samples if v is not None]
    return max(present) if present else None


def _percent(value: Any) -> str:
    number = as_number(value)
    return MISSING if number is None else f"{number:.0%}"


_METRICS: tuple[_Metric, ...] = (
    ("offered (req/s)", _summary_value("offered_rps"), format_rate),
    ("goodput (req/s)", _summary_value("goodput_rps"), format_rate),
    ("rejected", _summary_value("rejected"), format_count),
    ("failed", _summary_value("failed"), format_count),
    ("TTFT p50 (ms)", _percentile("ttft_ms", "p50"), format_ms),
    ("TTFT p99 (ms)", _percentile("ttft_ms", "p99"), format_ms),
    ("end to end p50 (ms)", _percentile("e2e_ms", "p50"), format_ms),
    ("end to end p99 (ms)", _percentile("e2e_ms", "p99"), format_ms),
    ("rejection p99 (ms)", _percentile("rejection_ms", "p99"), format_ms),
    ("admission wait p99 (ms)", _percentile("admission_wait_ms", "p99"), format_ms),
)

_TAIL_METRICS: tuple[_Metric, ...] = (
    ("CPU (s)", _cpu_s, format_rate),
    ("max RSS (MB)", _max_rss_mb, format_rate),
)


def compare_rows(doc_a: Mapping[str, Any], doc_b: Mapping[str, Any]) -> list[Row]:
    """(metric, A, B, ratio B/A) for every compared metric, all as display text."""
    metrics = [*_METRICS, *_channel_metrics(doc_a, doc_b), *_TAIL_METRICS]
    rows: list[Row] = []
    for label, read, show in metrics:
        a, b = read(doc_a), read(doc_b)
        rows.append((label, show(a), show(b), format_ratio(a, b)))
    return rows


def format_ratio(a: float | None, b: float | None) -> str:
    """``b / a`` as ``"1.50"`` plus ``TIMES``; ``MISSING`` when either is missing or ``a`` is 0."""
    if a is None or b is None or a == 0:
        return MISSING
    return f"{b / a:.2f}{TIMES}"


def _channel_metrics(doc_a: Mapping[str, Any], doc_b: Mapping[str, Any]) -> list[_Metric]:
    """One peak-occupancy metric per channel that either run has."""
    names = sorted({str(name) for doc in (doc_a, doc_b) for name in _channels(doc)})
    return [(f"peak occupancy {name}", _peak_occupancy_reader(name), _percent) for name in names]


def _channels(document: Mapping[str, Any]) -> Mapping[str, Any]:
    return section(section(document, "timeline"), "channels")


def _peak_occupancy_reader(name: str) -> Callable[[Mapping[str, Any]], float | None]:
    def read(document: Mapping[str, Any]) -> float | None:
        return peak_occupancy(section(_channels(document), name))

    return read


def peak_occupancy(channel: Mapping[str, Any]) -> float | None:
    """max(used) / capacity of one channel; ``None`` if unbuffered or never sampled."""
    capacity = as_number(channel.get("capacity"))
    used = [v for v in (as_number(u) for u in sequence(channel, "used")) if v is not None]
    # A zero-capacity (rendezvous) channel has no fraction to report.
    if capacity is None or capacity <= 0 or not used:
        return None
    return max(used) / capacity


def format_compare(
    doc_a: Mapping[str, Any], doc_b: Mapping[str, Any], label_a: str, label_b: str
) -> str:
    """A plain-text table for the terminal: metric left, numbers right-aligned."""
    header: Row = ("metric", label_a, label_b, "B/A")
    rows = [header, *compare_rows(doc_a, doc_b)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]

    def line(row: Row) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    rule = "-" * (sum(widths) + 2 * 3)
    title = f"compare {scenario_name(doc_a)}: A = {label_a}, B = {label_b}"
    notes = [
        f"warning: {label} was interrupted"
        for label, doc in ((label_a, doc_a), (label_b, doc_b))
        if doc.get("interrupted") is True
    ]
    body = [title, rule, line(header), rule, *(line(row) for row in rows[1:]), rule]
    return "\n".join([*body, *notes])


def write_compare_html(
    doc_a: Mapping[str, Any],
    doc_b: Mapping[str, Any],
    label_a: str,
    label_b: str,
    out_dir: Path,
) -> Path:
    """Write ``out_dir/compare.html``: both runs side by side, plots from ``out_dir/{a,b}``."""
    name = scenario_name(doc_a)
    name_b = scenario_name(doc_b)
    mismatch = (
        f'<div class="banner problems">A ran {esc(name)} but B ran {esc(name_b)}: '
        "the comparison mixes two scenarios.</div>"
        if name != name_b
        else ""
    )
    parts = [
        f"<h1>Compare {esc(name)}</h1>",
        f"<p>A = <code>{esc(label_a)}</code>, B = <code>{esc(label_b)}</code></p>",
        mismatch,
        interrupted_banner(doc_a, f"A ({label_a})"),
        interrupted_banner(doc_b, f"B ({label_b})"),
        problems_html(consistency_problems(doc_a), f"A, {label_a}"),
        problems_html(consistency_problems(doc_b), f"B, {label_b}"),
        "<h2>Summary</h2>",
        html_table(
            ("metric", f"A: {label_a}", f"B: {label_b}", "B/A"),
            compare_rows(doc_a, doc_b),
            numeric=(1, 2, 3),
        ),
        _config_diff_html(doc_a, doc_b, label_a, label_b),
        _goals_side_by_side(doc_a, doc_b, label_a, label_b),
        _plots_side_by_side(out_dir, label_a, label_b),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / COMPARE_NAME
    path.write_text(render_page(f"orpipe bench compare: {name}", parts), "utf-8")
    return path


def _config_diff_html(
    doc_a: Mapping[str, Any], doc_b: Mapping[str, Any], label_a: str, label_b: str
) -> str:
    """Every config or override key whose value differs between the sides."""
    a = {**section(doc_a, "config"), **section(doc_a, "overrides")}
    b = {**section(doc_b, "config"), **section(doc_b, "overrides")}
    keys = [*a, *(key for key in b if key not in a)]
    rows = [
        (str(key), _side_value(a, key), _side_value(b, key))
        for key in keys
        if a.get(key, _ABSENT) != b.get(key, _ABSENT)
    ]
    if not rows:
        return '<h2>Config differences</h2><p class="muted">Both runs used the same config.</p>'
    return "<h2>Config differences</h2>" + html_table(
        ("key", f"A: {label_a}", f"B: {label_b}"), rows
    )


_ABSENT = object()


def _side_value(values: Mapping[str, Any], key: str) -> str:
    return format_value(values[key]) if key in values else MISSING


def _goals_side_by_side(
    doc_a: Mapping[str, Any], doc_b: Mapping[str, Any], label_a: str, label_b: str
) -> str:
    columns = "".join(
        f"<div><h3>{esc(side)}: {esc(label)}</h3>{goals_html(sequence(doc, 'goals'))}</div>"
        for side, label, doc in (("A", label_a, doc_a), ("B", label_b, doc_b))
    )
    return f'<h2>Goals</h2><div class="side-by-side">{columns}</div>'


def _plots_side_by_side(out_dir: Path, label_a: str, label_b: str) -> str:
    sides: Sequence[tuple[str, str]] = (("a", label_a), ("b", label_b))
    blocks = []
    for name, caption in PLOT_CAPTIONS.items():
        paths = [out_dir / side / f"{name}.png" for side, _ in sides]
        if not any(path.is_file() for path in paths):
            blocks.append(f'<p class="muted">{esc(caption)}: not drawn for either run.</p>')
            continue
        cells = "".join(
            f"<div><h3>{esc(side.upper())}: {esc(label)}</h3>"
            f"{plot_figure(name, path if path.is_file() else None)}</div>"
            for (side, label), path in zip(sides, paths, strict=True)
        )
        blocks.append(f'<div class="side-by-side">{cells}</div>')
    return "<h2>Plots</h2>" + "".join(blocks)
