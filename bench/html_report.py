"""The self-contained HTML report of one research-bench run.

Owns ``report.html``: one file that opens anywhere, offline, with nothing to
fetch. Plots are embedded as base64 ``data:`` URIs, the CSS is inline, there
is no script at all, and a Content-Security-Policy says so to the browser
(so even a mistake in escaping could not load or run anything). Every string
taken from the document goes through ``html.escape``: scenario names,
descriptions and config values are user input.

The page building blocks (``render_page``, ``html_table``, ``plot_figure``,
the number formats) are public because ``bench.compare_report`` builds its
side-by-side page from the same pieces.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orpipe.bench.plots import PLOT_CAPTIONS
from orpipe.bench.report_checks import (
    LATENCY_KEYS,
    LATENCY_LABELS,
    PERCENTILE_KEYS,
    as_count,
    as_number,
    consistency_problems,
    scenario_name,
    section,
    sequence,
)

__all__ = [
    "MISSING",
    "REPORT_NAME",
    "esc",
    "format_count",
    "format_ms",
    "format_rate",
    "format_value",
    "goals_html",
    "html_table",
    "interrupted_banner",
    "plot_figure",
    "png_data_uri",
    "problems_html",
    "render_html",
    "render_page",
    "write_html",
]

#: File name of the report inside the run's directory.
REPORT_NAME = "report.html"

#: What a cell shows when the value is missing or cannot be computed.
MISSING = "\N{EN DASH}"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Top-level keys rendered by their own sections; any other key is shown raw.
_KNOWN_KEYS = frozenset(
    {
        "scenario",
        "config",
        "overrides",
        "started_at",
        "finished_at",
        "interrupted",
        "summary",
        "latency_cdf",
        "timeline",
        "phases",
        "goals",
        "process",
    }
)

_COUNT_KEYS = ("offered", "admitted", "rejected", "completed", "failed", "cancelled")
_RATE_KEYS = ("offered_rps", "goodput_rps", "peak_goodput_rps")

# Local fonts only (no web fonts), print-friendly, readable without JavaScript.
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #f3f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.overridden td { background: #fff8e1; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85rem; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
.description { white-space: pre-wrap; }
.banner { padding: 0.8rem 1rem; border-radius: 6px; margin: 1rem 0; font-weight: 600; }
.interrupted { background: #fff3cd; border: 2px solid #e0a800; }
.problems { background: #fde2e1; border: 2px solid #c62828; font-weight: normal; }
.problems h2 { margin-top: 0; border: none; color: #c62828; }
.met { color: #1b7f3a; font-weight: 600; }
.missed { color: #c62828; font-weight: 600; }
.unmeasured { color: #666; }
.muted { color: #666; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.side-by-side { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
"""

# The browser enforces what the file promises: images only from data: URIs,
# inline style only, no scripts, no fetches, no fonts from anywhere.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def write_html(document: Mapping[str, Any], plots: Mapping[str, Path], out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` for ``document`` with ``plots`` embedded; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    path.write_text(render_html(document, plots), encoding="utf-8")
    return path


def render_html(document: Mapping[str, Any], plots: Mapping[str, Path]) -> str:
    """The whole report page as one string (``write_html`` without the file)."""
    name = scenario_name(document)
    parts = [
        f"<h1>Bench run: {esc(name)}</h1>",
        interrupted_banner(document),
        problems_html(consistency_problems(document)),
        _scenario_html(document),
        _run_html(document),
        _config_html(document),
        _summary_html(document),
        "<h2>Goals</h2>",
        goals_html(sequence(document, "goals")),
        _phases_html(sequence(document, "phases")),
        _plots_html(plots),
        _extras_html(document),
    ]
    return render_page(f"orpipe bench: {name}", parts)


# --- page building blocks (shared with bench.compare_report) -----------------------


def esc(value: Any) -> str:
    """Any value as escaped HTML text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def render_page(title: str, parts: Iterable[str]) -> str:
    """A complete HTML document around ``parts`` (already-escaped HTML fragments)."""
    body = "\n".join(part for part in parts if part)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table from plain-text cells: every header and cell is escaped here.

    ``numeric`` names the columns to right-align; ``row_classes`` gives each
    row a CSS class (``""`` for none).
    """
    right = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    lines = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if i in right else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        css = row_classes[index] if row_classes and index < len(row_classes) else ""
        attr = f' class="{esc(css)}"' if css else ""
        lines.append(f"<tr{attr}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def interrupted_banner(document: Mapping[str, Any], label: str = "") -> str:
    """The warning shown above everything when the run was cut short."""
    if document.get("interrupted") is not True:
        return ""
    who = f"{esc(label)}: " if label else ""
    return (
        f'<div class="banner interrupted">{who}This run was interrupted. The figures '
        "cover only what was measured before it stopped; requests still running "
        "were cancelled or left uncounted.</div>"
    )


def problems_html(problems: Sequence[str], label: str = "") -> str:
    """A red box listing every consistency problem; nothing when there is none."""
    if not problems:
        return ""
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    who = f" ({esc(label)})" if label else ""
    return (
        f'<div class="banner problems"><h2>The results do not add up{who}</h2>'
        f"<p>Treat the numbers below with suspicion:</p><ul>{items}</ul></div>"
    )


def goals_html(goals: Sequence[Any]) -> str:
    """The goals table: each goal met ✔, missed ✘ or not measured (``MISSING``)."""
    if not goals:
        return '<p class="muted">No goals were evaluated for this run.</p>'
    rows, tally = [], {"met": 0, "missed": 0, "not measured": 0}
    for goal in goals:
        entry = goal if isinstance(goal, Mapping) else {}
        verdict, css, mark = _goal_status(entry.get("met"))
        tally[verdict] += 1
        rows.append(
            "<tr>"
            f"<td>{esc(_text(entry.get('name')))}</td>"
            f"<td>{esc(_text(entry.get('goal')))}</td>"
            f"<td>{esc(_text(entry.get('measured')))}</td>"
            f'<td class="{css}">{mark} {esc(verdict)}</td>'
            "</tr>"
        )
    summary = ", ".join(f"{count} {verdict}" for verdict, count in tally.items())
    return (
        f"<p>{esc(summary)}</p><table><thead><tr><th>goal</th><th>target</th>"
        f"<th>measured</th><th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _goal_status(met: Any) -> tuple[str, str, str]:
    # Only a real boolean is a verdict; anything else means the run could not tell.
    if met is True:
        return "met", "met", "✔"
    if met is False:
        return "missed", "missed", "✘"
    return "not measured", "unmeasured", MISSING


def png_data_uri(path: Path) -> str | None:
    """The PNG at ``path`` as a ``data:`` URI, or ``None`` if it is missing or not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def plot_figure(name: str, path: Path | None) -> str:
    """One embedded plot with its caption, or a note saying why it is absent."""
    caption = PLOT_CAPTIONS.get(name, name)
    uri = png_data_uri(path) if path is not None else None
    if uri is None:
        why = "not drawn: this run has no data for it" if path is None else "file unreadable"
        return f'<p class="muted">{esc(caption)}: {esc(why)}.</p>'
    return (
        f'<figure id="plot-{esc(name)}"><img alt="{esc(caption)}" src="{uri}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def format_count(value: Any) -> str:
    """A whole number with thousands separators, else ``MISSING``."""
    count = as_count(value)
    return MISSING if count is None else f"{count:,}"


def format_rate(value: Any) -> str:
    """Requests per second to two decimals, else ``MISSING``."""
    number = as_number(value)
    return MISSING if number is None else f"{number:,.2f}"


def format_ms(value: Any) -> str:
    """Milliseconds with about three significant figures, else ``MISSING``."""
    number = as_number(value)
    if number is None:
        return MISSING
    if abs(number) >= 100:
        return f"{number:,.0f}"
    if abs(number) >= 10:
        return f"{number:.1f}"
    if abs(number) >= 1:
        return f"{number:.2f}"
    return f"{number:.3f}"


def format_value(value: Any) -> str:
    """A config or scenario value as text: scalars as is, structures as compact JSON."""
    if value is None:
        return "null"
    if isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


# --- sections of the single-run report ---------------------------------------------


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


def _scenario_html(document: Mapping[str, Any]) -> str:
    scenario = section(document, "scenario")
    if not scenario:
        return '<h2>Scenario</h2><p class="muted">The document has no scenario section.</p>'
    description = scenario.get("description")
    text = _text(description) if isinstance(description, str) else MISSING
    # Name, description and seed first; then every other key the scenario has.
    first = ("name", "seed")
    rows = [(key, format_value(scenario.get(key, MISSING))) for key in first]
    rows += [
        (str(key), format_value(value))
        for key, value in scenario.items()
        if key not in (*first, "description")
    ]
    return f'<h2>Scenario</h2><p class="description">{esc(text)}</p>' + html_table(
        ("key", "value"), rows
    )


def _run_html(document: Mapping[str, Any]) -> str:
    started, finished = document.get("started_at"), document.get("finished_at")
    rows = [
        ("started at", _text(started)),
        ("finished at", _text(finished)),
        ("duration", _duration(started, finished)),
        ("interrupted", "yes" if document.get("interrupted") is True else "no"),
    ]
    # Scalars the runner adds (time scale, capacity, ...) are shown with the run.
    rows += [
        (str(key), format_value(value))
        for key, value in document.items()
        if key not in _KNOWN_KEYS and not isinstance(value, Mapping | list | tuple)
    ]
    process = section(document, "process")
    rss = [v for v in (as_number(x) for x in sequence(process, "rss_mb")) if v is not None]
    rows.append(("CPU (s)", format_rate(process.get("cpu_s"))))
    rows.append(("max resident memory (MB)", format_rate(max(rss)) if rss else MISSING))
    return "<h2>Run</h2>" + html_table(("", "value"), rows)


def _duration(started: Any, finished: Any) -> str:
    try:
        start = dt.datetime.fromisoformat(str(started))
        end = dt.datetime.fromisoformat(str(finished))
        seconds = (end - start).total_seconds()
    except (TypeError, ValueError):  # missing, malformed, or naive vs aware
        return MISSING
    return f"{seconds:,.1f} s"


def _config_html(document: Mapping[str, Any]) -> str:
    config, overrides = section(document, "config"), section(document, "overrides")
    if not config and not overrides:
        return '<h2>Engine config</h2><p class="muted">No config recorded.</p>'
    keys = [*config, *(key for key in overrides if key not in config)]
    rows, classes = [], []
    for key in keys:
        overridden = key in overrides
        rows.append(
            (
                str(key),
                format_value(config[key]) if key in config else MISSING,
                format_value(overrides[key]) if overridden else "",
            )
        )
        classes.append("overridden" if overridden else "")
    note = f"<p>{len(overrides)} override(s) for this run, highlighted.</p>" if overrides else ""
    return (
        "<h2>Engine config</h2>"
        + note
        + html_table(("key", "value", "override"), rows, row_classes=classes)
    )


def _summary_html(document: Mapping[str, Any]) -> str:
    summary = section(document, "summary")
    if not summary:
        return '<h2>Summary</h2><p class="muted">The document has no summary.</p>'
    counts = [(key, format_count(summary.get(key))) for key in _COUNT_KEYS]
    rates = [
        (key.removesuffix("_rps") + " (req/s)", format_rate(summary.get(key))) for key in _RATE_KEYS
    ]
    latency_rows = []
    for key in LATENCY_KEYS:
        stats = section(summary, key)
        latency_rows.append(
            (
                LATENCY_LABELS[key],
                format_count(stats.get("count")),
                *(format_ms(stats.get(p)) for p in PERCENTILE_KEYS),
            )
        )
    known = {*_COUNT_KEYS, *_RATE_KEYS, *LATENCY_KEYS}
    extra = [(str(k), format_value(v)) for k, v in summary.items() if k not in known]
    return (
        "<h2>Summary</h2>"
        + html_table(("count", "requests"), counts, numeric=(1,))
        + html_table(("rate", "req/s"), rates, numeric=(1,))
        + html_table(("latency (ms)", "count", *PERCENTILE_KEYS), latency_rows, numeric=range(1, 7))
        + (html_table(("other", "value"), extra) if extra else "")
    )


def _phases_html(phases: Sequence[Any]) -> str:
    if not phases:
        return ""
    rows = []
    for phase in phases:
        entry = phase if isinstance(phase, Mapping) else {}
        rows.append(
            (
                _text(entry.get("name")),
                format_rate(entry.get("start_s")),
                format_rate(entry.get("end_s")),
                format_rate(entry.get("rate_rps")),
            )
        )
    return "<h2>Phases</h2>" + html_table(
        ("phase", "start (s)", "end (s)", "rate (req/s)"), rows, numeric=(1, 2, 3)
    )


def _plots_html(plots: Mapping[str, Path]) -> str:
    names = [*PLOT_CAPTIONS, *(name for name in plots if name not in PLOT_CAPTIONS)]
    return "<h2>Plots</h2>" + "".join(plot_figure(name, plots.get(name)) for name in names)


def _extras_html(document: Mapping[str, Any]) -> str:
    """Structured top-level sections no other part shows (machine, engine statistics...)."""
    extras = [
        (key, value)
        for key, value in document.items()
        if key not in _KNOWN_KEYS and isinstance(value, Mapping | list | tuple)
    ]
    if not extras:
        return ""
    blocks = [
        f"<details><summary>{esc(key)}</summary><pre>"
        f"{esc(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))}"
        "</pre></details>"
        for key, value in extras
    ]
    return "<h2>More recorded data</h2>" + "".join(blocks)
