"""Argument types for the bench's command lines: numbers that must be in range.

Each raises ``argparse.ArgumentTypeError`` with what was wrong, so argparse
prints "argument --x: must be at least 1, got 0" and exits with status 2.
"""

from __future__ import annotations

import argparse

__all__ = ["non_negative_float", "positive_float", "positive_int", "positive_int_list"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """``16,64,200``: whole numbers of at least 1, comma-separated, each once, in order."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}"
        ) from None
    for value in values:
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{repeated[0]} is given twice in {text!r}")
    return values
