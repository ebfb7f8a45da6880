"""Research-bench scenarios as TOML files: an open-loop load with a seed.

A scenario file says, and ``load_scenario`` checks (every problem is one
``ScenarioFileError`` naming the file and the key):

* ``name``, ``description``, ``seed``;
* ``[[phase]]`` tables, run in order: ``duration_s`` and an arrival rate,
  either ``rate_rps`` or ``capacity_x`` (a multiple of the engine's capacity,
  ``max_concurrent_requests`` divided by one stream's duration), optionally
  ramping to ``rate_to_rps`` / ``capacity_x_to`` across the phase;
  ``arrival`` is ``constant`` (evenly spaced) or ``poisson`` (exponential
  gaps). Arrivals are scheduled in advance from the seed and sent on time
  whether or not earlier requests have finished: an open loop, so a slow
  engine shows up as latency instead of hiding behind fewer requests
  (coordinated omission). A phase may set ``tokens`` for its streams;
* ``[mix]`` weights of request kinds: ``plain``, ``reasoning``, ``tools``,
  ``multimodal``;
* ``[stream]``: ``tokens`` and ``tps`` (the mock's pacing per stream);
* ``[consumer]``: ``delay_ms`` after each batch read (a slow reader);
* ``[cancel]``: ``fraction`` of requests cancelled ``after_ms``;
* ``[[fault]]``: between ``start_s`` and ``end_s`` (scenario time, scaled
  with the phases) a ``fraction`` of requests meet an upstream error
  scenario of the mock (``http-429``, ``http-503`` … with ``retry_after``
  seconds) on their first ``fail_times`` attempts (-1: on every attempt);
* ``[engine]``: ``EngineConfig`` overrides;
* ``drain_s``: after the last arrival, how long streams may still run (30);
* ``[chaos]``: ``redis_kill_s`` / ``redis_restart_s`` and ``postgres_pause_s``
  / ``postgres_resume_s`` (scenario time): the run starts its own Redis and
  PostgreSQL, stores every request's artifacts through them (write-behind),
  hurts them on schedule, and counts the rows at the end.

Built-in files live in ``bench/scenario_files``; a path works in place of a
name.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orpipe.bench.mock_scenarios import HTTP_ERROR_SCENARIOS

__all__ = [
    "BUILTIN_DIR",
    "Fault",
    "LabScenario",
    "LoadPhase",
    "ScenarioFileError",
    "builtin_names",
    "find_scenario",
    "load_scenario",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "scenario_files"
KINDS = ("plain", "reasoning", "tools", "multimodal")
CHAOS_EVENTS = ("redis_kill_s", "redis_restart_s", "postgres_pause_s", "postgres_resume_s")
Arrival = Literal["constant", "poisson"]


class ScenarioFileError(ValueError):
    """A scenario file that cannot be run; the message names the file and the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPhase:
    name: str
    duration_s: float
    rate_rps: float | None = None
    rate_to_rps: float | None = None
    capacity_x: float | None = None
    capacity_x_to: float | None = None
    arrival: Arrival = "poisson"
    #: Text deltas per stream in this phase (None: the scenario's ``stream.tokens``).
    tokens: int | None = None

    def rates(self, capacity_rps: float) -> tuple[float, float]:
        """Arrival rate at the phase's start and end, in requests per second."""
        if self.capacity_x is not None:
            start = self.capacity_x * capacity_rps
            end = (self.capacity_x_to or self.capacity_x) * capacity_rps
            return start, end
        assert self.rate_rps is not None
        return self.rate_rps, self.rate_to_rps if self.rate_to_rps is not None else self.rate_rps


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """Upstream errors between two times of the run: the mock scenario that answers them."""

    start_s: float
    end_s: float
    #: The mock's error scenario (``http-429``, ...), sent as ``model="mock/<scenario>"``.
    scenario: str
    #: The share of requests in the window that meet it.
    fraction: float = 1.0
    #: The ``Retry-After`` seconds the error carries.
    retry_after: int = 1
    #: Attempts of one request that meet the error before the mock answers (-1: all).
    fail_times: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LabScenario:
    name: str
    description: str
    seed: int
    phases: tuple[LoadPhase, ...]
    mix: Mapping[str, float] = field(default_factory=lambda: {"plain": 1.0})
    tokens: int = 100
    tps: float = 0.0
    consumer_delay_ms: float = 0.0
    cancel_fraction: float = 0.0
    cancel_after_ms: float = 200.0
    faults: tuple[Fault, ...] = ()
    engine: Mapping[str, object] = field(default_factory=dict)
    #: After the last arrival, how long requests still streaming may take to finish.
    drain_s: float = 30.0
    #: ``[chaos]``: when (scenario time) the run's own Redis is killed / restarted and
    #: its own PostgreSQL paused / resumed; requests then store artifacts.
    chaos: Mapping[str, float] = field(default_factory=dict)
    #: The file it came from (for the report).
    source: str = ""

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    def stream_s(self, tokens: int | None = None) -> float | None:
        """One stream's duration at the mock's pacing (None when unpaced)."""
        return (tokens or self.tokens) / self.tps if self.tps > 0 else None

    def with_engine(self, overrides: Mapping[str, object]) -> LabScenario:
        return dataclasses.replace(self, engine={**self.engine, **overrides})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def builtin_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.toml"))


def find_scenario(name_or_path: str) -> Path | None:
    """A built-in's file, or the path itself when it names a TOML file."""
    builtin = BUILTIN_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    path = Path(name_or_path)
    return path if path.suffix == ".toml" and path.is_file() else None


def load_scenario(path: Path) -> LabScenario:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioFileError(f"{path}: cannot be read as TOML ({exc})") from None
    return _Reader(path, data).scenario()


class _Reader:
    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, key: str, problem: str) -> ScenarioFileError:
        return ScenarioFileError(f"{self.path.name}: {key} {problem}")

    def scenario(self) -> LabScenario:
        data = self.data
        known = {"name", "description", "seed", "drain_s", "phase", "mix", "stream", "consumer"}
        known |= {"cancel", "chaos"}
        unknown = set(data) - known - {"fault", "engine"}
        if unknown:
            raise self.fail(", ".join(sorted(unknown)), f"is not a scenario key ({sorted(known)})")
        name = self.text(data, "name")
        phases = tuple(self.phase(i, p) for i, p in enumerate(self.tables(data, "phase")))
        if not phases:
            raise self.fail("[[phase]]", "is missing: a scenario needs at least one phase")
        stream = self.only(self.table(data, "stream"), "stream", {"tokens", "tps"})
        consumer = self.only(self.table(data, "consumer"), "consumer", {"delay_ms"})
        cancel = self.only(self.table(data, "cancel"), "cancel", {"fraction", "after_ms"})
        engine = self.table(data, "engine")
        return LabScenario(
            name=name,
            description=str(data.get("description", "")),
            seed=self.number(data, "seed", 0, whole=True, low=0),
            phases=phases,
            mix=self.mix(self.table(data, "mix")),
            tokens=self.number(stream, "stream.tokens", 100, whole=True, low=1),
            tps=self.number(stream, "stream.tps", 0.0, low=0),
            consumer_delay_ms=self.number(consumer, "consumer.delay_ms", 0.0, low=0),
            cancel_fraction=self.fraction(cancel, "cancel.fraction", 0.0),
            cancel_after_ms=self.number(cancel, "cancel.after_ms", 200.0, low=0),
            faults=tuple(self.fault(i, f) for i, f in enumerate(self.tables(data, "fault"))),
            engine=dict(engine),
            drain_s=self.number(data, "drain_s", 30.0, low=1),
            chaos=self.chaos(self.table(data, "chaos")),
            source=str(self.path),
        )

    def phase(self, index: int, table: Mapping[str, Any]) -> LoadPhase:
        where = f"phase[{index}]"
        self.only(table, where, {f.name for f in dataclasses.fields(LoadPhase)})
        arrival = table.get("arrival", "poisson")
        if arrival not in ("constant", "poisson"):
            raise self.fail(f"{where}.arrival", f"is {arrival!r}; use constant or poisson")
        has_rate, has_x = "rate_rps" in table, "capacity_x" in table
        if has_rate == has_x:
            raise self.fail(where, "needs exactly one of rate_rps and capacity_x")
        tokens = table.get("tokens")
        return LoadPhase(
            name=str(table.get("name", f"phase {index + 1}")),
            duration_s=self.number(table, f"{where}.duration_s", None, low=0.1),
            rate_rps=self.optional(table, "rate_rps", where),
            rate_to_rps=self.optional(table, "rate_to_rps", where),
            capacity_x=self.optional(table, "capacity_x", where),
            capacity_x_to=self.optional(table, "capacity_x_to", where),
            arrival=arrival,
            tokens=None
            if tokens is None
            else self.number(table, f"{where}.tokens", 1, whole=True, low=1),
        )

    def fault(self, index: int, table: Mapping[str, Any]) -> Fault:
        where = f"fault[{index}]"
        self.only(table, where, {f.name for f in dataclasses.fields(Fault)})
        scenario = table.get("scenario")
        allowed = sorted({*HTTP_ERROR_SCENARIOS, "failed", "drop", "stall"})
        if scenario not in allowed:
            raise self.fail(f"{where}.scenario", f"is {scenario!r}; use one of {allowed}")
        start = self.number(table, f"{where}.start_s", None, low=0)
        end = self.number(table, f"{where}.end_s", None, low=0)
        if end <= start:
            raise self.fail(where, "ends before it starts")
        return Fault(
            start_s=start,
            end_s=end,
            scenario=scenario,
            fraction=self.fraction(table, f"{where}.fraction", 1.0),
            retry_after=self.number(table, f"{where}.retry_after", 1, whole=True, low=0),
            fail_times=self.number(table, f"{where}.fail_times", 1, whole=True, low=-1),
        )

    def chaos(self, table: Mapping[str, Any]) -> dict[str, float]:
        self.only(table, "chaos", set(CHAOS_EVENTS))
        times = {key: float(self.number(table, f"chaos.{key}", None, low=0)) for key in table}
        for start, end in (
            ("redis_kill_s", "redis_restart_s"),
            ("postgres_pause_s", "postgres_resume_s"),
        ):
            if (start in times) != (end in times):
                raise self.fail("[chaos]", f"needs both {start} and {end}")
            if start in times and times[end] <= times[start]:
                raise self.fail(f"chaos.{end}", f"must come after {start}")
        return times

    def mix(self, table: Mapping[str, Any]) -> dict[str, float]:
        if not table:
            return {"plain": 1.0}
        unknown = set(table) - set(KINDS)
        if unknown:
            raise self.fail(f"mix.{sorted(unknown)[0]}", f"is not a request kind ({list(KINDS)})")
        weights = {k: self.number(table, f"mix.{k}", 0.0, low=0) for k in table}
        if sum(weights.values()) <= 0:
            raise self.fail("[mix]", "has no positive weight")
        return weights

    # -- typed reads -------------------------------------------------------------------

    def only(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> Mapping[str, Any]:
        """A typo is an error, not a silently ignored setting."""
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", f"is not a setting here ({sorted(allowed)})")
        return table

    def text(self, table: Mapping[str, Any], key: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value.strip()

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(f"[{key}]", "must be a table")
        return value

    def tables(self, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.fail(f"[[{key}]]", "must be an array of tables")
        return value

    def number(
        self,
        table: Mapping[str, Any],
        key: str,
        default: Any,
        *,
        whole: bool = False,
        low: float | None = None,
    ) -> Any:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if value is None:
            raise self.fail(key, "is missing")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"is {value!r}, not a number")
        if whole and not isinstance(value, int):
            raise self.fail(key, f"is {value!r}, not a whole number")
        if low is not None and value < low:
            raise self.fail(key, f"is {value!r}; it must be at least {low:g}")
        return value

    def optional(self, table: Mapping[str, Any], key: str, where: str) -> float | None:
        if key not in table:
            return None
        return float(self.number(table, f"{where}.{key}", None, low=0))

    def fraction(self, table: Mapping[str, Any], key: str, default: float) -> float:
        value = float(self.number(table, key, default, low=0))
        if value > 1:
            raise self.fail(key, f"is {value!r}; a fraction is from 0 to 1")
        return value
