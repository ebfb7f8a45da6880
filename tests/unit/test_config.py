"""EngineConfig validation and with_overrides."""

from __future__ import annotations

import dataclasses
import math

import pytest

from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import ConfigError, UsageError

RANGED = [f for f in dataclasses.fields(EngineConfig) if "range" in f.metadata]
INT_FIELDS = [f.name for f in RANGED if isinstance(getattr(EngineConfig(), f.name), int)]


def test_defaults_are_valid_and_frozen() -> None:
    config = EngineConfig()
    assert config.max_concurrent_requests == 200
    assert config.queue_maxsize == 500
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.queue_maxsize = 1  # type: ignore[misc]
    assert set(config.as_dict()) == {f.name for f in dataclasses.fields(EngineConfig)}


def test_every_numeric_field_has_a_range() -> None:
    numeric = [
        f.name
        for f in dataclasses.fields(EngineConfig)
        if (
            isinstance(getattr(EngineConfig(), f.name), int | float)
            and not isinstance(getattr(EngineConfig(), f.name), bool)  # a switch, not a number
        )
        or f.default is None
    ]
    assert numeric == [f.name for f in RANGED]
    assert len(RANGED) > 20


@pytest.mark.parametrize("field", RANGED, ids=lambda f: f.name)
def test_out_of_range_values_name_the_field(field: dataclasses.Field) -> None:  # type: ignore[type-arg]
    low, high = field.metadata["range"]
    is_int = field.name in INT_FIELDS
    below = low - 1 if is_int else low - 0.001
    above = high + 1 if is_int else high * 1.01 + 0.001
    for bad in (below, above, math.nan, math.inf, -math.inf, "5", True, [1]):
        with pytest.raises(ConfigError) as info:
            EngineConfig(**{field.name: bad})
        assert info.value.field == field.name
        assert field.name in str(info.value)
    # Both ends of the range are allowed.
    for good in (low, high):
        value = int(good) if is_int else float(good)
        if field.name == "retry_backoff_max_s" and value < EngineConfig().retry_backoff_initial_s:
            continue
        if field.name == "retry_backoff_initial_s" and value > EngineConfig().retry_backoff_max_s:
            continue
        EngineConfig(**{field.name: value})


@pytest.mark.parametrize("field", RANGED, ids=lambda f: f.name)
def test_none_only_where_optional(field: dataclasses.Field) -> None:  # type: ignore[type-arg]
    if field.metadata["optional"]:
        assert getattr(EngineConfig(**{field.name: None}), field.name) is None
    else:
        with pytest.raises(ConfigError) as info:
            EngineConfig(**{field.name: None})
        assert info.value.field == field.name


@pytest.mark.parametrize("name", INT_FIELDS)
def test_integer_fields_refuse_fractions(name: str) -> None:
    low, _ = next(f for f in RANGED if f.name == name).metadata["range"]
    with pytest.raises(ConfigError) as info:
        EngineConfig(**{name: low + 0.5})
    assert info.value.field == name


def test_config_error_is_a_usage_and_value_error() -> None:
    with pytest.raises(ValueError):
        EngineConfig(parser_workers=0)
    assert issubclass(ConfigError, UsageError)


def test_base_url_must_be_http() -> None:
    with pytest.raises(ConfigError) as info:
        EngineConfig(base_url="ftp://example.com")
    assert info.value.field == "base_url"
    EngineConfig(base_url="http://127.0.0.1:9999/api/v1")


def test_backoff_max_below_initial() -> None:
    with pytest.raises(ConfigError) as info:
        EngineConfig(retry_backoff_initial_s=5, retry_backoff_max_s=2)
    assert info.value.field == "retry_backoff_max_s"


def test_with_overrides_parses_text() -> None:
    config = EngineConfig().with_overrides(
        {
            "parser_workers": "8",
            "queue_maxsize": " 1e3 ",
            "idle_flush_ms": "0",
            "connect_timeout_s": "2.5",
            "total_timeout_s": "None",
            "queue_deadline_ms": "750",
            "base_url": " http://localhost:1/api/v1 ",
            "retry_attempts": 4,
        }
    )
    assert config.parser_workers == 8 and isinstance(config.parser_workers, int)
    assert config.queue_maxsize == 1000 and isinstance(config.queue_maxsize, int)
    assert config.idle_flush_ms == 0
    assert config.connect_timeout_s == 2.5
    assert config.total_timeout_s is None
    assert config.queue_deadline_ms == 750
    assert config.base_url == "http://localhost:1/api/v1"
    assert config.retry_attempts == 4
    back = config.with_overrides({"total_timeout_s": "", "queue_deadline_ms": "null"})
    assert back.total_timeout_s is None and back.queue_deadline_ms is None


def test_with_overrides_keeps_the_original() -> None:
    config = EngineConfig()
    config.with_overrides({"parser_workers": "2"})
    assert config.parser_workers == 4


def test_with_overrides_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError) as info:
        EngineConfig().with_overrides({"parser_worker": "2"})
    assert info.value.field == "parser_worker"
    assert "parser_workers" in info.value.allowed


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("parser_workers", "many"),
        ("parser_workers", "0"),
        ("connect_timeout_s", "-1"),
        ("retry_attempts", "None"),
        ("idle_flush_ms", "nan"),
    ],
)
def test_with_overrides_rejects_bad_text(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        EngineConfig().with_overrides({name: raw})
    assert info.value.field == name
