"""One generator per class of hostile stream: ``generate(cls, seed, limits) -> Case``.

Every case is a pure function of its class name, its seed and the engine
limits it was made for, so ``--case CLASS:SEED@CONFIG`` replays it exactly.
Each class has one hostile trait; the rest (HTTP framing, keep-alive, how
writes are split, JSON spelling, the request's batching settings) varies
at random underneath, and ``Case.describe()`` names every choice.

The expectation is what a correct engine owes its user: for a well-formed
stream (whatever its framing, splits, line ends, comments or pauses) the
exact text and reasoning, the usage, the response id, the cited URLs and a
``Completed``; for a broken one a ``Failed`` that keeps the text received
so far and, where the upstream said why, says it too.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any, Literal

from tests.fuzz.script import Attempt, Case, EndKind, Expect, Limits, Sleep
from tests.fuzz.sse import LineEnd, Raw, SseStyle, encode_body
from tests.fuzz.streams import (
    Event,
    Story,
    StoryBuilder,
    StoryShape,
    build_story,
    dump_json,
    terminal_event,
)
from tests.fuzz.wire import Framing, Response, SplitMode, build_attempt

__all__ = ["CLASSES", "CLASS_NAMES", "generate", "pick_class"]

Item = Event | Raw | Sleep
_HTTP_ERRORS = (400, 401, 402, 403, 404, 408, 413, 422, 429, 500, 502, 503, 524, 529)
_RETRYABLE = (429, 500, 502, 503, 529)
_HTML = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    b"<title>openrouter.ai | 502: Bad gateway</title></head>\n<body>"
    b"<h1>Bad gateway</h1><p>Error code 502</p>"
    b'<p>data: {"type":"response.completed"}</p>\n</body></html>\n'
)


class _Gen:
    """The state of one case being generated."""

    def __init__(self, cls: str, seed: int, limits: Limits) -> None:
        self.cls = cls
        self.seed = seed
        self.limits = limits
        self.rng = random.Random(f"{cls}:{seed}")
        self.builder = StoryBuilder(self.rng)
        self.notes: list[str] = []

    # -- building blocks ----------------------------------------------------

    def shape(self, **overrides: Any) -> StoryShape:
        rng = self.rng
        values: dict[str, Any] = {
            "text_length": rng.choice([0, 1, 5]) if rng.random() < 0.05 else rng.randint(5, 400),
            "reasoning_parts": 0 if rng.random() < 0.6 else rng.randint(1, 3),
            "raw_reasoning": rng.random() < 0.1,
            "messages": 2 if rng.random() < 0.1 else 1,
            "annotations": 0.0 if rng.random() < 0.7 else 0.15,
            "split_emoji": rng.choice([0.0, 0.3, 0.9]),
        }
        values.update(overrides)
        if values["raw_reasoning"] and not values["reasoning_parts"]:
            values["raw_reasoning"] = False
        return StoryShape(**values)

    def story(self, **overrides: Any) -> Story:
        shape = self.shape(**overrides)
        story = build_story(self.builder, shape)
        self.notes.append(
            f"text {shape.text_length} chars in {story.delta_count} deltas ({shape.delta_mode})"
            + (f", reasoning {shape.reasoning_parts} part(s)" if shape.reasoning_parts else "")
            + (", raw reasoning" if shape.raw_reasoning and shape.reasoning_parts else "")
            + (f", {shape.messages} messages" if shape.messages > 1 else "")
            + (", interleaved" if shape.interleave else "")
            + (", annotations" if shape.annotations else "")
            + (f", emoji split {shape.split_emoji:g}" if shape.split_emoji else "")
        )
        return story

    def framing(self) -> Framing:
        roll = self.rng.random()
        return "chunked" if roll < 0.4 else "content_length" if roll < 0.7 else "close"

    def split(self, *choices: SplitMode) -> SplitMode:
        return self.rng.choice(choices or ("block", "block", "merge", "random"))

    def complete_end(self) -> EndKind:
        return "keep_alive" if self.rng.random() < 0.5 else "close"

    def attempt(
        self, blocks: list[bytes | Sleep], style: SseStyle | None = None, **response: Any
    ) -> Attempt:
        response.setdefault("framing", self.framing())
        response.setdefault("split", self.split())
        response.setdefault("end", self.complete_end())
        notes = style.describe() if style is not None else ""
        return build_attempt(self.rng, Response(**response), blocks, notes)

    def case(self, attempts: list[Attempt], expect: Expect, **settings: Any) -> Case:
        rng = self.rng
        roll = rng.random()
        ucl: int | None = None if roll < 0.3 else 500 if roll < 0.4 else rng.randint(10, 500)
        roll = rng.random()
        idle: float | None = None if roll < 0.3 else 0.0 if roll < 0.45 else rng.uniform(0, 2000)
        pause = rng.uniform(0.001, 0.02) if rng.random() < 0.1 else 0.0
        values: dict[str, Any] = {
            "update_char_limit": ucl,
            "idle_flush_ms": idle,
            "consumer_pause_s": pause,
        }
        values.update(settings)
        return Case(
            cls=self.cls,
            seed=self.seed,
            attempts=tuple(attempts),
            expect=expect,
            notes=tuple(self.notes),
            **values,
        )

    def completed(self, story: Story, *, ending: str = "completed", **more: Any) -> Expect:
        values: dict[str, Any] = {
            "ending": ending,
            "text": story.text,
            "reasoning": story.reasoning,
            "notices_allowed": False,
            "response_id": story.response_id,
            "usage": story.usage,
            "citations": frozenset(story.urls),
        }
        values.update(more)
        return Expect(**values)

    def well_formed(
        self,
        story: Story,
        style: SseStyle,
        *,
        items: list[Item] | None = None,
        done: bool | None = None,
        terminal: Literal["completed", "incomplete"] = "completed",
        notices_allowed: bool = False,
        **response: Any,
    ) -> Case:
        """The whole stream, terminal event and (usually) ``[DONE]`` included."""
        rng = self.rng
        body: list[Item] = list(items if items is not None else flat(story))
        body.append(terminal_event(self.builder, story, terminal))
        done = rng.random() < 0.9 if done is None else done
        blocks = encode_body(body, style, rng, done=done)
        if not done:
            self.notes.append("no [DONE]")
        attempt = self.attempt(blocks, style, **response)
        expect = self.completed(story, ending=terminal, notices_allowed=notices_allowed)
        return self.case([attempt], expect)

    def position(self, story: Story, *, first: int = 0) -> int:
        """A group boundary: after this many groups."""
        return self.rng.randint(min(first, len(story.groups)), len(story.groups))

    def message(self) -> str:
        return f"fuzz upstream error {self.rng.getrandbits(32):08x}: the «provider» fell over 😀"


def flat(story: Story, groups: range | None = None) -> list[Item]:
    chosen = story.groups if groups is None else [story.groups[i] for i in groups]
    return [e for g in chosen for e in g]


def _with_inserts(story: Story, inserts: dict[int, list[Item]]) -> list[Item]:
    """The story's events with extra items after the given numbers of groups."""
    out: list[Item] = list(inserts.get(0, []))
    for index, group in enumerate(story.groups, start=1):
        out.extend(group)
        out.extend(inserts.get(index, []))
    return out


def _stall(
    blocks: list[bytes | Sleep], rng: random.Random, seconds: float, *, lo: int, hi: int
) -> None:
    """A pause in ``blocks[lo:hi]``: between two blocks or inside one."""
    index = rng.randint(lo, max(lo, hi))
    target = blocks[index] if index < len(blocks) else None
    if isinstance(target, bytes) and len(target) > 1 and rng.random() < 0.5:
        cut = rng.randint(1, len(target) - 1)
        blocks[index : index + 1] = [target[:cut], Sleep(seconds), target[cut:]]
    else:
        blocks.insert(index, Sleep(seconds))


def _block_index_of_terminal(blocks: list[bytes | Sleep], done: bool) -> int:
    """Index of the terminal event's block (the last event block)."""
    events = [i for i, b in enumerate(blocks) if isinstance(b, bytes)]
    return events[-2] if done else events[-1]


# --------------------------------------------------------------------------
# Well-formed streams (a Completed with the exact text is owed)
# --------------------------------------------------------------------------


def _well_formed_class(g: _Gen) -> Case:
    return g.well_formed(g.story(), SseStyle())


def _canary(g: _Gen) -> Case:
    story = g.story(reasoning_parts=1, annotations=0.2)
    case = g.well_formed(
        story, SseStyle(), done=True, framing="chunked", split="block", end="close"
    )
    # The engine's own batching settings, a reader that keeps up.
    return dataclasses.replace(
        case, update_char_limit=None, idle_flush_ms=None, consumer_pause_s=0.0
    )


def _split_class(g: _Gen) -> Case:
    line_end: LineEnd = g.rng.choice(["lf", "crlf"])
    story = g.story(text_length=g.rng.randint(5, 250))
    return g.well_formed(
        story, SseStyle(line_end=line_end), split=g.split("bytes", "tiny", "random")
    )


def _line_ends(g: _Gen) -> Case:
    line_end: LineEnd = g.rng.choice(["crlf", "cr", "mixed"])
    return g.well_formed(
        g.story(), SseStyle(line_end=line_end), split=g.split("block", "random", "tiny")
    )


def _bom(g: _Gen) -> Case:
    line_end: LineEnd = g.rng.choice(["lf", "lf", "crlf"])
    style = SseStyle(line_end=line_end, bom=True, multiline_first=g.rng.random() < 0.5)
    return g.well_formed(g.story(), style)


def _comments(g: _Gen) -> Case:
    rng = g.rng
    style = SseStyle(
        line_end=rng.choice(["lf", "crlf"]),
        comments=rng.choice([0.2, 0.6]),
        event_lines=rng.choice([0.0, 0.5, 1.0]),
        id_lines=rng.choice([0.0, 0.3]),
        other_fields=rng.choice([0.0, 0.2]),
        multiline=rng.choice([0.0, 0.3]),
        no_space=rng.choice([0.0, 0.5]),
    )
    story = g.story()
    keepalive = Raw(
        b": OPENROUTER PROCESSING\n\n"
        if style.line_end == "lf"
        else b": OPENROUTER PROCESSING\r\n\r\n"
    )
    items = _with_inserts(story, {0: [keepalive], g.position(story): [keepalive]})
    return g.well_formed(story, style, items=items)


def _unicode(g: _Gen) -> Case:
    story = g.story(multi_share=0.85, split_emoji=0.9, text_length=g.rng.randint(20, 300))
    return g.well_formed(story, SseStyle(), split=g.split("bytes", "tiny", "random", "block"))


def _reasoning(g: _Gen) -> Case:
    story = g.story(reasoning_parts=g.rng.randint(1, 4), annotations=0.3)
    return g.well_formed(story, SseStyle())


def _interleaved(g: _Gen) -> Case:
    story = g.story(
        reasoning_parts=g.rng.randint(1, 3), messages=g.rng.randint(1, 3), interleave=True
    )
    return g.well_formed(story, SseStyle())


def _long(g: _Gen) -> Case:
    # Large enough for the .done twins and the terminal event to pass 16 KiB,
    # small enough that no well-formed event passes max_event_bytes.
    cap = min(20_000, g.limits.max_event_bytes // 16)
    story = g.story(
        text_length=g.rng.randint(cap // 2, cap),
        delta_mode=g.rng.choice(["big", "normal"]),
        multi_share=0.1,
    )
    return g.well_formed(story, SseStyle(), split=g.split("block", "random"))


def _one_char(g: _Gen) -> Case:
    rng = g.rng
    window = g.limits.request_window_events
    story = g.story(
        text_length=min(1500, window + rng.randint(50, 400)),
        delta_mode="one_char",
        reasoning_parts=0,
        annotations=0.0,
    )
    case = g.well_formed(story, SseStyle(), split=g.split("block", "merge"))
    ucl = 500 if rng.random() < 0.5 else rng.randint(10, 500)
    idle = 0.0 if rng.random() < 0.5 else rng.uniform(0, 2000)
    return dataclasses.replace(case, update_char_limit=ucl, idle_flush_ms=idle)


def _incomplete(g: _Gen) -> Case:
    return g.well_formed(g.story(), SseStyle(), terminal="incomplete")


def _stall_short(g: _Gen) -> Case:
    rng = g.rng
    idle = g.limits.read_idle_timeout_s
    story = g.story(text_length=rng.randint(5, 200))
    body: list[Item] = [*flat(story), terminal_event(g.builder, story, "completed")]
    blocks = encode_body(body, SseStyle(), rng, done=True)
    end = len(blocks)
    # Up to three pauses, even all in one place, stay below the idle timeout together.
    for _ in range(rng.randint(1, 3)):
        _stall(blocks, rng, rng.uniform(0.05, 0.25) * idle, lo=0, hi=end)
        end = len(blocks)
    # Between two whole events with bytes on both sides, so no other pause adds to one.
    spots = []
    for i in range(1, len(blocks)):
        before, after = blocks[i - 1], blocks[i]
        if isinstance(before, bytes) and isinstance(after, bytes) and before.endswith(b"\n\n"):
            spots.append(i)
    if spots and rng.random() < 0.3:
        # A pause longer than the idle timeout, kept alive the way OpenRouter does.
        pieces = rng.randint(3, 4)
        alive: list[bytes | Sleep] = []
        for _ in range(pieces):
            alive += [Sleep(idle * 0.4), b": OPENROUTER PROCESSING\n\n"]
        at = rng.choice(spots)
        blocks[at:at] = alive
        g.notes.append(f"a {idle * 0.4 * pieces:.1f} s pause kept alive by comments")
    first = rng.uniform(0.05, 0.4) * idle if rng.random() < 0.3 else 0.0
    attempt = g.attempt(blocks, SseStyle(), first_byte_delay=first)
    return g.case([attempt], g.completed(story))


# --------------------------------------------------------------------------
# Junk inside otherwise well-formed streams (skipped; the text stays exact)
# --------------------------------------------------------------------------

_JUNK = (
    b'{"type": "response.output_text.delta", "delta": "abc',
    b"{not json}",
    b"[1, 2, 3]",
    b'"just a string"',
    b"42",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'{"type": "response.fuzz_unknown", "x": 1}',
    b'{"type": "response.fuzz_unknown.delta", "delta": "SHOULD NOT SHOW"}',
    b'{"foo": 1}',
    b'{"type": 5}',
    b'{"type": null, "delta": "SHOULD NOT SHOW"}',
    b'{"type": "response.output_text.delta", "delta": 123}',
    b'{"type": "response.output_text.delta"}',
    b"\xff\xfe\xfd",
    b'{"type": "response.fuzz_unknown", "s": "\xc3"}',
    b"",
    b"[DONE ]",
    b"[done]",
    b'\xef\xbb\xbf{"type": "response.fuzz_unknown"}',
    b'{"type": "response.fuzz_unknown", "type": "response.fuzz_unknown2"}',
    b'{"type": "response.fuzz_unknown", "x": NaN}',
    b'{"type": "response.output_text.annotation.added", "annotation": "not an object"}',
    b'{"type": "response.output_item.done", "item": null}',
    b'{"type": "response.created", "response": "nope"}',
    b'{"type": "response.output_text.delta", "delta": ["SHOULD", "NOT", "SHOW"]}',
)
_JUNK_BLOCKS = (b"event: error\n\n", b"id: 5\n\n", b"\n\n\n", b": only a comment\n\n", b"data\n\n")


def _junk(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    inserts: dict[int, list[Item]] = {}
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.8:
            item: Item = Event(payload=rng.choice(_JUNK))
        else:
            item = Raw(rng.choice(_JUNK_BLOCKS))
        inserts.setdefault(g.position(story), []).append(item)
    if g.limits.max_event_bytes > 64 * 1024 and rng.random() < 0.3:
        pad = b'{"type":"response.fuzz_big","pad":"' + b"x" * 40_000 + b'"}'
        inserts.setdefault(g.position(story), []).append(Event(payload=pad))
    g.notes.append(f"{sum(len(v) for v in inserts.values())} junk event(s)")
    items = _with_inserts(story, inserts)
    return g.well_formed(story, SseStyle(), items=items, notices_allowed=True)


def _nested(depth: int, form: str) -> bytes:
    if form == "array":
        return b"[" * depth + b"]" * depth
    if form == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if form == "typed":
        return b'{"type":"response.fuzz_nested","x":' + b"[" * depth + b"]" * depth + b"}"
    if form == "type_last":
        return (
            b'{"x":' + b'{"a":' * depth + b"1" + b"}" * depth + b',"type":"response.fuzz_nested"}'
        )
    if form == "annotation":
        return (
            b'{"type":"response.output_text.annotation.added","output_index":0,'
            b'"content_index":0,"annotation_index":0,"annotation":'
            + b'{"a":' * depth
            + b"null"
            + b"}" * depth
            + b"}"
        )
    return b"[" * depth  # unbalanced


def _deep_nesting(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    limit = int(g.limits.max_event_bytes * 0.4) // 6
    inserts: dict[int, list[Item]] = {}
    forms = []
    for _ in range(rng.randint(1, 2)):
        depth = min(limit, rng.choice([3000, 3000, 3000, 1000, 10_000, 30_000]))
        form = rng.choice(["array", "object", "typed", "type_last", "annotation", "unbalanced"])
        forms.append(f"{form} {depth} deep")
        inserts.setdefault(g.position(story), []).append(Event(payload=_nested(depth, form)))
    g.notes.append("nested JSON: " + ", ".join(forms))
    items = _with_inserts(story, inserts)
    return g.well_formed(story, SseStyle(), items=items, notices_allowed=True)


# --------------------------------------------------------------------------
# Broken streams (a Failed that keeps the text so far is owed)
# --------------------------------------------------------------------------


def _stall_long(g: _Gen) -> Case:
    rng = g.rng
    idle = g.limits.read_idle_timeout_s
    story = g.story(text_length=rng.randint(5, 200))
    body: list[Item] = [*flat(story), terminal_event(g.builder, story, "completed")]
    done = rng.random() < 0.8
    blocks = encode_body(body, SseStyle(), rng, done=done)
    seconds = idle * rng.uniform(1.25, 1.75)
    first = 0.0
    if rng.random() < 0.15:
        first = seconds  # before the status line: the engine may retry
    else:
        terminal = _block_index_of_terminal(blocks, done)
        _stall(blocks, rng, seconds, lo=0 if rng.random() < 0.15 else 1, hi=terminal)
    attempt = g.attempt(blocks, SseStyle(), first_byte_delay=first)
    expect = Expect(ending="failed", text_prefix_of=story.text, reasoning=None)
    return g.case([attempt], expect)


def _truncated(g: _Gen) -> Case:
    rng = g.rng
    style = SseStyle(line_end=rng.choice(["lf", "lf", "crlf"]))
    story = g.story()
    body: list[Item] = [*flat(story), terminal_event(g.builder, story, "completed")]
    blocks = encode_body(body, style, rng, done=True)
    sizes = [len(b) for b in blocks if isinstance(b, bytes)]
    terminal_start = sum(sizes[:-2])
    cut = rng.randint(0, terminal_start + sizes[-2] // 2)
    end: EndKind = rng.choice(["close", "close", "reset", "hold"])
    if rng.random() < 0.05:
        attempt = g.attempt(blocks, style, cut_wire_at=rng.randint(1, 40), end=end)
    else:
        attempt = g.attempt(blocks, style, cut_body_at=cut, end=end)
    expect = Expect(ending="failed", text_prefix_of=story.text)
    return g.case([attempt], expect)


def _no_terminal(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    done = rng.random() < 0.5
    blocks = encode_body(flat(story), SseStyle(), rng, done=done)
    end: EndKind = rng.choice(["close", "keep_alive", "hold"])
    if end == "hold" and done:
        end = "hold_after_terminal"  # [DONE] said it all
    g.notes.append("no terminal event" + (", [DONE]" if done else ""))
    attempt = g.attempt(blocks, SseStyle(), end=end)
    return g.case([attempt], Expect(ending="failed", text=story.text, notices_allowed=False))


def _oversized(g: _Gen) -> Case:
    rng = g.rng
    limit = g.limits.max_event_bytes
    story = g.story(text_length=rng.randint(5, 200))
    at = g.position(story)
    over = limit + rng.randint(1, 8192)
    form = rng.choice(["delta", "unended line", "many data lines", "unknown event"])
    big: Item
    if form == "delta":
        obj: dict[str, Any] = {
            "type": "response.output_text.delta",
            "item_id": "msg_x",
            "output_index": 0,
            "content_index": 0,
            "delta": "y" * over,
            "logprobs": [],
        }
        big = Event(payload=dump_json(obj, rng, ascii_share=0.0), name=obj["type"], obj=obj)
    elif form == "unended line":
        big = Raw(b"data: " + b"z" * over)
    elif form == "many data lines":
        line = b"data: " + b"w" * 1000 + b"\n"
        big = Raw(line * (over // 1000 + 2) + b"\n")
    else:
        pad = b'{"type":"response.fuzz_big","pad":"' + b"v" * over + b'"}'
        big = Event(payload=pad)
    g.notes.append(f"{form} of {over:,} bytes (limit {limit:,}) after {at} groups")
    items = _with_inserts(story, {at: [big]})
    items.append(terminal_event(g.builder, story, "completed"))
    blocks = encode_body(items, SseStyle(), rng, done=True)
    end: EndKind = "hold" if form == "unended line" and rng.random() < 0.5 else "close"
    attempt = g.attempt(blocks, SseStyle(), split=g.split("block", "random"), end=end)
    return g.case([attempt], Expect(ending="failed", text=story.text_until(at)))


def _error_tail(g: _Gen, story: Story, at: int, error: Item) -> Case:
    """The stream up to ``at`` groups, an in-band error, then one of several tails."""
    rng = g.rng
    tail = rng.choice(["done", "close", "more", "hold"])
    items = [*flat(story, range(at)), error]
    end: EndKind = "close" if tail != "hold" else "hold_after_terminal"
    if tail == "more":
        items.extend(flat(story, range(at, len(story.groups))))
    g.notes.append(f"error after {at} of {len(story.groups)} groups, then {tail}")
    blocks = encode_body(items, SseStyle(), rng, done=tail in ("done", "more"))
    attempt = g.attempt(blocks, SseStyle(), end=end)
    message = _message_of(error)
    expect = Expect(
        ending="failed", text=story.text_until(at), message_contains=message, notices_allowed=False
    )
    return g.case([attempt], expect)


def _message_of(error: Item) -> str:
    assert isinstance(error, Event) and isinstance(error.obj, dict)
    obj: dict[str, Any] = error.obj
    for holder in (obj, obj.get("error"), obj.get("response", {}).get("error")):
        if isinstance(holder, dict) and isinstance(holder.get("message"), str):
            return str(holder["message"])
    raise AssertionError("an error event without a message")


def _inband_error(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    at = g.position(story)
    message = g.message()
    form = rng.choice(["error", "error nested", "response.error", "response.failed"])
    if form == "error":
        error = g.builder.event(
            {"type": "error", "code": "server_error", "message": message, "param": None}
        )
    elif form == "error nested":
        error = g.builder.event({"type": "error", "error": {"code": 502, "message": message}})
    elif form == "response.error":
        error = g.builder.event(
            {"type": "response.error", "error": {"code": "rate_limit_exceeded", "message": message}}
        )
    else:
        error = terminal_event(
            g.builder, story, "failed", error={"code": "server_error", "message": message}
        )
    g.notes.append(f"in-band {form}")
    return _error_tail(g, story, at, error)


def _untyped_error(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    at = g.position(story)
    message = g.message()
    obj: dict[str, Any] = {
        "error": {"code": rng.choice([502, 500, "server_error"]), "message": message}
    }
    if rng.random() < 0.5:
        obj["error"]["metadata"] = {"provider_name": "Fuzz", "raw": "upstream said no"}
    if rng.random() < 0.3:
        obj["user_id"] = "user_fuzz"
    error = Event(payload=dump_json(obj, rng, ascii_share=0.3), obj=obj)
    g.notes.append("untyped {error: ...} line")
    return _error_tail(g, story, at, error)


def _error_body(g: _Gen, status: int, message: str) -> bytes:
    rng = g.rng
    code: int | str = (
        status if rng.random() < 0.7 else rng.choice(["invalid_prompt", "server_error"])
    )
    error: dict[str, Any] = {"code": code, "message": message}
    if rng.random() < 0.4:
        error["metadata"] = {"provider_name": "Fuzz", "raw": {"detail": "no"}}
    body: dict[str, Any] = {"error": error}
    if rng.random() < 0.3:
        body["user_id"] = "user_fuzz"
    return dump_json(body, rng, ascii_share=0.3)


def _http_error(g: _Gen) -> Case:
    rng = g.rng
    status = rng.choice(_HTTP_ERRORS)
    message = g.message()
    headers: list[tuple[str, str]] = []
    if status in (429, 503) and rng.random() < 0.5:
        headers.append(("Retry-After", rng.choice(["0", "0.2", "1", "120"])))
    attempt = g.attempt(
        [_error_body(g, status, message)],
        status=status,
        content_type="application/json",
        headers=tuple(headers),
        framing=rng.choice(["content_length", "content_length", "chunked", "close"]),
    )
    return g.case([attempt], Expect(ending="failed", message_contains=message))


def _html_error(g: _Gen) -> Case:
    status = g.rng.choice([502, 503, 504, 520, 524])
    attempt = g.attempt([_HTML], status=status, content_type="text/html; charset=utf-8")
    return g.case([attempt], Expect(ending="failed"))


def _non_sse_200(g: _Gen) -> Case:
    if g.rng.random() < 0.5:
        message = g.message()
        attempt = g.attempt([_error_body(g, 200, message)], content_type="application/json")
        g.notes.append("200 with a JSON error body")
        return g.case([attempt], Expect(ending="failed", message_contains=message))
    attempt = g.attempt([_HTML], content_type="text/html; charset=utf-8")
    g.notes.append("200 with an HTML page")
    return g.case([attempt], Expect(ending="failed", not_cut_message=True))


def _terminal_open(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    kind = rng.choice(["completed", "completed", "completed", "incomplete", "failed", "error"])
    done = rng.random() < 0.2
    items: list[Item] = flat(story)
    message = g.message()
    if kind == "error":
        items.append(g.builder.event({"type": "error", "code": "server_error", "message": message}))
    elif kind == "failed":
        error = {"code": "server_error", "message": message}
        items.append(terminal_event(g.builder, story, "failed", error=error))
    else:
        items.append(
            terminal_event(g.builder, story, "completed" if kind == "completed" else "incomplete")
        )
    blocks = encode_body(items, SseStyle(), rng, done=done)
    g.notes.append(f"{kind} then the connection stays open" + (" after [DONE]" if done else ""))
    attempt = g.attempt(blocks, SseStyle(), end="hold_after_terminal")
    if kind in ("completed", "incomplete"):
        expect = g.completed(story, ending=kind)
    else:
        expect = Expect(
            ending="failed", text=story.text, message_contains=message, notices_allowed=False
        )
    return g.case([attempt], expect)


def _retry_then_ok(g: _Gen) -> Case:
    rng = g.rng
    story = g.story()
    body: list[Item] = [*flat(story), terminal_event(g.builder, story, "completed")]
    blocks = encode_body(body, SseStyle(), rng, done=True)
    form = rng.choice(["status", "status", "cut head", "cut first event", "slow first byte"])
    if form == "status":
        status = rng.choice(_RETRYABLE)
        headers = (("Retry-After", "0"),) if rng.random() < 0.3 else ()
        first = g.attempt(
            [_error_body(g, status, g.message())],
            status=status,
            content_type="application/json",
            headers=headers,
        )
    elif form == "cut head":
        first = g.attempt(blocks, SseStyle(), cut_wire_at=rng.randint(1, 40), end="close")
    elif form == "cut first event":
        first_block = next(b for b in blocks if isinstance(b, bytes))
        first = g.attempt(
            blocks,
            SseStyle(),
            framing=rng.choice(["content_length", "chunked"]),
            cut_body_at=rng.randint(0, len(first_block) - 2),
            end=rng.choice(["close", "reset"]),
        )
    else:
        first = g.attempt(blocks, SseStyle(), first_byte_delay=g.limits.read_idle_timeout_s * 1.3)
    g.notes.append(f"first attempt: {form}")
    second = g.attempt(blocks, SseStyle())
    return g.case([first, second], g.completed(story))


# --------------------------------------------------------------------------

#: name → (weight, generator, needs retries)
CLASSES: dict[str, tuple[int, Callable[[_Gen], Case], bool]] = {
    "well_formed": (8, _well_formed_class, False),
    "split": (8, _split_class, False),
    "line_ends": (6, _line_ends, False),
    "bom": (3, _bom, False),
    "comments": (5, _comments, False),
    "unicode": (5, _unicode, False),
    "reasoning": (4, _reasoning, False),
    "interleaved": (4, _interleaved, False),
    "long": (2, _long, False),
    "one_char": (4, _one_char, False),
    "incomplete": (2, _incomplete, False),
    "stall_short": (4, _stall_short, False),
    "junk": (6, _junk, False),
    "deep_nesting": (3, _deep_nesting, False),
    "stall_long": (3, _stall_long, False),
    "truncated": (6, _truncated, False),
    "no_terminal": (3, _no_terminal, False),
    "oversized": (3, _oversized, False),
    "inband_error": (5, _inband_error, False),
    "untyped_error": (3, _untyped_error, False),
    "http_error": (5, _http_error, False),
    "html_error": (2, _html_error, False),
    "non_sse_200": (3, _non_sse_200, False),
    "terminal_open": (4, _terminal_open, False),
    "retry_then_ok": (3, _retry_then_ok, True),
}
CLASS_NAMES = tuple(CLASSES)
_EXTRA = {"canary": _canary}


def pick_class(rng: random.Random, *, retries: bool, only: tuple[str, ...] = ()) -> str:
    names = [n for n in (only or CLASS_NAMES) if retries or not CLASSES[n][2]]
    if not names:
        names = list(only or CLASS_NAMES)
    weights = [CLASSES[n][0] for n in names]
    return rng.choices(names, weights)[0]


def generate(cls: str, seed: int, limits: Limits) -> Case:
    """The case of class ``cls`` for ``seed``, shaped for an engine with ``limits``."""
    if cls in _EXTRA:
        return _EXTRA[cls](_Gen(cls, seed, limits))
    try:
        make = CLASSES[cls][1]
    except KeyError:
        raise ValueError(f"unknown class {cls!r}; known: {', '.join(CLASS_NAMES)}") from None
    return make(_Gen(cls, seed, limits))
