"""The engine's configuration: one frozen dataclass naming every knob.

Every buffer in the engine is sized from a field here, so a researcher who
wants to see what a queue does changes one value (``dataclasses.replace`` or
``EngineConfig.with_overrides``) and nothing else. Defaults are the original
Open WebUI pipe's (seed inventory §A.1) where it had the knob.

Validation happens in ``__post_init__``: a bad value raises ``ConfigError``
naming the field and the allowed range, so a typo in a bench ``--set`` or an
Open WebUI valve is reported before anything starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orpipe.engine.errors import ConfigError

__all__ = ["EngineConfig"]


def _range(low: float, high: float, *, optional: bool = False) -> dict[str, Any]:
    """Field metadata: the inclusive range a numeric knob must lie in."""
    return {"range": (low, high), "optional": optional}


def _buffer(default: int) -> int:
    """A buffer's size in entries (a channel's in messages; 0 = a rendezvous): up to 100,000."""
    return field(default=default, metadata=_range(0, 100_000))


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Every knob of the engine, with the original system's defaults.

    Buffer sizes count *messages* on a channel; a message on the shared
    pipeline channels is a bundle of whatever was waiting (DESIGN.md §2).
    """

    # --- upstream ---------------------------------------------------------
    base_url: str = "https://openrouter.ai/api/v1"
    connect_timeout_s: float = field(default=10.0, metadata=_range(0.01, 600))
    #: No byte from OpenRouter for this long ends the request (the original's
    #: HTTP_SOCK_READ_SECONDS).
    read_idle_timeout_s: float = field(default=300.0, metadata=_range(0.01, 3600))
    #: Whole-attempt limit; None disables it (the original's default).
    total_timeout_s: float | None = field(default=None, metadata=_range(0.01, 86400, optional=True))
    #: Retries before the first byte of output (attempts = retries + 1).
    retry_attempts: int = field(default=3, metadata=_range(0, 10))
    retry_backoff_initial_s: float = field(default=0.5, metadata=_range(0.0, 60))
    retry_backoff_max_s: float = field(default=4.0, metadata=_range(0.0, 300))
    #: A ``Retry-After`` longer than this is not waited for: the request ends
    #: with "retry in N s" instead of stalling the user.
    retry_after_cap_s: float = field(default=30.0, metadata=_range(0.0, 600))
    #: A single SSE event larger than this ends the request (memory guard).
    max_event_bytes: int = field(default=8 * 1024 * 1024, metadata=_range(1024, 256 * 1024**2))
    #: Largest error body read from a failed HTTP response.
    max_error_body_bytes: int = field(default=64 * 1024, metadata=_range(256, 16 * 1024**2))

    # --- admission --------------------------------------------------------
    max_concurrent_requests: int = field(default=200, metadata=_range(1, 10_000))
    #: The waiting room in front of the concurrency limit.
    queue_maxsize: int = _buffer(500)
    #: Shed a request that waited longer than this (CoDel-style); None = never.
    queue_deadline_ms: float | None = field(
        default=None, metadata=_range(1, 3_600_000, optional=True)
    )
    #: Hint given to a rejected caller.
    busy_retry_after_s: float = field(default=5.0, metadata=_range(0.0, 3600))
    #: Every request ends by this deadline, so an abandoned consumer cannot
    #: leak a request.
    request_deadline_s: float = field(default=1800.0, metadata=_range(0.01, 86400))

    # --- pipeline buffers -------------------------------------------------
    #: The fetcher decodes each request's events itself and hands them, in
    #: order, straight to the delta batcher, instead of through the parser
    #: pool and the reorderer (two hops less per event; see actors.upstream_fetcher).
    express_lane: bool = True
    parser_workers: int = field(default=4, metadata=_range(1, 64))
    #: fetcher → parser pool (the original's STREAMING_CHUNK_QUEUE_MAXSIZE).
    chunk_buffer_size: int = _buffer(100)
    #: parser pool → reorderer (the original's STREAMING_EVENT_QUEUE_MAXSIZE).
    event_buffer_size: int = _buffer(100)
    #: reorderer → delta batcher.
    ordered_buffer_size: int = _buffer(100)
    #: delta batcher → emitter.
    batched_buffer_size: int = _buffer(100)
    #: admission → fetcher hand-off.
    admitted_buffer_size: int = _buffer(0)
    #: Upstream events one request may have in flight between its fetcher and
    #: its consumer. It bounds that request's reorder window and outbound
    #: buffer; a consumer that stops reading stops its fetcher here.
    request_window_events: int = field(default=256, metadata=_range(1, 1_000_000))

    # --- delta batching ---------------------------------------------------
    #: The first text of an answer (and of its reasoning) goes out as soon as it
    #: arrives; batching is for what follows.
    first_text_at_once: bool = True
    update_char_limit: int = field(default=20, metadata=_range(1, 100_000))
    #: Flush a partial text batch after this much quiet; 0 disables the timer.
    idle_flush_ms: float = field(default=250.0, metadata=_range(0, 60_000))

    # --- artifact persistence ---------------------------------------------
    #: emitter → persister (bundles of artifacts).
    persist_buffer_size: int = _buffer(100)
    #: Artifacts per store write (one commit); the original's DB_BATCH_SIZE.
    persist_batch_size: int = field(default=10, metadata=_range(1, 10_000))
    #: Artifacts the persister may hold while the store is down; past it, it
    #: stops taking more, which slows answers instead of losing anything.
    persist_backlog_max: int = field(default=10_000, metadata=_range(1, 10_000_000))
    #: On cancellation or shutdown, how long the persister may keep writing.
    persist_flush_grace_s: float = field(default=10.0, metadata=_range(0.0, 600))
    persist_retry_initial_s: float = field(default=0.5, metadata=_range(0.0, 60))
    persist_retry_max_s: float = field(default=30.0, metadata=_range(0.0, 3600))
    #: How long a request's ending waits for its own artifacts to be written
    #: (readable by every worker sharing the store) before it goes out; after
    #: that, or at once while the store's writes fail, the ending goes out and
    #: names the artifacts not yet written, whose references are left out.
    #: 0 never waits. Cancelled requests never wait.
    durable_wait_s: float = field(default=2.0, metadata=_range(0.0, 60))
    #: Age cleanup: artifacts older than this are deleted, every interval (+ jitter).
    artifact_cleanup_days: float = field(default=90.0, metadata=_range(1, 3650))
    artifact_cleanup_interval_hours: float = field(default=1.0, metadata=_range(0.001, 24 * 7))

    # --- tools (the tool executor and the function-calling loop) ---------
    #: emitter → tool executor: rounds of calls waiting to start. Its intake
    #: only spawns, so this never holds more than the requests in a tool round.
    tool_intake_buffer_size: int = _buffer(100)
    #: Upstream turns per request, the first included (MAX_FUNCTION_CALL_LOOPS).
    max_function_call_loops: int = field(default=10, metadata=_range(1, 1000))
    #: Tool calls running at once, engine-wide and per request.
    max_parallel_tools_global: int = field(default=200, metadata=_range(1, 2000))
    max_parallel_tools_per_request: int = field(default=5, metadata=_range(1, 50))
    #: Calls to one function that may run together as one batch.
    tool_batch_cap: int = field(default=4, metadata=_range(1, 32))
    #: Per call; per batch (the effective batch limit is at least the per-call one).
    tool_timeout_s: float = field(default=60.0, metadata=_range(0.001, 3600))
    tool_batch_timeout_s: float = field(default=120.0, metadata=_range(0.001, 7200))
    #: No call of a round finished for this long: the rest are stopped. None = no limit.
    tool_idle_timeout_s: float | None = field(
        default=None, metadata=_range(0.001, 7200, optional=True)
    )
    #: Worker threads for synchronous (blocking) tool functions.
    tool_thread_limit: int = field(default=16, metadata=_range(1, 1000))
    #: Threads of one tool still running after their call timed out; past this
    #: the tool is refused until some of them end (a thread cannot be killed).
    tool_runaway_limit: int = field(default=4, metadata=_range(1, 1000))
    #: Per user and tool name: failures within the window that pause the tool,
    #: and how long it stays paused before one trial call.
    tool_breaker_failures: int = field(default=5, metadata=_range(1, 1000))
    tool_breaker_window_s: float = field(default=60.0, metadata=_range(0.001, 86400))
    tool_breaker_cooldown_s: float = field(default=60.0, metadata=_range(0.001, 86400))
    #: A tool's output longer than this is cut (head kept, with a note).
    tool_output_max_chars: int = field(default=100_000, metadata=_range(100, 100_000_000))
    #: Wait before the one retry of a tool declared safe to retry.
    tool_retry_delay_s: float = field(default=0.5, metadata=_range(0.0, 60))

    # --- supervision and shutdown ----------------------------------------
    shutdown_grace_s: float = field(default=5.0, metadata=_range(0.0, 600))
    restart_max_attempts: int = field(default=5, metadata=_range(0, 1000))
    restart_backoff_initial_s: float = field(default=0.5, metadata=_range(0.0, 60))
    restart_backoff_max_s: float = field(default=30.0, metadata=_range(0.0, 3600))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "range" in f.metadata:
                # Annotations are strings here (postponed evaluation).
                whole = f.type in ("int", "int | None")
                _check_range(f.name, getattr(self, f.name), f.metadata, whole=whole)
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                "base_url",
                self.base_url,
                "an http:// or https:// URL, e.g. https://openrouter.ai/api/v1",
            )
        if self.retry_backoff_max_s < self.retry_backoff_initial_s:
            raise ConfigError(
                "retry_backoff_max_s",
                self.retry_backoff_max_s,
                f"at least retry_backoff_initial_s ({self.retry_backoff_initial_s})",
            )

    def with_overrides(self, overrides: Mapping[str, object]) -> EngineConfig:
        """A copy with some fields replaced; values given as text are parsed.

        Used by the bench's ``--set name=value`` and by adapters that read
        settings from text. An unknown name is a ``ConfigError`` listing the
        known ones.
        """
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, object] = {}
        for name, raw in overrides.items():
            if name not in known:
                raise ConfigError(name, raw, "one of: " + ", ".join(sorted(known)))
            current = getattr(self, name)
            changes[name] = _coerce(name, raw, current, known[name].metadata)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        """Plain values of every field, for reports and statistics."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _check_range(name: str, value: object, meta: Mapping[str, Any], *, whole: bool) -> None:
    low, high = meta["range"]
    if value is None:
        if meta["optional"]:
            return
        raise ConfigError(name, value, f"a number from {low} to {high}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, value, f"a number from {low} to {high}")
    if whole and not isinstance(value, int):
        raise ConfigError(name, value, f"a whole number from {low} to {high}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, value, f"a finite number from {low} to {high}")
    if not low <= value <= high:
        extra = " (or None)" if meta["optional"] else ""
        raise ConfigError(name, value, f"from {low} to {high}{extra}")


def _coerce(name: str, raw: object, current: object, meta: Mapping[str, Any]) -> object:
    """Turn text from a command line or a settings form into the field's type."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if meta.get("optional") and text.lower() in {"none", "null", ""}:
        return None
    try:
        if "range" in meta:
            number = float(text)
            is_int = isinstance(current, int) and not isinstance(current, bool)
            return int(number) if is_int and number.is_integer() else number
    except ValueError:
        raise ConfigError(name, raw, "a number") from None
    return text
