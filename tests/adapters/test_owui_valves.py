"""The Open WebUI settings forms: defaults, bounds, the encrypted API key, the merge.

Plain synchronous tests. ``owui_form_save`` and ``owui_dispatch`` reproduce
what Open WebUI 0.12.4 does with the classes (``routers/functions.py``
``update_function_valves_by_id`` and ``functions.py``
``get_function_module_by_id``), so the key's round trip is tested the way it
happens in production.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from orpipe.adapters.openwebui import valves as owui_valves
from orpipe.adapters.openwebui.valves import (
    ENCRYPTED_PREFIX,
    STREAMING_PRESETS,
    EffectiveSettings,
    UserValves,
    ValveError,
    Valves,
    decrypt_secret,
    describe_validation_error,
    effective_settings,
    encrypt_secret,
    engine_settings,
    secret_storage_warning,
)
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import ConfigError

PLAIN_KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"
ADVICE = (
    "The API_KEY valve was encrypted with a different WEBUI_SECRET_KEY and cannot be read. "
    "Paste the OpenRouter key into the API_KEY valve again."
)
ENV_NAMES = (
    "WEBUI_SECRET_KEY",
    "WEBUI_JWT_SECRET_KEY",
    "OPENROUTER_API_BASE_URL",
    "OPENROUTER_API_KEY",
    "GLOBAL_LOG_LEVEL",
    "ORPIPE_BRIDGE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without any environment variable the module reads."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "a-long-random-webui-secret-for-tests"
    monkeypatch.setenv("WEBUI_SECRET_KEY", value)
    return value


def make_valves(**values: Any) -> Valves:
    """Valves from loosely typed values, as a form or a stored dict gives them."""
    return Valves.model_validate(values)


def make_user(**values: Any) -> UserValves:
    return UserValves.model_validate(values)


def owui_form_save(form: dict[str, Any]) -> dict[str, Any]:
    """What Open WebUI stores when the admin saves the valves form."""
    valves = Valves(**{k: v for k, v in form.items() if v is not None})
    return valves.model_dump(exclude_unset=True)


def owui_dispatch(stored: dict[str, Any]) -> Valves:
    """The ``Valves`` Open WebUI builds for every request."""
    return Valves(**{k: v for k, v in stored.items() if v is not None})


def problems_of(exc: pytest.ExceptionInfo[ValidationError], model: str = "Valves") -> str:
    return describe_validation_error(exc.value, model)


# --- defaults --------------------------------------------------------------------

ORIGINAL_DEFAULTS: dict[str, object] = {
    "BASE_URL": "https://openrouter.ai/api/v1",
    "API_KEY": "",
    "HTTP_CONNECT_TIMEOUT_SECONDS": 10,
    "HTTP_TOTAL_TIMEOUT_SECONDS": None,
    "HTTP_SOCK_READ_SECONDS": 300,
    "MODEL_ID": "auto",
    "MODEL_CATALOG_REFRESH_SECONDS": 3600,
    "ENABLE_REASONING": True,
    "REASONING_EFFORT": "medium",
    "REASONING_SUMMARY_MODE": "auto",
    "ENABLE_WEB_SEARCH_TOOL": True,
    "WEB_SEARCH_FORCE_MODELS": "",
    "WEB_SEARCH_MAX_RESULTS": 3,
    "USE_MODEL_MAX_OUTPUT_TOKENS": False,
    "SHOW_FINAL_USAGE_STATUS": True,
    "LOG_LEVEL": "INFO",
    "MAX_CONCURRENT_REQUESTS": 200,
    "REQUEST_QUEUE_MAXSIZE": 500,
    "REQUEST_QUEUE_DEADLINE_MS": None,
    "BUSY_RETRY_AFTER_SECONDS": 5,
    "REQUEST_DEADLINE_SECONDS": 1800,
    "UPSTREAM_RETRY_ATTEMPTS": 3,
    "RETRY_AFTER_CAP_SECONDS": 30,
    "SSE_WORKERS_PER_REQUEST": 4,
    "STREAMING_CHUNK_QUEUE_MAXSIZE": 100,
    "STREAMING_EVENT_QUEUE_MAXSIZE": 100,
    "STREAMING_UPDATE_PROFILE": None,
    "STREAMING_UPDATE_CHAR_LIMIT": 20,
    "STREAMING_IDLE_FLUSH_MS": 250,
    "BREAKER_MAX_FAILURES": 5,
    "BREAKER_WINDOW_SECONDS": 60,
    "ENGINE_BRIDGE": "thread",
    "BRIDGE_WINDOW_BATCHES": 8,
    "ENGINE_OVERRIDES": "",
    "PERSIST_REASONING_TOKENS": "next_reply",
    "PERSIST_TOOL_RESULTS": True,
    "ARTIFACT_DATABASE_URL": "",
    "ARTIFACT_ENCRYPTION_KEY": "",
    "ENCRYPT_ALL": False,
    "ENABLE_LZ4_COMPRESSION": True,
    "MIN_COMPRESS_BYTES": 0,
    "TOOL_OUTPUT_RETENTION_TURNS": 10,
    "ARTIFACT_CLEANUP_DAYS": 90,
    "ARTIFACT_CLEANUP_INTERVAL_HOURS": 1.0,
    "DB_BATCH_SIZE": 10,
    "ARTIFACT_DB_THREADS": 4,
    "ENABLE_REDIS_CACHE": True,
    "REDIS_CACHE_TTL_SECONDS": 600,
    "REDIS_PENDING_WARN_THRESHOLD": 100,
    "REDIS_FLUSH_FAILURE_LIMIT": 5,
    "TELEMETRY_ENABLED": False,
    "TELEMETRY_HOST": "127.0.0.1",
    "TELEMETRY_PORT": 9464,
    "TELEMETRY_TOKEN": "",
    # New here (issue 16): limits shared by every worker through Redis.
    "GLOBAL_ADMISSION": True,
    "ADMISSION_LEASE_SECONDS": 10,
    "ADMISSION_WORKERS": 0,
    "TOOL_EXECUTION_MODE": "engine",
    "ENABLE_STRICT_TOOL_CALLING": True,
    "MAX_FUNCTION_CALL_LOOPS": 10,
    "MAX_PARALLEL_TOOLS_GLOBAL": 200,
    "MAX_PARALLEL_TOOLS_PER_REQUEST": 5,
    "TOOL_BATCH_CAP": 4,
    "TOOL_TIMEOUT_SECONDS": 60,
    "TOOL_BATCH_TIMEOUT_SECONDS": 120,
    "TOOL_IDLE_TIMEOUT_SECONDS": None,
    "REMOTE_MCP_SERVERS_JSON": None,
    "MAX_INPUT_IMAGES_PER_REQUEST": 5,
    "IMAGE_INPUT_SELECTION": "user_then_assistant",
    "BASE64_MAX_SIZE_MB": 50,
    "VIDEO_MAX_SIZE_MB": 100,
    "REMOTE_FILE_MAX_SIZE_MB": 50,
    "REMOTE_DOWNLOAD_MAX_RETRIES": 3,
    "REMOTE_DOWNLOAD_INITIAL_RETRY_DELAY_SECONDS": 5,
    "REMOTE_DOWNLOAD_MAX_RETRY_TIME_SECONDS": 45,
    "REMOTE_DOWNLOAD_TIMEOUT_SECONDS": 10,  # the original used HTTP_CONNECT_TIMEOUT_SECONDS
    "SAVE_REMOTE_FILE_URLS": True,  # the original's newest default
    "SAVE_FILE_DATA_CONTENT": True,
    "FALLBACK_STORAGE_EMAIL": "openrouter-pipe@system.local",
    "FALLBACK_STORAGE_NAME": "OpenRouter Pipe Storage",
    "FALLBACK_STORAGE_ROLE": "pending",
    # New here: bounds the original did not have (seed §K.2 item 26).
    "REMOTE_DOWNLOAD_RETRY_AFTER_CAP_SECONDS": 10,
    "REMOTE_DOWNLOAD_MAX_REDIRECTS": 3,
    "REMOTE_DOWNLOADS_PER_REQUEST": 3,
    "REMOTE_DOWNLOADS_GLOBAL": 8,
    "ALLOW_INSECURE_HTTP_HOSTS": "",
    "SESSION_LOG_MAX_LINES": 2000,  # the original's fixed ring size
}


@pytest.mark.parametrize(("name", "expected"), sorted(ORIGINAL_DEFAULTS.items()))
def test_default_equals_the_original(name: str, expected: object) -> None:
    assert getattr(make_valves(), name) == expected


def test_the_defaults_table_lists_every_valve() -> None:
    assert set(Valves.model_fields) == set(ORIGINAL_DEFAULTS)


@pytest.mark.parametrize(
    ("env", "value", "valve", "expected"),
    [
        (
            "OPENROUTER_API_BASE_URL",
            "http://mock:8080/api/v1",
            "BASE_URL",
            "http://mock:8080/api/v1",
        ),
        ("OPENROUTER_API_KEY", "  sk-env  ", "API_KEY", "sk-env"),
        ("GLOBAL_LOG_LEVEL", "debug", "LOG_LEVEL", "DEBUG"),
        ("GLOBAL_LOG_LEVEL", "chatty", "LOG_LEVEL", "INFO"),
        ("ORPIPE_BRIDGE", "Guest", "ENGINE_BRIDGE", "guest"),
        ("ORPIPE_BRIDGE", "fibre", "ENGINE_BRIDGE", "thread"),
        (
            "OPENROUTER_STORAGE_USER_EMAIL",
            " bot@example.org ",
            "FALLBACK_STORAGE_EMAIL",
            "bot@example.org",
        ),
        ("OPENROUTER_STORAGE_USER_NAME", "Automations", "FALLBACK_STORAGE_NAME", "Automations"),
        ("OPENROUTER_STORAGE_USER_ROLE", "User", "FALLBACK_STORAGE_ROLE", "user"),
    ],
)
def test_defaults_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, valve: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    assert getattr(make_valves(), valve) == expected


# --- bounds -------------------------------------------------------------------------

BOUNDS: list[tuple[str, int, int | None]] = [
    ("HTTP_CONNECT_TIMEOUT_SECONDS", 1, 600),
    ("HTTP_TOTAL_TIMEOUT_SECONDS", 1, 86400),
    ("HTTP_SOCK_READ_SECONDS", 1, 3600),
    ("MODEL_CATALOG_REFRESH_SECONDS", 60, None),
    ("WEB_SEARCH_MAX_RESULTS", 1, 10),
    ("MAX_CONCURRENT_REQUESTS", 1, 2000),
    ("REQUEST_QUEUE_MAXSIZE", 0, 100_000),
    ("REQUEST_QUEUE_DEADLINE_MS", 1, 3_600_000),
    ("BUSY_RETRY_AFTER_SECONDS", 0, 3600),
    ("REQUEST_DEADLINE_SECONDS", 1, 86400),
    ("UPSTREAM_RETRY_ATTEMPTS", 0, 10),
    ("RETRY_AFTER_CAP_SECONDS", 0, 600),
    ("SSE_WORKERS_PER_REQUEST", 1, 8),
    ("STREAMING_CHUNK_QUEUE_MAXSIZE", 10, 5000),
    ("STREAMING_EVENT_QUEUE_MAXSIZE", 10, 5000),
    ("STREAMING_UPDATE_CHAR_LIMIT", 10, 500),
    ("STREAMING_IDLE_FLUSH_MS", 0, 2000),
    ("BREAKER_MAX_FAILURES", 1, 50),
    ("BREAKER_WINDOW_SECONDS", 5, 900),
    ("BRIDGE_WINDOW_BATCHES", 1, 1024),
    ("MAX_FUNCTION_CALL_LOOPS", 1, 1000),
    ("MAX_PARALLEL_TOOLS_GLOBAL", 1, 2000),
    ("MAX_PARALLEL_TOOLS_PER_REQUEST", 1, 50),
    ("TOOL_BATCH_CAP", 1, 32),
    ("TOOL_TIMEOUT_SECONDS", 1, 600),
    ("TOOL_BATCH_TIMEOUT_SECONDS", 1, 7200),
    ("TOOL_IDLE_TIMEOUT_SECONDS", 1, 7200),
]


@pytest.mark.parametrize(("name", "low", "high"), BOUNDS)
def test_bounds_accept_the_ends(name: str, low: int, high: int | None) -> None:
    assert getattr(make_valves(**{name: low}), name) == low
    if high is not None:
        assert getattr(make_valves(**{name: high}), name) == high


@pytest.mark.parametrize(("name", "low", "high"), BOUNDS)
def test_bounds_reject_values_outside_with_a_readable_message(
    name: str, low: int, high: int | None
) -> None:
    with pytest.raises(ValidationError) as below:
        make_valves(**{name: low - 1})
    assert problems_of(below) == f"Valves: {name} must be at least {low} (got {low - 1})"
    if high is not None:
        with pytest.raises(ValidationError) as above:
            make_valves(**{name: high + 1})
        assert problems_of(above) == f"Valves: {name} must be at most {high} (got {high + 1})"


def test_the_documented_example_message() -> None:
    with pytest.raises(ValidationError) as exc:
        make_valves(MAX_CONCURRENT_REQUESTS=5000)
    assert "MAX_CONCURRENT_REQUESTS must be at most 2000 (got 5000)" in problems_of(exc)


def test_several_problems_give_one_line_each() -> None:
    with pytest.raises(ValidationError) as exc:
        make_valves(BASE_URL="ftp://host", LOG_LEVEL="loud", SSE_WORKERS_PER_REQUEST="many")
    lines = problems_of(exc).splitlines()
    assert lines == [
        "Valves: BASE_URL must be an http:// or https:// URL, e.g. https://openrouter.ai/api/v1"
        " (got 'ftp://host')",
        "Valves: LOG_LEVEL must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"
        " (got 'LOUD')",
        "Valves: SSE_WORKERS_PER_REQUEST must be a whole number (got 'many')",
    ]


@pytest.mark.parametrize("url", ["openrouter.ai/api/v1", "https://", "ws://host/v1", ""])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="BASE_URL"):
        make_valves(BASE_URL=url)


def test_valve_bounds_lie_inside_the_engine_ranges() -> None:
    """A value the form accepts is one EngineConfig accepts."""
    engine_ranges = {
        f.name: f.metadata["range"] for f in dataclasses.fields(EngineConfig) if f.metadata
    }
    for field_name, valve in engine_settings._VALVE_OF_ENGINE_FIELD.items():
        if valve == "BASE_URL":
            continue
        low, high = engine_ranges[field_name]
        meta = {type(m).__name__: m for m in Valves.model_fields[valve].metadata}
        assert meta["Ge"].ge >= low, valve
        assert meta["Le"].le <= high, valve


def test_form_text_is_parsed_as_numbers_and_blank_means_unset() -> None:
    """The 0.12.4 form submits numbers as text and an emptied box as ""."""
    valves = make_valves(
        MAX_CONCURRENT_REQUESTS="50",
        HTTP_TOTAL_TIMEOUT_SECONDS="",
        WEB_SEARCH_MAX_RESULTS=" ",
        REQUEST_QUEUE_DEADLINE_MS="2500",
        STREAMING_UPDATE_PROFILE="",
    )
    assert valves.MAX_CONCURRENT_REQUESTS == 50
    assert valves.HTTP_TOTAL_TIMEOUT_SECONDS is None
    assert valves.WEB_SEARCH_MAX_RESULTS is None
    assert valves.REQUEST_QUEUE_DEADLINE_MS == 2500
    assert valves.STREAMING_UPDATE_PROFILE is None


def test_choices_are_accepted_in_any_case() -> None:
    valves = make_valves(
        LOG_LEVEL="warning",
        REASONING_EFFORT="High",
        REASONING_SUMMARY_MODE="DETAILED",
        STREAMING_UPDATE_PROFILE="Quick",
        ENGINE_BRIDGE="THREAD",
    )
    assert (
        valves.LOG_LEVEL,
        valves.REASONING_EFFORT,
        valves.REASONING_SUMMARY_MODE,
        valves.STREAMING_UPDATE_PROFILE,
        valves.ENGINE_BRIDGE,
    ) == ("WARNING", "high", "detailed", "quick", "thread")


def test_stored_keys_of_older_versions_are_ignored() -> None:
    assert make_valves(PERSIST_TOOL_RESULTS=True).MODEL_ID == "auto"


# --- the API key at rest --------------------------------------------------------------


def test_key_round_trips_through_open_webui_storage(secret: str) -> None:
    stored = owui_form_save({"API_KEY": f"  {PLAIN_KEY}\n", "MODEL_ID": None})
    assert set(stored) == {"API_KEY"}
    assert stored["API_KEY"].startswith(ENCRYPTED_PREFIX)
    assert PLAIN_KEY not in json.dumps(stored)
    assert owui_dispatch(stored).api_key() == PLAIN_KEY


def test_an_encrypted_value_is_not_encrypted_again(secret: str) -> None:
    stored = owui_form_save({"API_KEY": PLAIN_KEY})
    ciphertext = stored["API_KEY"]
    # The admin form shows the stored value and submits it again unchanged.
    assert owui_form_save(stored)["API_KEY"] == ciphertext
    reloaded = make_valves(**make_valves(**stored).model_dump())
    assert reloaded.model_dump()["API_KEY"] == ciphertext
    assert encrypt_secret(ciphertext) == ciphertext


def test_assignment_encrypts_too(secret: str) -> None:
    valves = make_valves()
    valves.API_KEY = PLAIN_KEY
    assert valves.API_KEY.startswith(ENCRYPTED_PREFIX)
    assert valves.api_key() == PLAIN_KEY


def test_key_derivation_is_the_documented_hkdf(secret: str) -> None:
    stored = encrypt_secret(PLAIN_KEY)
    raw = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"orpipe/owui-valves/hkdf-salt/v1",
        info=b"orpipe valve encryption v1",
    ).derive(secret.encode())
    token = stored.removeprefix(ENCRYPTED_PREFIX).encode()
    assert Fernet(base64.urlsafe_b64encode(raw)).decrypt(token).decode() == PLAIN_KEY


def test_legacy_secret_name_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBUI_JWT_SECRET_KEY", "legacy-secret")
    stored = encrypt_secret(PLAIN_KEY)
    assert stored.startswith(ENCRYPTED_PREFIX)
    assert decrypt_secret(stored) == PLAIN_KEY


def assert_unreadable(exc: pytest.ExceptionInfo[ValveError], stored: str) -> None:
    message = str(exc.value)
    assert ADVICE in message
    assert PLAIN_KEY not in message
    token = stored.removeprefix(ENCRYPTED_PREFIX)
    assert not token or token not in message
    assert exc.value.valve == "API_KEY"
    assert exc.value.value is None
    # Nothing chained that a traceback could print.
    assert exc.value.__cause__ is None
    assert exc.value.__context__ is None or exc.value.__suppress_context__


def test_rotated_secret_is_an_error_not_the_key(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    stored = owui_form_save({"API_KEY": PLAIN_KEY})
    monkeypatch.setenv("WEBUI_SECRET_KEY", "the-secret-after-rotation")
    # Loading still works (Open WebUI builds Valves on every request and when
    # the Function's code is saved); only reading the key fails.
    valves = owui_dispatch(stored)
    with pytest.raises(ValveError) as exc:
        valves.api_key()
    assert_unreadable(exc, stored["API_KEY"])
    assert isinstance(exc.value, ConfigError)


def test_secret_missing_in_this_process_is_an_error(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    stored = encrypt_secret(PLAIN_KEY)
    monkeypatch.delenv("WEBUI_SECRET_KEY")
    with pytest.raises(ValveError) as exc:
        decrypt_secret(stored)
    assert_unreadable(exc, stored)
    assert "not set" in str(exc.value)


@pytest.mark.parametrize("damage", ["encrypted:", "encrypted:not-a-token", "encrypted:gAAAA\u00e9"])
def test_damaged_token_is_an_error(secret: str, damage: str) -> None:
    with pytest.raises(ValveError) as exc:
        make_valves(API_KEY=damage).api_key()
    assert_unreadable(exc, damage)


def test_without_a_secret_the_key_is_stored_plain_and_the_admin_is_told() -> None:
    stored = owui_form_save({"API_KEY": PLAIN_KEY})
    assert stored["API_KEY"] == PLAIN_KEY
    assert owui_dispatch(stored).api_key() == PLAIN_KEY
    warning = secret_storage_warning()
    assert warning is not None
    assert "WEBUI_SECRET_KEY is not set" in warning
    assert "plain text" in warning


def test_no_warning_with_a_secret(secret: str) -> None:
    assert secret_storage_warning() is None


def test_plain_value_stored_before_the_secret_was_set_still_works(secret: str) -> None:
    assert decrypt_secret(PLAIN_KEY) == PLAIN_KEY


def test_empty_key_stays_empty(secret: str) -> None:
    assert encrypt_secret("") == ""
    assert make_valves(API_KEY="   ").api_key() == ""
    assert make_valves().api_key() == ""


@pytest.mark.parametrize("with_secret", [True, False])
def test_repr_and_str_never_show_the_key(
    monkeypatch: pytest.MonkeyPatch, with_secret: bool
) -> None:
    if with_secret:
        monkeypatch.setenv("WEBUI_SECRET_KEY", "s3cret-for-repr")
    valves = make_valves(API_KEY=PLAIN_KEY)
    for text in (repr(valves), str(valves), f"{valves}"):
        assert PLAIN_KEY not in text
        assert "API_KEY" not in text
        assert "encrypted:" not in text
        assert "s3cret" not in text


def test_a_rejected_key_is_not_printed_by_the_validation_error() -> None:
    """Open WebUI logs a failed valves form with str(exc)."""
    with pytest.raises(ValidationError) as exc:
        make_valves(API_KEY=12345678901234, MAX_CONCURRENT_REQUESTS=0)
    assert "12345678901234" not in str(exc.value)
    assert "12345678901234" not in problems_of(exc)
    assert "Valves: API_KEY must be text" in problems_of(exc)


def test_env_key_does_not_appear_in_the_form_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", PLAIN_KEY)
    assert make_valves().api_key() == PLAIN_KEY
    assert PLAIN_KEY not in json.dumps(Valves.model_json_schema())


# --- engine_config ---------------------------------------------------------------------

ENGINE_MAPPING: list[tuple[str, object, str, object]] = [
    ("BASE_URL", "http://mock:9000/api/v1/", "base_url", "http://mock:9000/api/v1"),
    ("HTTP_CONNECT_TIMEOUT_SECONDS", 7, "connect_timeout_s", 7.0),
    ("HTTP_SOCK_READ_SECONDS", 45, "read_idle_timeout_s", 45.0),
    ("HTTP_TOTAL_TIMEOUT_SECONDS", 120, "total_timeout_s", 120.0),
    ("UPSTREAM_RETRY_ATTEMPTS", 1, "retry_attempts", 1),
    ("RETRY_AFTER_CAP_SECONDS", 12, "retry_after_cap_s", 12.0),
    ("MAX_CONCURRENT_REQUESTS", 64, "max_concurrent_requests", 64),
    ("REQUEST_QUEUE_MAXSIZE", 0, "queue_maxsize", 0),
    ("REQUEST_QUEUE_DEADLINE_MS", 1500, "queue_deadline_ms", 1500.0),
    ("BUSY_RETRY_AFTER_SECONDS", 9, "busy_retry_after_s", 9.0),
    ("REQUEST_DEADLINE_SECONDS", 600, "request_deadline_s", 600.0),
    ("SSE_WORKERS_PER_REQUEST", 2, "parser_workers", 2),
    ("STREAMING_CHUNK_QUEUE_MAXSIZE", 33, "chunk_buffer_size", 33),
    ("STREAMING_EVENT_QUEUE_MAXSIZE", 44, "event_buffer_size", 44),
    ("STREAMING_UPDATE_CHAR_LIMIT", 55, "update_char_limit", 55),
    ("STREAMING_IDLE_FLUSH_MS", 700, "idle_flush_ms", 700.0),
    ("MAX_FUNCTION_CALL_LOOPS", 3, "max_function_call_loops", 3),
    ("MAX_PARALLEL_TOOLS_GLOBAL", 17, "max_parallel_tools_global", 17),
    ("MAX_PARALLEL_TOOLS_PER_REQUEST", 2, "max_parallel_tools_per_request", 2),
    ("TOOL_BATCH_CAP", 8, "tool_batch_cap", 8),
    ("TOOL_TIMEOUT_SECONDS", 30, "tool_timeout_s", 30.0),
    ("TOOL_BATCH_TIMEOUT_SECONDS", 90, "tool_batch_timeout_s", 90.0),
    ("TOOL_IDLE_TIMEOUT_SECONDS", 45, "tool_idle_timeout_s", 45.0),
]


@pytest.mark.parametrize(("valve", "value", "field", "expected"), ENGINE_MAPPING)
def test_each_valve_lands_in_its_engine_field(
    valve: str, value: object, field: str, expected: object
) -> None:
    config = make_valves(**{valve: value}).engine_config()
    assert getattr(config, field) == expected
    assert getattr(EngineConfig(), field) != expected, "pick a non-default value"


def test_default_valves_give_the_engine_defaults_where_they_overlap() -> None:
    config = make_valves().engine_config()
    defaults = EngineConfig()
    for field in engine_settings._VALVE_OF_ENGINE_FIELD:
        assert getattr(config, field) == getattr(defaults, field), field


@pytest.mark.parametrize("profile", ["quick", "normal", "slow"])
def test_system_profile_replaces_the_explicit_limits(profile: str) -> None:
    valves = make_valves(
        STREAMING_UPDATE_PROFILE=profile,
        STREAMING_UPDATE_CHAR_LIMIT=333,
        STREAMING_IDLE_FLUSH_MS=1234,
    )
    config = valves.engine_config()
    assert (config.update_char_limit, config.idle_flush_ms) == STREAMING_PRESETS[profile]


def test_presets_are_the_originals() -> None:
    assert dict(STREAMING_PRESETS) == {"quick": (10, 100), "normal": (20, 250), "slow": (80, 600)}


@pytest.mark.parametrize(("given", "used"), [(0, 0), (1, 50), (49, 50), (50, 50), (2000, 2000)])
def test_non_zero_idle_flush_is_clamped(given: int, used: int) -> None:
    assert make_valves(STREAMING_IDLE_FLUSH_MS=given).engine_config().idle_flush_ms == used


def test_engine_refusal_names_the_valve() -> None:
    # model_construct skips validation, as a value set by other code could.
    valves = Valves.model_construct(HTTP_CONNECT_TIMEOUT_SECONDS=700)
    with pytest.raises(ValveError) as exc:
        valves.engine_config()
    message = str(exc.value)
    assert "HTTP_CONNECT_TIMEOUT_SECONDS" in message
    assert "600" in message
    assert "connect_timeout_s" not in message
    assert exc.value.valve == "HTTP_CONNECT_TIMEOUT_SECONDS"
    assert exc.value.value == 700


@pytest.mark.parametrize(
    ("profile", "named"),
    [("slow", "STREAMING_UPDATE_PROFILE"), (None, "STREAMING_UPDATE_CHAR_LIMIT")],
)
def test_a_derived_engine_value_names_the_valve_it_came_from(
    monkeypatch: pytest.MonkeyPatch, profile: str | None, named: str
) -> None:
    """The char limit comes from the profile when one is set (a cross-valve value)."""

    def refuse(**kwargs: object) -> EngineConfig:
        raise ConfigError("update_char_limit", kwargs["update_char_limit"], "from 1 to 2")

    monkeypatch.setattr(engine_settings, "EngineConfig", refuse)
    with pytest.raises(ValveError) as exc:
        make_valves(STREAMING_UPDATE_PROFILE=profile).engine_config()
    assert exc.value.valve == named
    assert "update_char_limit" not in str(exc.value)
    assert "from 1 to 2" in str(exc.value)


# --- list valves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("auto", ()),
        ("", ()),
        (" , ", ()),
        (
            "openai/gpt-4o, anthropic/claude-sonnet-4 ,openai/gpt-4o",
            ("openai/gpt-4o", "anthropic/claude-sonnet-4"),
        ),
        ("openai/gpt-4o, AUTO", ()),
    ],
)
def test_model_ids(text: str, ids: tuple[str, ...]) -> None:
    assert make_valves(MODEL_ID=text).model_ids() == ids


def test_web_search_force_models() -> None:
    valves = make_valves(WEB_SEARCH_FORCE_MODELS=" openai/gpt-4o,, perplexity/sonar ")
    assert valves.web_search_force_models() == frozenset({"openai/gpt-4o", "perplexity/sonar"})
    assert make_valves().web_search_force_models() == frozenset()


# --- UserValves ----------------------------------------------------------------------------


def test_every_user_valve_defaults_to_inherit() -> None:
    assert set(make_user().model_dump().values()) == {"inherit"}


@pytest.mark.parametrize("field", sorted(UserValves.model_fields))
@pytest.mark.parametrize("spelling", ["inherit", "INHERIT", " Inherit "])
def test_inherit_in_any_case(field: str, spelling: str) -> None:
    assert getattr(make_user(**{field: spelling}), field) == "inherit"


def test_user_values_are_normalised() -> None:
    user = make_user(
        LOG_LEVEL="debug",
        SHOW_FINAL_USAGE_STATUS=False,
        ENABLE_REASONING="ON",
        REASONING_EFFORT="XHigh",
        REASONING_SUMMARY_MODE="Concise",
        STREAMING_UPDATE_PROFILE="SLOW",
        STREAMING_UPDATE_CHAR_LIMIT=" 40 ",
        STREAMING_IDLE_FLUSH_MS=0,
        PERSIST_REASONING_TOKENS="Conversation",
        PERSIST_TOOL_RESULTS=True,
    )
    assert user.model_dump() == {
        "PERSIST_REASONING_TOKENS": "conversation",
        "PERSIST_TOOL_RESULTS": "on",
        "LOG_LEVEL": "DEBUG",
        "SHOW_FINAL_USAGE_STATUS": "off",
        "ENABLE_REASONING": "on",
        "REASONING_EFFORT": "xhigh",
        "REASONING_SUMMARY_MODE": "concise",
        "STREAMING_UPDATE_PROFILE": "slow",
        "STREAMING_UPDATE_CHAR_LIMIT": 40,
        "STREAMING_IDLE_FLUSH_MS": 0,
    }
    # What Open WebUI stores validates again to the same values.
    assert make_user(**user.model_dump()) == user


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("STREAMING_UPDATE_CHAR_LIMIT", 9, "must be 'inherit' or a whole number from 10 to 500"),
        (
            "STREAMING_UPDATE_CHAR_LIMIT",
            "501",
            "must be 'inherit' or a whole number from 10 to 500",
        ),
        (
            "STREAMING_UPDATE_CHAR_LIMIT",
            "twenty",
            "must be 'inherit' or a whole number from 10 to 500",
        ),
        ("STREAMING_UPDATE_CHAR_LIMIT", True, "must be 'inherit' or a whole number from 10 to 500"),
        ("STREAMING_IDLE_FLUSH_MS", -1, "must be 'inherit' or a whole number from 0 to 2000"),
        ("STREAMING_IDLE_FLUSH_MS", 2.5, "must be 'inherit' or a whole number from 0 to 2000"),
        ("ENABLE_REASONING", "maybe", "must be one of 'inherit', 'on' or 'off'"),
        (
            "STREAMING_UPDATE_PROFILE",
            "turbo",
            "must be one of 'inherit', 'quick', 'normal' or 'slow'",
        ),
    ],
)
def test_invalid_user_values_are_rejected_clearly(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make_user(**{field: value})
    assert f"UserValves: {field} {message}" in problems_of(exc, "UserValves")


# --- the merge -----------------------------------------------------------------------------------

SYSTEM = make_valves(
    LOG_LEVEL="WARNING",
    SHOW_FINAL_USAGE_STATUS=False,
    ENABLE_REASONING=False,
    REASONING_EFFORT="low",
    REASONING_SUMMARY_MODE="concise",
    STREAMING_UPDATE_CHAR_LIMIT=120,
    STREAMING_IDLE_FLUSH_MS=900,
)
SYSTEM_SETTINGS = EffectiveSettings(
    log_level="WARNING",
    show_final_status=False,
    enable_reasoning=False,
    reasoning_effort="low",
    reasoning_summary="concise",
    update_char_limit=120,
    idle_flush_ms=900,
)


@pytest.mark.parametrize(
    "user",
    [None, {}, make_user(), make_user().model_dump(), {"LOG_LEVEL": None}],
    ids=["none", "empty-dict", "instance", "saved-full-form", "none-values"],
)
def test_nothing_chosen_means_the_system_values(user: Any) -> None:
    """A whole stored form of "inherit" overrides nothing (the original's merge bug)."""
    assert effective_settings(SYSTEM, user) == SYSTEM_SETTINGS


def test_user_choices_win() -> None:
    user = make_user(
        LOG_LEVEL="DEBUG",
        SHOW_FINAL_USAGE_STATUS="on",
        ENABLE_REASONING="on",
        REASONING_EFFORT="high",
        REASONING_SUMMARY_MODE="detailed",
    )
    assert effective_settings(SYSTEM, user) == dataclasses.replace(
        SYSTEM_SETTINGS,
        log_level="DEBUG",
        show_final_status=True,
        enable_reasoning=True,
        reasoning_effort="high",
        reasoning_summary="detailed",
    )


def test_inherited_log_level_is_the_systems_not_info() -> None:
    settings = effective_settings(make_valves(LOG_LEVEL="ERROR"), {"LOG_LEVEL": "INHERIT"})
    assert settings.log_level == "ERROR"


@pytest.mark.parametrize(
    ("system", "user", "expected"),
    [
        # system explicit limits, nothing from the user
        ({}, {}, (120, 900)),
        # system profile beats system explicit limits
        ({"STREAMING_UPDATE_PROFILE": "quick"}, {}, (10, 100)),
        # a user profile beats the system's explicit limits ...
        ({}, {"STREAMING_UPDATE_PROFILE": "slow"}, (80, 600)),
        # ... and the system's profile
        ({"STREAMING_UPDATE_PROFILE": "quick"}, {"STREAMING_UPDATE_PROFILE": "slow"}, (80, 600)),
        # a user number beats the user's profile, per knob
        ({}, {"STREAMING_UPDATE_PROFILE": "slow", "STREAMING_UPDATE_CHAR_LIMIT": 40}, (40, 600)),
        ({}, {"STREAMING_UPDATE_PROFILE": "slow", "STREAMING_IDLE_FLUSH_MS": "0"}, (80, 0)),
        # a user number beats the system's profile; the other knob stays the system's
        ({"STREAMING_UPDATE_PROFILE": "quick"}, {"STREAMING_UPDATE_CHAR_LIMIT": 300}, (300, 100)),
        # the user's idle flush is clamped like the system's
        ({}, {"STREAMING_IDLE_FLUSH_MS": 10}, (120, 50)),
    ],
)
def test_streaming_precedence(
    system: dict[str, Any], user: dict[str, Any], expected: tuple[int, int]
) -> None:
    valves = make_valves(STREAMING_UPDATE_CHAR_LIMIT=120, STREAMING_IDLE_FLUSH_MS=900, **system)
    for given in (user, make_user(**user)):
        settings = effective_settings(valves, given)
        assert (settings.update_char_limit, settings.idle_flush_ms) == expected
        assert settings.problems == ()


def test_invalid_user_dict_falls_back_and_records_the_problem() -> None:
    user = {
        "STREAMING_UPDATE_CHAR_LIMIT": "lots",
        "REASONING_EFFORT": "extreme",
        "ENABLE_REASONING": "on",
    }
    settings = effective_settings(SYSTEM, user)
    # The bad entries fall back to the system; the good one still applies.
    assert settings.update_char_limit == 120
    assert settings.reasoning_effort == "low"
    assert settings.enable_reasoning is True
    assert len(settings.problems) == 2
    joined = "\n".join(settings.problems)
    assert "STREAMING_UPDATE_CHAR_LIMIT must be 'inherit' or a whole number" in joined
    assert "REASONING_EFFORT must be one of" in joined
    assert all(p.endswith("the system setting is used instead.") for p in settings.problems)


def test_user_settings_of_a_strange_type_are_ignored() -> None:
    settings = effective_settings(SYSTEM, ["LOG_LEVEL", "DEBUG"])  # type: ignore[arg-type]
    assert dataclasses.replace(settings, problems=()) == SYSTEM_SETTINGS
    assert settings.problems == ("User settings of type list were ignored.",)


# --- the form Open WebUI draws --------------------------------------------------------------------


def owui_widget(prop: dict[str, Any]) -> str:
    """The input the 0.12.4 valves form picks for a schema property (its order of checks)."""
    if prop.get("enum"):
        return "select"
    if prop.get("type") == "boolean":
        return "switch"
    if prop.get("type") != "string":
        return "text"
    if prop.get("input", {}).get("type") == "password":
        return "password"
    return "text"


@pytest.mark.parametrize("model", [Valves, UserValves])
def test_schema_renders_with_a_description_for_every_field(model: type[Any]) -> None:
    schema = model.model_json_schema()
    assert set(schema["properties"]) == set(model.model_fields)
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
        assert prop.get("title"), name


def test_valves_form_widgets() -> None:
    props = Valves.model_json_schema()["properties"]
    assert owui_widget(props["API_KEY"]) == "password"
    assert "default" not in props["API_KEY"]
    for choice in (
        "LOG_LEVEL",
        "REASONING_EFFORT",
        "REASONING_SUMMARY_MODE",
        "STREAMING_UPDATE_PROFILE",
        "ENGINE_BRIDGE",
    ):
        assert owui_widget(props[choice]) == "select", choice
    assert owui_widget(props["ENABLE_REASONING"]) == "switch"
    assert owui_widget(props["MAX_CONCURRENT_REQUESTS"]) == "text"
    assert props["MAX_CONCURRENT_REQUESTS"]["maximum"] == 2000
    # Env-derived defaults are shown, so "Custom" starts from them.
    assert props["BASE_URL"]["default"] == "https://openrouter.ai/api/v1"
    assert props["LOG_LEVEL"]["default"] == "INFO"
    assert props["ENGINE_BRIDGE"]["default"] == "thread"


def test_user_valves_form_widgets() -> None:
    props = UserValves.model_json_schema()["properties"]
    for name, prop in props.items():
        expected = (
            "text"
            if name in {"STREAMING_UPDATE_CHAR_LIMIT", "STREAMING_IDLE_FLUSH_MS"}
            else "select"
        )
        assert owui_widget(prop) == expected, name
        if expected == "select":
            assert prop["enum"][0] == "inherit"


# --- the Function's source text ------------------------------------------------------------------


def test_module_text_survives_open_webuis_import_rewrite() -> None:
    for module in Path(owui_valves.__file__).parent.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        for phrase in ("from utils", "from config", "from main", "from apps"):
            assert phrase not in text, phrase


def test_engine_overrides_reach_every_engine_knob() -> None:
    valves = Valves(ENGINE_OVERRIDES=" request_window_events=512 , shutdown_grace_s=2.5,")
    config = valves.engine_config()
    assert config.request_window_events == 512
    assert config.shutdown_grace_s == 2.5
    assert Valves().engine_config() == Valves(ENGINE_OVERRIDES="").engine_config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("request_window_events", "is not name=value"),
        ("no_such_knob=1", "no_such_knob must be one of: "),
        ("request_window_events=0", "request_window_events must be from 1 to"),
        ("parser_workers=lots", "parser_workers must be a number"),
    ],
)
def test_engine_overrides_errors_name_the_valve_and_what_is_allowed(
    text: str, expected: str
) -> None:
    with pytest.raises(ValveError) as caught:
        Valves(ENGINE_OVERRIDES=text).engine_config()
    assert caught.value.valve == "ENGINE_OVERRIDES"
    assert caught.value.message.startswith("ENGINE_OVERRIDES: ")
    assert expected in caught.value.message


def test_artifact_key_is_encrypted_at_rest_and_must_be_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBUI_SECRET_KEY", "a-secret-for-valves")
    valves = Valves(ARTIFACT_ENCRYPTION_KEY="correct horse battery staple")
    stored = valves.model_dump()["ARTIFACT_ENCRYPTION_KEY"]
    assert stored.startswith(ENCRYPTED_PREFIX) and "horse" not in stored
    assert Valves(**valves.model_dump()).artifact_key() == "correct horse battery staple"
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Valves(ARTIFACT_ENCRYPTION_KEY="short")
    monkeypatch.setenv("WEBUI_SECRET_KEY", "rotated")
    with pytest.raises(ValveError, match="ARTIFACT_ENCRYPTION_KEY valve was encrypted"):
        Valves(**valves.model_dump()).artifact_key()


def test_user_retention_overrides_the_system() -> None:
    settings = effective_settings(
        Valves(PERSIST_REASONING_TOKENS="conversation"),
        {"PERSIST_REASONING_TOKENS": "disabled", "PERSIST_TOOL_RESULTS": "off"},
    )
    assert (settings.persist_reasoning, settings.persist_tool_results) == ("disabled", False)
    inherited = effective_settings(Valves(PERSIST_REASONING_TOKENS="conversation"), None)
    assert (inherited.persist_reasoning, inherited.persist_tool_results) == ("conversation", True)


def test_artifact_valves_reach_the_engine() -> None:
    config = Valves(
        DB_BATCH_SIZE=7, ARTIFACT_CLEANUP_DAYS=30, ARTIFACT_CLEANUP_INTERVAL_HOURS=2.5
    ).engine_config()
    assert config.persist_batch_size == 7
    assert config.artifact_cleanup_days == 30
    assert config.artifact_cleanup_interval_hours == 2.5


def test_tool_mode_is_read_in_any_case() -> None:
    assert make_valves(TOOL_EXECUTION_MODE="Open-WebUI").TOOL_EXECUTION_MODE == "open-webui"
    with pytest.raises(ValidationError):
        make_valves(TOOL_EXECUTION_MODE="browser")


def test_mcp_servers_are_checked_when_saved() -> None:
    good = '[{"server_label": "docs", "server_url": "https://mcp.example.com/sse"}]'
    assert make_valves(REMOTE_MCP_SERVERS_JSON=good).mcp_servers() == (
        {"type": "mcp", "server_url": "https://mcp.example.com/sse", "server_label": "docs"},
    )
    with pytest.raises(ValidationError, match="http, https, ws or wss"):
        make_valves(REMOTE_MCP_SERVERS_JSON='{"server_url": "file:///etc/passwd"}')
    assert make_valves(REMOTE_MCP_SERVERS_JSON="  ").mcp_servers() == ()


def test_a_rejected_mcp_value_says_what_to_fix_once() -> None:
    with pytest.raises(ValidationError) as exc:
        make_valves(REMOTE_MCP_SERVERS_JSON='{"server_url": "ftp://mcp.example.com"}')
    assert problems_of(exc) == (
        "Valves: REMOTE_MCP_SERVERS_JSON is unusable: server 1: server_url must be an http, "
        "https, ws or wss URL with a host"
    )


TOKEN = "Bearer sk-mcp-0123456789"
SERVER_WITH_TOKEN = json.dumps(
    {
        "server_label": "docs",
        "server_url": "https://mcp.example.com",
        "headers": {"Authorization": TOKEN},
    }
)


@pytest.mark.parametrize(
    "bad",
    [
        # The token comes first, so a cut-off echo of the value would still show it.
        json.dumps({"headers": {"Authorization": TOKEN}, "server_url": "ftp://x"}),
        json.dumps({"headers": {"Authorization": TOKEN}, "server_url": "https://x", "k": 1}),
        '{"headers": {"Authorization": "' + TOKEN + '"}',  # not JSON at all
    ],
)
def test_mcp_header_values_never_reach_a_message(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make_valves(REMOTE_MCP_SERVERS_JSON=bad)
    assert "REMOTE_MCP_SERVERS_JSON" in problems_of(exc)
    assert "sk-mcp" not in problems_of(exc)
    assert "sk-mcp" not in str(exc.value)


def test_mcp_header_values_stay_out_of_repr() -> None:
    valves = make_valves(REMOTE_MCP_SERVERS_JSON=SERVER_WITH_TOKEN)
    assert "sk-mcp" not in repr(valves) and "sk-mcp" not in str(valves)
    assert valves.mcp_servers()[0]["headers"] == {"Authorization": TOKEN}


@pytest.mark.parametrize(
    ("valve", "value", "secret_text"),
    [
        ("ARTIFACT_ENCRYPTION_KEY", "short-secret", "short-secret"),
        ("ARTIFACT_DATABASE_URL", 5432, "5432"),
        ("API_KEY", 12345, "12345"),
    ],
)
def test_other_secret_valves_are_not_echoed(valve: str, value: object, secret_text: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make_valves(**{valve: value})
    assert problems_of(exc).startswith(f"Valves: {valve} ")
    assert secret_text not in problems_of(exc)


def test_mcp_servers_are_fresh_copies_each_time() -> None:
    valves = make_valves(REMOTE_MCP_SERVERS_JSON=SERVER_WITH_TOKEN)
    first = valves.mcp_servers()
    first[0]["headers"]["Authorization"] = "changed"
    first[0]["extra"] = True
    again = make_valves(REMOTE_MCP_SERVERS_JSON=SERVER_WITH_TOKEN).mcp_servers()
    assert again == (
        {
            "type": "mcp",
            "server_url": "https://mcp.example.com",
            "server_label": "docs",
            "headers": {"Authorization": TOKEN},
        },
    )


def test_several_mcp_servers_stay_separate_entries() -> None:
    servers = json.dumps(
        [
            {"server_label": "a", "server_url": "https://a.example.com"},
            {"server_label": "b", "server_url": "wss://b.example.com/mcp"},
        ]
    )
    parsed = make_valves(REMOTE_MCP_SERVERS_JSON=servers).mcp_servers()
    assert [(s["type"], s["server_label"]) for s in parsed] == [("mcp", "a"), ("mcp", "b")]


def test_tool_valves_from_the_form() -> None:
    """Form text is parsed; an emptied idle timeout means "never"."""
    valves = make_valves(
        TOOL_IDLE_TIMEOUT_SECONDS="",
        MAX_FUNCTION_CALL_LOOPS="25",
        ENABLE_STRICT_TOOL_CALLING="false",
        REMOTE_MCP_SERVERS_JSON="",
    )
    assert valves.TOOL_IDLE_TIMEOUT_SECONDS is None
    assert valves.engine_config().tool_idle_timeout_s is None
    assert valves.MAX_FUNCTION_CALL_LOOPS == 25
    assert valves.ENABLE_STRICT_TOOL_CALLING is False
    assert valves.REMOTE_MCP_SERVERS_JSON is None and valves.mcp_servers() == ()


def test_an_unknown_tool_mode_lists_the_choices() -> None:
    with pytest.raises(ValidationError) as exc:
        make_valves(TOOL_EXECUTION_MODE="browser")
    assert problems_of(exc) == (
        "Valves: TOOL_EXECUTION_MODE must be one of 'engine' or 'open-webui' (got 'browser')"
    )


@pytest.mark.parametrize("role", ["admin", "Admin ", "owner", "system"])
def test_the_fallback_storage_owner_is_never_an_administrator(role: str) -> None:
    with pytest.raises(ValidationError, match="may not be an administrator"):
        make_valves(FALLBACK_STORAGE_ROLE=role)


def test_insecure_http_hosts_are_a_lower_cased_list() -> None:
    valves = make_valves(ALLOW_INSECURE_HTTP_HOSTS=" Intranet.Example , files.local,,")
    assert valves.insecure_http_hosts() == frozenset({"intranet.example", "files.local"})
