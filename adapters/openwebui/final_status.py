"""What a request used, and the final status line that says it.

This module owns ``UsageTotals`` (every ``Usage`` of a request summed, tool
rounds included, and its Chat Completions form, the one Open WebUI's usage
ledger reads) and ``format_final_status``, the line that ends a request's
status list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orpipe.adapters.openwebui.statuses import format_seconds
from orpipe.engine.messages import Usage

__all__ = ["MIN_TPS_WINDOW_S", "UsageTotals", "format_final_status"]

#: The shortest generation window a tokens-per-second figure is shown for.
MIN_TPS_WINDOW_S = 0.5

_SEPARATOR = " · "


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Token counts and cost summed over every ``Usage`` of a request (tool rounds)."""

    #: In US dollars; None until a usage with a cost arrives.
    cost: float | None = None
    input_tokens: int = 0
    #: The part of ``input_tokens`` read from the provider's prompt cache.
    cached_tokens: int = 0
    output_tokens: int = 0
    #: The part of ``output_tokens`` spent reasoning.
    reasoning_tokens: int = 0
    #: As upstream counted it; input plus output for a usage that left it out.
    total_tokens: int = 0

    def plus(self, usage: Usage) -> UsageTotals:
        cost = self.cost
        if usage.cost is not None:
            cost = (cost or 0.0) + usage.cost
        return UsageTotals(
            input_tokens=self.input_tokens + usage.input_tokens,
            output_tokens=self.output_tokens + usage.output_tokens,
            total_tokens=self.total_tokens
            + (usage.total_tokens or usage.input_tokens + usage.output_tokens),
            cached_tokens=self.cached_tokens + usage.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + usage.reasoning_tokens,
            cost=cost,
        )

    def as_chat_completions(self) -> dict[str, Any]:
        """The Chat Completions ``usage`` object (what ``normalize_usage`` reads)."""
        usage: dict[str, Any] = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
        if self.cost is not None:
            usage["cost"] = self.cost
        return usage


def format_final_status(
    elapsed_s: float, usage: UsageTotals | None, generation_s: float | None
) -> str:
    """The final status line (inventory §C): figures separated by `` · ``, e.g.

    ``5.99 s · 30.9 tokens/s · $0.0019 · 205 tokens (25 in, 180 out, 60 reasoning)``

    Time and durations as ``format_seconds`` writes them (``s`` after a space,
    as every duration this project shows); token counts with thousands
    separators; cached input and reasoning output only when there are some;
    the cost only when above zero. Without usage it is the time alone.

    tokens/s = output tokens over the generation window (first to last
    delta). It is left out without output tokens or when the window is
    shorter than ``MIN_TPS_WINDOW_S``: then the whole answer came in one or
    two batches and the quotient (or a division by zero) would be noise, not
    a rate.
    """
    figures = [format_seconds(elapsed_s)]
    if (
        usage is not None
        and usage.output_tokens > 0
        and generation_s is not None
        and generation_s >= MIN_TPS_WINDOW_S
    ):
        figures.append(f"{usage.output_tokens / generation_s:.1f} tokens/s")
    if usage is None:
        return _SEPARATOR.join(figures)
    cost = _money(usage.cost)
    if cost:
        figures.append(f"${cost}")
    details = [f"{usage.input_tokens:,} in"]
    if usage.cached_tokens > 0:
        details.append(f"{usage.cached_tokens:,} cached")
    details.append(f"{usage.output_tokens:,} out")
    if usage.reasoning_tokens > 0:
        details.append(f"{usage.reasoning_tokens:,} reasoning")
    total = usage.total_tokens or usage.input_tokens + usage.output_tokens
    noun = "token" if total == 1 else "tokens"
    figures.append(f"{total:,} {noun} ({', '.join(details)})")
    return _SEPARATOR.join(figures)


def _money(cost: float | None) -> str:
    """Six decimals with trailing zeros trimmed; "" when nothing worth showing."""
    if cost is None or cost <= 0:
        return ""
    text = f"{cost:.6f}".rstrip("0").rstrip(".")
    return "" if text == "0" else text
