"""What the bench's command lines share: exit codes, a one-line-error parser, argument types.

The types (numbers that must be in range) raise ``argparse.ArgumentTypeError``
with what was wrong, so argparse prints "argument --x: must be at least 1,
got 0" and exits with status 2 (``EXIT_USAGE``). ``parse_overrides`` reads
``--set NAME=VALUE`` engine knobs, refusing ``base_url`` (the bench points
the engine at its mock).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "OneLineParser",
    "non_negative_float",
    "parse_overrides",
    "positive_float",
    "positive_int",
    "positive_int_list",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (argparse prints usage + message)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_overrides(items: Sequence[str], flag: str = "--set") -> dict[str, str]:
    """``NAME=VALUE`` items as a dict; ``ValueError`` naming ``flag`` for a bad one."""
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        if name.strip() == "base_url":
            raise ValueError(
                f"{flag} base_url is not allowed: the bench points the engine at its mock"
            )
        overrides[name.strip()] = value
    return overrides


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
