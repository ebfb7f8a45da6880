"""The mock's generated words: deterministic, seeded, with the tricky graphemes a client must keep.

Owns the word streams ``bench.mock_scenarios.plan`` builds answers and reasoning
from (``words``: a SplitMix64 stream per seed, every third word a multi-byte
or combining grapheme), the split of astral characters into lone surrogates
that a client must pair up again (``split_astral`` / ``join_surrogates``),
and the text of an oversized event. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

__all__ = [
    "ASCII_WORDS",
    "REASONING_WORDS",
    "TRICKY_WORDS",
    "join_surrogates",
    "oversize_text",
    "split_astral",
    "splitmix",
    "words",
]

_MASK64: Final = (1 << 64) - 1

ASCII_WORDS: Final = (
    "the", "stream", "of", "tokens", "arrives", "in", "order", "and", "each", "delta",
    "carries", "a", "small", "piece", "answer", "while", "client", "joins", "them", "into",
    "text", "that", "user", "reads", "on", "screen", "without", "gaps", "or", "errors",
)  # fmt: skip

# Multi-byte and tricky graphemes: 2-, 3- and 4-byte UTF-8, a combining accent (e + U+0301),
# astral emoji (surrogate pairs in JSON), a ZWJ family and a flag (several code points each).
TRICKY_WORDS: Final = (
    "naïve",
    "日本語",
    "cafe\u0301",
    "😀",
    "Ελληνικά",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "déjà-vu",
    "Привет",
    "\U0001f1ef\U0001f1f5",
    "𝄞clef",
)

REASONING_WORDS: Final = (
    "first", "consider", "what", "the", "user", "asked", "then", "check", "facts", "and",
    "plan", "a", "short", "reply", "step", "by", "so", "it", "is", "clear",
)  # fmt: skip


def splitmix(seed: int, stream: int) -> Iterator[int]:
    """SplitMix64: a tiny PRNG that gives the same numbers on every Python version."""
    state = (seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) & _MASK64
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        yield z ^ (z >> 31)


def words(count: int, seed: int, stream: int, vocab: Sequence[str]) -> tuple[str, ...]:
    """``count`` tokens of "word ", every third one a tricky word (so all kinds appear)."""
    rng = splitmix(seed, stream)
    out: list[str] = []
    for i in range(count):
        if i % 3 == 2:
            word = TRICKY_WORDS[(seed + i // 3) % len(TRICKY_WORDS)]
        else:
            word = vocab[next(rng) % len(vocab)]
        out.append(word + " ")
    return tuple(out)


def split_astral(deltas: Sequence[str]) -> tuple[str, ...]:
    """Cut every delta after the high surrogate of each astral character.

    The result holds lone surrogates (``"\\ud83d"`` ends one piece, ``"\\ude00"`` starts the
    next), which is how some upstreams split UTF-16 text; it can only be written as JSON
    ``\\uXXXX`` escapes. ``"".join(result)`` re-encoded with ``surrogatepass`` gives the input.
    """
    out: list[str] = []
    for delta in deltas:
        piece: list[str] = []
        for ch in delta:
            code = ord(ch)
            if code <= 0xFFFF:
                piece.append(ch)
                continue
            code -= 0x10000
            piece.append(chr(0xD800 + (code >> 10)))
            out.append("".join(piece))
            piece = [chr(0xDC00 + (code & 0x3FF))]
        out.append("".join(piece))
    return tuple(out)


def join_surrogates(text: str) -> str:
    """Undo ``split_astral`` on a concatenation (pairs lone surrogates back up)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def oversize_text(size: int) -> str:
    unit = "oversized-delta "
    return (unit * (size // len(unit) + 1))[:size]
