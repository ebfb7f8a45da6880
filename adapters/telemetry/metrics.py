"""A telemetry frame as Prometheus text exposition (format 0.0.4). No I/O.

``render_metrics(frame)`` turns one frame (``actors.telemetry_core``) into
the text a Prometheus server scrapes from ``GET /metrics``. Names follow
Prometheus conventions: the ``orpipe_`` prefix, ``_total`` on counters,
``_seconds`` on durations (``queue_wait_total_s`` becomes
``orpipe_admission_queue_wait_seconds_total``), and labels of low
cardinality only: a channel, actor, service, breaker or ending name — never
a request, user or chat id. Every value is read from the frame; none is
computed here.

Families::

    orpipe_channel_buffer_used{channel}            gauge   items buffered now
    orpipe_channel_buffer_capacity{channel}        gauge   the bound (summed over instances)
    orpipe_channel_buffer_peak{channel}            gauge   highest use any sample has seen
    orpipe_channel_tasks_waiting_send{channel}     gauge   senders blocked on a full buffer
    orpipe_channel_tasks_waiting_receive{channel}  gauge   receivers waiting on an empty one
    orpipe_channel_instances{channel}              gauge   live channels with that name
    orpipe_admission_*, orpipe_flow_*              admission and credit windows (*_total: counters)
    orpipe_actor_counter_total{actor,counter}      counter per-actor counters
    orpipe_actor_level{actor,level}                gauge   per-actor levels (persister backlog, ...)
    orpipe_breaker_keys{breaker,state}             gauge   tracked keys by state
    orpipe_service_restarts_total{service}         counter supervised restarts
    orpipe_request_endings_total{ending}           counter requests ended, by ending type
    orpipe_log_ring_*                              the per-request log ring
    orpipe_telemetry_*                             the telemetry hub itself (frames, drops, ...)
    orpipe_ledger_*, orpipe_ledger_mode{mode}      the shared admission ledger (when there is one)
    orpipe_fanin_*                                 publishing frames through Redis (when it does)

``render_workers(frames)`` renders the frames of several workers (one per
Open WebUI worker, read back from Redis): the same families with a
``worker`` label on every sample, plus ``orpipe_cluster_*`` families that
add up admission, flow, endings and buffer use over the workers,
``orpipe_cluster_workers`` (workers with a live frame) and the shared
ledger's global figures (``orpipe_cluster_ledger_global_*``, the freshest
worker's view: every worker sees the same shared state).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

__all__ = ["CONTENT_TYPE", "render_metrics", "render_workers"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge"]
Sample = tuple[Mapping[str, str], float]

_CHANNEL_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("current_buffer_used", "buffer_used", "Items buffered now, summed over live instances."),
    ("max_buffer_size", "buffer_capacity", "The buffer bound, summed over live instances."),
    ("peak_buffer_used", "buffer_peak", "Highest buffer use seen by any statistics sample so far."),
    ("tasks_waiting_send", "tasks_waiting_send", "Senders blocked on a full buffer."),
    ("tasks_waiting_receive", "tasks_waiting_receive", "Receivers waiting on an empty buffer."),
    ("instances", "instances", "Live channels with this name (one per request for outboxes)."),
)
_BREAKER_STATES = ("closed", "open", "half_open")
#: Monotonic counts whose key does not say so (no ``_total``): exposed as counters.
_UNSUFFIXED_COUNTERS = {("logs", "dropped_requests"), ("breaker", "evicted")}
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


#: Families summed over workers into ``orpipe_cluster_*`` (peaks and bounds of one
#: worker's own buffers would mean nothing added up, so only these).
_CLUSTER_SUMMED = (
    "orpipe_admission_",
    "orpipe_flow_",
    "orpipe_request_endings_total",
    "orpipe_channel_buffer_used",
    "orpipe_channel_buffer_capacity",
)
#: The shared ledger's view of all workers: the same on every worker, so not summed.
_LEDGER_GLOBAL = ("global_in_use", "global_waiting", "live_workers", "limit", "queue_maxsize")


def render_metrics(frame: Mapping[str, Any]) -> str:
    """The Prometheus text for one frame (each family once, samples grouped)."""
    out = _Exposition()
    _fill(out, frame)
    return out.text()


def render_workers(frames: Mapping[str, Mapping[str, Any]]) -> str:
    """The Prometheus text for several workers' frames, by worker id (module doc)."""
    merged = _Exposition()
    sums: dict[str, tuple[Kind, str, dict[tuple[tuple[str, str], ...], float]]] = {}
    for worker, frame in sorted(frames.items()):
        one = _Exposition()
        _fill(one, frame)
        for name, (kind, help_text, samples) in one.families.items():
            merged.extend(
                name, kind, help_text, [({"worker": worker, **labels}, v) for labels, v in samples]
            )
            if name.startswith(_CLUSTER_SUMMED):
                total = sums.setdefault(name, (kind, help_text, {}))[2]
                for labels, value in samples:
                    key = tuple(sorted(labels.items()))
                    total[key] = total.get(key, 0) + value
    merged.family(
        "orpipe_cluster_workers",
        "gauge",
        "Workers whose telemetry frame is live (published within the TTL).",
        [({}, len(frames))],
    )
    for name, (kind, help_text, total) in sorted(sums.items()):
        merged.family(
            "orpipe_cluster_" + name.removeprefix("orpipe_"),
            kind,
            f"Summed over workers. {help_text}",
            ((dict(key), value) for key, value in sorted(total.items())),
        )
    freshest = max(frames.values(), key=lambda f: f.get("unix_s") or 0.0, default={})
    ledger: Mapping[str, Any] = freshest.get("ledger") or {}
    for figure in _LEDGER_GLOBAL:
        if isinstance(ledger.get(figure), int | float):
            merged.family(
                f"orpipe_cluster_ledger_{figure}",
                "gauge",
                f"The shared admission ledger, as the freshest worker saw it: {figure}.",
                [({}, ledger[figure])],
            )
    return merged.text()


def _fill(out: _Exposition, frame: Mapping[str, Any]) -> None:
    """Every family of one frame into ``out``."""
    channels: Mapping[str, Mapping[str, int]] = frame.get("channels", {})
    for key, suffix, help_text in _CHANNEL_FIELDS:
        out.family(
            f"orpipe_channel_{suffix}",
            "gauge",
            help_text,
            (({"channel": name}, stats[key]) for name, stats in sorted(channels.items())),
        )
    _section(out, "admission", "Admission (waiting room and concurrency limit)", frame)
    _section(out, "flow", "Per-request credit windows, summed over open requests", frame)
    actors: Mapping[str, Mapping[str, int]] = frame.get("actors", {})
    out.family(
        "orpipe_actor_counter_total",
        "counter",
        "Per-actor counters (Engine.statistics().actors), by actor and counter name.",
        (
            ({"actor": actor, "counter": name}, value)
            for actor, counts in sorted(actors.items())
            for name, value in sorted(counts.items())
            if not name.startswith("now_")
        ),
    )
    out.family(
        "orpipe_actor_level",
        "gauge",
        "Per-actor levels held now (e.g. the persister's backlog), by actor and level name.",
        (
            ({"actor": actor, "level": name.removeprefix("now_")}, value)
            for actor, counts in sorted(actors.items())
            for name, value in sorted(counts.items())
            if name.startswith("now_")
        ),
    )
    _breakers(out, frame.get("breakers", {}))
    out.family(
        "orpipe_service_restarts_total",
        "counter",
        "Restarts of supervised services after external faults.",
        (({"service": name}, n) for name, n in sorted(frame.get("restarts", {}).items())),
    )
    out.family(
        "orpipe_request_endings_total",
        "counter",
        "Requests ended, by ending type.",
        (({"ending": name}, n) for name, n in sorted(frame.get("endings", {}).items())),
    )
    _section(out, "logs", "The per-request log ring", frame, prefix="orpipe_log_ring")
    _section(out, "telemetry", "The telemetry hub", frame)
    _section(out, "fanin", "Telemetry fan-in through Redis", frame)
    _ledger(out, frame.get("ledger") or {})


def _ledger(out: _Exposition, ledger: Mapping[str, Any]) -> None:
    """The ledger's numbers as a section; its mode (a word) as a one-sample label."""
    if not ledger:
        return
    numbers = {k: v for k, v in ledger.items() if isinstance(v, int | float)}
    _section(out, "ledger", "The shared admission ledger", {"ledger": numbers})
    out.family(
        "orpipe_ledger_mode",
        "gauge",
        "The shared admission ledger's mode (global: shared limits hold; local_share: fallback).",
        [({"mode": str(ledger.get("mode", ""))}, 1)],
    )


def _section(
    out: _Exposition,
    section: str,
    what: str,
    frame: Mapping[str, Any],
    *,
    prefix: str | None = None,
) -> None:
    """One family per key of a flat section; the key's suffix decides type and unit."""
    values: Mapping[str, float] = frame.get(section, {})
    for key, value in sorted(values.items()):
        name, kind = _name_and_kind(section, key)
        out.family(
            f"{prefix or f'orpipe_{section}'}_{name}",
            kind,
            f"{what}: {key}.",
            [({}, value)],
        )


def _breakers(out: _Exposition, breakers: Mapping[str, Mapping[str, int]]) -> None:
    items = sorted(breakers.items())
    out.family(
        "orpipe_breaker_keys",
        "gauge",
        "Keys a breaker tracks, by breaker and state.",
        (
            ({"breaker": name, "state": state}, stats[state])
            for name, stats in items
            for state in _BREAKER_STATES
            if state in stats
        ),
    )
    # Any other count a breaker reports (tracked, max_keys, evicted, ...): one family each.
    others = sorted({key for _, stats in items for key in stats} - set(_BREAKER_STATES))
    for key in others:
        metric, kind = _name_and_kind("breaker", key)
        out.family(
            f"orpipe_breaker_{metric}",
            kind,
            f"Breaker statistics: {key}.",
            (({"breaker": name}, stats[key]) for name, stats in items if key in stats),
        )


def _name_and_kind(section: str, key: str) -> tuple[str, Kind]:
    name = _NAME_UNSAFE.sub("_", key)
    if name.endswith("_total_s"):
        return f"{name.removesuffix('_total_s')}_seconds_total", "counter"
    if name.endswith("_s"):
        return f"{name.removesuffix('_s')}_seconds", "gauge"
    if name.endswith("_total"):
        return name, "counter"
    if (section, key) in _UNSUFFIXED_COUNTERS:
        return f"{name}_total", "counter"
    return name, "gauge"


class _Exposition:
    """Accumulates families in order; a family with no sample is left out."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[Kind, str, list[Sample]]] = {}

    def family(self, name: str, kind: Kind, help_text: str, samples: Iterable[Sample]) -> None:
        rows = list(samples)
        if not rows:
            return
        # A repeated family would be rejected by the scraper; it can only be a bug here.
        assert name not in self.families, f"metric family {name} rendered twice"
        self.families[name] = (kind, help_text, rows)

    def extend(self, name: str, kind: Kind, help_text: str, samples: list[Sample]) -> None:
        """Add samples to a family (created on first use): one family, many workers."""
        self.families.setdefault(name, (kind, help_text, []))[2].extend(samples)

    def text(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text, samples) in self.families.items():
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples)
        return "\n".join(lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
