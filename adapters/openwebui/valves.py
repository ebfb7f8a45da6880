"""The Open WebUI settings forms of the pipe: ``Valves``, ``UserValves`` and the API key at rest.

This module owns:

* ``Valves`` -- the Function's system settings (admin form), with the original
  pipe's names and defaults where the engine still has the knob, and their
  mapping onto ``EngineConfig`` (``Valves.engine_config``);
* ``UserValves`` -- per-user overrides where every field defaults to
  ``"inherit"`` (any case), so a saved user form never overrides a system
  setting the user did not choose (the original's merge bug, inventory §A.2);
* ``effective_settings`` -- the per-request merge of the two;
* the encrypted ``API_KEY`` (``encrypt_secret`` / ``decrypt_secret``): a value
  that cannot be decrypted is an error, never the key (inventory §K.2 item 17);
* ``describe_validation_error`` -- one readable line per rejected setting.

How Open WebUI 0.12.4 handles these classes (read from its installed source):

* ``routers/functions.py`` ``update_function_valves_by_id`` and
  ``update_function_user_valves_by_id``: the submitted form, with ``None``
  values dropped, is validated as ``Valves(**form)`` / ``UserValves(**form)``
  and what is stored is ``model_dump(exclude_unset=True)`` -- the *validated*
  values. So the ``API_KEY`` validator's ciphertext is what lands in the
  database, and defaults the admin left alone are not stored at all.
* ``functions.py`` ``get_function_module_by_id``: on every dispatch the stored
  dict, again without ``None`` values, becomes ``Valves(**stored)``; the
  stored ciphertext runs through the validator again, which must therefore
  leave an ``encrypted:`` value untouched. ``get_function_params`` puts
  ``UserValves(**stored_user_valves)`` at ``__user__["valves"]`` and falls
  back to ``UserValves()`` when that raises.
* ``utils/valves.py`` ``validate_valves``: when the Function's code is saved,
  the stored values are validated against the new ``Valves``; a validator
  that decrypted would reject the code save after a secret rotation, so
  decryption happens only in ``Valves.api_key()``.
* ``utils/plugin.py`` ``replace_imports``: the Function's text is rewritten
  before ``exec`` wherever "from" is followed by a space and one of utils,
  apps, main or config, even in comments -- so that sequence never appears here.
* The 0.12.4 valves form (frontend chunk of ``Valves.svelte``): a property with
  a top-level ``enum`` is a select, ``type: boolean`` a switch,
  ``input.type == "password"`` a masked input, everything else a text box
  whose text is submitted as a string; switching a valve from "Default" to
  "Custom" starts from the schema's ``default`` (or ``""`` when there is none).
  Hence: env-derived defaults use ``default_factory`` (read at construction,
  so the API key taken from the environment never appears in the schema),
  ``""`` in an optional number means "not set", and the optional streaming
  profile carries a top-level ``enum`` so it renders as a select.
"""

from __future__ import annotations

import base64
import copy
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast, get_args
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from orpipe.adapters.openwebui.mcp_config import McpConfigError, parse_mcp_servers
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import ConfigError

__all__ = [
    "ENCRYPTED_PREFIX",
    "STREAMING_PRESETS",
    "EffectiveSettings",
    "StreamingLimits",
    "UserValves",
    "ValveError",
    "Valves",
    "decrypt_secret",
    "describe_validation_error",
    "effective_settings",
    "encrypt_secret",
    "secret_storage_warning",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
SummaryMode = Literal["auto", "concise", "detailed", "disabled"]
Retention = Literal["disabled", "next_reply", "conversation"]
StreamingProfile = Literal["quick", "normal", "slow"]
BridgeKind = Literal["guest", "thread"]
ToolMode = Literal["engine", "open-webui"]
ImageSelection = Literal["user_turn_only", "user_then_assistant"]

Inherit = Literal["inherit"]
INHERIT: Inherit = "inherit"


# --- secrets ---------------------------------------------------------------

#: Marks a stored value as a Fernet token (the original pipe used the same prefix).
ENCRYPTED_PREFIX = "encrypted:"
_HKDF_SALT = b"orpipe/owui-valves/hkdf-salt/v1"
_HKDF_INFO = b"orpipe valve encryption v1"
_UNREADABLE_KEY = (
    "The API_KEY valve was encrypted with a different WEBUI_SECRET_KEY and cannot be read. "
    "Paste the OpenRouter key into the API_KEY valve again."
)


class ValveError(ConfigError):
    """A valve holds a value the pipe cannot use; the message tells the admin what to do.

    A ``ConfigError`` (a settings problem to fix, not a transient failure), so
    callers that already report configuration mistakes report this one too.
    ``field`` and ``valve`` are the valve's name; ``value`` is ``None`` for secrets.
    """

    def __init__(
        self, valve: str, message: str, *, value: object = None, allowed: str = ""
    ) -> None:
        # Not ConfigError.__init__: its message embeds repr(value), which for
        # API_KEY would be the ciphertext.
        Exception.__init__(self, message)
        self.field = valve
        self.valve = valve
        self.value = value
        self.allowed = allowed
        self.message = message


def _webui_secret() -> str:
    """Open WebUI's secret as this process sees it now ("" when unset).

    Read on every call so a test or a late ``open-webui serve`` (which puts the
    secret from ``.webui_secret_key`` into the environment) is honoured. The
    legacy name is Open WebUI's own fallback (``env.py``).
    """
    return os.environ.get("WEBUI_SECRET_KEY") or os.environ.get("WEBUI_JWT_SECRET_KEY") or ""


def _fernet(secret: str) -> Fernet:
    # Deriving costs about 5 us, so nothing is cached: no copy of the
    # secret outlives the call.
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
        secret.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(raw))


def encrypt_secret(plain: str) -> str:
    """The form in which a secret valve is stored.

    With ``WEBUI_SECRET_KEY`` set: ``"encrypted:" + Fernet token``, the Fernet
    key being HKDF-SHA256 of the secret (salt ``b"orpipe/owui-valves/hkdf-salt/v1"``,
    info ``b"orpipe valve encryption v1"``). Without it the text is returned
    as is and Open WebUI stores it in plain text (``secret_storage_warning``
    says so). An empty value, or one already encrypted, is returned unchanged,
    so re-validating a stored value never encrypts twice.
    """
    if not plain or plain.startswith(ENCRYPTED_PREFIX):
        return plain
    secret = _webui_secret()
    if not secret:
        return plain
    token = _fernet(secret).encrypt(plain.encode("utf-8")).decode("ascii")
    return ENCRYPTED_PREFIX + token


def decrypt_secret(stored: str, *, valve: str = "API_KEY") -> str:
    """The plain secret of a stored valve value (plain text passes through).

    An ``encrypted:`` value that cannot be decrypted -- the secret was rotated
    or is missing in this process, or the token is damaged -- raises
    ``ValveError``; it is never handed on as if it were the key.
    """
    if not stored.startswith(ENCRYPTED_PREFIX):
        return stored
    unreadable = _UNREADABLE_KEY if valve == "API_KEY" else _unreadable(valve)
    secret = _webui_secret()
    if not secret:
        raise ValveError(valve, unreadable + " (WEBUI_SECRET_KEY is not set in this process.)")
    token = stored[len(ENCRYPTED_PREFIX) :].encode("ascii", errors="replace")
    try:
        return _fernet(secret).decrypt(token).decode("utf-8")
    except (InvalidToken, UnicodeDecodeError):
        # ``from None``: the cryptography error adds nothing and the chained
        # traceback would show the token.
        raise ValveError(valve, unreadable) from None


def _unreadable(valve: str) -> str:
    return (
        f"The {valve} valve was encrypted with a different WEBUI_SECRET_KEY and cannot be "
        f"read. Enter it into the {valve} valve again."
    )


def secret_storage_warning() -> str | None:
    """A one-time notice for the admin when the API key would be stored unencrypted."""
    if _webui_secret():
        return None
    return (
        "WEBUI_SECRET_KEY is not set, so the API_KEY valve is stored as plain text in "
        "Open WebUI's database. Set WEBUI_SECRET_KEY (the same value on every worker) "
        "and save the API_KEY valve again to store it encrypted."
    )


# --- defaults read from the environment --------------------------------------


def _default_base_url() -> str:
    return os.environ.get("OPENROUTER_API_BASE_URL") or "https://openrouter.ai/api/v1"


def _default_api_key() -> str:
    return os.environ.get("OPENROUTER_API_KEY", "").strip()


def _default_log_level() -> LogLevel:
    level = os.environ.get("GLOBAL_LOG_LEVEL", "").strip().upper()
    return cast(LogLevel, level) if level in get_args(LogLevel) else "INFO"


def _default_storage_email() -> str:
    email = os.environ.get("OPENROUTER_STORAGE_USER_EMAIL", "").strip()
    return email or "openrouter-pipe@system.local"


def _default_storage_name() -> str:
    return os.environ.get("OPENROUTER_STORAGE_USER_NAME", "").strip() or "OpenRouter Pipe Storage"


def _default_storage_role() -> str:
    return os.environ.get("OPENROUTER_STORAGE_USER_ROLE", "").strip().lower() or "pending"


def _default_bridge() -> BridgeKind:
    # thread by measurement (python -m bench owui-real, README "Inside a real Open WebUI"):
    # at paced load, where users are, it cost Open WebUI 2-14 % less CPU per token than
    # guest mode, whose every wait for I/O is two thread switches and a loop callback.
    return "guest" if os.environ.get("ORPIPE_BRIDGE", "").strip().lower() == "guest" else "thread"


def _schema_default(factory: Callable[[], str]) -> Callable[[dict[str, Any]], None]:
    """Show an env-derived default in the form (a ``default_factory`` has none in the schema)."""

    def add(schema: dict[str, Any]) -> None:
        schema["default"] = factory()

    return add


# --- streaming batching --------------------------------------------------------


class StreamingLimits(NamedTuple):
    """How text deltas are batched: flush at this many characters, or after this much quiet."""

    char_limit: int
    idle_flush_ms: int


#: The original's presets (inventory §A.1).
STREAMING_PRESETS: Mapping[str, StreamingLimits] = MappingProxyType(
    {
        "quick": StreamingLimits(10, 100),
        "normal": StreamingLimits(20, 250),
        "slow": StreamingLimits(80, 600),
    }
)


def _clamp_idle_flush(ms: int) -> int:
    # As the original: 0 switches the timer off; anything else stays between
    # 50 ms (a timer per few characters costs more than it saves) and 2 s.
    return 0 if ms <= 0 else min(max(ms, 50), 2000)


# --- value normalisers shared by both forms --------------------------------------


def _blank_to_none(value: object) -> object:
    """The form submits an emptied text box as "": for an optional valve that means unset."""
    if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
        return None
    return value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


@functools.lru_cache(maxsize=8)
def _parsed_mcp_servers(text: str | None) -> tuple[dict[str, Any], ...]:
    """``parse_mcp_servers``, once per distinct valve text.

    Open WebUI builds ``Valves`` (and so runs the validator) for every
    request, and the value may be up to 1 MB of JSON. Errors are not cached
    (``lru_cache`` keeps only returned values); callers outside this module
    get deep copies (``Valves.mcp_servers``).
    """
    return parse_mcp_servers(text)


def _comma_list(text: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for part in text.split(","):
        if part.strip():
            seen.setdefault(part.strip(), None)
    return tuple(seen)


# --- Valves --------------------------------------------------------------------

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

#: Valves whose rejected value is never echoed in a message: keys, a database URL
#: that may hold a password, and MCP servers whose headers carry bearer tokens.
_SECRET_VALVES = frozenset(
    {"API_KEY", "ARTIFACT_ENCRYPTION_KEY", "ARTIFACT_DATABASE_URL", "REMOTE_MCP_SERVERS_JSON"}
)


class Valves(BaseModel):
    """The pipe's system settings, as Open WebUI's admin form shows them.

    Upper bounds that the original lacked (the three HTTP timeouts and the
    queue deadline) are the engine's own limits, so a value the form accepts
    is one ``engine_config`` accepts.
    """

    model_config = ConfigDict(
        # Open WebUI logs a failed form with str(exc): never print the input.
        hide_input_in_errors=True,
        # Setting API_KEY on an instance encrypts it too.
        validate_assignment=True,
        # Keys stored by an older version of this Function must not break loading.
        extra="ignore",
    )

    # --- connection ------------------------------------------------------
    BASE_URL: str = Field(
        default_factory=_default_base_url,
        description=(
            "OpenRouter API address (http:// or https://); models are listed from "
            "<BASE_URL>/models and chats sent to <BASE_URL>/responses. "
            "Default: env OPENROUTER_API_BASE_URL, else https://openrouter.ai/api/v1."
        ),
        json_schema_extra=_schema_default(_default_base_url),
    )
    API_KEY: str = Field(
        default_factory=_default_api_key,
        repr=False,
        description=(
            "OpenRouter API key. Stored encrypted with WEBUI_SECRET_KEY when that is set. "
            "Default: env OPENROUTER_API_KEY."
        ),
        json_schema_extra={"input": {"type": "password"}},
    )
    HTTP_CONNECT_TIMEOUT_SECONDS: int = Field(
        default=10, ge=1, le=600, description="Seconds to wait for a connection to OpenRouter."
    )
    HTTP_TOTAL_TIMEOUT_SECONDS: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Seconds one attempt may take in total; empty means no total limit.",
    )
    HTTP_SOCK_READ_SECONDS: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="A reply that sends nothing for this many seconds is stopped.",
    )

    # --- models and reasoning -----------------------------------------------
    MODEL_ID: str = Field(
        default="auto",
        description="Comma-separated OpenRouter model ids to offer; 'auto' offers every model.",
    )
    MODEL_CATALOG_REFRESH_SECONDS: int = Field(
        default=3600, ge=60, description="How often, in seconds, the model list is re-read."
    )
    ENABLE_REASONING: bool = Field(default=True, description="Ask models that can reason to do so.")
    REASONING_EFFORT: ReasoningEffort = Field(
        default="medium", description="How much reasoning to ask for."
    )
    REASONING_SUMMARY_MODE: SummaryMode = Field(
        default="auto",
        description="How the reasoning summary is requested; 'disabled' asks for none.",
    )
    ENABLE_WEB_SEARCH_TOOL: bool = Field(
        default=True,
        description=(
            "New meaning: use OpenRouter's web plugin when the chat turns web search on. "
            "It is never attached by default (the original attached it to every request "
            "of web-search-priced models)."
        ),
    )
    WEB_SEARCH_FORCE_MODELS: str = Field(
        default="",
        description="Comma-separated model ids that always get the web plugin.",
    )
    WEB_SEARCH_MAX_RESULTS: int | None = Field(
        default=3,
        ge=1,
        le=10,
        description="Search results the web plugin adds (1-10); empty leaves it to OpenRouter.",
    )
    USE_MODEL_MAX_OUTPUT_TOKENS: bool = Field(
        default=False,
        description="Ask for the model's full output limit from the catalogue (max_output_tokens).",
    )

    # --- reporting ------------------------------------------------------------
    SHOW_FINAL_USAGE_STATUS: bool = Field(
        default=True,
        description="Show a final status with time, tokens and cost when an answer ends.",
    )
    LOG_LEVEL: LogLevel = Field(
        default_factory=_default_log_level,
        description="Lowest level the pipe logs. Default: env GLOBAL_LOG_LEVEL, else INFO.",
        json_schema_extra=_schema_default(_default_log_level),
    )
    SESSION_LOG_MAX_LINES: int = Field(
        default=2000,
        ge=100,
        le=100_000,
        description=(
            "Log lines kept per request; a failed answer carries them as a source so an "
            "administrator can read what happened."
        ),
    )

    # --- admission and limits ---------------------------------------------------
    MAX_CONCURRENT_REQUESTS: int = Field(
        default=200, ge=1, le=2000, description="Chats sent to OpenRouter at the same time."
    )
    REQUEST_QUEUE_MAXSIZE: int = Field(
        default=500,
        ge=0,
        le=100_000,
        description=(
            "Chats that may wait for a free slot; beyond that a chat is told the server is "
            "busy (the original's fixed queue of 500, now a setting)."
        ),
    )
    REQUEST_QUEUE_DEADLINE_MS: int | None = Field(
        default=None,
        ge=1,
        le=3_600_000,
        description="A chat that waited this many ms for a slot is turned away; empty: never.",
    )
    BUSY_RETRY_AFTER_SECONDS: int = Field(
        default=5, ge=0, le=3600, description="Seconds a turned-away chat is told to wait."
    )
    REQUEST_DEADLINE_SECONDS: int = Field(
        default=1800, ge=1, le=86400, description="Longest time one chat request may run."
    )
    UPSTREAM_RETRY_ATTEMPTS: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries of a failed request before any answer text arrived.",
    )
    RETRY_AFTER_CAP_SECONDS: int = Field(
        default=30,
        ge=0,
        le=600,
        description="Longest Retry-After wait; a longer one ends the chat with 'retry in N s'.",
    )

    # --- streaming ---------------------------------------------------------------
    SSE_WORKERS_PER_REQUEST: int = Field(
        default=4, ge=1, le=8, description="Workers that decode the event stream."
    )
    STREAMING_CHUNK_QUEUE_MAXSIZE: int = Field(
        default=100,
        ge=10,
        le=5000,
        description="Raw stream chunks buffered before decoding.",
    )
    STREAMING_EVENT_QUEUE_MAXSIZE: int = Field(
        default=100, ge=10, le=5000, description="Decoded stream events buffered."
    )
    STREAMING_UPDATE_PROFILE: StreamingProfile | None = Field(
        default=None,
        description=(
            "Preset for how often the answer text is updated: quick (10 chars / 100 ms), "
            "normal (20 / 250), slow (80 / 600). When set it replaces the two values below."
        ),
        # A top-level enum makes the 0.12.4 form draw a select for this optional field.
        json_schema_extra={"enum": list(get_args(StreamingProfile))},
    )
    STREAMING_UPDATE_CHAR_LIMIT: int = Field(
        default=20, ge=10, le=500, description="Send answer text in pieces of this many characters."
    )
    STREAMING_IDLE_FLUSH_MS: int = Field(
        default=250,
        ge=0,
        le=2000,
        description="Send waiting text after this many ms of quiet (0: off; else at least 50).",
    )

    # --- breaker and bridge ------------------------------------------------------
    BREAKER_MAX_FAILURES: int = Field(
        default=5, ge=1, le=50, description="Failures within the window that pause a user's chats."
    )
    BREAKER_WINDOW_SECONDS: int = Field(
        default=60, ge=5, le=900, description="Seconds over which those failures are counted."
    )
    ENGINE_BRIDGE: BridgeKind = Field(
        default_factory=_default_bridge,
        description=(
            "How the engine runs inside Open WebUI: thread (in its own thread) or guest "
            "(on Open WebUI's event loop). Default: env ORPIPE_BRIDGE, else thread."
        ),
        json_schema_extra=_schema_default(_default_bridge),
    )
    BRIDGE_WINDOW_BATCHES: int = Field(
        default=8,
        ge=1,
        le=1024,
        description=(
            "Batches one reply may have waiting for Open WebUI before its download pauses."
        ),
    )
    # --- artifacts (reasoning items, tool calls) ---------------------------------------
    PERSIST_REASONING_TOKENS: Retention = Field(
        default="next_reply",
        description=(
            "Keep reasoning items for the next turn: disabled (never stored), next_reply "
            "(deleted after the next successful reply) or conversation (kept until cleanup)."
        ),
    )
    PERSIST_TOOL_RESULTS: bool = Field(
        default=True, description="Keep tool calls and their outputs for later turns."
    )
    ARTIFACT_DATABASE_URL: str = Field(
        default="",
        description=(
            "Where artifacts are stored (SQLAlchemy URL: sqlite:///path or "
            "postgresql+psycopg://...). Empty: Open WebUI's DATABASE_URL, else a SQLite file "
            "in DATA_DIR."
        ),
        json_schema_extra={"input": {"type": "password"}},
    )
    ARTIFACT_ENCRYPTION_KEY: str = Field(
        default="",
        repr=False,
        description=(
            "Encrypts stored artifacts (at least 16 characters). Changing it starts a new, "
            "empty store; old artifacts become unreadable. Empty: stored unencrypted."
        ),
        json_schema_extra={"input": {"type": "password"}},
    )
    ENCRYPT_ALL: bool = Field(
        default=False,
        description="With a key: encrypt every artifact; off: only reasoning items.",
    )
    ENABLE_LZ4_COMPRESSION: bool = Field(
        default=True, description="Compress stored artifacts with LZ4 when that is smaller."
    )
    MIN_COMPRESS_BYTES: int = Field(
        default=0, ge=0, le=16 * 1024 * 1024, description="Do not compress smaller payloads."
    )
    TOOL_OUTPUT_RETENTION_TURNS: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description=(
            "Tool outputs of the last N turns are replayed in full; older ones longer than "
            "800 characters are cut. 0: never cut."
        ),
    )
    ARTIFACT_CLEANUP_DAYS: int = Field(
        default=90, ge=1, le=365, description="Delete stored artifacts older than this."
    )
    ARTIFACT_CLEANUP_INTERVAL_HOURS: float = Field(
        default=1.0, ge=0.5, le=24, description="How often old artifacts are deleted."
    )
    # --- attachments ------------------------------------------------------------------
    MAX_INPUT_IMAGES_PER_REQUEST: int = Field(
        default=5, ge=1, le=20, description="Images sent with one message (the first ones)."
    )
    BASE64_MAX_SIZE_MB: int = Field(
        default=50,
        ge=1,
        le=500,
        description="Largest inline attachment (an image, file or recording sent as base64).",
    )
    IMAGE_INPUT_SELECTION: ImageSelection = Field(
        default="user_then_assistant",
        description=(
            "user_turn_only: only images the user attached to the newest message. "
            "user_then_assistant: when there are none, the images the last answer showed."
        ),
    )

    VIDEO_MAX_SIZE_MB: int = Field(
        default=100, ge=1, le=1000, description="Largest video sent inline (a data: URL)."
    )
    REMOTE_FILE_MAX_SIZE_MB: int = Field(
        default=50,
        ge=1,
        le=500,
        description=(
            "Largest remote file downloaded. Inside Open WebUI with RAG on, its own "
            "file size limit applies when that is smaller (or when this is left at 50)."
        ),
    )
    REMOTE_DOWNLOAD_MAX_RETRIES: int = Field(
        default=3, ge=0, le=10, description="Retries of a failed download (network, 429, 5xx)."
    )
    REMOTE_DOWNLOAD_INITIAL_RETRY_DELAY_SECONDS: int = Field(
        default=5, ge=1, le=60, description="First wait before a retry; it doubles each time."
    )
    REMOTE_DOWNLOAD_MAX_RETRY_TIME_SECONDS: int = Field(
        default=45,
        ge=5,
        le=300,
        description="Time budget of one download, retries and waits included.",
    )
    REMOTE_DOWNLOAD_RETRY_AFTER_CAP_SECONDS: int = Field(
        default=10,
        ge=0,
        le=120,
        description=(
            "Longest Retry-After honoured; a server asking for more ends the download "
            "instead of holding the answer."
        ),
    )
    REMOTE_DOWNLOAD_TIMEOUT_SECONDS: int = Field(
        default=10, ge=1, le=60, description="Connect and read timeout of one download attempt."
    )
    REMOTE_DOWNLOAD_MAX_REDIRECTS: int = Field(
        default=3, ge=0, le=10, description="Redirects followed, each one vetted (0 = refused)."
    )
    REMOTE_DOWNLOADS_PER_REQUEST: int = Field(
        default=3, ge=1, le=16, description="Downloads at once for one request."
    )
    REMOTE_DOWNLOADS_GLOBAL: int = Field(
        default=8, ge=1, le=64, description="Downloads at once in this Open WebUI process."
    )
    ALLOW_INSECURE_HTTP_HOSTS: str = Field(
        default="",
        description=(
            "Comma-separated host names that may be fetched over plain "
            "http; every other download must be https."
        ),
    )
    SAVE_REMOTE_FILE_URLS: bool = Field(
        default=True,
        description="Keep a copy of linked files and images in Open WebUI's storage.",
    )
    SAVE_FILE_DATA_CONTENT: bool = Field(
        default=True,
        description="Keep a copy of inline (base64) files and images in Open WebUI's storage.",
    )
    FALLBACK_STORAGE_EMAIL: str = Field(
        default_factory=_default_storage_email,
        json_schema_extra=_schema_default(_default_storage_email),
        description="Owner of stored files when a request has no user (API automations).",
    )
    FALLBACK_STORAGE_NAME: str = Field(
        default_factory=_default_storage_name,
        json_schema_extra=_schema_default(_default_storage_name),
        description="Display name of that owner.",
    )
    FALLBACK_STORAGE_ROLE: str = Field(
        default_factory=_default_storage_role,
        json_schema_extra=_schema_default(_default_storage_role),
        description=(
            "Role the owner is created with. 'pending' cannot use Open WebUI; admin is refused."
        ),
    )

    # --- tools ------------------------------------------------------------------------
    TOOL_EXECUTION_MODE: ToolMode = Field(
        default="engine",
        description=(
            "engine: the pipe runs the model's tool calls itself, with its limits, timeouts "
            "and breakers. open-webui: the calls go back to Open WebUI, which runs them with "
            "its own permissions and shows them in its UI, then calls the pipe again."
        ),
    )
    ENABLE_STRICT_TOOL_CALLING: bool = Field(
        default=True,
        description="Send tool schemas in strict form (every property listed, none extra).",
    )
    MAX_FUNCTION_CALL_LOOPS: int = Field(
        default=10, ge=1, le=1000, description="Model turns per answer when tools are called."
    )
    MAX_PARALLEL_TOOLS_GLOBAL: int = Field(
        default=200, ge=1, le=2000, description="Tool calls running at once in this process."
    )
    MAX_PARALLEL_TOOLS_PER_REQUEST: int = Field(
        default=5, ge=1, le=50, description="Tool calls running at once for one answer."
    )
    TOOL_BATCH_CAP: int = Field(
        default=4, ge=1, le=32, description="Calls to one tool that may run as one batch."
    )
    TOOL_TIMEOUT_SECONDS: int = Field(
        default=60, ge=1, le=600, description="Time limit of one tool call."
    )
    TOOL_BATCH_TIMEOUT_SECONDS: int = Field(
        default=120,
        ge=1,
        le=7200,
        description="Time limit of a batch (at least TOOL_TIMEOUT_SECONDS).",
    )
    TOOL_IDLE_TIMEOUT_SECONDS: int | None = Field(
        default=None,
        ge=1,
        le=7200,
        description="Stop the calls of a round when none finished for this long; empty: never.",
    )
    REMOTE_MCP_SERVERS_JSON: str | None = Field(
        default=None,
        # Its headers hold bearer tokens: kept out of repr() like API_KEY.
        repr=False,
        description=(
            "Remote MCP servers for the model, as a JSON object or list: server_label, "
            "server_url (http, https, ws, wss), require_approval, allowed_tools, headers."
        ),
    )

    DB_BATCH_SIZE: int = Field(
        default=10, ge=5, le=20, description="Artifacts written per database commit."
    )
    ARTIFACT_DB_THREADS: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Worker threads for artifact database calls (the event loop never blocks).",
    )
    ENABLE_REDIS_CACHE: bool = Field(
        default=True,
        description=(
            "Queue artifact writes in Redis (write-behind) when REDIS_URL is set for "
            "Open WebUI's multi-worker setup."
        ),
    )
    REDIS_CACHE_TTL_SECONDS: int = Field(
        default=600, ge=60, le=3600, description="How long Redis keeps artifacts for replays."
    )
    REDIS_PENDING_WARN_THRESHOLD: int = Field(
        default=100, ge=1, le=10_000, description="Warn when this many writes wait in Redis."
    )
    REDIS_FLUSH_FAILURE_LIMIT: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Failed flushes in a row before writes go straight to the database.",
    )
    ENGINE_OVERRIDES: str = Field(
        default="",
        description=(
            "Advanced: any other engine setting, as name=value pairs separated by commas, "
            "e.g. 'request_window_events=512, shutdown_grace_s=10' (the names of "
            "engine.EngineConfig). Applied after the valves above; a wrong name or value "
            "is reported with the allowed ones."
        ),
    )

    # --- validators ----------------------------------------------------------------

    @field_validator("BASE_URL")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        url = value.strip()
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(
                "must be an http:// or https:// URL, e.g. https://openrouter.ai/api/v1"
            )
        return url

    @field_validator("API_KEY", "ARTIFACT_ENCRYPTION_KEY", "ARTIFACT_DATABASE_URL")
    @classmethod
    def _encrypt_api_key(cls, value: str) -> str:
        return encrypt_secret(value.strip())

    @field_validator("ARTIFACT_ENCRYPTION_KEY", mode="before")
    @classmethod
    def _key_long_enough(cls, value: object) -> object:
        # Before encryption: a stored (encrypted) value was checked when it was saved.
        if isinstance(value, str) and not value.startswith(ENCRYPTED_PREFIX):
            plain = value.strip()
            if plain and len(plain) < 16:
                raise ValueError("must be at least 16 characters; use a long random passphrase")
        return value

    @field_validator(
        "HTTP_TOTAL_TIMEOUT_SECONDS",
        "WEB_SEARCH_MAX_RESULTS",
        "REQUEST_QUEUE_DEADLINE_MS",
        "TOOL_IDLE_TIMEOUT_SECONDS",
        "REMOTE_MCP_SERVERS_JSON",
        mode="before",
    )
    @classmethod
    def _optional_number(cls, value: object) -> object:
        return _blank_to_none(value)

    @field_validator("STREAMING_UPDATE_PROFILE", mode="before")
    @classmethod
    def _optional_profile(cls, value: object) -> object:
        return _lower(_blank_to_none(value))

    @field_validator(
        "REASONING_EFFORT",
        "REASONING_SUMMARY_MODE",
        "ENGINE_BRIDGE",
        "TOOL_EXECUTION_MODE",
        "IMAGE_INPUT_SELECTION",
        mode="before",
    )
    @classmethod
    def _choice_any_case(cls, value: object) -> object:
        return _lower(value)

    @field_validator("REMOTE_MCP_SERVERS_JSON")
    @classmethod
    def _mcp_servers_usable(cls, value: str | None) -> str | None:
        try:
            _parsed_mcp_servers(value)
        except McpConfigError as exc:
            # The message already starts with the valve's name; the form adds it again.
            problem = exc.message.removeprefix("REMOTE_MCP_SERVERS_JSON: ")
            raise ValueError(f"is unusable: {problem}") from None
        return value

    @field_validator("FALLBACK_STORAGE_ROLE", mode="before")
    @classmethod
    def _storage_role_usable(cls, value: object) -> object:
        role = _lower(value)
        if isinstance(role, str) and role.strip() in {"admin", "owner", "system"}:
            # An account created by a pipe must never be able to administer Open WebUI.
            raise ValueError(
                f"is {role.strip()!r}; an automatically created owner may not be an "
                "administrator. Use 'pending' (the default) or 'user'."
            )
        return role.strip() if isinstance(role, str) else role

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return _upper(value)

    # --- derived values -------------------------------------------------------------

    def artifact_key(self) -> str:
        """ARTIFACT_ENCRYPTION_KEY in plain text ("" = artifacts are not encrypted)."""
        return decrypt_secret(self.ARTIFACT_ENCRYPTION_KEY, valve="ARTIFACT_ENCRYPTION_KEY")

    def artifact_database_url(self) -> str:
        """ARTIFACT_DATABASE_URL in plain text ("" = the default)."""
        return decrypt_secret(self.ARTIFACT_DATABASE_URL, valve="ARTIFACT_DATABASE_URL")

    def api_key(self) -> str:
        """The OpenRouter key in plain text ("" when unset); ``ValveError`` if unreadable."""
        return decrypt_secret(self.API_KEY.strip()).strip()

    def model_ids(self) -> tuple[str, ...]:
        """The model ids to offer, in order; ``()`` means every model.

        "auto" anywhere in the list, or an empty list, asks for every model.
        """
        ids = _comma_list(self.MODEL_ID)
        if any(model.lower() == "auto" for model in ids):
            return ()
        return ids

    def mcp_servers(self) -> tuple[dict[str, Any], ...]:
        """REMOTE_MCP_SERVERS_JSON as ``mcp`` tool entries (checked when it was saved).

        Fresh copies every call: a caller may add to an entry without
        changing what the next request gets.
        """
        return copy.deepcopy(_parsed_mcp_servers(self.REMOTE_MCP_SERVERS_JSON))

    def insecure_http_hosts(self) -> frozenset[str]:
        """ALLOW_INSECURE_HTTP_HOSTS, lower-cased: hosts that may be fetched over http."""
        return frozenset(host.lower() for host in _comma_list(self.ALLOW_INSECURE_HTTP_HOSTS))

    def web_search_force_models(self) -> frozenset[str]:
        """Model ids that always get the web plugin."""
        return frozenset(_comma_list(self.WEB_SEARCH_FORCE_MODELS))

    def streaming_limits(self) -> StreamingLimits:
        """The system's text batching: the profile if set, else the two explicit values."""
        if self.STREAMING_UPDATE_PROFILE is not None:
            return STREAMING_PRESETS[self.STREAMING_UPDATE_PROFILE]
        return StreamingLimits(
            self.STREAMING_UPDATE_CHAR_LIMIT, _clamp_idle_flush(self.STREAMING_IDLE_FLUSH_MS)
        )

    def engine_config(self) -> EngineConfig:
        """The engine's configuration from these valves (knobs without a valve keep defaults).

        A value the engine refuses raises ``ValveError`` naming the valve and
        what it allows.
        """
        streaming = self.streaming_limits()
        try:
            config = EngineConfig(
                base_url=self.BASE_URL.rstrip("/"),
                connect_timeout_s=float(self.HTTP_CONNECT_TIMEOUT_SECONDS),
                read_idle_timeout_s=float(self.HTTP_SOCK_READ_SECONDS),
                total_timeout_s=_float_or_none(self.HTTP_TOTAL_TIMEOUT_SECONDS),
                retry_attempts=self.UPSTREAM_RETRY_ATTEMPTS,
                retry_after_cap_s=float(self.RETRY_AFTER_CAP_SECONDS),
                max_concurrent_requests=self.MAX_CONCURRENT_REQUESTS,
                queue_maxsize=self.REQUEST_QUEUE_MAXSIZE,
                queue_deadline_ms=_float_or_none(self.REQUEST_QUEUE_DEADLINE_MS),
                busy_retry_after_s=float(self.BUSY_RETRY_AFTER_SECONDS),
                request_deadline_s=float(self.REQUEST_DEADLINE_SECONDS),
                parser_workers=self.SSE_WORKERS_PER_REQUEST,
                chunk_buffer_size=self.STREAMING_CHUNK_QUEUE_MAXSIZE,
                event_buffer_size=self.STREAMING_EVENT_QUEUE_MAXSIZE,
                update_char_limit=streaming.char_limit,
                idle_flush_ms=float(streaming.idle_flush_ms),
                persist_batch_size=self.DB_BATCH_SIZE,
                artifact_cleanup_days=float(self.ARTIFACT_CLEANUP_DAYS),
                artifact_cleanup_interval_hours=float(self.ARTIFACT_CLEANUP_INTERVAL_HOURS),
                max_function_call_loops=self.MAX_FUNCTION_CALL_LOOPS,
                max_parallel_tools_global=self.MAX_PARALLEL_TOOLS_GLOBAL,
                max_parallel_tools_per_request=self.MAX_PARALLEL_TOOLS_PER_REQUEST,
                tool_batch_cap=self.TOOL_BATCH_CAP,
                tool_timeout_s=float(self.TOOL_TIMEOUT_SECONDS),
                tool_batch_timeout_s=float(self.TOOL_BATCH_TIMEOUT_SECONDS),
                tool_idle_timeout_s=_float_or_none(self.TOOL_IDLE_TIMEOUT_SECONDS),
            )
        except ConfigError as exc:
            raise self._valve_error_for(exc) from exc
        return self._with_engine_overrides(config)

    def _with_engine_overrides(self, config: EngineConfig) -> EngineConfig:
        """ENGINE_OVERRIDES applied on top: every engine knob is reachable from a valve."""
        pairs: dict[str, str] = {}
        for part in self.ENGINE_OVERRIDES.split(","):
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

    def _valve_error_for(self, exc: ConfigError) -> ValveError:
        valve = _VALVE_OF_ENGINE_FIELD.get(exc.field)
        if valve is None:
            # Only a cross-field rule on a knob without a valve gets here.
            return ValveError(
                "Valves",
                f"The valves give the engine a setting it cannot use: allowed is {exc.allowed}.",
                allowed=exc.allowed,
            )
        if self.STREAMING_UPDATE_PROFILE is not None and exc.field in {
            "update_char_limit",
            "idle_flush_ms",
        }:
            valve = "STREAMING_UPDATE_PROFILE"
        value = getattr(self, valve)
        return ValveError(
            valve,
            f"The {valve} valve is {value!r}, which the engine does not accept: allowed is "
            f"{exc.allowed}. Change it in the Function's Valves.",
            value=value,
            allowed=exc.allowed,
        )


def _float_or_none(value: int | None) -> float | None:
    return None if value is None else float(value)


# --- UserValves ------------------------------------------------------------------

OnOff = Literal["inherit", "on", "off"]
_TRUE_WORDS = frozenset({"on", "true", "yes", "1"})
_FALSE_WORDS = frozenset({"off", "false", "no", "0"})


def _inherit_or_whole_number(low: int, high: int) -> Callable[[object], object]:
    """A validator for a number valve that may also say "inherit".

    The type is ``Literal["inherit"] | int``: the 0.12.4 form draws it as a
    text box (no top-level type or enum) and submits the text, so "40" and
    " Inherit " are accepted as well as 40; one clear message covers every
    bad value instead of pydantic's one error per union branch.
    """
    problem = f"must be 'inherit' or a whole number from {low} to {high}"

    def check(value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.lower() == INHERIT:
                return INHERIT
            if not text.isdigit():
                raise ValueError(problem)
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(problem)
        return value

    return check


_check_char_limit = _inherit_or_whole_number(10, 500)
_check_idle_flush = _inherit_or_whole_number(0, 2000)


class UserValves(BaseModel):
    """One user's overrides; every field defaults to "inherit" (the system value).

    "inherit" is explicit rather than "unset" because Open WebUI may store a
    whole form: a stored "inherit" still defers to the system. Text is
    accepted in any case.

    Text batching precedence, per knob: the user's explicit number, then the
    user's profile, then the system (its profile, else its explicit numbers).
    A user profile therefore replaces system numbers too -- the user chose it.
    """

    model_config = ConfigDict(extra="ignore")

    # One flat Literal per choice field: a union of two Literals becomes a JSON
    # schema ``anyOf``, which the 0.12.4 form draws as a text box, not a select.
    LOG_LEVEL: Literal[Inherit, LogLevel] = Field(
        default=INHERIT, description="Lowest level logged for your chats; inherit: the system's."
    )
    SHOW_FINAL_USAGE_STATUS: OnOff = Field(
        default=INHERIT, description="Show time, tokens and cost when an answer ends."
    )
    ENABLE_REASONING: OnOff = Field(
        default=INHERIT, description="Ask models that can reason to do so."
    )
    REASONING_EFFORT: Literal[Inherit, ReasoningEffort] = Field(
        default=INHERIT, description="How much reasoning to ask for."
    )
    REASONING_SUMMARY_MODE: Literal[Inherit, SummaryMode] = Field(
        default=INHERIT, description="How the reasoning summary is requested."
    )
    STREAMING_UPDATE_PROFILE: Literal[Inherit, StreamingProfile] = Field(
        default=INHERIT,
        description=(
            "How often the answer text updates: quick (10 chars / 100 ms), normal (20 / 250), "
            "slow (80 / 600)."
        ),
    )
    PERSIST_REASONING_TOKENS: Literal[Inherit, Retention] = Field(
        default=INHERIT, description="Keep reasoning for the next turn of your chats."
    )
    PERSIST_TOOL_RESULTS: OnOff = Field(
        default=INHERIT, description="Keep tool calls and outputs for later turns."
    )
    STREAMING_UPDATE_CHAR_LIMIT: Inherit | int = Field(
        default=INHERIT,
        description="'inherit' or 10-500: send answer text in pieces of this many characters.",
    )
    STREAMING_IDLE_FLUSH_MS: Inherit | int = Field(
        default=INHERIT,
        description=(
            "'inherit' or 0-2000: send waiting text after this many ms of quiet "
            "(0: off; else at least 50)."
        ),
    )

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        upper = _upper(value)
        return INHERIT if upper == "INHERIT" else upper

    @field_validator(
        "SHOW_FINAL_USAGE_STATUS", "ENABLE_REASONING", "PERSIST_TOOL_RESULTS", mode="before"
    )
    @classmethod
    def _on_off(cls, value: object) -> object:
        # Booleans (and their words) are what the original stored for these fields.
        if isinstance(value, bool):
            return "on" if value else "off"
        word = _lower(value)
        if word in _TRUE_WORDS:
            return "on"
        if word in _FALSE_WORDS:
            return "off"
        return word

    @field_validator(
        "REASONING_EFFORT",
        "REASONING_SUMMARY_MODE",
        "STREAMING_UPDATE_PROFILE",
        "PERSIST_REASONING_TOKENS",
        mode="before",
    )
    @classmethod
    def _choice(cls, value: object) -> object:
        return _lower(value)

    @field_validator("STREAMING_UPDATE_CHAR_LIMIT", mode="before")
    @classmethod
    def _char_limit(cls, value: object) -> object:
        return _check_char_limit(value)

    @field_validator("STREAMING_IDLE_FLUSH_MS", mode="before")
    @classmethod
    def _idle_flush(cls, value: object) -> object:
        return _check_idle_flush(value)


# --- the merge ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveSettings:
    """What one request uses, after a user's overrides are applied."""

    log_level: LogLevel
    show_final_status: bool
    enable_reasoning: bool
    reasoning_effort: ReasoningEffort
    reasoning_summary: SummaryMode
    update_char_limit: int
    idle_flush_ms: int
    persist_reasoning: Retention = "next_reply"
    persist_tool_results: bool = True
    #: Readable notes about user values that were ignored (the system's were used).
    problems: tuple[str, ...] = ()


def effective_settings(
    valves: Valves, user: UserValves | Mapping[str, object] | None
) -> EffectiveSettings:
    """Merge the system valves with one user's overrides; never raises for bad user values.

    ``user`` is what Open WebUI put at ``__user__["valves"]`` (a ``UserValves``),
    a plain dict (older Open WebUI, API callers) or ``None``. Invalid entries
    of a dict are dropped one by one -- the rest still apply -- and each is
    described in ``problems``.
    """
    overrides, problems = _user_overrides(user)
    streaming = _user_streaming(valves.streaming_limits(), overrides)
    return EffectiveSettings(
        log_level=valves.LOG_LEVEL if overrides.LOG_LEVEL == INHERIT else overrides.LOG_LEVEL,
        show_final_status=_on_off(
            overrides.SHOW_FINAL_USAGE_STATUS, valves.SHOW_FINAL_USAGE_STATUS
        ),
        enable_reasoning=_on_off(overrides.ENABLE_REASONING, valves.ENABLE_REASONING),
        reasoning_effort=(
            valves.REASONING_EFFORT
            if overrides.REASONING_EFFORT == INHERIT
            else overrides.REASONING_EFFORT
        ),
        reasoning_summary=(
            valves.REASONING_SUMMARY_MODE
            if overrides.REASONING_SUMMARY_MODE == INHERIT
            else overrides.REASONING_SUMMARY_MODE
        ),
        update_char_limit=streaming.char_limit,
        idle_flush_ms=streaming.idle_flush_ms,
        persist_reasoning=(
            valves.PERSIST_REASONING_TOKENS
            if overrides.PERSIST_REASONING_TOKENS == INHERIT
            else overrides.PERSIST_REASONING_TOKENS
        ),
        persist_tool_results=_on_off(overrides.PERSIST_TOOL_RESULTS, valves.PERSIST_TOOL_RESULTS),
        problems=problems,
    )


def _on_off(choice: OnOff, system: bool) -> bool:
    return system if choice == INHERIT else choice == "on"


def _user_streaming(system: StreamingLimits, user: UserValves) -> StreamingLimits:
    base = system
    if user.STREAMING_UPDATE_PROFILE != INHERIT:
        base = STREAMING_PRESETS[user.STREAMING_UPDATE_PROFILE]
    chars, idle = base
    if user.STREAMING_UPDATE_CHAR_LIMIT != INHERIT:
        chars = int(user.STREAMING_UPDATE_CHAR_LIMIT)
    if user.STREAMING_IDLE_FLUSH_MS != INHERIT:
        idle = int(user.STREAMING_IDLE_FLUSH_MS)
    return StreamingLimits(chars, _clamp_idle_flush(idle))


def _user_overrides(user: object) -> tuple[UserValves, tuple[str, ...]]:
    # ``object``: whatever a caller passes, a request must not fail on it.
    if user is None:
        return UserValves(), ()
    if isinstance(user, UserValves):
        return user, ()
    if not isinstance(user, Mapping):
        kind = type(user).__name__
        return UserValves(), (f"User settings of type {kind} were ignored.",)
    # As Open WebUI does before validating: a None value means "not given".
    data = {str(key): value for key, value in user.items() if value is not None}
    try:
        return UserValves.model_validate(data), ()
    except ValidationError as exc:
        problems = tuple(
            f"{line}; the system setting is used instead."
            for line in _describe_lines(exc, "UserValves")
        )
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        kept = {key: value for key, value in data.items() if key not in bad}
    try:
        return UserValves.model_validate(kept), problems
    except ValidationError:
        return UserValves(), problems


# --- readable validation errors ----------------------------------------------------


def describe_validation_error(exc: ValidationError, model_name: str) -> str:
    """One readable line per rejected setting, e.g.
    ``Valves: MAX_CONCURRENT_REQUESTS must be at most 2000 (got 5000)``.

    The rejected value is shown except for secrets (``_SECRET_VALVES``).
    """
    return "\n".join(_describe_lines(exc, model_name))


def _describe_lines(exc: ValidationError, model_name: str) -> list[str]:
    return [_describe_one(error, model_name) for error in exc.errors()]


def _describe_one(error: ErrorDetails, model_name: str) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(settings)"
    problem = _problem_text(error)
    line = f"{model_name}: {field} {problem}"
    if field in _SECRET_VALVES or error["type"] == "missing" or "input" not in error:
        return line
    return f"{line} (got {_short_repr(error['input'])})"


def _problem_text(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    kind = error["type"]
    bounds = {
        "greater_than_equal": ("must be at least", "ge"),
        "less_than_equal": ("must be at most", "le"),
        "greater_than": ("must be more than", "gt"),
        "less_than": ("must be less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{words} {ctx.get(key)}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return "must be a whole number"
    if kind in {"bool_parsing", "bool_type"}:
        return "must be on or off (true or false)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in {"string_type", "string_sub_type"}:
        return "must be text"
    if kind == "value_error" and "error" in ctx:
        # Our validators phrase their messages to follow the valve's name.
        return str(ctx["error"])
    if kind == "missing":
        return "is required"
    return f"is invalid: {error['msg']}"


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
