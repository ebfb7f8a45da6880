"""Adjacent deltas reach Open WebUI as one chunk (openwebui.answer_stream.merged_deltas)."""

from __future__ import annotations

from orpipe.adapters.openwebui.answer_stream import merged_deltas
from orpipe.engine import Completed, ReasoningDelta, TextDelta


def _t(text: str) -> TextDelta:
    return TextDelta(request_id="r", text=text)


def _r(text: str) -> ReasoningDelta:
    return ReasoningDelta(request_id="r", text=text)


def test_adjacent_deltas_of_one_kind_become_one() -> None:
    assert merged_deltas([_t("Hel"), _t("lo"), _t(" world")]) == [_t("Hello world")]
    assert merged_deltas([_r("a"), _r("b"), _t("c"), _t("d")]) == [_r("ab"), _t("cd")]


def test_order_and_everything_else_are_kept() -> None:
    done = Completed(request_id="r", response_id=None, text_chars=4)
    batch = [_t("a"), _r("think"), _t("b"), _t("c"), done]
    assert merged_deltas(batch) == [_t("a"), _r("think"), _t("bc"), done]
    assert merged_deltas([]) == []
    assert merged_deltas([done]) == [done]
