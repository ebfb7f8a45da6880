"""From the valves to what the trio side is built from: ``EngineConfig`` and ``StoreSettings``.

* ``engine_config_for(valves)``: the engine's configuration, ``ENGINE_OVERRIDES``
  applied last; a value the engine refuses is a ``ValveError`` naming the valve
  it came from (``_VALVE_OF_ENGINE_FIELD``), never the engine's field.
* ``store_settings_for(valves, pipe_id)`` and ``store_factory_for``: the artifact
  store's settings, with Open WebUI's own database and Redis as defaults, and a
  factory the bridge opens inside the trio run. The store never sees the valves.
* ``ledger_settings_for(valves, pipe_id)`` and ``ledger_factory_for``: the admission
  ledger every worker shares through Open WebUI's Redis (``GLOBAL_ADMISSION``), and
  a factory the bridge opens with each generation's config (the limits).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from orpipe.adapters.bridge import LedgerFactory, StoreFactory
from orpipe.adapters.cluster.assembly import LedgerSettings, open_ledger
from orpipe.adapters.openwebui.valves.errors import ValveError
from orpipe.adapters.store.assembly import open_store
from orpipe.adapters.store.settings import StoreSettings
from orpipe.adapters.telemetry.service import TelemetryPlan, TelemetryService
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import ConfigError

if TYPE_CHECKING:
    # Only for annotations: the form's engine_config() calls back into this module.
    from orpipe.adapters.openwebui.valves.admin_form import Valves

__all__ = [
    "default_database_url",
    "engine_config_for",
    "ledger_factory_for",
    "ledger_settings_for",
    "store_factory_for",
    "store_settings_for",
    "telemetry_service_for",
]

#: Which valve feeds which EngineConfig field; also names the valve in errors.
_VALVE_OF_ENGINE_FIELD: Mapping[str, str] = MappingProxyType(
    {
        "base_url": "BASE_URL",
        "connect_timeout_s": "HTTP_CONNECT_TIMEOUT_SECONDS",
        "read_idle_timeout_s": "HTTP_SOCK_READ_SECONDS",
        "total_timeout_s": "HTTP_TOTAL_TIMEOUT_SECONDS",
        "retry_attempts": "UPSTREAM_RETRY_ATTEMPTS",
        "retry_after_cap_s": "RETRY_AFTER_CAP_SECONDS",
        "max_concurrent_requests": "MAX_CONCURRENT_REQUESTS",
        "queue_maxsize": "REQUEST_QUEUE_MAXSIZE",
        "queue_deadline_ms": "REQUEST_QUEUE_DEADLINE_MS",
        "busy_retry_after_s": "BUSY_RETRY_AFTER_SECONDS",
        "request_deadline_s": "REQUEST_DEADLINE_SECONDS",
        "parser_workers": "SSE_WORKERS_PER_REQUEST",
        "chunk_buffer_size": "STREAMING_CHUNK_QUEUE_MAXSIZE",
        "event_buffer_size": "STREAMING_EVENT_QUEUE_MAXSIZE",
        "update_char_limit": "STREAMING_UPDATE_CHAR_LIMIT",
        "idle_flush_ms": "STREAMING_IDLE_FLUSH_MS",
        "max_function_call_loops": "MAX_FUNCTION_CALL_LOOPS",
        "max_parallel_tools_global": "MAX_PARALLEL_TOOLS_GLOBAL",
        "max_parallel_tools_per_request": "MAX_PARALLEL_TOOLS_PER_REQUEST",
        "tool_batch_cap": "TOOL_BATCH_CAP",
        "tool_timeout_s": "TOOL_TIMEOUT_SECONDS",
        "tool_batch_timeout_s": "TOOL_BATCH_TIMEOUT_SECONDS",
        "tool_idle_timeout_s": "TOOL_IDLE_TIMEOUT_SECONDS",
    }
)


# --- the engine ----------------------------------------------------------------------


def engine_config_for(valves: Valves) -> EngineConfig:
    """The engine's configuration from these valves (knobs without a valve keep defaults).

    A value the engine refuses raises ``ValveError`` naming the valve and
    what it allows.
    """
    streaming = valves.streaming_limits()
    try:
        config = EngineConfig(
            base_url=valves.BASE_URL.rstrip("/"),
            connect_timeout_s=float(valves.HTTP_CONNECT_TIMEOUT_SECONDS),
            read_idle_timeout_s=float(valves.HTTP_SOCK_READ_SECONDS),
            total_timeout_s=_float_or_none(valves.HTTP_TOTAL_TIMEOUT_SECONDS),
            retry_attempts=valves.UPSTREAM_RETRY_ATTEMPTS,
            retry_after_cap_s=float(valves.RETRY_AFTER_CAP_SECONDS),
            max_concurrent_requests=valves.MAX_CONCURRENT_REQUESTS,
            queue_maxsize=valves.REQUEST_QUEUE_MAXSIZE,
            queue_deadline_ms=_float_or_none(valves.REQUEST_QUEUE_DEADLINE_MS),
            busy_retry_after_s=float(valves.BUSY_RETRY_AFTER_SECONDS),
            request_deadline_s=float(valves.REQUEST_DEADLINE_SECONDS),
            parser_workers=valves.SSE_WORKERS_PER_REQUEST,
            chunk_buffer_size=valves.STREAMING_CHUNK_QUEUE_MAXSIZE,
            event_buffer_size=valves.STREAMING_EVENT_QUEUE_MAXSIZE,
            update_char_limit=streaming.char_limit,
            idle_flush_ms=float(streaming.idle_flush_ms),
            persist_batch_size=valves.DB_BATCH_SIZE,
            artifact_cleanup_days=float(valves.ARTIFACT_CLEANUP_DAYS),
            artifact_cleanup_interval_hours=float(valves.ARTIFACT_CLEANUP_INTERVAL_HOURS),
            max_function_call_loops=valves.MAX_FUNCTION_CALL_LOOPS,
            max_parallel_tools_global=valves.MAX_PARALLEL_TOOLS_GLOBAL,
            max_parallel_tools_per_request=valves.MAX_PARALLEL_TOOLS_PER_REQUEST,
            tool_batch_cap=valves.TOOL_BATCH_CAP,
            tool_timeout_s=float(valves.TOOL_TIMEOUT_SECONDS),
            tool_batch_timeout_s=float(valves.TOOL_BATCH_TIMEOUT_SECONDS),
            tool_idle_timeout_s=_float_or_none(valves.TOOL_IDLE_TIMEOUT_SECONDS),
        )
    except ConfigError as exc:
        raise _valve_error_for(valves, exc) from exc
    return _with_engine_overrides(config, valves.ENGINE_OVERRIDES)


def _float_or_none(value: int | None) -> float | None:
    return None if value is None else float(value)


def _with_engine_overrides(config: EngineConfig, overrides: str) -> EngineConfig:
    """ENGINE_OVERRIDES applied on top: every engine knob is reachable from a valve."""
    pairs: dict[str, str] = {}
    for part in overrides.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValveError(
                "ENGINE_OVERRIDES",
                f"ENGINE_OVERRIDES: {part.strip()!r} is not name=value; write for example "
                "'request_window_events=512'.",
                allowed="name=value pairs separated by commas",
            )
        pairs[name.strip()] = value.strip()
    try:
        return config.with_overrides(pairs)
    except ConfigError as exc:
        raise ValveError(
            "ENGINE_OVERRIDES",
            f"ENGINE_OVERRIDES: {exc.field} must be {exc.allowed}.",
            allowed=exc.allowed,
        ) from None


def _valve_error_for(valves: Valves, exc: ConfigError) -> ValveError:
    valve = _VALVE_OF_ENGINE_FIELD.get(exc.field)
    if valve is None:
        # Only a cross-field rule on a knob without a valve gets here.
        return ValveError(
            "Valves",
            f"The valves give the engine a setting it cannot use: allowed is {exc.allowed}.",
            allowed=exc.allowed,
        )
    if valves.STREAMING_UPDATE_PROFILE is not None and exc.field in {
        "update_char_limit",
        "idle_flush_ms",
    }:
        valve = "STREAMING_UPDATE_PROFILE"
    value = getattr(valves, valve)
    return ValveError(
        valve,
        f"The {valve} valve is {value!r}, which the engine does not accept: allowed is "
        f"{exc.allowed}. Change it in the Function's Valves.",
        value=value,
        allowed=exc.allowed,
    )


# --- the artifact store --------------------------------------------------------------


def default_database_url() -> str:
    """Open WebUI's own DATABASE_URL (with a driver SQLAlchemy can load here), else a
    SQLite file in DATA_DIR (Open WebUI's data directory), else in ./data."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        # Open WebUI may name its async driver; the store uses the synchronous one.
        return url.replace("sqlite+aiosqlite", "sqlite", 1)
    if url:
        return url
    data_dir = Path(os.environ.get("DATA_DIR", "data"))
    return f"sqlite:///{data_dir / 'orpipe-artifacts.db'}"


def _redis_url(valves: Valves) -> str | None:
    """Write-behind only where Open WebUI itself runs on Redis (its multi-worker setup)."""
    if not valves.ENABLE_REDIS_CACHE:
        return None
    url = os.environ.get("REDIS_URL", "").strip()
    return url or None


def store_settings_for(valves: Valves, *, pipe_id: str) -> StoreSettings | None:
    """The store's settings, or None when nothing would be stored."""
    if valves.PERSIST_REASONING_TOKENS == "disabled" and not valves.PERSIST_TOOL_RESULTS:
        return None
    return StoreSettings(
        pipe_id=pipe_id,
        database_url=valves.artifact_database_url() or default_database_url(),
        encryption_key=valves.artifact_key(),
        encrypt_all=valves.ENCRYPT_ALL,
        lz4=valves.ENABLE_LZ4_COMPRESSION,
        min_compress_bytes=valves.MIN_COMPRESS_BYTES,
        batch_size=valves.DB_BATCH_SIZE,
        db_threads=valves.ARTIFACT_DB_THREADS,
        redis_url=_redis_url(valves),
        cache_ttl_s=valves.REDIS_CACHE_TTL_SECONDS,
        pending_warn_threshold=valves.REDIS_PENDING_WARN_THRESHOLD,
        flush_failure_limit=valves.REDIS_FLUSH_FAILURE_LIMIT,
    )


def store_factory_for(valves: Valves, *, pipe_id: str) -> tuple[StoreFactory | None, object]:
    """A factory for the store these valves describe, and the key it was built from
    (``StoreSettings.key``: the bridge reconfigures only when that changes)."""
    settings = store_settings_for(valves, pipe_id=pipe_id)
    if settings is None:
        return None, None
    return functools.partial(open_store, settings), settings.key()


def telemetry_service_for(valves: Valves) -> TelemetryService | None:
    """The telemetry to run beside the engine, or None when TELEMETRY_ENABLED is off.

    Every worker sharing Open WebUI's Redis (``REDIS_URL``) publishes its frames
    there, so any worker's ``/metrics`` shows them all; without it, this worker alone.
    """
    if not valves.TELEMETRY_ENABLED:
        return None
    return TelemetryService(
        TelemetryPlan(
            host=valves.TELEMETRY_HOST.strip(),
            port=valves.TELEMETRY_PORT,
            token=valves.telemetry_token() or None,
            redis_url=os.environ.get("REDIS_URL", "").strip() or None,
        )
    )


# --- the admission ledger shared by every worker ---------------------------------------


def ledger_settings_for(valves: Valves, *, pipe_id: str) -> LedgerSettings | None:
    """The shared ledger's settings, or None when each worker keeps its own limits.

    On by default wherever Open WebUI runs on Redis (``REDIS_URL``: its multi-worker
    setup); the workers of one Function share one namespace, named after its id."""
    url = os.environ.get("REDIS_URL", "").strip()
    if not (valves.GLOBAL_ADMISSION and url):
        return None
    return LedgerSettings(
        redis_url=url,
        prefix=f"orpipe:admission:{pipe_id}",
        lease_s=float(valves.ADMISSION_LEASE_SECONDS),
        workers=valves.ADMISSION_WORKERS or None,
    )


def ledger_factory_for(valves: Valves, *, pipe_id: str) -> tuple[LedgerFactory | None, object]:
    """A factory for the ledger these valves describe, and the key it was built from
    (``LedgerSettings.key``: the bridge reconfigures only when that changes)."""
    settings = ledger_settings_for(valves, pipe_id=pipe_id)
    if settings is None:
        return None, None
    return functools.partial(open_ledger, settings), settings.key()
