"""The logical Responses stream: events in order, and the text they carry (contract §1.9).

A ``Story`` is a well-formed stream without its terminal event, as a list
of *groups*: a group is a run of events nothing may be inserted into (the
two deltas of an emoji split into two JSON ``\\ud83d``/``\\ude00`` escapes;
putting another event between them would legitimately turn the halves into
U+FFFD). Generators insert junk, errors or stalls between groups only.

The text is drawn from a vocabulary that is hostile to framing and decoding:
multi-byte UTF-8, emoji with modifiers and ZWJ sequences, combining marks,
right-to-left scripts, JSON's own escapes, and text that looks like SSE
(``data: [DONE]``) or line ends.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Event",
    "Story",
    "StoryBuilder",
    "build_story",
    "dump_json",
    "join_halves",
    "random_text",
]

_WORDS = (
    "the", "engine", "stream", "token", "hello", "world", "fuzz", "orpipe", "OK", "a",
    "I", "42", "trio", "delta", "answer", "café", "naïve", "über",
)  # fmt: skip
_PUNCT = (
    " ", " ", " ", " ", ", ", ". ", "\n", "\n\n", "!", "?", ":", ";", "-", "'", '"',
    "\\", "/", "\t", "{", "}", "[", "]", "<", ">", "&", "\r\n", "data: [DONE]",
    "event: x", ": OPENROUTER PROCESSING", "\\ud83d", "%s", "\u2028",
)  # fmt: skip
_MULTI = (
    "é", "ñ", "ß", "Ж", "ω", "中文", "日本語", "한국어", "שלום", "مرحبا", "e\u0301",
    "\u00a0", "€", "™", "😀", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧", "🙂", "\U0001f4a9",
    "\U0001d518\U0001d52b\U0001d526", "ẞ", "ǅ", "∑", "🎉",
)  # fmt: skip

DeltaMode = Literal["normal", "one_char", "big"]


def random_text(rng: random.Random, length: int, *, multi_share: float = 0.25) -> str:
    """About ``length`` code points of hostile but valid text (no U+FFFD, no lone halves)."""
    out: list[str] = []
    size = 0
    while size < length:
        roll = rng.random()
        if roll < multi_share:
            token = rng.choice(_MULTI)
        elif roll < multi_share + 0.25:
            token = rng.choice(_PUNCT)
        else:
            token = rng.choice(_WORDS)
        out.append(token)
        size += len(token)
    return "".join(out)[:length] if length else ""


def _has_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def join_halves(text: str) -> str:
    """Lone surrogate pairs → the real characters (what the engine must show)."""
    if not _has_lone_surrogate(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def dump_json(obj: Any, rng: random.Random, *, ascii_share: float) -> bytes:
    """Compact or spaced JSON; ``\\uXXXX`` escapes for everything non-ASCII sometimes.

    A lone surrogate can only travel as an escape, so it forces ASCII.
    """
    ensure_ascii = rng.random() < ascii_share or _contains_lone_surrogate(obj)
    separators = (",", ":") if rng.random() < 0.6 else (", ", ": ")
    encoded = json.dumps(obj, ensure_ascii=ensure_ascii, separators=separators)
    return encoded.encode("utf-8")


def _contains_lone_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return _has_lone_surrogate(obj)
    if isinstance(obj, dict):
        return any(_contains_lone_surrogate(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_contains_lone_surrogate(v) for v in obj)
    return False


@dataclass(slots=True)
class Event:
    """One SSE event's data: its payload bytes, and its JSON object when it has one."""

    payload: bytes
    #: The JSON ``type`` (for optional ``event:`` lines); None for junk.
    name: str | None = None
    obj: Any = None
    #: Answer / reasoning text this event adds, as the engine must show it
    #: (lone halves included; ``join_halves`` of the concatenation is the text).
    text: str = ""
    reasoning: str = ""


Group = list[Event]


@dataclass(slots=True)
class Story:
    """A well-formed stream without its terminal event."""

    response_id: str
    groups: list[Group]
    output: list[dict[str, Any]]
    usage: tuple[int, int]
    urls: set[str] = field(default_factory=set)

    @property
    def text(self) -> str:
        return self.text_until(len(self.groups))

    @property
    def reasoning(self) -> str:
        return join_halves("".join(e.reasoning for g in self.groups for e in g))

    def text_until(self, group_index: int) -> str:
        """The answer text carried by the first ``group_index`` groups."""
        return join_halves("".join(e.text for g in self.groups[:group_index] for e in g))

    @property
    def delta_count(self) -> int:
        return sum(1 for g in self.groups for e in g if e.text or e.reasoning)


class StoryBuilder:
    """Numbers events and encodes them the way one stream's provider would."""

    def __init__(self, rng: random.Random, *, ascii_share: float | None = None) -> None:
        self.rng = rng
        self.seq = 0
        self.ascii_share = rng.choice([0.0, 0.3, 1.0]) if ascii_share is None else ascii_share
        self.response_id = f"resp_{rng.getrandbits(48):012x}"

    def event(self, obj: dict[str, Any], *, text: str = "", reasoning: str = "") -> Event:
        obj = {"type": obj["type"], "sequence_number": self.seq, **obj}
        self.seq += 1
        payload = dump_json(obj, self.rng, ascii_share=self.ascii_share)
        return Event(payload=payload, name=obj["type"], obj=obj, text=text, reasoning=reasoning)

    def response(self, status: str, output: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": 1767225600,
            "model": "fuzz/model",
            "status": status,
            "output": output,
            **more,
        }

    # -- deltas ------------------------------------------------------------

    def split(self, text: str, mode: DeltaMode, *, split_emoji: float) -> list[list[str]]:
        """``text`` as groups of deltas; an emoji may be split into its two halves."""
        rng = self.rng
        groups: list[list[str]] = []
        i = 0
        while i < len(text):
            if mode == "one_char":
                size = 1
            elif mode == "big":
                size = rng.randint(50, 2000)
            else:
                size = rng.choice([1, 1, 2, 3, 4, 5, 8, 12, 20])
            piece = text[i : i + size]
            i += len(piece)
            last = piece[-1]
            if ord(last) > 0xFFFF and rng.random() < split_emoji:
                code = ord(last) - 0x10000
                high, low = chr(0xD800 + (code >> 10)), chr(0xDC00 + (code & 0x3FF))
                after = 0 if mode == "one_char" else rng.randint(0, 4)
                rest = text[i : i + after]
                i += len(rest)
                groups.append([piece[:-1] + high, low + rest])
            else:
                groups.append([piece])
            if rng.random() < 0.02:
                groups.append([""])  # empty deltas happen; they carry nothing
        return groups


@dataclass(frozen=True, slots=True, kw_only=True)
class StoryShape:
    text_length: int
    delta_mode: DeltaMode = "normal"
    reasoning_parts: int = 0
    raw_reasoning: bool = False
    messages: int = 1
    annotations: float = 0.0
    split_emoji: float = 0.3
    interleave: bool = False
    multi_share: float = 0.25


def build_story(builder: StoryBuilder, shape: StoryShape) -> Story:
    """A well-formed stream: created, in_progress, output items, no terminal event yet."""
    rng = builder.rng
    head: list[Group] = [
        [
            builder.event(
                {"type": "response.created", "response": builder.response("in_progress", [])}
            )
        ],
        [
            builder.event(
                {"type": "response.in_progress", "response": builder.response("in_progress", [])}
            )
        ],
    ]
    tracks: list[list[Group]] = []
    output: list[dict[str, Any]] = []
    urls: set[str] = set()
    index = 0
    if shape.reasoning_parts:
        track, item = _reasoning_item(builder, shape, index)
        tracks.append(track)
        output.append(item)
        index += 1
    sizes = _split_length(rng, shape.text_length, shape.messages)
    for size in sizes:
        track, item, item_urls = _message_item(builder, shape, index, size)
        tracks.append(track)
        output.append(item)
        urls |= item_urls
        index += 1
    body: list[Group] = []
    if shape.interleave and len(tracks) > 1:
        body = _interleave(rng, tracks)
    else:
        for track in tracks:
            body.extend(track)
    # Sequence numbers follow arrival order, whatever order the events were made in.
    groups = head + body
    for seq, event in enumerate(e for g in groups for e in g):
        if event.obj is not None:
            event.obj["sequence_number"] = seq
            event.payload = dump_json(event.obj, rng, ascii_share=builder.ascii_share)
    builder.seq = sum(len(g) for g in groups)
    text_tokens = max(1, sum(len(e.text) for g in groups for e in g) // 4)
    return Story(
        response_id=builder.response_id,
        groups=groups,
        output=output,
        usage=(rng.randint(1, 5000), text_tokens),
        urls=urls,
    )


def _split_length(rng: random.Random, total: int, parts: int) -> list[int]:
    if parts <= 1:
        return [total]
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _interleave(rng: random.Random, tracks: list[list[Group]]) -> list[Group]:
    """Merge the tracks at random, keeping each track's own order."""
    positions = [0] * len(tracks)
    out: list[Group] = []
    while True:
        open_tracks = [i for i, t in enumerate(tracks) if positions[i] < len(t)]
        if not open_tracks:
            return out
        pick = rng.choice(open_tracks)
        out.append(tracks[pick][positions[pick]])
        positions[pick] += 1


def _reasoning_item(
    builder: StoryBuilder, shape: StoryShape, index: int
) -> tuple[list[Group], dict[str, Any]]:
    rng = builder.rng
    item_id = f"rs_{rng.getrandbits(40):010x}"
    track: list[Group] = [
        [
            builder.event(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {"type": "reasoning", "id": item_id, "summary": []},
                }
            )
        ]
    ]
    parts: list[str] = []
    if shape.raw_reasoning:
        text = random_text(rng, rng.randint(5, 300), multi_share=shape.multi_share)
        parts.append(text)
        for deltas in builder.split(text, "normal", split_emoji=shape.split_emoji):
            track.append(
                [
                    builder.event(
                        {
                            "type": "response.reasoning_text.delta",
                            "item_id": item_id,
                            "output_index": index,
                            "content_index": 0,
                            "delta": d,
                        },
                        reasoning=d,
                    )
                    for d in deltas
                ]
            )
        track.append(
            [
                builder.event(
                    {
                        "type": "response.reasoning_text.done",
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": 0,
                        "text": text,
                    }
                )
            ]
        )
        item: dict[str, Any] = {
            "type": "reasoning",
            "id": item_id,
            "summary": [],
            "content": [{"type": "reasoning_text", "text": text}],
        }
    else:
        for k in range(shape.reasoning_parts):
            text = random_text(rng, rng.randint(3, 200), multi_share=shape.multi_share)
            parts.append(text)
            # The mapper separates summary parts with a blank line (a paragraph).
            separator = "\n\n" if k else ""
            track.append(
                [
                    builder.event(
                        {
                            "type": "response.reasoning_summary_part.added",
                            "item_id": item_id,
                            "output_index": index,
                            "summary_index": k,
                            "part": {"type": "summary_text", "text": ""},
                        },
                        reasoning=separator,
                    )
                ]
            )
            for deltas in builder.split(text, "normal", split_emoji=shape.split_emoji):
                track.append(
                    [
                        builder.event(
                            {
                                "type": "response.reasoning_summary_text.delta",
                                "item_id": item_id,
                                "output_index": index,
                                "summary_index": k,
                                "delta": d,
                            },
                            reasoning=d,
                        )
                        for d in deltas
                    ]
                )
            track.append(
                [
                    builder.event(
                        {
                            "type": "response.reasoning_summary_text.done",
                            "item_id": item_id,
                            "output_index": index,
                            "summary_index": k,
                            "text": text,
                        }
                    )
                ]
            )
            track.append(
                [
                    builder.event(
                        {
                            "type": "response.reasoning_summary_part.done",
                            "item_id": item_id,
                            "output_index": index,
                            "summary_index": k,
                            "part": {"type": "summary_text", "text": text},
                        }
                    )
                ]
            )
        item = {
            "type": "reasoning",
            "id": item_id,
            "summary": [{"type": "summary_text", "text": t} for t in parts],
        }
    track.append(
        [builder.event({"type": "response.output_item.done", "output_index": index, "item": item})]
    )
    return track, item


def _message_item(
    builder: StoryBuilder, shape: StoryShape, index: int, length: int
) -> tuple[list[Group], dict[str, Any], set[str]]:
    rng = builder.rng
    item_id = f"msg_{rng.getrandbits(40):010x}"
    text = random_text(rng, length, multi_share=shape.multi_share)
    track: list[Group] = [
        [
            builder.event(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {
                        "type": "message",
                        "id": item_id,
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                    },
                }
            )
        ],
        [
            builder.event(
                {
                    "type": "response.content_part.added",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            )
        ],
    ]
    annotations: list[dict[str, Any]] = []
    urls: set[str] = set()
    for deltas in builder.split(text, shape.delta_mode, split_emoji=shape.split_emoji):
        track.append(
            [
                builder.event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": 0,
                        "delta": d,
                        "logprobs": [],
                    },
                    text=d,
                )
                for d in deltas
            ]
        )
        if shape.annotations and rng.random() < shape.annotations:
            # Sometimes the same URL twice: it is reported once.
            number = rng.randint(0, 5)
            url = f"https://example.org/fuzz/{number}?q=\u00e9&x={rng.randint(0, 1)}"
            urls.add(url)
            annotation = {
                "type": "url_citation",
                "url": url,
                "title": f"Source {number} «{rng.choice(_MULTI)}»",
                "start_index": rng.randint(0, 50),
                "end_index": rng.randint(50, 100),
            }
            annotations.append(annotation)
            track.append(
                [
                    builder.event(
                        {
                            "type": "response.output_text.annotation.added",
                            "item_id": item_id,
                            "output_index": index,
                            "content_index": 0,
                            "annotation_index": len(annotations) - 1,
                            "annotation": annotation,
                        }
                    )
                ]
            )
    part = {"type": "output_text", "text": text, "annotations": annotations}
    track.append(
        [
            builder.event(
                {
                    "type": "response.output_text.done",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                }
            )
        ]
    )
    track.append(
        [
            builder.event(
                {
                    "type": "response.content_part.done",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
                }
            )
        ]
    )
    item = {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }
    track.append(
        [builder.event({"type": "response.output_item.done", "output_index": index, "item": item})]
    )
    return track, item, urls


def terminal_event(
    builder: StoryBuilder,
    story: Story,
    kind: Literal["completed", "incomplete", "failed"],
    *,
    error: dict[str, Any] | None = None,
) -> Event:
    """``response.completed`` / ``.incomplete`` / ``.failed`` with the final response."""
    rng = builder.rng
    input_tokens, output_tokens = story.usage
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": rng.randint(0, input_tokens)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": rng.randint(0, output_tokens)},
        "total_tokens": input_tokens + output_tokens,
        "cost": round(rng.random() / 100, 6),
        "is_byok": False,
    }
    more: dict[str, Any] = {"usage": usage}
    if kind == "incomplete":
        more["incomplete_details"] = {"reason": "max_output_tokens"}
    if kind == "failed":
        more["error"] = error or {"code": "server_error", "message": "failed"}
        more["error_type"] = "provider_unavailable"
    status = {"completed": "completed", "incomplete": "incomplete", "failed": "failed"}[kind]
    return builder.event(
        {"type": f"response.{kind}", "response": builder.response(status, story.output, **more)}
    )
