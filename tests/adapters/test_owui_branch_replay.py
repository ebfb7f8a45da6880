"""Replay keyed by Open WebUI's own chat tree: no reference text in any answer.

The chats live in Open WebUI 0.12.4's real chat store (``Chats``), written the
way its ``/api/chat/completions`` writes them before calling a pipe: the
user's message and the assistant placeholder whose id the pipe is given.
What is checked is what a person sees (an answer with nothing hidden in it)
and what OpenRouter gets on the next turn (the reasoning of the answer on
the current branch, and only that one).
"""

from __future__ import annotations

import importlib
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from orpipe.engine.artifacts import find_markers
from tests.adapters.asyncio_support import Mock
from tests.adapters.owui_storage import (  # noqa: F401
    OwuiModules,
    new_user,
    owui,
    owui_loop_scope,
)
from tests.adapters.test_owui_pipe import (  # noqa: F401 - fixtures used by name
    Owui,
    Recording,
    _turn,
    artifact_database,
    body,
    make_pipe,
    on_loop,
    read,
)


def _chats() -> Any:
    return importlib.import_module("open_webui.models.chats")


def _message(mid: str, parent: str | None, role: str, content: str = "") -> dict[str, Any]:
    return {
        "id": mid,
        "parentId": parent,
        "childrenIds": [],
        "role": role,
        "content": content,
        "timestamp": int(time.time()),
    }


class ChatTree:
    """One chat in Open WebUI's store, grown the way Open WebUI grows it."""

    def __init__(self, user_id: str) -> None:
        self.chat_id = f"chat-{secrets.token_hex(6)}"
        self.user_id = user_id

    async def start(self, user_mid: str, text: str, answer_mid: str) -> None:
        chats = _chats()
        history = {
            user_mid: {**_message(user_mid, None, "user", text), "childrenIds": [answer_mid]},
            answer_mid: _message(answer_mid, user_mid, "assistant"),
        }
        form = chats.ChatForm(
            chat={
                "id": self.chat_id,
                "title": "New Chat",
                "history": {"currentId": answer_mid, "messages": history},
                "messages": [],
            }
        )
        await chats.Chats.insert_new_chat(self.chat_id, self.user_id, form)

    async def add(self, mid: str, parent: str, role: str, content: str = "") -> None:
        await _chats().Chats.upsert_message_to_chat_by_id_and_message_id(
            self.chat_id, mid, _message(mid, parent, role, content)
        )

    async def answered(self, mid: str, text: str) -> None:
        """What Open WebUI stores once the answer ended."""
        await _chats().Chats.upsert_message_to_chat_by_id_and_message_id(
            self.chat_id, mid, {"content": text, "done": True}
        )


def _answered_reasoning(mock: Mock) -> str:
    """The id of the reasoning item the mock answered its newest request with."""
    recent = httpx.get(mock.root + "/mock/requests", timeout=5.0).json()
    newest = recent["requests"][-1] if isinstance(recent, dict) else recent[-1]
    (reasoning,) = [item["id"] for item in newest["output"] if item["type"] == "reasoning"]
    return str(reasoning)


def _replayed_reasoning(sent: dict[str, Any]) -> list[str]:
    return [str(item.get("id")) for item in sent["input"] if item.get("type") == "reasoning"]


def _request(history: list[dict[str, Any]], text: str) -> dict[str, Any]:
    request = body("mock.reasoning")
    request["messages"] = [request["messages"][0], *history, {"role": "user", "content": text}]
    return request


def test_the_branch_replays_reasoning_with_no_reference_in_any_answer(
    mock: Mock,
    owui: OwuiModules,  # noqa: F811
    loop_kind: str,
    artifact_database: Path,  # noqa: F811
) -> None:
    """Turn 1, a regenerated turn 1 (a sibling), turn 2 on the regenerated branch:
    answers carry no reference text, and turn 2 replays the regenerated answer's
    reasoning, not the first answer's."""

    async def scenario() -> None:
        async with owui_loop_scope(owui):
            pipe, rec = make_pipe(mock, "guest"), Recording()
            person = Owui(user_id=(await new_user(owui)).id)
            tree = ChatTree(person.user_id)

            await tree.start("u1", "Hi", "a1")
            person.message_id = "a1"
            first = await read(
                await _turn(pipe, person, _request([], "Hi"), rec, chat_id=tree.chat_id)
            )
            first_reasoning = _answered_reasoning(mock)
            assert first.text and not find_markers(first.text)
            assert "]: #" not in first.text
            await tree.answered("a1", first.text)

            # Regenerate: a sibling of a1 under the same question.
            await tree.add("a1b", "u1", "assistant")
            person.message_id = "a1b"
            again = await read(
                await _turn(pipe, person, _request([], "Hi"), rec, chat_id=tree.chat_id)
            )
            regenerated_reasoning = _answered_reasoning(mock)
            assert regenerated_reasoning != first_reasoning
            assert not find_markers(again.text)
            await tree.answered("a1b", again.text)

            # Turn 2 follows the regenerated answer.
            await tree.add("u2", "a1b", "user", "More")
            await tree.add("a2", "u2", "assistant")
            person.message_id = "a2"
            history = [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": again.text},
            ]
            second = await read(
                await _turn(pipe, person, _request(history, "More"), rec, chat_id=tree.chat_id)
            )
            assert not find_markers(second.text)
            sent = rec.bodies[-1]
            assert _replayed_reasoning(sent) == [regenerated_reasoning]
            kinds = [(i.get("type"), i.get("role")) for i in sent["input"]]
            # The reasoning comes before the answer text it led to.
            assert kinds == [
                ("message", "system"),
                ("message", "user"),
                ("reasoning", None),
                ("message", "assistant"),
                ("message", "user"),
            ]

            # An edited question starts a new branch from the first answer: its
            # reasoning, and not the regenerated one's, goes back.
            await tree.add("u2-edited", "a1", "user", "More, edited")
            await tree.add("a3", "u2-edited", "assistant")
            person.message_id = "a3"
            history = [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": first.text},
            ]
            await read(
                await _turn(
                    pipe, person, _request(history, "More, edited"), rec, chat_id=tree.chat_id
                )
            )
            assert _replayed_reasoning(rec.bodies[-1]) == [first_reasoning]

    on_loop(loop_kind, scenario, limit_s=60)


def test_a_chat_written_with_references_still_replays(
    mock: Mock,
    owui: OwuiModules,  # noqa: F811
    loop_kind: str,
    artifact_database: Path,  # noqa: F811
) -> None:
    """An API client's own chat ids (Open WebUI keeps no such chat): the answer carries
    its reference line, as chats written before keep doing, and the next turn
    replays through it."""

    async def scenario() -> None:
        async with owui_loop_scope(owui):
            pipe, rec = make_pipe(mock, "guest"), Recording()
            person = Owui(user_id=f"user-{secrets.token_hex(4)}")
            chat_id = f"api-chat-{secrets.token_hex(4)}"
            person.message_id = "m1"
            first = await read(await _turn(pipe, person, _request([], "Hi"), rec, chat_id=chat_id))
            first_reasoning = _answered_reasoning(mock)
            assert len(find_markers(first.text)) == 1
            person.message_id = "m2"
            history = [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": first.text},
            ]
            await read(await _turn(pipe, person, _request(history, "More"), rec, chat_id=chat_id))
            assert _replayed_reasoning(rec.bodies[-1]) == [first_reasoning]

    on_loop(loop_kind, scenario, limit_s=60)
