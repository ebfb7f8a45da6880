"""The browser step of ``make owui-smoke`` (``bench.owui_browser``).

The pure helpers decide every verdict from what was seen, so they are tested on the
shapes Open WebUI 0.12.4 and the mock produce, including the failures the step exists
to catch (a copied reference line, two thinking indicators, a repeated status, a built-in
tool's warning toast, a turn that dropped its reasoning).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from orpipe.bench.headless_chromium import open_chromium
from orpipe.bench.owui_browser import _check_copy, _check_status_history, _Page
from orpipe.bench.owui_browser_checks import (
    COPY_TOAST,
    answer_problem,
    copy_problem,
    error_text,
    find_chat_request,
    normalize_ws,
    replay_problem,
    short,
    status_history_problems,
    stored_status_entries,
    thinking_indicators,
    unexpected_toasts,
)
from orpipe.bench.owui_browser_js import INIT_SCRIPT, SAMPLE_JS, STORED_JS

ANSWER = "screen the naïve into arrives 日本語 and the café"


def test_normalize_ws_and_short() -> None:
    assert normalize_ws("  a\n\n b\tc ") == "a b c"
    assert short("abc") == "'abc'"
    long = "x" * 50 + "y" * 50
    assert short(long, 20) == "'xxxxxxxxxx'…(80 chars)…'yyyyyyyyyy'"


def test_copy_of_exactly_the_visible_answer_passes() -> None:
    assert copy_problem([ANSWER], ANSWER + "\n") is None
    assert copy_problem(["a  b\nc"], "a b c") is None  # layout whitespace is not a difference


def test_copy_with_an_invisible_reference_line_names_it() -> None:
    problem = copy_problem([ANSWER + "\n\n[01M994XCE56AGEJCZGRW]: #"], ANSWER)
    assert problem == (
        "the copy has 26 characters more than the visible answer, at its end: "
        "' [01M994XCE56AGEJCZGRW]: #'"
    )


def test_copy_problems_say_what_differs() -> None:
    assert copy_problem([], ANSWER) == "the Copy click put nothing on the clipboard"
    assert copy_problem(["a", "a"], "a") == "the Copy click copied 2 times: [\"'a'\", \"'a'\"]"
    assert copy_problem(["screen the"], ANSWER) == (
        "the copy lacks the visible answer's end: ' naïve into arrives 日本語 and the café'"
    )
    assert copy_problem(["screen a cat"], "screen the dog") == (
        "copy and visible answer differ after 7 characters: the copy continues 'a cat', "
        "the page shows 'the dog'"
    )
    assert copy_problem(["x"], "  ") == "the answer shows no text, yet 'x' was copied"


def test_thinking_indicators_count_blocks_and_a_thinking_status() -> None:
    assert thinking_indicators({"reasoning": ["Thinking..."], "status": "Thinking…"}) == [
        "reasoning block 'Thinking...'",
        "status line 'Thinking…'",
    ]
    assert thinking_indicators({"reasoning": ["Thought for 2 seconds"], "status": "2.1 s"}) == [
        "reasoning block 'Thought for 2 seconds'"
    ]
    assert thinking_indicators({"reasoning": [], "status": None}) == []
    assert thinking_indicators({}) == []


def test_status_history_problems() -> None:
    clean = ["Waiting for OpenRouter…", "OpenRouter responded in 0.17 s", "2.37 s · 27 tokens/s"]
    assert status_history_problems(clean) == []
    assert status_history_problems(["Waiting…", "", "Thinking…", "Thinking… ", "Time: 5.99s"]) == [
        "entry 2 of 5 is blank",
        "'Thinking…' appears 2 times",
    ]


def test_stored_status_entries_skip_hidden_ones() -> None:
    history = [
        {"description": "Waiting", "done": False},
        {"description": "", "hidden": True},
        {"done": True},
        "junk",
    ]
    assert stored_status_entries(history) == ["Waiting", ""]
    assert stored_status_entries(None) is None


def test_only_the_copy_buttons_own_toast_is_expected() -> None:
    toasts = [
        {"type": "success", "text": COPY_TOAST},
        {
            "type": "warning",
            "text": "Tool 'ask_user' takes a free-form object, which strict tool calling "
            "cannot describe, so it is offered without strict checking.",
        },
        {"type": "error", "text": ""},
    ]
    assert unexpected_toasts(toasts) == [
        "warning: Tool 'ask_user' takes a free-form object, which strict tool calling cannot "
        "describe, so it is offered without strict checking.",
        "error: (no text)",
    ]
    assert unexpected_toasts(toasts[:1]) == []


def test_error_text_and_answer_problem() -> None:
    assert error_text(None) == ""
    assert error_text({"content": "name '_StatusBook' is not defined"}) == (
        "name '_StatusBook' is not defined"
    )
    assert error_text({"error": {"message": "boom"}}) == "boom"
    assert error_text("plain") == "plain"
    assert answer_problem(ANSWER, {"content": ANSWER, "error": None}) is None
    assert answer_problem("x", {"error": {"content": "broken"}}) == (
        "Open WebUI shows an error instead of an answer: 'broken'"
    )
    assert answer_problem(" ", {"content": ""}) == "the answer shows no text (stored content '')"
    assert answer_problem("x", {"problem": "HTTP 401"}) == (
        "could not read the stored message: HTTP 401"
    )


def _record(seq: int, items: list[dict[str, Any]], output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seq": seq,
        "model": "mock/reasoning",
        "scenario": "reasoning",
        "input": items,
        "output": output,
    }


FIRST = "reasoning chat, turn 1 (abc): please answer."
SECOND = "reasoning chat, turn 2 (abc): please answer."
TURN1 = _record(
    1,
    [{"type": "message", "role": "user", "text": FIRST}],
    [{"type": "reasoning", "id": "rs_1_0"}, {"type": "message", "id": "msg_1_0"}],
)
TITLE_TASK = _record(
    2,
    [{"type": "message", "role": "user", "text": f"### Task: a title\n<chat_history>{FIRST}"}],
    [{"type": "reasoning", "id": "rs_2_0"}, {"type": "message", "id": "msg_2_0"}],
)


def _turn2(*replayed: dict[str, Any]) -> dict[str, Any]:
    items = [
        {"type": "message", "role": "user", "text": FIRST},
        *replayed,
        {"type": "message", "role": "assistant", "text": "answer"},
        {"type": "message", "role": "user", "parts": ["input_text"], "text": SECOND},
    ]
    return _record(3, items, [{"type": "reasoning", "id": "rs_3_0"}])


def test_find_chat_request_skips_tasks_that_quote_the_chat() -> None:
    log = [TURN1, TITLE_TASK]
    assert find_chat_request(log, FIRST) is TURN1
    assert find_chat_request(log, "something else") is None


def test_replay_found_by_id_or_by_encrypted_content() -> None:
    by_id = _turn2({"type": "reasoning", "id": "rs_1_0", "encrypted_content": "gAAAAmock-rs_1_0-9"})
    ok, what = replay_problem([TURN1, TITLE_TASK, by_id], FIRST, SECOND)
    assert ok, what
    assert "rs_1_0" in what and "'reasoning'" in what
    no_id = _turn2({"type": "reasoning", "encrypted_content": "gAAAAmock-rs_1_0-9"})
    assert replay_problem([TURN1, no_id], FIRST, SECOND)[0]


def test_replay_problems_say_what_the_request_carried() -> None:
    ok, what = replay_problem([TURN1, _turn2()], FIRST, SECOND)
    assert not ok
    assert what == (
        "turn 2's request did not replay turn 1's reasoning ['rs_1_0']: its reasoning items "
        "none; its input items ['message/user', 'message/assistant', 'message/user']"
    )
    wrong = _turn2({"type": "reasoning", "id": "rs_2_0", "encrypted_content": "gAAAAmock-rs_2_0-9"})
    ok, what = replay_problem([TURN1, TITLE_TASK, wrong], FIRST, SECOND)
    assert not ok and "('rs_2_0', 'gAAAAmock-rs_2_0-9')" in what
    ok, what = replay_problem([TURN1], FIRST, SECOND)
    assert not ok and what.startswith("no request to the mock for the second turn")
    plain = _record(1, TURN1["input"], [{"type": "message", "id": "msg_1_0"}])
    ok, what = replay_problem([plain, _turn2()], FIRST, SECOND)
    assert not ok and what == "the mock sent no reasoning item in turn 1 (reasoning)"


# --------------------------------------------------------------------------------------------
# The page scripts, in headless Chromium, on a page shaped like Open WebUI 0.12.4's chat
# --------------------------------------------------------------------------------------------

MESSAGE_ID = "0a1b2c3d-0000-4000-8000-000000000001"
REFERENCE = "[01M994XCE56AGEJCZGRW]: #"
STATUS = "2.37 s · 27.3 tokens/s"
WARNING = "Tool 'ask_user' is offered without strict checking."

#: One finished answer as Open WebUI renders it: status line + history, a reasoning block,
#: the text, a Copy button whose text carries an invisible reference line; and a toast
#: that lives for 60 ms, long after the page started and gone before anyone looks.
CHAT_PAGE = f"""<!doctype html><html><head><meta charset="utf-8"></head><body>
<div id="message-{MESSAGE_ID}" class="flex"><div class="chat-assistant"><div>
  <div class="flex flex-col">
    <button aria-label="Toggle status history" aria-expanded="false" onclick="toggle(this)">
      <div class="status-description">{STATUS}</div></button>
    <div id="history" style="display: none">
      <div class="status-description">Waiting for OpenRouter…</div>
      <div class="status-description">Thinking…</div>
      <div class="status-description">Thinking…</div>
      <div class="status-description">{STATUS}</div>
    </div>
  </div>
  <div id="response-content-container">
    <div><button aria-expanded="false">Thought for 2 seconds</button></div>
    <p>screen the naïve   into arrives</p>
  </div>
  <button class="copy-response-button" aria-label="Copy"
    onclick="navigator.clipboard.writeText('screen the naïve into arrives\\n\\n{REFERENCE}')"
  >Copy</button>
</div></div></div>
<script>
  function toggle(b) {{
    const h = document.getElementById('history');
    const open = h.style.display === 'none';
    h.style.display = open ? 'block' : 'none';
    b.setAttribute('aria-expanded', String(open));
  }}
  setTimeout(() => {{
    const li = document.createElement('li');
    li.setAttribute('data-sonner-toast', '');
    li.setAttribute('data-type', 'warning');
    document.body.appendChild(li);
    setTimeout(() => {{ li.textContent = {WARNING!r}; }}, 10);
    setTimeout(() => li.remove(), 60);
  }}, 300);
</script></body></html>"""

STORED = {
    "chat": {
        "history": {
            "messages": {
                MESSAGE_ID: {
                    "content": "screen the naïve into arrives\n\n" + REFERENCE,
                    "statusHistory": [
                        {"description": "Waiting for OpenRouter…"},
                        {"description": "Thinking…"},
                        {"description": "Thinking…"},
                        {"description": "", "hidden": True},
                        {"description": STATUS, "done": True},
                    ],
                }
            }
        }
    }
}


async def _chat_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/api/v1/chats/chat1":
        body, kind = json.dumps(STORED).encode(), b"application/json"
    else:
        body, kind = CHAT_PAGE.encode(), b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.timeout(120)
async def test_page_scripts_see_what_open_webui_shows(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.loglevel = "WARNING"
    app: Any = _chat_app  # hypercorn types ASGI messages as TypedDicts; same wire shape
    binds: list[str] = await nursery.start(partial(serve, app, config, mode="asgi"))
    url = binds[0] + "/c/chat1"
    async with open_chromium("about:blank", tmp_path / "profile") as page:
        await page.add_init_script(INIT_SCRIPT)
        await page.navigate(url)
        p = _Page(page)
        await p.wait_for("!!document.querySelector('.copy-response-button')", "the page", 30)

        sample = await page.evaluate_or_raise(SAMPLE_JS)
        assert sample["count"] == 1 and sample["id"] == MESSAGE_ID and sample["done"]
        assert sample["reasoning"] == ["Thought for 2 seconds"]
        assert sample["status"] == STATUS
        assert thinking_indicators(sample) == ["reasoning block 'Thought for 2 seconds'"]

        await p.wait_for("window.__orpipe.toasts.length > 0", "the toast", 10)
        await p.wait_for("!document.querySelector('[data-sonner-toast]')", "the toast to go", 10)
        state = await p.state()
        assert state["toasts"] == [
            {"type": "warning", "text": WARNING, "at": state["toasts"][0]["at"]}
        ]
        assert unexpected_toasts(state["toasts"]) == [f"warning: {WARNING}"]

        check = await _check_copy(p, MESSAGE_ID)
        assert not check.ok
        assert check.what == (
            "the answer: Copy = the visible text: the copy has 26 characters more than the "
            "visible answer, "
            f"at its end: ' {REFERENCE}'"
        )

        stored = await page.evaluate_or_raise(
            STORED_JS % json.dumps(MESSAGE_ID), await_promise=True
        )
        assert answer_problem("screen", stored) is None
        check, line = await _check_status_history(p, MESSAGE_ID, stored)
        assert line == STATUS
        assert not check.ok
        assert check.what == (
            "the answer: status history clean: 'Thinking…' appears 2 times in "
            "['Waiting for OpenRouter…' | "
            f"'Thinking…' | 'Thinking…' | '{STATUS}']"
        )
        assert (
            await page.evaluate(
                "document.querySelector('[aria-label=\"Toggle status history\"]')"
                ".getAttribute('aria-expanded')"
            )
            == "true"
        )
