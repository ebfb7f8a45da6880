"""The ``workers`` bench's plan and figures: pure code, no I/O (``bench.workers_run`` runs it).

Owns the run's shape (``WorkersPlan``: workers, the global limit, the load at
``load_x`` times what the limit can serve, when a worker is killed and
restarted, when Redis is killed and restarted), the seeded open-loop arrival
times, what each answer adds to the tally, and ``results.json`` with its goals
and printed summary. The names in the document are the ones issue 16 asks for.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orpipe.bench.meter import Latency

__all__ = ["Tally", "WorkersPlan", "arrival_times", "format_summary", "results"]

#: The rejection goal (issue 16): a full system answers at once while Redis is up.
REJECTION_P99_GOAL_MS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkersPlan:
    """One run's shape; ``scaled`` shortens every duration (never the lease below 1 s)."""

    workers: int = 4
    global_limit: int = 4
    queue_maxsize: int = 4
    lease_s: float = 10.0
    duration_s: float = 40.0
    #: Mock pacing: the reasoning, then the answer, both at ``tps`` tokens a second.
    tokens: int = 20
    tps: float = 20.0
    reasoning_tokens: int = 20
    #: Offered first turns per second = load_x * global_limit / service seconds.
    load_x: float = 4.0
    kill_at_s: float = 8.0
    restart_after_s: float = 3.0
    redis_kill_at_s: float = 26.0
    redis_down_s: float = 1.0
    seed: int = 16

    def scaled(self, scale: float) -> WorkersPlan:
        return replace(
            self,
            lease_s=max(1.0, self.lease_s * scale),
            duration_s=self.duration_s * scale,
            kill_at_s=self.kill_at_s * scale,
            restart_after_s=self.restart_after_s * scale,
            redis_kill_at_s=self.redis_kill_at_s * scale,
            redis_down_s=max(0.5, self.redis_down_s * scale),
        )

    @property
    def service_s(self) -> float:
        return (self.reasoning_tokens + self.tokens) / self.tps

    @property
    def offered_rps(self) -> float:
        return self.load_x * self.global_limit / self.service_s

    def mock_params(self) -> dict[str, str]:
        return {
            "tokens": str(self.tokens),
            "tps": str(self.tps),
            "reasoning_tokens": str(self.reasoning_tokens),
        }


def arrival_times(plan: WorkersPlan) -> list[float]:
    """Seconds from the start of each first turn: Poisson arrivals, the same for a seed."""
    rng = random.Random(plan.seed)
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(plan.offered_rps)
        if t >= plan.duration_s:
            return times
        times.append(t)


@dataclass(slots=True)
class Tally:
    """What the answers said, as they arrive (one trio task at a time mutates it)."""

    offered: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rejection_up: Latency = field(default_factory=Latency)
    rejection_down: Latency = field(default_factory=Latency)
    ttft: Latency = field(default_factory=Latency)
    #: Artifact id -> times a worker reported it accepted.
    accepted: Counter[str] = field(default_factory=Counter)
    #: Artifact id -> chat, for the count in SQL.
    chats: dict[str, str] = field(default_factory=dict)
    unconfirmed: int = 0
    replays: int = 0
    replays_missing_artifacts: int = 0
    replay_artifacts_missing: int = 0

    def on_answer(self, chat: str, answer: Mapping[str, Any], *, redis_up: bool) -> None:
        outcome = str(answer.get("outcome"))
        self.outcomes[outcome] += 1
        if outcome == "rejected":
            (self.rejection_up if redis_up else self.rejection_down).record(answer["reject_s"])
        if "ttft_s" in answer:
            self.ttft.record(answer["ttft_s"])
        if "missing" in answer:
            self.replays += 1
            self.replay_artifacts_missing += answer["missing"]
            self.replays_missing_artifacts += answer["missing"] > 0
        if outcome == "completed" and "missing" not in answer:
            if answer.get("confirmed"):
                for artifact_id in answer["artifacts"]:
                    self.accepted[artifact_id] += 1
                    self.chats[artifact_id] = chat
            elif answer["artifacts"]:
                self.unconfirmed += len(answer["artifacts"])


def results(
    plan: WorkersPlan,
    tally: Tally,
    *,
    upstream_max_concurrent: int | None,
    in_sql: Mapping[str, int],
    dead_worker: Mapping[str, Any],
    phases: Iterable[Mapping[str, Any]],
    interrupted: bool = False,
    peak_by_phase: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``results.json``: ``in_sql`` is the number of SQL rows of each accepted id."""
    rejections = tally.rejection_up.count + tally.rejection_down.count
    accepted = len(tally.accepted)
    document: dict[str, Any] = {
        "scenario": {"name": "workers", "plan": {**_plan_fields(plan)}},
        "global_limit": plan.global_limit,
        "upstream_max_concurrent": upstream_max_concurrent,
        "upstream_peak_by_phase": dict(peak_by_phase or {}),
        "offered": tally.offered,
        "outcomes": dict(sorted(tally.outcomes.items())),
        "rejections": rejections,
        "rejection_p99_ms": tally.rejection_up.percentile_ms(99),
        "rejection_p50_ms": tally.rejection_up.percentile_ms(50),
        "rejections_redis_down": tally.rejection_down.count,
        "rejection_p99_ms_redis_down": tally.rejection_down.percentile_ms(99),
        "admitted_ttft_p99_ms": tally.ttft.percentile_ms(99),
        "permits_held_by_dead_worker": dead_worker.get("permits"),
        "permits_recovered_s": dead_worker.get("recovered_s"),
        "artifacts": {
            "accepted": accepted,
            "in_sql": sum(1 for i in tally.accepted if in_sql.get(i, 0) > 0),
            "lost": sum(1 for i in tally.accepted if in_sql.get(i, 0) == 0),
            # Rows beyond one for an id, plus ids two answers both reported accepted.
            "duplicated": sum(max(0, n - 1) for n in in_sql.values())
            + sum(n - 1 for n in tally.accepted.values()),
            "unconfirmed": tally.unconfirmed,
        },
        "replays": tally.replays,
        "replays_missing_artifacts": tally.replays_missing_artifacts,
        "phases": list(phases),
        "interrupted": interrupted,
    }
    document["goals"] = _goals(plan, document)
    return document


def _plan_fields(plan: WorkersPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in plan.__dataclass_fields__}


def _goals(plan: WorkersPlan, d: Mapping[str, Any]) -> list[dict[str, Any]]:
    upstream, recovered = d["upstream_max_concurrent"], d["permits_recovered_s"]
    rejection, artifacts = d["rejection_p99_ms"], d["artifacts"]
    return [
        _goal("upstream_max_concurrent", upstream, f"<= {plan.global_limit}",
              None if upstream is None else upstream <= plan.global_limit),
        _goal("artifacts lost", artifacts["lost"], "0", artifacts["lost"] == 0),
        _goal("artifacts duplicated", artifacts["duplicated"], "0", artifacts["duplicated"] == 0),
        _goal("replays_missing_artifacts", d["replays_missing_artifacts"], "0",
              d["replays_missing_artifacts"] == 0),
        _goal("permits_recovered_s", recovered, f"<= {plan.lease_s:g} (the lease)",
              None if recovered is None else recovered <= plan.lease_s),
        _goal("rejection p99 ms (Redis up)", rejection, f"<= {REJECTION_P99_GOAL_MS:g}",
              None if rejection is None else rejection <= REJECTION_P99_GOAL_MS),
    ]  # fmt: skip


def _goal(name: str, measured: object, goal: str, met: bool | None) -> dict[str, Any]:
    return {"name": name, "measured": measured, "goal": goal, "met": met}


def format_summary(d: Mapping[str, Any]) -> str:
    """The printed table: the figures issue 16 names, then the goals."""
    a = d["artifacts"]
    outcomes = ", ".join(f"{k} {v}" for k, v in d["outcomes"].items()) or "none"
    lines = [
        f"scenario workers: {d['scenario']['plan']['workers']} engine processes, one Redis, "
        "one PostgreSQL, the mock",
        f"  global_limit               {d['global_limit']}",
        f"  upstream_max_concurrent    {d['upstream_max_concurrent']}   new peaks by phase: "
        + (", ".join(f"{k} {v}" for k, v in d["upstream_peak_by_phase"].items()) or "-"),
        f"  offered (first turns)      {d['offered']}   answers: {outcomes}",
        f"  rejections                 {d['rejections']}   p99 {_ms(d['rejection_p99_ms'])} "
        f"p50 {_ms(d['rejection_p50_ms'])} "
        f"(Redis up); {d['rejections_redis_down']} while Redis was down, p99 "
        f"{_ms(d['rejection_p99_ms_redis_down'])}",
        f"  admitted TTFT p99          {_ms(d['admitted_ttft_p99_ms'])}",
        f"  dead worker's permits      {d['permits_held_by_dead_worker']}   back after "
        f"{_s(d['permits_recovered_s'])}",
        f"  artifacts                  accepted {a['accepted']}  in_sql {a['in_sql']}  "
        f"lost {a['lost']}  duplicated {a['duplicated']}  (unconfirmed {a['unconfirmed']})",
        f"  replays                    {d['replays']}   missing an artifact "
        f"{d['replays_missing_artifacts']}",
    ]
    for goal in d["goals"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[goal["met"]]
        lines.append(f"  goal  {goal['name']}: {goal['measured']} (goal {goal['goal']}) {mark}")
    if d.get("interrupted"):
        lines.append("  (interrupted: the figures cover what ran)")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
