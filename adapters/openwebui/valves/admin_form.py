"""The admin form: ``Valves``, the Function's system settings as Open WebUI shows them.

The original pipe's names and defaults where the engine still has the knob;
upper bounds are the engine's own limits, so a value the form accepts is one
``engine_config()`` accepts. Secret valves are stored encrypted
(``stored_secrets``) and read in plain text only through ``api_key()``,
``artifact_key()``, ``artifact_database_url()`` and ``telemetry_token()``. How Open WebUI 0.12.4
validates, stores and draws this form is in docs/open-webui-valves.md.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from orpipe.adapters.bridge import BridgeMode
from orpipe.adapters.openwebui.mcp_config import McpConfigError, parse_mcp_servers
from orpipe.adapters.openwebui.valves.choices import (
    STREAMING_PRESETS,
    ImageSelection,
    LogLevel,
    ReasoningEffort,
    Retention,
    StreamingLimits,
    StreamingProfile,
    SummaryMode,
    ToolMode,
    clamp_idle_flush,
)
from orpipe.adapters.openwebui.valves.engine_settings import engine_config_for
from orpipe.adapters.openwebui.valves.env_defaults import (
    default_api_key,
    default_base_url,
    default_bridge,
    default_log_level,
    default_storage_email,
    default_storage_name,
    default_storage_role,
)
from orpipe.adapters.openwebui.valves.fields import (
    ANY_CASE,
    BLANK_IS_UNSET,
    UPPER_CASE,
    bounded,
    from_environment,
    lower,
)
from orpipe.adapters.openwebui.valves.stored_secrets import (
    ENCRYPTED_PREFIX,
    decrypt_secret,
    encrypt_secret,
)
from orpipe.engine.config import EngineConfig

__all__ = ["Valves"]


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
    BASE_URL: str = from_environment(
        default_base_url,
        (
            "OpenRouter API address (http:// or https://); models are listed from "
            "<BASE_URL>/models and chats sent to <BASE_URL>/responses. "
            "Default: env OPENROUTER_API_BASE_URL, else https://openrouter.ai/api/v1."
        ),
    )
    API_KEY: str = Field(
        default_factory=default_api_key,
        repr=False,
        description=(
            "OpenRouter API key. Stored encrypted with WEBUI_SECRET_KEY when that is set. "
            "Default: env OPENROUTER_API_KEY."
        ),
        json_schema_extra={"input": {"type": "password"}},
    )
    HTTP_CONNECT_TIMEOUT_SECONDS: int = bounded(
        10, (1, 600), "Seconds to wait for a connection to OpenRouter."
    )
    HTTP_TOTAL_TIMEOUT_SECONDS: Annotated[int | None, BLANK_IS_UNSET] = bounded(
        None, (1, 86400), "Seconds one attempt may take in total; empty means no total limit."
    )
    HTTP_SOCK_READ_SECONDS: int = bounded(
        300, (1, 3600), "A reply that sends nothing for this many seconds is stopped."
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
    REASONING_EFFORT: Annotated[ReasoningEffort, ANY_CASE] = Field(
        default="medium", description="How much reasoning to ask for."
    )
    REASONING_SUMMARY_MODE: Annotated[SummaryMode, ANY_CASE] = Field(
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
        default="", description="Comma-separated model ids that always get the web plugin."
    )
    WEB_SEARCH_MAX_RESULTS: Annotated[int | None, BLANK_IS_UNSET] = bounded(
        3, (1, 10), "Search results the web plugin adds (1-10); empty leaves it to OpenRouter."
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
    LOG_LEVEL: Annotated[LogLevel, UPPER_CASE] = from_environment(
        default_log_level, "Lowest level the pipe logs. Default: env GLOBAL_LOG_LEVEL, else INFO."
    )
    SESSION_LOG_MAX_LINES: int = bounded(
        2000,
        (100, 100_000),
        (
            "Log lines kept per request; a failed answer carries them as a source so an "
            "administrator can read what happened."
        ),
    )

    # --- admission and limits ---------------------------------------------------
    MAX_CONCURRENT_REQUESTS: int = bounded(
        200, (1, 2000), "Chats sent to OpenRouter at the same time."
    )
    REQUEST_QUEUE_MAXSIZE: int = bounded(
        500,
        (0, 100_000),
        (
            "Chats that may wait for a free slot; beyond that a chat is told the server is "
            "busy (the original's fixed queue of 500, now a setting)."
        ),
    )
    REQUEST_QUEUE_DEADLINE_MS: Annotated[int | None, BLANK_IS_UNSET] = bounded(
        None,
        (1, 3_600_000),
        "A chat that waited this many ms for a slot is turned away; empty: never.",
    )
    BUSY_RETRY_AFTER_SECONDS: int = bounded(
        5, (0, 3600), "Seconds a turned-away chat is told to wait."
    )
    REQUEST_DEADLINE_SECONDS: int = bounded(
        1800, (1, 86400), "Longest time one chat request may run."
    )
    UPSTREAM_RETRY_ATTEMPTS: int = bounded(
        3, (0, 10), "Retries of a failed request before any answer text arrived."
    )
    RETRY_AFTER_CAP_SECONDS: int = bounded(
        30, (0, 600), "Longest Retry-After wait; a longer one ends the chat with 'retry in N s'."
    )

    # --- streaming ---------------------------------------------------------------
    SSE_WORKERS_PER_REQUEST: int = bounded(4, (1, 8), "Workers that decode the event stream.")
    STREAMING_CHUNK_QUEUE_MAXSIZE: int = bounded(
        100, (10, 5000), "Raw stream chunks buffered before decoding."
    )
    STREAMING_EVENT_QUEUE_MAXSIZE: int = bounded(100, (10, 5000), "Decoded stream events buffered.")
    STREAMING_UPDATE_PROFILE: Annotated[StreamingProfile | None, ANY_CASE, BLANK_IS_UNSET] = Field(
        default=None,
        description=(
            "Preset for how often the answer text is updated: quick (10 chars / 100 ms), "
            "normal (20 / 250), slow (80 / 600). When set it replaces the two values below."
        ),
        # A top-level enum makes the 0.12.4 form draw a select for this optional field.
        json_schema_extra={"enum": list(get_args(StreamingProfile))},
    )
    STREAMING_UPDATE_CHAR_LIMIT: int = bounded(
        20, (10, 500), "Send answer text in pieces of this many characters."
    )
    STREAMING_IDLE_FLUSH_MS: int = bounded(
        250, (0, 2000), "Send waiting text after this many ms of quiet (0: off; else at least 50)."
    )

    # --- breaker and bridge ------------------------------------------------------
    BREAKER_MAX_FAILURES: int = bounded(
        5, (1, 50), "Failures within the window that pause a user's chats."
    )
    BREAKER_WINDOW_SECONDS: int = bounded(
        60, (5, 900), "Seconds over which those failures are counted."
    )
    ENGINE_BRIDGE: Annotated[BridgeMode, ANY_CASE] = from_environment(
        default_bridge,
        (
            "How the engine runs inside Open WebUI: thread (in its own thread) or guest "
            "(on Open WebUI's event loop). Default: env ORPIPE_BRIDGE, else thread."
        ),
    )
    BRIDGE_WINDOW_BATCHES: int = bounded(
        8,
        (1, 1024),
        "Batches one reply may have waiting for Open WebUI before its download pauses.",
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
        default=False, description="With a key: encrypt every artifact; off: only reasoning items."
    )
    ENABLE_LZ4_COMPRESSION: bool = Field(
        default=True, description="Compress stored artifacts with LZ4 when that is smaller."
    )
    MIN_COMPRESS_BYTES: int = bounded(0, (0, 16 * 1024 * 1024), "Do not compress smaller payloads.")
    TOOL_OUTPUT_RETENTION_TURNS: int = bounded(
        10,
        (0, 10_000),
        (
            "Tool outputs of the last N turns are replayed in full; older ones longer than "
            "800 characters are cut. 0: never cut."
        ),
    )
    ARTIFACT_CLEANUP_DAYS: int = bounded(90, (1, 365), "Delete stored artifacts older than this.")
    ARTIFACT_CLEANUP_INTERVAL_HOURS: float = bounded(
        1.0, (0.5, 24), "How often old artifacts are deleted."
    )
    # --- attachments ------------------------------------------------------------------
    MAX_INPUT_IMAGES_PER_REQUEST: int = bounded(
        5, (1, 20), "Images sent with one message (the first ones)."
    )
    BASE64_MAX_SIZE_MB: int = bounded(
        50, (1, 500), "Largest inline attachment (an image, file or recording sent as base64)."
    )
    IMAGE_INPUT_SELECTION: Annotated[ImageSelection, ANY_CASE] = Field(
        default="user_then_assistant",
        description=(
            "user_turn_only: only images the user attached to the newest message. "
            "user_then_assistant: when there are none, the images the last answer showed."
        ),
    )

    VIDEO_MAX_SIZE_MB: int = bounded(100, (1, 1000), "Largest video sent inline (a data: URL).")
    REMOTE_FILE_MAX_SIZE_MB: int = bounded(
        50,
        (1, 500),
        (
            "Largest remote file downloaded. Inside Open WebUI with RAG on, its own "
            "file size limit applies when that is smaller (or when this is left at 50)."
        ),
    )
    REMOTE_DOWNLOAD_MAX_RETRIES: int = bounded(
        3, (0, 10), "Retries of a failed download (network, 429, 5xx)."
    )
    REMOTE_DOWNLOAD_INITIAL_RETRY_DELAY_SECONDS: int = bounded(
        5, (1, 60), "First wait before a retry; it doubles each time."
    )
    REMOTE_DOWNLOAD_MAX_RETRY_TIME_SECONDS: int = bounded(
        45, (5, 300), "Time budget of one download, retries and waits included."
    )
    REMOTE_DOWNLOAD_RETRY_AFTER_CAP_SECONDS: int = bounded(
        10,
        (0, 120),
        (
            "Longest Retry-After honoured; a server asking for more ends the download "
            "instead of holding the answer."
        ),
    )
    REMOTE_DOWNLOAD_TIMEOUT_SECONDS: int = bounded(
        10, (1, 60), "Connect and read timeout of one download attempt."
    )
    REMOTE_DOWNLOAD_MAX_REDIRECTS: int = bounded(
        3, (0, 10), "Redirects followed, each one vetted (0 = refused)."
    )
    REMOTE_DOWNLOADS_PER_REQUEST: int = bounded(3, (1, 16), "Downloads at once for one request.")
    REMOTE_DOWNLOADS_GLOBAL: int = bounded(
        8, (1, 64), "Downloads at once in this Open WebUI process."
    )
    ALLOW_INSECURE_HTTP_HOSTS: str = Field(
        default="",
        description=(
            "Comma-separated host names that may be fetched over plain "
            "http; every other download must be https."
        ),
    )
    SAVE_REMOTE_FILE_URLS: bool = Field(
        default=True, description="Keep a copy of linked files and images in Open WebUI's storage."
    )
    SAVE_FILE_DATA_CONTENT: bool = Field(
        default=True,
        description="Keep a copy of inline (base64) files and images in Open WebUI's storage.",
    )
    FALLBACK_STORAGE_EMAIL: str = from_environment(
        default_storage_email, "Owner of stored files when a request has no user (API automations)."
    )
    FALLBACK_STORAGE_NAME: str = from_environment(
        default_storage_name, "Display name of that owner."
    )
    FALLBACK_STORAGE_ROLE: str = from_environment(
        default_storage_role,
        "Role the owner is created with. 'pending' cannot use Open WebUI; admin is refused.",
    )

    # --- tools ------------------------------------------------------------------------
    TOOL_EXECUTION_MODE: Annotated[ToolMode, ANY_CASE] = Field(
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
    MAX_FUNCTION_CALL_LOOPS: int = bounded(
        10, (1, 1000), "Model turns per answer when tools are called."
    )
    MAX_PARALLEL_TOOLS_GLOBAL: int = bounded(
        200, (1, 2000), "Tool calls running at once in this process."
    )
    MAX_PARALLEL_TOOLS_PER_REQUEST: int = bounded(
        5, (1, 50), "Tool calls running at once for one answer."
    )
    TOOL_BATCH_CAP: int = bounded(4, (1, 32), "Calls to one tool that may run as one batch.")
    TOOL_TIMEOUT_SECONDS: int = bounded(60, (1, 600), "Time limit of one tool call.")
    TOOL_BATCH_TIMEOUT_SECONDS: int = bounded(
        120, (1, 7200), "Time limit of a batch (at least TOOL_TIMEOUT_SECONDS)."
    )
    TOOL_IDLE_TIMEOUT_SECONDS: Annotated[int | None, BLANK_IS_UNSET] = bounded(
        None, (1, 7200), "Stop the calls of a round when none finished for this long; empty: never."
    )
    REMOTE_MCP_SERVERS_JSON: Annotated[str | None, BLANK_IS_UNSET] = Field(
        default=None,
        # Its headers hold bearer tokens: kept out of repr() like API_KEY.
        repr=False,
        description=(
            "Remote MCP servers for the model, as a JSON object or list: server_label, "
            "server_url (http, https, ws, wss), require_approval, allowed_tools, headers."
        ),
    )

    DB_BATCH_SIZE: int = bounded(10, (5, 20), "Artifacts written per database commit.")
    ARTIFACT_DB_THREADS: int = bounded(
        4, (1, 64), "Worker threads for artifact database calls (the event loop never blocks)."
    )
    ENABLE_REDIS_CACHE: bool = Field(
        default=True,
        description=(
            "Queue artifact writes in Redis (write-behind) when REDIS_URL is set for "
            "Open WebUI's multi-worker setup."
        ),
    )
    REDIS_CACHE_TTL_SECONDS: int = bounded(
        600, (60, 3600), "How long Redis keeps artifacts for replays."
    )
    REDIS_PENDING_WARN_THRESHOLD: int = bounded(
        100, (1, 10_000), "Warn when this many writes wait in Redis."
    )
    REDIS_FLUSH_FAILURE_LIMIT: int = bounded(
        5, (1, 50), "Failed flushes in a row before writes go straight to the database."
    )
    TELEMETRY_ENABLED: bool = Field(
        default=False,
        description=(
            "Serve live metrics from each Open WebUI worker: Prometheus text at /metrics and "
            "a dashboard at / on TELEMETRY_HOST:TELEMETRY_PORT. With REDIS_URL set, every "
            "worker's figures appear on any worker's page."
        ),
    )
    TELEMETRY_HOST: str = Field(
        default="127.0.0.1",
        description=(
            "Address the metrics server listens on. 127.0.0.1 (default): only this machine; "
            "any other address (e.g. 0.0.0.0 for a Prometheus elsewhere) needs TELEMETRY_TOKEN."
        ),
    )
    TELEMETRY_PORT: int = bounded(
        9464, (1, 65534), "Port of /metrics and the dashboard; its live feed uses the next port."
    )
    TELEMETRY_TOKEN: str = Field(
        default="",
        repr=False,
        validate_default=True,
        description=(
            "Bearer token every metrics request must send (Authorization: Bearer <token>); "
            "required when TELEMETRY_HOST is not a loopback address. Stored encrypted."
        ),
    )
    GLOBAL_ADMISSION: bool = Field(
        default=True,
        description=(
            "When REDIS_URL is set (several Open WebUI workers or replicas sharing Redis): "
            "MAX_CONCURRENT_REQUESTS and REQUEST_QUEUE_MAXSIZE hold for all workers together, "
            "and waiting requests are served in arrival order across them. Off, or without "
            "REDIS_URL: each worker applies the limits on its own."
        ),
    )
    ADMISSION_LEASE_SECONDS: int = bounded(
        10, (1, 10), "How soon the requests of a worker that died stop counting (shared limits)."
    )
    ADMISSION_WORKERS: int = bounded(
        0,
        (0, 1024),
        "While Redis is unreachable, each worker admits MAX_CONCURRENT_REQUESTS divided by this "
        "many workers; 0: by the number of workers last seen alive.",
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

    @field_validator("TELEMETRY_TOKEN", mode="before")
    @classmethod
    def _token_where_needed(cls, value: object, info: ValidationInfo) -> object:
        # Before encryption; a stored (encrypted) token was checked when it was saved.
        if not isinstance(value, str) or value.startswith(ENCRYPTED_PREFIX):
            return value
        plain = value.strip()
        if plain and len(plain) < 16:
            raise ValueError("must be at least 16 characters; use a long random string")
        host = str(info.data.get("TELEMETRY_HOST", "127.0.0.1"))
        if not plain and info.data.get("TELEMETRY_ENABLED") and not _is_loopback(host):
            raise ValueError(
                f"is required because TELEMETRY_HOST ({host}) is reachable from other "
                "machines: set a long random token (Prometheus sends it as "
                "'Authorization: Bearer <token>'), or set TELEMETRY_HOST to 127.0.0.1"
            )
        return value

    @field_validator(
        "API_KEY", "ARTIFACT_ENCRYPTION_KEY", "ARTIFACT_DATABASE_URL", "TELEMETRY_TOKEN"
    )
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
        role = lower(value)
        if isinstance(role, str) and role.strip() in {"admin", "owner", "system"}:
            # An account created by a pipe must never be able to administer Open WebUI.
            raise ValueError(
                f"is {role.strip()!r}; an automatically created owner may not be an "
                "administrator. Use 'pending' (the default) or 'user'."
            )
        return role.strip() if isinstance(role, str) else role

    # --- derived values -------------------------------------------------------------

    def artifact_key(self) -> str:
        """ARTIFACT_ENCRYPTION_KEY in plain text ("" = artifacts are not encrypted)."""
        return decrypt_secret(self.ARTIFACT_ENCRYPTION_KEY, valve="ARTIFACT_ENCRYPTION_KEY")

    def artifact_database_url(self) -> str:
        """ARTIFACT_DATABASE_URL in plain text ("" = the default)."""
        return decrypt_secret(self.ARTIFACT_DATABASE_URL, valve="ARTIFACT_DATABASE_URL")

    def telemetry_token(self) -> str:
        """TELEMETRY_TOKEN in plain text ("" = no token asked for)."""
        return decrypt_secret(self.TELEMETRY_TOKEN, valve="TELEMETRY_TOKEN")

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
            self.STREAMING_UPDATE_CHAR_LIMIT, clamp_idle_flush(self.STREAMING_IDLE_FLUSH_MS)
        )

    def engine_config(self) -> EngineConfig:
        """The engine's configuration from these valves (``engine_settings.engine_config_for``).

        A value the engine refuses raises ``ValveError`` naming the valve and
        what it allows.
        """
        return engine_config_for(self)


def _is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (``localhost`` or a loopback address)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything
