"""Valve defaults read from the environment Open WebUI runs in.

Each is a ``default_factory``: read when a form is built, so a test or a late
environment is honoured, and the API key taken from the environment never
appears in the form's schema (``fields.from_environment`` shows the others).
"""

from __future__ import annotations

import os
from typing import cast, get_args

from orpipe.adapters.bridge import BridgeMode
from orpipe.adapters.openwebui.valves.choices import LogLevel

__all__ = [
    "default_api_key",
    "default_base_url",
    "default_bridge",
    "default_log_level",
    "default_storage_email",
    "default_storage_name",
    "default_storage_role",
]


def default_base_url() -> str:
    return os.environ.get("OPENROUTER_API_BASE_URL") or "https://openrouter.ai/api/v1"


def default_api_key() -> str:
    return os.environ.get("OPENROUTER_API_KEY", "").strip()


def default_log_level() -> LogLevel:
    level = os.environ.get("GLOBAL_LOG_LEVEL", "").strip().upper()
    return cast(LogLevel, level) if level in get_args(LogLevel) else "INFO"


def default_storage_email() -> str:
    email = os.environ.get("OPENROUTER_STORAGE_USER_EMAIL", "").strip()
    return email or "openrouter-pipe@system.local"


def default_storage_name() -> str:
    return os.environ.get("OPENROUTER_STORAGE_USER_NAME", "").strip() or "OpenRouter Pipe Storage"


def default_storage_role() -> str:
    return os.environ.get("OPENROUTER_STORAGE_USER_ROLE", "").strip().lower() or "pending"


def default_bridge() -> BridgeMode:
    # thread by measurement (python -m bench owui-real, README "Inside a real Open WebUI"):
    # at paced load, where users are, it cost Open WebUI 2-14 % less CPU per token than
    # guest mode, whose every wait for I/O is two thread switches and a loop callback.
    return "guest" if os.environ.get("ORPIPE_BRIDGE", "").strip().lower() == "guest" else "thread"
