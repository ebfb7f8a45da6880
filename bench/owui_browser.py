"""The browser step of ``make owui-smoke``: Open WebUI 0.12.4 as a person sees it.

Headless Chromium (``bench.headless_chromium``, the DevTools protocol) signs in through
Open WebUI's sign-in form, opens a new chat per model (``/?model=<id>``), types each
message into the chat input and presses Enter, then watches the page under a deadline
while the answer streams. Per answer it checks:

- **thinking indicators**: at any moment at most one of Open WebUI's reasoning block
  ("Thinking..." / "Thought for …") plus a status line that says Thinking;
- **Copy**: a real click on the answer's Copy button puts exactly the answer's visible
  text on the clipboard (``navigator.clipboard`` is replaced by a recorder before the
  page's own scripts run, so nothing depends on the headless clipboard);
- **status history**: expanded with a click, no entry is blank and none repeats.

Per chat: no toast at all while it ran (a ``MutationObserver`` installed before the
page's scripts catches short-lived svelte-sonner toasts; the one toast a Copy click
itself raises is expected), and for the reasoning model a second turn whose request to
the mock carried the first turn's reasoning item (``/mock/requests``). A screenshot of
each chat, and one of the reasoning answer while it streams, go to the run's log
directory.

The checks are decided from what was seen by the pure helpers of
``bench.owui_browser_checks``; the page's scripts are ``bench.owui_browser_js``; this
module only drives the browser and gathers. Every check reports what it saw, pass or fail.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from orpipe.bench import owui_browser_checks as verdicts
from orpipe.bench.headless_chromium import DevToolsPage, open_chromium
from orpipe.bench.owui_browser_checks import BrowserChat, Check
from orpipe.bench.owui_browser_js import (
    CENTRE_JS,
    INIT_SCRIPT,
    SAMPLE_JS,
    STATUS_JS,
    STORED_JS,
    VISIBLE_JS,
    button_with_text,
    in_message,
)

__all__ = ["BrowserStepError", "run_browser_checks"]

#: How long one answer may take to finish (seconds).
ANSWER_DEADLINE_S: Final = 120.0
#: How often the page is sampled while an answer streams (seconds).
SAMPLE_EVERY_S: Final = 0.1


# --------------------------------------------------------------------------------------------
# Driving the page
# --------------------------------------------------------------------------------------------


class _Page:
    """The page plus polling helpers; every wait has a deadline and says what it waited for."""

    def __init__(self, page: DevToolsPage) -> None:
        self.page = page

    async def poll(self, expression: str, timeout_s: float) -> Any:
        """The expression's first truthy value within ``timeout_s``, else None."""
        with trio.move_on_after(timeout_s):
            while True:
                value = await self.page.evaluate(expression)
                if value:
                    return value
                await trio.sleep(0.1)
        return None

    async def wait_for(self, expression: str, what: str, timeout_s: float = 30.0) -> Any:
        """Like ``poll``, but a timeout ends the step with ``what`` it waited for."""
        value = await self.poll(expression, timeout_s)
        if not value:
            raise BrowserStepError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        return value

    async def click(self, find: str, what: str, timeout_s: float = 15.0) -> None:
        """Click the element ``find`` (a JS expression) with the mouse, once it is visible,
        uncovered and has stopped moving (modals fly in, content loads above buttons)."""
        with trio.move_on_after(timeout_s):
            previous = None
            while True:
                centre = await self.page.evaluate(CENTRE_JS % find)
                if centre and centre == previous:
                    await self.page.click(float(centre["x"]), float(centre["y"]))
                    return
                previous = centre
                await trio.sleep(0.15)
        raise BrowserStepError(f"timed out after {timeout_s:.0f} s waiting to click {what}")

    async def type_into(self, find: str, text: str, what: str) -> None:
        await self.click(find, what)
        await self.page.insert_text(text)

    async def state(self) -> dict[str, Any]:
        value = await self.page.evaluate("window.__orpipe ?? null")
        return value if isinstance(value, dict) else {"toasts": [], "copied": [], "errors": []}


class BrowserStepError(Exception):
    """The browser could not get as far as a check (a page never showed what it needed)."""


@dataclass
class _Answer:
    """What was seen of one answer while it streamed and once it was done."""

    message_id: str = ""
    worst: list[str] = field(default_factory=list)
    worst_sample: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    final: dict[str, Any] = field(default_factory=dict)


async def _sign_in(p: _Page, owui: str, email: str, password: str) -> None:
    await p.page.navigate(f"{owui}/auth")
    await p.wait_for("!!document.getElementById('password')", "the sign-in form", 60)
    await p.type_into("document.getElementById('email')", email, "the email field")
    await p.type_into("document.getElementById('password')", password, "the password field")
    await p.page.press_key("Enter")
    await p.wait_for(
        "!!localStorage.token && location.pathname !== '/auth'", "signing in to finish", 30
    )


async def _dismiss_changelog(p: _Page) -> None:
    """Open WebUI greets an admin with its changelog once; close it like a person would."""
    find = button_with_text("Okay, Let's Go!")
    if not await p.poll(f"!!({find})", 2):
        return
    for _ in range(3):
        await p.click(find, "the changelog's close button")
        if await p.poll(f"!({find})", 3):
            return
    raise BrowserStepError("the changelog stayed open after three clicks on its close button")


async def _send(p: _Page, text: str) -> None:
    await p.type_into("document.getElementById('chat-input')", text, "the chat input")
    await p.page.press_key("Enter")


async def _watch_answer(
    p: _Page, turn: int, shots: str | None, say: Callable[[str], None]
) -> _Answer:
    """Sample the newest answer until it is done and settled; keep the worst moment.

    With ``shots`` (a path without suffix), screenshots ``<shots>-streaming.png`` the first
    time the answer shows reasoning or text before it is done, and
    ``<shots>-indicators.png`` the first time it shows more than one thinking indicator."""
    seen = _Answer()
    taken: set[str] = set()

    async def shoot(kind: str) -> None:
        if shots is None or kind in taken:
            return
        taken.add(kind)
        path = Path(f"{shots}-{kind}.png")
        await p.page.screenshot(path)
        say(f"screenshot ({kind}): {path}")

    def note(sample: Mapping[str, Any]) -> list[str]:
        found = verdicts.thinking_indicators(sample)
        if len(found) > len(seen.worst):
            seen.worst, seen.worst_sample = found, dict(sample)
        return found

    sample: Any = None
    with trio.move_on_after(ANSWER_DEADLINE_S) as scope:
        while True:
            sample = await p.page.evaluate(SAMPLE_JS)
            if isinstance(sample, dict) and sample.get("count", 0) >= turn:
                seen.samples += 1
                seen.message_id = str(sample["id"])
                found = note(sample)
                if len(found) > 1:
                    await shoot("indicators")
                if sample["done"]:
                    break
                if sample["reasoning"] or sample["chars"]:
                    await shoot("streaming")
            await trio.sleep(SAMPLE_EVERY_S)
    if scope.cancelled_caught:
        raise BrowserStepError(
            f"answer {turn} not done after {ANSWER_DEADLINE_S:.0f} s (last sample: {sample})"
        )
    # The last status may land just after the Copy button appears: wait until it settles.
    previous: Any = None
    with trio.move_on_after(10):
        while sample != previous:
            previous = sample
            await trio.sleep(0.7)
            sample = await p.page.evaluate(SAMPLE_JS)
            if isinstance(sample, dict):
                note(sample)
    seen.final = sample if isinstance(sample, dict) else {}
    return seen


async def _check_copy(p: _Page, message_id: str, name: str = "the answer") -> Check:
    before = len((await p.state()).get("copied") or [])
    await p.click(in_message(message_id, "button.copy-response-button"), "the Copy button")
    await p.poll(f"(window.__orpipe?.copied.length ?? 0) > {before}", 3)
    copied = ((await p.state()).get("copied") or [])[before:]
    visible = await p.page.evaluate_or_raise(VISIBLE_JS % json.dumps(message_id))
    problem = verdicts.copy_problem(copied, str(visible or ""))
    if problem is None:
        return Check(True, f"{name}: Copy copied exactly the visible text ({len(copied[0])} chars)")
    return Check(False, f"{name}: Copy = the visible text: {problem}")


async def _check_status_history(
    p: _Page, message_id: str, stored: Mapping[str, Any], name: str = "the answer"
) -> tuple[Check, str | None]:
    status = await p.page.evaluate_or_raise(STATUS_JS % json.dumps(message_id))
    if status is None:
        return Check(True, f"{name} shows no status line (no history to check)"), None
    if not status["expanded"]:
        find = in_message(message_id, 'button[aria-label="Toggle status history"]')
        await p.click(find, "the status line")
        await p.wait_for(
            f"{find}?.getAttribute('aria-expanded') === 'true'", "the status history to open", 5
        )
        status = await p.page.evaluate_or_raise(STATUS_JS % json.dumps(message_id))
    line = str(status["line"])
    entries: list[str] = status["entries"] or [line]
    problems = verdicts.status_history_problems(entries)
    kept = verdicts.stored_status_entries(stored.get("statusHistory"))
    if kept is not None and len(kept) != len(entries):
        problems.append(
            f"the page lists {len(entries)} entries but Open WebUI stored {len(kept)} "
            f"visible ones: {kept}"
        )
    listing = " | ".join(repr(e) for e in entries)
    if problems:
        what = f"{name}: status history clean: {'; '.join(problems)} in [{listing}]"
        return Check(False, what), line
    return Check(
        True, f"{name}: status history has {len(entries)} clean entries: [{listing}]"
    ), line


async def _mock_log(mock_root: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{mock_root}/mock/requests")
    response.raise_for_status()
    requests: list[dict[str, Any]] = response.json()["requests"]
    return requests


@dataclass
class _Step:
    """The browser step's surroundings: the page, where things are, where verdicts go."""

    p: _Page
    owui: str
    mock_root: str
    out_dir: Path
    say: Callable[[str], None]
    results: list[Check] = field(default_factory=list)

    def report(self, check: Check) -> None:
        self.results.append(check)
        self.say(f"{'ok' if check.ok else 'FAIL'}: {check.what}")


async def _run_turn(step: _Step, chat: BrowserChat, turn: int, message: str) -> None:
    p = step.p
    await _send(p, message)
    step.say(f"{chat.label} chat: typed turn {turn} into {chat.model} and pressed Enter")
    shots = str(step.out_dir / f"{chat.label}-turn{turn}")
    answer = await _watch_answer(p, turn, shots, step.say)
    name = f"{chat.label} answer {turn}"
    visible = str(await p.page.evaluate_or_raise(VISIBLE_JS % json.dumps(answer.message_id)))
    stored = await p.page.evaluate_or_raise(
        STORED_JS % json.dumps(answer.message_id), await_promise=True
    )
    problem = verdicts.answer_problem(visible, stored)
    step.report(
        Check(
            problem is None,
            f"{name} arrived: {problem or verdicts.short(verdicts.normalize_ws(visible), 60)} "
            f"({answer.samples} samples while it streamed)",
        )
    )
    worst = answer.worst
    step.report(
        Check(
            len(worst) <= 1,
            f"{name}: at most one thinking indicator at any moment (most seen: "
            f"{len(worst)}{': ' + ' + '.join(worst) if worst else ''})",
        )
    )
    if chat.reasoning:
        blocks = answer.final.get("reasoning") or []
        step.report(
            Check(len(blocks) == 1, f"{name} shows Open WebUI's reasoning block once: {blocks}")
        )
    step.report(await _check_copy(p, answer.message_id, name))
    check, line = await _check_status_history(p, answer.message_id, stored, name)
    step.report(check)
    step.say(f"{name}: final status line {line!r}")
    request = verdicts.find_chat_request(await _mock_log(step.mock_root), message)
    seen = (request.get("model"), request.get("scenario")) if request else None
    step.report(Check(request is not None, f"{name}: the mock received the typed message {seen}"))


async def _run_chat(step: _Step, chat: BrowserChat) -> None:
    p = step.p
    await p.page.navigate(f"{step.owui}/?model={chat.model}")
    await p.wait_for("!!document.getElementById('chat-input')", f"the chat page of {chat.model}")
    await _dismiss_changelog(p)
    tag = secrets.token_hex(3)
    messages = [
        f"{chat.label} chat, turn {turn} ({tag}): please answer."
        for turn in range(1, chat.turns + 1)
    ]
    for turn, message in enumerate(messages, 1):
        await _run_turn(step, chat, turn, message)
    await trio.sleep(1.0)  # toasts raised by the last answer's follow-up tasks
    # Toasts still showing are recorded already; let them go so the screenshot shows the chat.
    await p.poll("!document.querySelector('[data-sonner-toast]')", 10)
    shot = step.out_dir / f"{chat.label}-chat.png"
    await p.page.screenshot(shot)
    step.say(f"screenshot of the {chat.label} chat: {shot}")
    state = await p.state()
    seen = state.get("toasts") or []
    toasts = verdicts.unexpected_toasts(seen)
    step.report(
        Check(
            not toasts,
            f"{chat.label} chat raised no toast ({len(seen)} seen, {len(seen) - len(toasts)} "
            f"of them Copy's own){': ' + ' || '.join(toasts) if toasts else ''}",
        )
    )
    if state.get("errors"):
        step.say(f"note: page recorder errors: {state['errors']}")
    if chat.reasoning and chat.turns >= 2:
        log = await _mock_log(step.mock_root)
        ok, what = verdicts.replay_problem(log, messages[0], messages[1])
        step.report(Check(ok, f"second turn replays the first turn's reasoning: {what}"))


DEFAULT_CHATS: Final = (
    BrowserChat("reasoning", "orpipe.mock.reasoning", turns=2, reasoning=True),
    BrowserChat("plain", "orpipe.mock.text", turns=1),
)


async def run_browser_checks(
    owui: str,
    mock_root: str,
    *,
    email: str,
    password: str,
    out_dir: Path,
    say: Callable[[str], None],
    chats: Sequence[BrowserChat] = DEFAULT_CHATS,
) -> list[Check]:
    """Sign in, run each chat, return every verdict (each also passed to ``say``).

    A page that never shows what the next step needs, a page script that throws or a
    mock that does not answer ends the step with a failed verdict naming it (and a
    screenshot, ``stuck.png``); the verdicts so far are kept."""
    await trio.Path(out_dir).mkdir(parents=True, exist_ok=True)
    # Tall enough that a two-turn chat with its status histories open fits one screenshot.
    async with open_chromium(
        "about:blank", out_dir / "chromium-profile", window=(1400, 1400)
    ) as page:
        step = _Step(_Page(page), owui, mock_root, out_dir, say)
        await page.add_init_script(INIT_SCRIPT)
        try:
            await _sign_in(step.p, owui, email, password)
            step.report(Check(True, f"signed in through Open WebUI's sign-in form as {email}"))
            for chat in chats:
                await _run_chat(step, chat)
        except (BrowserStepError, RuntimeError, httpx.HTTPError) as exc:
            stuck = out_dir / "stuck.png"
            await page.screenshot(stuck)
            step.report(Check(False, f"{exc} (screenshot {stuck})"))
    return step.results
