"""A story world: a story program whose random choices are parsed back from its text.

A story world writes stories with a *story program*, a method ``_tell(run)`` that makes every
random choice through ``run.pick(table, role)`` and writes every fixed piece of text through
``run.say(tokens, role)``. Each option of a choice (a ``_Table``) writes a fixed sequence of
tokens, and no option is a prefix of another, so the text that follows a choice decides which
option was taken. The same program is run in three ways:

- ``_Sampler`` draws each choice at random and writes the story (``sample``);
- ``_Parser`` reads a story and recovers every choice, so it knows the exact probability of the
  text (``log_prob``) or the first place where the text departs from what the program can write
  (``is_valid``, whose reason comes from the world's ``_explain``);
- ``_Enumerator`` walks through every combination of choices (``enumerate_stories``).

Text written with spaces between words (English) is parsed token by token (``_Parser``). Text
written without spaces (Chinese) is parsed as a string: ``_TextParser`` matches each option, its
tokens joined, at a character offset, and ``_TextEnumerator`` compares prefixes character by
character; such a world builds its tables with ``_Table(..., joined=True)``, which checks that
no option's joined text is a prefix of another's.

Character accounting (used by the entropy floor and by the count-based baselines in
``llama_edu.data``): a corpus is the stories one after the other, each followed by one newline
``"\\n"``, so a story of ``len(text)`` characters costs ``len(text) + 1`` characters. The newline
is also how a reader knows the story has ended, and the probability of ending there is part of
``log_prob``.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "EntropyEstimate",
    "Story",
    "StoryWorld",
    "Validity",
    "ratio_estimate",
]

_LN2 = math.log(2.0)
_END = "\n"  # the end-of-story token: the newline that follows every story in a corpus


# --------------------------------------------------------------------------------------------
# Random choices and the ways of running the story program
# --------------------------------------------------------------------------------------------


def _symbols(option: tuple[str, ...]) -> tuple[str, ...]:
    """An option as the parser of joined text sees it: characters, and placeholders whole."""
    out: list[str] = []
    for token in option:
        if token.startswith("$"):
            out.append(token)
        else:
            out.extend(token)
    return tuple(out)


class _Table:
    """One random choice: each option writes a fixed, non-empty sequence of tokens.

    Tokens starting with "$" are placeholders filled in from the story so far ("$HERO" -> "Mia").
    No option is a prefix of another, so the text that follows decides which option was taken.
    With joined=True (text without spaces) options are compared as joined text: placeholders
    count as whole symbols here, and the parser checks the filled-in text when it reads.
    """

    __slots__ = ("options", "values", "logp", "cum", "static", "index", "lengths",
                 "text_index", "text_lengths")

    def __init__(self, entries: Iterable[tuple[tuple[str, ...], float, Any]],
                 joined: bool = False) -> None:
        kept = [(tuple(toks), float(w), v) for toks, w, v in entries if w > 0]
        if not kept:
            raise ValueError("a choice needs at least one option with positive weight")
        total = math.fsum(w for _, w, _ in kept)  # exactly rounded on every Python version
        self.options = tuple(t for t, _, _ in kept)
        self.values = tuple(v for _, _, v in kept)
        self.logp = tuple(math.log(w / total) for _, w, _ in kept)
        cum, acc = [], 0.0
        for _, w, _ in kept:
            acc += w / total
            cum.append(acc)
        cum[-1] = 1.0  # random() < 1.0, so bisect never runs off the end
        self.cum = tuple(cum)
        shapes = [_symbols(o) for o in self.options] if joined else list(self.options)
        for i, a in enumerate(shapes):
            if not a or not "".join(self.options[i]):
                raise ValueError("an option must write at least one token")
            for j, b in enumerate(shapes):
                if i != j and b[: len(a)] == a:
                    raise ValueError(f"option {self.options[i]} is a prefix of option "
                                     f"{self.options[j]}: derivations clash")
        self.static = not any(t.startswith("$") for opt in self.options for t in opt)
        self.index = {opt: i for i, opt in enumerate(self.options)}
        self.lengths = tuple(sorted({len(opt) for opt in self.options}))
        self.text_index: dict[str, int] = {}
        self.text_lengths: tuple[int, ...] = ()
        if joined and self.static:
            self.text_index = {"".join(opt): i for i, opt in enumerate(self.options)}
            self.text_lengths = tuple(sorted({len(s) for s in self.text_index}))


class _Mismatch(Exception):
    """Raised while parsing when the text does not continue the way the story program can."""

    def __init__(self, role: str, expected: list[Any]) -> None:
        super().__init__(role)
        self.role = role
        self.expected = expected  # the options, filled in: token tuples, or strings (joined)


class _Branch(Exception):
    """Raised by an enumeration run that reached a choice its script does not cover yet."""

    def __init__(self, n_options: int) -> None:
        super().__init__(n_options)
        self.n_options = n_options


class _Run:
    """Base of the sampler, the parser and the enumerator: fills placeholders, tracks position.

    ``world`` (what the story has established so far) is set by the story program itself.
    """

    def __init__(self) -> None:
        self.vars: dict[str, str] = {}
        self.logp = 0.0
        self.sentence = 1
        self.world: Any = None
        self.subject: Any = None

    def pick(self, table: _Table, role: str) -> Any:
        raise NotImplementedError

    def say(self, tokens: tuple[str, ...], role: str) -> None:
        raise NotImplementedError


class _Sampler(_Run):
    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.random = rng.random
        self.out: list[str] = []

    def pick(self, table: _Table, role: str) -> Any:
        i = bisect_right(table.cum, self.random())
        if table.static:
            self.out.extend(table.options[i])
        else:
            v = self.vars
            self.out.extend([v.get(t, t) for t in table.options[i]])
        self.logp += table.logp[i]
        return table.values[i]

    def say(self, tokens: tuple[str, ...], role: str) -> None:
        v = self.vars
        self.out.extend([v.get(t, t) for t in tokens])


class _Parser(_Run):
    def __init__(self, tokens: list[str]) -> None:
        super().__init__()
        self.tokens = tokens
        self.pos = 0

    def _matches(self, option: tuple[str, ...]) -> bool:
        toks, pos, v = self.tokens, self.pos, self.vars
        if len(toks) - pos < len(option):
            return False
        return all(toks[pos + j] == v.get(t, t) for j, t in enumerate(option))

    def pick(self, table: _Table, role: str) -> Any:
        found = None
        if table.static:
            for n in table.lengths:
                found = table.index.get(tuple(self.tokens[self.pos : self.pos + n]))
                if found is not None:
                    break
        else:
            for i, option in enumerate(table.options):
                if self._matches(option):
                    found = i
                    break
        if found is None:
            v = self.vars
            expected = [tuple(v.get(t, t) for t in opt) for opt in table.options]
            raise _Mismatch(role, expected)
        self.pos += len(table.options[found])
        self.logp += table.logp[found]
        return table.values[found]

    def say(self, tokens: tuple[str, ...], role: str) -> None:
        if not self._matches(tokens):
            raise _Mismatch(role, [tuple(self.vars.get(t, t) for t in tokens)])
        self.pos += len(tokens)


class _TextParser(_Run):
    """Parses text written without spaces: an option matches when its joined text is next."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text  # the story followed by its end token
        self.pos = 0  # a character offset

    def spell(self, option: tuple[str, ...]) -> str:
        """The text an option writes, its placeholders filled in."""
        v = self.vars
        return "".join([v.get(t, t) for t in option])

    def pick(self, table: _Table, role: str) -> Any:
        text, pos = self.text, self.pos
        found = None
        if table.static:
            for n in table.text_lengths:
                found = table.text_index.get(text[pos : pos + n])
                if found is not None:
                    break
        else:
            v, hits = self.vars, []
            for i, o in enumerate(table.options):
                if text.startswith(v.get(o[0], o[0]), pos) and text.startswith(self.spell(o), pos):
                    hits.append(i)
            if len(hits) > 1:  # a fault of the world's words, not of the text
                raise RuntimeError(
                    f"{role}: options {[self.spell(table.options[i]) for i in hits]} all match "
                    "here, so this text has two derivations; make the world's words prefix-free"
                )
            found = hits[0] if hits else None
        if found is None:
            raise _Mismatch(role, [self.spell(o) for o in table.options])
        self.pos += len(self.spell(table.options[found]))
        self.logp += table.logp[found]
        return table.values[found]

    def say(self, tokens: tuple[str, ...], role: str) -> None:
        s = self.spell(tokens)
        if not self.text.startswith(s, self.pos):
            raise _Mismatch(role, [s])
        self.pos += len(s)


class _Enumerator(_Run):
    """Follows a script of option indices; single-option choices do not use the script."""

    def __init__(self, script: tuple[int, ...], prefix: list[str]) -> None:
        super().__init__()
        self.script = script
        self.step = 0
        self.prefix = prefix
        self.out: list[str] = []

    def _write(self, tokens: Iterable[str]) -> None:
        v = self.vars
        start = len(self.out)
        self.out.extend(v.get(t, t) for t in tokens)
        n = min(len(self.out), len(self.prefix))
        if start < n and self.out[start:n] != self.prefix[start:n]:
            raise _Branch(0)  # off the prefix: a dead end with nothing below it to explore

    def covers_prefix(self) -> bool:
        """Whether the finished story starts with the whole prefix."""
        k = len(self.prefix)
        return len(self.out) >= k and self.out[:k] == self.prefix

    def pick(self, table: _Table, role: str) -> Any:
        if len(table.options) == 1:
            i = 0
        elif self.step < len(self.script):
            i = self.script[self.step]
            self.step += 1
        else:
            raise _Branch(len(table.options))
        self.logp += table.logp[i]
        self._write(table.options[i])
        return table.values[i]

    def say(self, tokens: tuple[str, ...], role: str) -> None:
        self._write(tokens)


class _TextEnumerator(_Enumerator):
    """An enumerator for text without spaces: the prefix is compared character by character."""

    def __init__(self, script: tuple[int, ...], prefix: str) -> None:
        super().__init__(script, [])
        self.text_prefix = prefix
        self.n_chars = 0

    def _write(self, tokens: Iterable[str]) -> None:
        v = self.vars
        filled = [v.get(t, t) for t in tokens]
        self.out.extend(filled)
        s = "".join(filled)
        start, self.n_chars = self.n_chars, self.n_chars + len(s)
        overlap = self.text_prefix[start : self.n_chars]
        if overlap and s[: len(overlap)] != overlap:
            raise _Branch(0)

    def covers_prefix(self) -> bool:
        """Whether the finished story starts with the whole prefix (every write matched it)."""
        return self.n_chars >= len(self.text_prefix)


# --------------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Story:
    """One generated story and its exact log-probability (natural log) under the generator."""

    text: str
    log_prob: float

    @property
    def n_chars(self) -> int:
        """Characters this story costs in a corpus: its text plus the newline after it."""
        return len(self.text) + 1

    @property
    def bits(self) -> float:
        """Information content of the story, -log2 p(story)."""
        return -self.log_prob / _LN2


@dataclass(frozen=True)
class Validity:
    """Whether a text is a story of its world; truthy when it is, with the reason when not."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class EntropyEstimate:
    """Bits per character estimated as sum(bits) / sum(chars), with a delta-method standard error.

    ``stderr`` treats stories as independent pairs (bits_i, chars_i) and linearises the ratio:
    SE = sqrt(sum((bits_i - R * chars_i)**2) / (n * (n - 1))) / mean(chars).
    """

    bits_per_char: float
    stderr: float
    n_stories: int
    n_chars: int

    def __str__(self) -> str:
        return (
            f"{self.bits_per_char:.4f} ± {self.stderr:.4f} bits/char "
            f"({self.n_stories} stories, {self.n_chars} chars)"
        )


def ratio_estimate(bits: Sequence[float], chars: Sequence[int]) -> EntropyEstimate:
    """Bits per character over documents, sum(bits)/sum(chars), with its delta-method SE."""
    b = np.asarray(bits, dtype=np.float64)
    c = np.asarray(chars, dtype=np.float64)
    if b.shape != c.shape or b.ndim != 1:
        raise ValueError(
            f"bits and chars must be 1-D and of equal length; got shapes {b.shape} and {c.shape}"
        )
    n = len(b)
    if n < 2:
        raise ValueError(f"need at least 2 documents to estimate a standard error, got {n}")
    if np.any(c <= 0):
        raise ValueError("every document must have at least one character")
    ratio = float(b.sum() / c.sum())
    resid = b - ratio * c
    se = float(np.sqrt(np.sum(resid**2) / (n * (n - 1))) / c.mean())
    return EntropyEstimate(ratio, se, n, int(c.sum()))


# --------------------------------------------------------------------------------------------
# The public API every story world shares
# --------------------------------------------------------------------------------------------


class StoryWorld:
    """Base of a story world: sampling, exact probabilities, validity and enumeration.

    A subclass provides the story program ``_tell(run)``, ``_render(tokens)`` (the text of a
    story's tokens), ``_parser_for(text)`` (a parser run for a story, or None and the reason
    the text cannot be read), ``_check_prefix(prefix)`` and ``_prefix_enumerator(script,
    checked_prefix)`` for ``enumerate_stories``, and ``_explain(run, err)`` (a sentence saying
    why a parse failed); it sets ``min_sentences`` and ``max_sentences`` (``_set_length``).
    """

    min_sentences: int
    max_sentences: int

    def _tell(self, run: _Run) -> None:
        raise NotImplementedError

    def _render(self, tokens: Sequence[str]) -> str:
        raise NotImplementedError

    def _parser_for(self, text: str) -> tuple[_Run | None, str]:
        raise NotImplementedError

    def _check_prefix(self, prefix: str) -> Any:
        raise NotImplementedError

    def _prefix_enumerator(self, script: tuple[int, ...], prefix: Any) -> _Enumerator:
        raise NotImplementedError

    def _explain(self, run: Any, err: _Mismatch) -> str:
        raise NotImplementedError

    def _set_length(self, min_sentences: int, max_sentences: int) -> None:
        """Check and set the range of story lengths, in sentences."""
        if not (isinstance(min_sentences, int) and isinstance(max_sentences, int)):
            raise TypeError("min_sentences and max_sentences must be integers")
        if not 1 <= min_sentences <= max_sentences:
            raise ValueError(
                f"need 1 <= min_sentences <= max_sentences, got {min_sentences}, {max_sentences}"
            )
        self.min_sentences = min_sentences
        self.max_sentences = max_sentences

    def _stop_prob(self, n: int) -> float:
        """Probability of ending after sentence n: makes the length uniform on [min, max]."""
        if n < self.min_sentences:
            return 0.0
        if n >= self.max_sentences:
            return 1.0
        return 1.0 / (self.max_sentences - n + 1)

    def sample(self, n: int, seed: int) -> list[Story]:
        """Generate n stories with their exact log-probabilities; the same seed gives the same."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        rng = random.Random(seed)
        stories = []
        for _ in range(n):
            run = _Sampler(rng)
            self._tell(run)
            stories.append(Story(self._render(run.out[:-1]), run.logp))
        return stories

    def _parse(self, text: str) -> tuple[float | None, str]:
        run, reason = self._parser_for(text)
        if run is None:
            return None, reason
        try:
            self._tell(run)
        except _Mismatch as err:
            return None, self._explain(run, err)
        return run.logp, ""

    def log_prob(self, text: str) -> float:
        """Exact natural-log probability of one story (no newline); -inf if it is impossible.

        ``is_valid`` says why a text is impossible.
        """
        logp, _ = self._parse(text)
        return -math.inf if logp is None else logp

    def is_valid(self, text: str) -> Validity:
        """Whether the text is a story this world can tell and, if not, the first problem."""
        logp, reason = self._parse(text)
        return Validity(logp is not None, reason)

    def enumerate_stories(self, max_stories: int = 100_000, prefix: str = "") -> list[Story]:
        """Every story of this world with its probability, optionally only those with a prefix.

        Raises ValueError if there are more than max_stories such stories.
        """
        checked = self._check_prefix(prefix)
        stories: list[Story] = []
        stack: list[tuple[int, ...]] = [()]
        while stack:
            script = stack.pop()
            run = self._prefix_enumerator(script, checked)
            try:
                self._tell(run)
            except _Branch as b:
                stack.extend(script + (i,) for i in reversed(range(b.n_options)))
                continue
            if not run.covers_prefix():
                continue
            stories.append(Story(self._render(run.out[:-1]), run.logp))
            if len(stories) > max_stories:
                raise ValueError(
                    f"more than {max_stories} stories: use a smaller world (fewer names, "
                    "adjectives, nouns, places, a smaller max_sentences), a longer prefix, "
                    "or a larger max_stories"
                )
        return stories

    def entropy_floor(self, n: int = 2000, seed: int = 12345) -> EntropyEstimate:
        """Entropy of this world's text in bits per character, estimated on n fresh stories.

        Characters are counted as ``len(text) + 1`` per story (the newline that ends it), as in
        the corpus text functions and the count-based baselines. The estimate is the ratio
        sum(-log2 p) / sum(chars) with a delta-method standard error (see ``ratio_estimate``).
        """
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n!r}")
        stories = self.sample(n, seed)
        return ratio_estimate([s.bits for s in stories], [s.n_chars for s in stories])
