"""JSON values in messages: the read-only object alias, and freezing and thawing.

A leaf module: it imports nothing from ``engine``, so ``engine.messages``,
``engine.artifacts`` and ``engine.tools`` can all build on it without importing
each other (``tests/test_layering.py`` checks that ``engine/`` has no import cycle).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

__all__ = ["JsonObject", "freeze_json", "thaw_json"]

JsonObject = Mapping[str, Any]


def freeze_json(value: Any) -> Any:
    """A read-only deep copy of JSON-like data (dicts → mapping proxies, lists → tuples)."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): freeze_json(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze_json(v) for v in value)
    return value


def thaw_json(value: Any) -> Any:
    """The inverse of ``freeze_json``: plain dicts and lists, ready to encode."""
    if isinstance(value, Mapping):
        return {k: thaw_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw_json(v) for v in value]
    return value
