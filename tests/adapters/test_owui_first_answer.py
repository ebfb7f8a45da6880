"""A branch's first answer loads nothing: neither the persister nor the store is asked."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from orpipe.adapters.openwebui.branch_references import BranchMessage
from orpipe.adapters.openwebui.history import load_replay_plan
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.statistics import EngineStatistics


class _CountingBridge:
    """Stands in for the bridge: counts what the history loader asks of it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def statistics(self) -> EngineStatistics:
        self.asked.append("statistics")
        raise _Stop

    async def wait_persisted(self, timeout_s: float) -> bool:
        self.asked.append("wait_persisted")
        raise _Stop

    async def call_store(self, load: Any) -> Any:
        self.asked.append("store")
        raise _Stop

    async def call_store_when_persisted(self, load: Any, timeout_s: float) -> Any:
        self.asked.append("wait_persisted")  # the barrier comes first, in the same crossing
        raise _Stop


class _Stop(Exception):
    pass


_CONTEXT = ArtifactContext(chat_id="chat-1", message_id="answer-1")
_HELLO = {"role": "user", "content": "hello"}


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """On an asyncio loop, as in Open WebUI (the loader paces itself with asyncio)."""
    return asyncio.run(coroutine)


def test_the_first_answer_of_a_branch_asks_nobody() -> None:
    bridge = _CountingBridge()
    loaded = _run(
        load_replay_plan(
            bridge,  # type: ignore[arg-type]
            [_HELLO],
            _CONTEXT,
            retention_turns=3,
            branch=[BranchMessage("question-1", "user")],
        )
    )
    assert bridge.asked == []
    assert loaded.plan is not None and not loaded.plan.artifacts and not loaded.plan.orphans
    assert loaded.plan.chat_id == "chat-1" and loaded.plan.tool_output_retention_turns == 3
    assert loaded.messages == (_HELLO,)  # keyed by branch: answers carry no reference lines
    assert not loaded.degraded and not loaded.writes_failing


def test_a_later_answer_still_waits_for_the_persister_and_reads_the_store() -> None:
    bridge = _CountingBridge()
    with pytest.raises(_Stop):
        _run(
            load_replay_plan(
                bridge,  # type: ignore[arg-type]
                [
                    _HELLO,
                    {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "more"},
                ],
                _CONTEXT,
                retention_turns=3,
                branch=[
                    BranchMessage("question-1", "user"),
                    BranchMessage("answer-0", "assistant"),
                    BranchMessage("question-2", "user"),
                ],
            )
        )
    assert bridge.asked == ["wait_persisted"]  # the barrier, once; statistics never


def test_a_chat_open_webui_does_not_keep_still_reads_the_store() -> None:
    """No branch (an API client's own ids): the store may hold a cut answer's artifacts."""
    bridge = _CountingBridge()
    with pytest.raises(_Stop):
        _run(load_replay_plan(bridge, [_HELLO], _CONTEXT, retention_turns=3))  # type: ignore[arg-type]
    assert bridge.asked == ["wait_persisted"]  # the barrier, once; statistics never
