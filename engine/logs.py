"""The engine's logging: loguru, with request context, per-request levels, a ring, redaction.

One setup (``setup_logging``) for the whole process:

* **Context.** Every record logged inside ``request_context(...)`` carries
  ``request_id``, ``user_id`` and ``chat_id`` (loguru's ``contextualize``,
  i.e. contextvars: a trio task started inside the block inherits them). The
  engine opens that context around each request's own tasks.
* **Levels.** ``LogSettings.level`` is the process's level; a request may
  carry its own (``ChatRequest.log_level``, from a user's ``LOG_LEVEL``
  valve), which applies to that request's records only: one user can ask for
  DEBUG without turning it on for everybody.
* **Its own logger.** ``engine.logs.logger`` is independent of loguru's
  global one: embedding in Open WebUI (which logs through loguru) adds no
  duplicate lines and changes none of its sinks.
* **Sinks never block the event loop.** The console sink is queued
  (``enqueue=True``): a loguru worker thread formats and writes. The ring
  sink only appends to memory.
* **The per-request ring** (``request_logs()``) keeps the last
  ``ring_lines`` formatted records of each request (at most ``ring_requests``
  requests, the least recently used forgotten first): when a request fails,
  the Open WebUI pipe hands those lines to the user as a source, so an
  administrator can read what happened without server access. Its size is in
  ``Engine.statistics().logs``.
* **Redaction.** Before any sink sees a record, its message and context are
  scrubbed (a loguru patcher), and every sink scrubs the final text again
  (tracebacks included): OpenRouter-style keys, ``Authorization`` /
  ``Bearer`` values, every secret registered with ``register_secret`` and
  its base64 forms, and long base64 blobs (inline attachments) never reach
  a sink.

**Names.** Every record is named after the area it comes from, so an
operator keeps or drops one part with one prefix: ``orpipe.engine`` and
``orpipe.actors`` (they log through ``logger``, which adds the module:
``orpipe.actors.upstream_fetcher``), ``orpipe.owui`` (everything on Open WebUI's
side: ``adapters/openwebui/`` and the Function), ``orpipe.catalogue`` (the
model catalogue), ``orpipe.persistence`` (``adapters/store/``),
``orpipe.cluster`` (``adapters/cluster/``: what workers share through Redis),
``orpipe.telemetry`` (``adapters/telemetry/``) and ``orpipe.bridge``
(``adapters/bridge/``). The adapters log through the
standard library under their area's name, never ``__name__``, so a filter
survives modules being split or moved. Standard-library records under
``orpipe`` are routed into the same setup, so they share the context, the
levels, the ring and the redaction.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from loguru._logger import Core as _Core
from loguru._logger import Logger as _Logger

if TYPE_CHECKING:
    from loguru import Logger, Message, Record

#: The engine's own loguru logger: its own sinks and patcher, so a host that uses
#: loguru too (Open WebUI does) neither prints the engine's records a second time
#: nor has its handlers or settings touched. Built the way ``loguru`` builds its
#: global one (pinned below 0.8, where that constructor is stable).
logger: Logger = _Logger(  # type: ignore[assignment]
    core=_Core(),  # type: ignore[no-untyped-call]
    exception=None,
    depth=0,
    record=False,
    lazy=False,
    colors=False,
    raw=False,
    capture=True,
    patchers=[],
    extra={},
)

__all__ = [
    "LogSettings",
    "RequestLogs",
    "bound",
    "logger",
    "redact",
    "register_secret",
    "request_context",
    "request_logs",
    "setup_logging",
    "stop_logging",
]

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_DEFAULT_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {name}:{function}:{line} | "
    "req={extra[request_id]} user={extra[user_id]} | {message}"
)
_RING_FORMAT = "{time:HH:mm:ss.SSS} [{level}] {name}: {message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """How the process logs (``setup_logging``)."""

    #: The process's level; a request's own ``log_level`` overrides it for that request.
    level: str = "INFO"
    #: loguru format of the console sink; ``extra[request_id]`` etc. are always present.
    format: str = _DEFAULT_FORMAT
    #: Where the console sink writes (a text stream), off the event loop.
    stream: TextIO | None = None
    #: SESSION_LOG_MAX_LINES: lines kept per request.
    ring_lines: int = 2000
    #: Requests whose lines are kept at once (least recently used dropped first).
    ring_requests: int = 1000

    def __post_init__(self) -> None:
        if self.level.upper() not in LEVELS:
            raise ValueError(f"log level {self.level!r} is not one of {', '.join(LEVELS)}")
        if self.ring_lines < 1 or self.ring_requests < 1:
            raise ValueError("the request log ring needs room for at least one line and request")


# -- redaction ------------------------------------------------------------------------

_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # data: URLs first, so their payload is named as such rather than as a bare blob.
    (
        re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w=.+-]+)*);base64,[A-Za-z0-9+/=_-]{16,}"),
        lambda m: f"data:{m.group(1) or ''}{m.group(2)};base64,[{len(m.group(0))} chars]",
    ),
    (re.compile(r"\bsk-or-v1-[A-Za-z0-9]{8,}"), "sk-or-v1-[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-[redacted]"),
    (
        re.compile(r"(?i)\b(authorization)(\"?\s*[:=]\s*\"?)[^\s\",}']+(\s+[^\s\",}']+)?"),
        r"\1\2[redacted]",
    ),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"), "Bearer [redacted]"),
    (
        re.compile(r"[A-Za-z0-9+/_-]{200,}={0,2}"),
        lambda m: f"[base64, {len(m.group(0))} chars]",
    ),
)


class _Secrets:
    """Exact strings that must never be logged, and their base64 forms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def register(self, secret: str) -> None:
        secret = secret.strip()
        if len(secret) < 6 or secret in self._values:
            return  # too short to search for without hiding ordinary words, or known
        forms = {secret, *_base64_forms(secret.encode())}
        with self._lock:
            values = self._values | {f for f in forms if len(f) >= 6}
            self._values = frozenset(values)
            # Longest first, so a secret inside a longer registered one goes with it.
            ordered = sorted(values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub("[secret]", text) if pattern is not None else text


def _base64_forms(data: bytes) -> set[str]:
    """The base64 text of ``data`` at each of the three byte alignments it can have
    inside a longer encoded value (a ``user:key`` pair, a JSON blob), standard and
    URL-safe alphabets: only the characters that depend on ``data`` alone."""
    forms: set[str] = set()
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        total = offset + len(data)
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        core = encoded[skip : total // 3 * 4]
        forms |= {core, core.replace("+", "-").replace("/", "_")}
    return forms


_SECRETS = _Secrets()


def register_secret(secret: str) -> None:
    """Never log ``secret`` (an API key, an encryption key) nor its base64 forms."""
    _SECRETS.register(secret)


def redact(text: str) -> str:
    """``text`` without keys, authorization values, registered secrets or base64 blobs."""
    text = _SECRETS.scrub(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_record(record: Record) -> None:
    record["message"] = redact(record["message"])
    extra = record["extra"]
    for key, value in extra.items():
        if isinstance(value, str):
            extra[key] = redact(value)


# -- the per-request ring -----------------------------------------------------------


class RequestLogs:
    """The last lines of each request, bounded twice (lines per request, requests).

    Thread-safe: loguru calls the ring's sink on whatever thread logged.
    """

    def __init__(self, lines: int, requests: int) -> None:
        self._lines = lines
        self._requests = requests
        self._lock = threading.Lock()
        self._rings: collections.OrderedDict[str, collections.deque[str]] = (
            collections.OrderedDict()
        )
        self.dropped_requests = 0

    def add(self, request_id: str, line: str) -> None:
        with self._lock:
            ring = self._rings.get(request_id)
            if ring is None:
                ring = self._rings[request_id] = collections.deque(maxlen=self._lines)
                while len(self._rings) > self._requests:
                    self._rings.popitem(last=False)
                    self.dropped_requests += 1
            else:
                self._rings.move_to_end(request_id)
            ring.append(line)

    def lines(self, request_id: str) -> list[str]:
        with self._lock:
            return list(self._rings.get(request_id, ()))

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._rings.pop(request_id, None)

    def statistics(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": len(self._rings),
                "requests_capacity": self._requests,
                "lines": sum(len(r) for r in self._rings.values()),
                "lines_per_request": self._lines,
                "dropped_requests": self.dropped_requests,
            }


# -- setup --------------------------------------------------------------------------


@dataclass
class _State:
    settings: LogSettings
    ring: RequestLogs


_state = _State(LogSettings(), RequestLogs(2000, 1000))
_setup_lock = threading.Lock()
_level_numbers = {name: logger.level(name).no for name in LEVELS}


# Redaction and the context keys hold from import on, sinks or not.
logger.configure(patcher=_redact_record, extra={"request_id": "-", "user_id": "-", "chat_id": "-"})


def request_logs() -> RequestLogs:
    """The process's per-request ring."""
    return _state.ring


def setup_logging(settings: LogSettings | None = None) -> None:
    """(Re)configure the process's sinks; safe to call again with new settings.

    The engine's logger is its own (see the module docstring): a host's loguru
    sinks stay as they are.
    """
    settings = settings or LogSettings()
    with _setup_lock:
        logger.remove()  # only the engine's own logger: the host's sinks are elsewhere
        if (settings.ring_lines, settings.ring_requests) != (
            _state.settings.ring_lines,
            _state.settings.ring_requests,
        ):
            _state.ring = RequestLogs(settings.ring_lines, settings.ring_requests)
        _state.settings = settings
        stream = settings.stream or sys.stderr
        console = logger.add(
            _StreamSink(stream),
            level=0,
            filter=_passes_level,
            format=settings.format,
            enqueue=True,  # a worker thread writes: the event loop never waits on a stream
            backtrace=False,
            diagnose=False,  # variable values in tracebacks could hold secrets
        )
        ring = logger.add(
            _ring_sink,
            level=0,
            filter=_for_a_request,
            format=_RING_FORMAT,
            backtrace=False,
            diagnose=False,
        )
        del console, ring  # removed together by the next setup_logging
        _route_adapter_logging()


@contextlib.contextmanager
def request_context(
    request_id: str,
    *,
    user_id: str | None = None,
    chat_id: str | None = None,
    level: str | None = None,
) -> Iterator[None]:
    """Records logged inside carry these ids, and follow ``level`` when it is given."""
    with logger.contextualize(**_context(request_id, user_id, chat_id, level)):
        yield


def bound(
    request_id: str,
    *,
    user_id: str | None = None,
    chat_id: str | None = None,
    level: str | None = None,
) -> Logger:
    """The logger with a request's context, for code that serves many requests in one
    task (an actor's loop), where ``request_context`` would not fit."""
    return logger.bind(**_context(request_id, user_id, chat_id, level))


def _context(
    request_id: str, user_id: str | None, chat_id: str | None, level: str | None
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "request_id": request_id,
        "user_id": user_id or "-",
        "chat_id": chat_id or "-",
    }
    if level is not None and level.upper() in _level_numbers:
        context["log_level"] = level.upper()
    return context


def _threshold(record: Record) -> int:
    level = record["extra"].get("log_level") or _state.settings.level
    return _level_numbers.get(str(level).upper(), _level_numbers["INFO"])


def _passes_level(record: Record) -> bool:
    return record["level"].no >= _threshold(record)


def _for_a_request(record: Record) -> bool:
    return record["extra"].get("request_id", "-") != "-" and _passes_level(record)


class _StreamSink:
    """Writes formatted records to a text stream, redacted again (tracebacks too)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, message: Message) -> None:
        self._stream.write(redact(str(message)))
        self._stream.flush()


def _ring_sink(message: Message) -> None:
    request_id = message.record["extra"].get("request_id", "-")
    _state.ring.add(str(request_id), redact(str(message)).rstrip("\n"))


# -- the adapters' standard-library records ---------------------------------------------


class _ToLoguru(logging.Handler):
    """Hands a standard-library record to loguru, keeping its level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.patch(
            lambda r: r.update(name=record.name, function=record.funcName, line=record.lineno)  # type: ignore[call-arg]
        ).opt(exception=record.exc_info).log(level, record.getMessage())


#: The standard-library logger above every adapter's (see "Names" above).
_ROUTED = "orpipe"


def stop_logging() -> None:
    """Remove the engine's sinks (after flushing them) and hand the adapters' standard
    logging back to the host: for tests, and for a host that shuts the engine down."""
    logger.complete()
    logger.remove()
    routed = logging.getLogger(_ROUTED)
    for handler in [h for h in routed.handlers if isinstance(h, _ToLoguru)]:
        routed.removeHandler(handler)
    routed.setLevel(logging.NOTSET)
    routed.propagate = True


def _route_adapter_logging() -> None:
    routed = logging.getLogger(_ROUTED)
    if not any(isinstance(h, _ToLoguru) for h in routed.handlers):
        routed.addHandler(_ToLoguru())
    routed.setLevel(logging.DEBUG)  # the level is decided per record, in loguru
    routed.propagate = False  # a host that also forwards stdlib logging would log twice
