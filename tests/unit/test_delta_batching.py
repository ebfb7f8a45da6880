"""The delta batcher core: exact text, whole surrogate pairs, credits, the char limit."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from orpipe.actors.delta_batching import DeltaBatcher, join_surrogates
from orpipe.engine.pipeline_messages import (
    BatchedItem,
    DeltaChannel,
    DeltaEvent,
    ParseFailed,
    StreamItem,
    TextRun,
    UpstreamEvent,
)

_ASTRAL = st.sampled_from(["😀", "𝄞", "🧪", "\U0001f600", "\U00010000", "\U0010ffff"])
_char = st.one_of(
    _ASTRAL,
    st.sampled_from(["a", "é", "中", "\u2028", " "]),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffd"),
)
_text = st.text(alphabet=_char, min_size=1, max_size=20)
_channel = st.sampled_from(["text", "reasoning"])


def _units(text: str) -> list[bytes]:
    raw = text.encode("utf-16-le", "surrogatepass")
    return [raw[i : i + 2] for i in range(0, len(raw), 2)]


def _split_as_json_would(text: str, cuts: list[int], *, lone_units: bool) -> list[str]:
    """Split ``text`` into deltas at UTF-16 code-unit boundaries.

    A pair cut in two becomes two lone surrogates (what ``json.loads`` yields
    for a ``"\\ud83d"`` escape). A pair inside one delta stays a real
    character, unless ``lone_units``: then every unit is its own Python
    character (two lone halves side by side).
    """
    units = _units(text)
    points = sorted({c % (len(units) + 1) for c in cuts} | {0, len(units)})
    out = []
    for a, b in itertools.pairwise(points):
        if lone_units:
            out.append("".join(u.decode("utf-16-le", "surrogatepass") for u in units[a:b]))
        else:
            out.append(b"".join(units[a:b]).decode("utf-16-le", "surrogatepass"))
    return [piece for piece in out if piece]


@dataclass
class _Idle:
    """An idle-timer flush (``flush(final=False)``) at this point."""


@st.composite
def _script(draw: st.DrawFn, *, lone_units: bool = False) -> tuple[list[object], list[tuple]]:
    """Steps to feed, and the expected output as merged tokens."""
    steps: list[object] = []
    expected: list[tuple] = []
    seq = 0
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["text", "text", "item", "failed"]))
        if kind == "text":
            channel = draw(_channel)
            text = draw(_text)
            cuts = draw(st.lists(st.integers(min_value=0), max_size=12))
            for piece in _split_as_json_would(text, cuts, lone_units=lone_units):
                steps.append(DeltaEvent(seq=seq, channel=channel, text=piece))
                seq += 1
                if draw(st.integers(0, 4)) == 0:
                    steps.append(_Idle())
            expected.append(("run", channel, text))
        elif kind == "item":
            item = UpstreamEvent(seq=seq, type="response.in_progress", data={})
            steps.append(item)
            expected.append(("item", item))
            seq += 1
        else:
            item = ParseFailed(seq=seq, reason="x", size=1)
            steps.append(item)
            expected.append(("item", item))
            seq += 1
    return steps, _merge(expected)


def _merge(tokens: list[tuple]) -> list[tuple]:
    """Adjacent text of one channel joined: how a reader sees it."""
    out: list[tuple] = []
    for token in tokens:
        if token[0] == "run" and out and out[-1][0] == "run" and out[-1][1] == token[1]:
            out[-1] = ("run", token[1], out[-1][2] + token[2])
        else:
            out.append(token)
    return out


def _tokens(output: list[BatchedItem]) -> list[tuple]:
    return _merge(
        [("run", o.channel, o.text) if isinstance(o, TextRun) else ("item", o) for o in output]
    )


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def _run(batcher: DeltaBatcher, steps: list[object]) -> list[BatchedItem]:
    output: list[BatchedItem] = []
    for step in steps:
        if isinstance(step, _Idle):
            output.extend(batcher.flush(final=False))
        else:
            assert isinstance(step, DeltaEvent | UpstreamEvent | ParseFailed)
            output.extend(batcher.push(step))
    output.extend(batcher.flush(final=True))
    assert not batcher.has_pending
    return output


@settings(max_examples=400, deadline=None)
@given(script=_script(), limit=st.integers(1, 30), lone=st.booleans())
def test_text_is_preserved_exactly_and_pairs_never_split(
    script: tuple[list[object], list[tuple]], limit: int, lone: bool
) -> None:
    steps, expected = script
    if lone:  # same text, but pairs inside a delta as two lone halves
        steps = [
            DeltaEvent(
                seq=s.seq,
                channel=s.channel,
                text="".join(u.decode("utf-16-le", "surrogatepass") for u in _units(s.text)),
            )
            if isinstance(s, DeltaEvent)
            else s
            for s in steps
        ]
    output = _run(DeltaBatcher("r", limit), steps)
    assert _tokens(output) == expected
    for out in output:
        if isinstance(out, TextRun):
            assert out.request_id == "r"
            assert out.text, "an empty run"
            # Neither half of a pair ever reaches a consumer on its own.
            assert not _has_surrogate(out.text), ascii(out.text)
            assert "\ufffd" not in out.text


@settings(max_examples=300, deadline=None)
@given(script=_script(), limit=st.integers(1, 30))
def test_credits_sum_to_the_items_pushed(
    script: tuple[list[object], list[tuple]], limit: int
) -> None:
    steps, _ = script
    output = _run(DeltaBatcher("r", limit), steps)
    pushed = sum(not isinstance(s, _Idle) for s in steps)
    credits = sum(o.events if isinstance(o, TextRun) else 1 for o in output)
    assert credits == pushed
    assert all(o.events >= 1 for o in output if isinstance(o, TextRun))


@settings(max_examples=300, deadline=None)
@given(
    deltas=st.lists(
        st.tuples(
            _channel,
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0xFFFF),
                min_size=1,
                max_size=12,
            ),
        ),
        max_size=30,
    ),
    limit=st.integers(1, 25),
)
def test_char_limit_flushes_as_soon_as_it_is_reached(
    deltas: list[tuple[DeltaChannel, str]], limit: int
) -> None:
    """Without surrogates the text's length is unchanged by batching, so count it."""
    batcher = DeltaBatcher("r", limit)
    pending = {"text": 0, "reasoning": 0}
    for seq, (channel, text) in enumerate(deltas):
        other = "reasoning" if channel == "text" else "text"
        had_other = pending[other]
        out = batcher.push(DeltaEvent(seq=seq, channel=channel, text=text))
        pending[channel] += len(text)
        runs = [o for o in out if isinstance(o, TextRun)]
        assert len(runs) == len(out)
        if had_other:
            # A channel switch ends the other channel's run, whatever its size.
            assert runs[0].channel == other and len(runs[0].text) == had_other
            pending[other] = 0
            runs = runs[1:]
        for run in runs:
            assert run.channel == channel
            assert len(run.text) >= limit  # flushed only because the limit was reached
            pending[channel] -= len(run.text)
        assert pending[channel] < limit  # ...and as soon as it was reached
        assert pending[channel] >= 0
        assert batcher.has_pending == bool(pending[channel])


@settings(max_examples=300, deadline=None)
@given(
    text=_text.filter(lambda t: any(ord(c) > 0xFFFF for c in t)),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    limit=st.integers(1, 10),
)
def test_char_limit_with_split_pairs(text: str, cuts: list[int], limit: int) -> None:
    """Counted in UTF-16 units: the limit holds, except a held-back half pair."""
    batcher = DeltaBatcher("r", limit)
    units_in = units_out = 0
    output: list[TextRun] = []
    for seq, piece in enumerate(_split_as_json_would(text, cuts, lone_units=True)):
        out = batcher.push(DeltaEvent(seq=seq, channel="text", text=piece))
        units_in += len(piece)
        for run in out:
            assert isinstance(run, TextRun)
            units_out += len(_units(run.text))
            output.append(run)
        assert units_in - units_out < max(limit, 2)
    output.extend(batcher.flush(final=True))
    assert "".join(r.text for r in output) == text


def test_runs_merge_until_the_limit() -> None:
    batcher = DeltaBatcher("r", 5)
    assert batcher.push(DeltaEvent(seq=0, channel="text", text="ab")) == []
    assert batcher.push(DeltaEvent(seq=1, channel="text", text="cd")) == []
    assert batcher.push(DeltaEvent(seq=2, channel="text", text="e")) == [
        TextRun(request_id="r", channel="text", text="abcde", events=3)
    ]
    assert not batcher.has_pending


def test_other_item_flushes_first_and_passes_through() -> None:
    batcher = DeltaBatcher("r", 100)
    batcher.push(DeltaEvent(seq=0, channel="reasoning", text="think"))
    item: StreamItem = UpstreamEvent(seq=1, type="response.output_item.done", data={})
    assert batcher.push(item) == [
        TextRun(request_id="r", channel="reasoning", text="think", events=1),
        item,
    ]
    failed = ParseFailed(seq=2, reason="bad", size=3)
    assert batcher.push(failed) == [failed]


def test_channel_switch_flushes_the_previous_channel() -> None:
    batcher = DeltaBatcher("r", 100)
    batcher.push(DeltaEvent(seq=0, channel="reasoning", text="hmm"))
    assert batcher.push(DeltaEvent(seq=1, channel="text", text="Hi")) == [
        TextRun(request_id="r", channel="reasoning", text="hmm", events=1)
    ]
    assert batcher.flush(final=True) == [
        TextRun(request_id="r", channel="text", text="Hi", events=1)
    ]


def test_high_half_is_held_back_by_the_limit_and_the_idle_flush() -> None:
    batcher = DeltaBatcher("r", 3)
    out = batcher.push(DeltaEvent(seq=0, channel="text", text="ab\ud83d"))
    assert out == [TextRun(request_id="r", channel="text", text="ab", events=1)]
    assert batcher.has_pending
    assert batcher.flush(final=False) == []  # only the half: it waits, keeping no credit
    out = batcher.push(DeltaEvent(seq=1, channel="text", text="\ude00"))
    assert out == []
    assert batcher.flush(final=False) == [
        TextRun(request_id="r", channel="text", text="😀", events=1)
    ]


def test_lone_high_half_alone_keeps_its_credit() -> None:
    batcher = DeltaBatcher("r", 1)
    assert batcher.push(DeltaEvent(seq=0, channel="text", text="\ud83d")) == []
    assert batcher.push(DeltaEvent(seq=1, channel="text", text="\ude00")) == [
        TextRun(request_id="r", channel="text", text="😀", events=2)
    ]


def test_stray_half_at_the_end_becomes_a_replacement_character() -> None:
    batcher = DeltaBatcher("r", 100)
    batcher.push(DeltaEvent(seq=0, channel="text", text="x\ud83d"))
    assert batcher.flush(final=True) == [
        TextRun(request_id="r", channel="text", text="x\ufffd", events=1)
    ]


def test_empty_delta_then_idle_flush() -> None:
    """Providers send ``"delta": ""``; the decoder makes it a DeltaEvent with text ""."""
    batcher = DeltaBatcher("r", 20)
    assert batcher.push(DeltaEvent(seq=0, channel="text", text="")) == []
    out = list(batcher.flush(final=False))  # the idle timer fires
    out.extend(batcher.push(UpstreamEvent(seq=1, type="response.completed", data={})))
    out.extend(batcher.flush(final=True))
    assert sum(o.events if isinstance(o, TextRun) else 1 for o in out) == 2
    assert "".join(o.text for o in out if isinstance(o, TextRun)) == ""


def test_empty_delta_credit_is_kept_until_the_final_flush() -> None:
    batcher = DeltaBatcher("r", 20)
    batcher.push(DeltaEvent(seq=0, channel="text", text=""))
    out = batcher.push(DeltaEvent(seq=1, channel="text", text="hi"))
    out += batcher.flush(final=True)
    assert out == [TextRun(request_id="r", channel="text", text="hi", events=2)]


def test_join_surrogates() -> None:
    plain = "plain ascii"
    assert join_surrogates(plain) is plain
    assert join_surrogates("é中😀") == "é中😀"
    assert join_surrogates("a\ud83d\ude00b") == "a😀b"
    assert join_surrogates("\ude00\ud83d") == "\ufffd\ufffd"
    assert join_surrogates("\ud83d") == "\ufffd"


def test_a_pair_split_around_an_annotation_stays_one_character() -> None:
    """An annotation between the two halves of an emoji: the emoji comes whole after it."""
    batcher = DeltaBatcher("r", 100)
    note = UpstreamEvent(seq=1, type="response.output_text.annotation.added", data={})
    out = batcher.push(DeltaEvent(seq=0, channel="text", text="hi \ud83d"))
    out += batcher.push(note)
    out += batcher.push(DeltaEvent(seq=2, channel="text", text="\ude00!"))
    out += batcher.flush(final=True)
    texts = [o.text for o in out if isinstance(o, TextRun)]
    assert texts == ["hi ", "😀!"]
    assert out[1] is note
    assert sum(o.events if isinstance(o, TextRun) else 1 for o in out) == 3


def test_a_run_holds_at_most_event_limit_credits() -> None:
    """Tiny deltas under a high char limit still give their credits back every few events."""
    batcher = DeltaBatcher("r", 500, event_limit=4)
    runs = []
    for seq in range(10):
        runs += batcher.push(DeltaEvent(seq=seq, channel="text", text="x"))
    assert [r.events for r in runs if isinstance(r, TextRun)] == [4, 4]
    assert batcher.has_pending


def test_a_lone_half_gives_its_credits_back_and_keeps_waiting() -> None:
    """A window of one: the half's credit must go back so its partner can be read."""
    batcher = DeltaBatcher("r", 10, event_limit=1)
    out = batcher.push(DeltaEvent(seq=0, channel="text", text="\ud83d"))
    assert [(o.text, o.events) for o in out if isinstance(o, TextRun)] == [("", 1)]
    out = batcher.push(DeltaEvent(seq=1, channel="text", text="\ude00"))
    assert [(o.text, o.events) for o in out if isinstance(o, TextRun)] == [("😀", 1)]
    assert not batcher.has_pending


def test_a_lone_half_after_empty_deltas_does_not_sit_on_credits() -> None:
    batcher = DeltaBatcher("r", 10, event_limit=3)
    out = batcher.push(DeltaEvent(seq=0, channel="text", text="\ud83d"))
    out += batcher.push(DeltaEvent(seq=1, channel="text", text=""))
    assert out == []
    out += batcher.push(DeltaEvent(seq=2, channel="text", text=""))
    assert [(o.text, o.events) for o in out if isinstance(o, TextRun)] == [("", 3)]
    out = batcher.push(DeltaEvent(seq=3, channel="text", text="\ude00!"))
    out += batcher.flush(final=True)
    assert [(o.text, o.events) for o in out if isinstance(o, TextRun)] == [("😀!", 1)]
