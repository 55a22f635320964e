"""Checks for the tokenization chapter: BPE pair counts, merges, training and encoding; UTF-8."""

from __future__ import annotations

import contextlib
import functools
import operator
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise, zip_longest
from typing import Any

from .. import tokenizer as ref
from ._core import call, check, fail

Pair = tuple[int, int]


def _short(value: Any, limit: int = 70) -> str:
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run(fn: Callable[..., Any], args: tuple[Any, ...], label: str, crash_hints: dict[type, str]):
    """Call the candidate; a crash is reported with the input and, if known, a hint for it."""
    try:
        return call(fn, *args)
    except NotImplementedError:
        raise
    except Exception as failure:  # call() already described how the function was called
        cause = failure.__cause__ if failure.__cause__ is not None else failure
        hint = next((h for kind, h in crash_hints.items() if isinstance(cause, kind)), "")
        fail(f"with {label}: {failure}" + (f"\n{hint}" if hint else ""))


# --------------------------------------------------------------------------- pair_counts


def _pair_cases() -> list[list[int]]:
    rng = random.Random(0)
    return [
        [1, 2, 3, 1, 2],
        [5, 7, 5, 7, 5, 9],
        [1, 1, 1],
        [4, 4, 4, 4, 2],
        [],
        [7],
        [3, 8],
        [rng.randrange(6) for _ in range(200)],
    ]


@check
def pair_counts(fn: Callable[..., Any]) -> str:
    """Check `fn(ids: list[int]) -> dict[tuple[int, int], int]`: counts of neighbouring pairs."""
    for ids in _pair_cases():
        given = list(ids)
        label = f"ids={_short(ids, 40)}"
        out = _run(
            fn,
            (given,),
            label,
            {
                IndexError: (
                    "An index runs past the end of the list. The last pair starts at position "
                    "len(ids) - 2, so loop over range(len(ids) - 1); an empty list or a single id "
                    "has no pairs at all."
                ),
                TypeError: (
                    "If the message says 'unhashable type: list': a list cannot be a dict key. "
                    "Use a tuple, counts[(a, b)], or count zip(ids, ids[1:])."
                ),
            },
        )
        if given != ids:
            fail(
                f"with {label} your function changed ids in place (it is now {_short(given)}). "
                "Counting only reads the list: leave it as it is."
            )
        _diagnose_pairs(out, ids, label)
    return (
        "counts every neighbouring pair, overlaps included, on 8 inputs "
        "([1, 1, 1] -> {(1, 1): 2}; [] and one id -> {})"
    )


def _diagnose_pairs(out: Any, ids: list[int], label: str) -> None:
    """Fail, naming the likely mistake, unless `out` equals pair_counts(ids)."""
    expected = ref.pair_counts(ids)
    if isinstance(out, (list, tuple)):
        fail(
            f"with {label} your function returned a {type(out).__name__}. Return a dict that "
            "maps each pair (a, b) to how often it occurs, e.g. {(1, 2): 2, (2, 3): 1} "
            "(a collections.Counter is a dict too)."
        )
    if not isinstance(out, dict):
        fail(f"with {label} the result should be a dict, but it is {type(out).__name__}.")
    if dict(out) == expected:
        return
    if len(ids) < 2:
        fail(
            f"with {label} there is no pair of neighbours, so the result must be {{}}, "
            f"not {_short(dict(out))}."
        )
    keys = list(out)
    if any(isinstance(k, int) for k in keys):
        fail(
            f"with {label} the keys are single ids ({_short(dict(out))}): that counts ids, "
            "not pairs (is it Counter(ids)?). Each key must be a pair of neighbours, "
            "(ids[i], ids[i + 1])."
        )
    strings = [k for k in keys if isinstance(k, str)]
    if strings:
        fail(
            f"with {label} the keys are strings such as {strings[0]!r}. Use tuples of two ints, "
            "(ids[i], ids[i + 1]): the merge step looks pairs up as tuples."
        )
    if any(isinstance(k, list) or (isinstance(k, tuple) and len(k) != 2) for k in keys):
        fail(f"with {label} some keys are not pairs (a, b): {_short(keys)}.")
    if not all(isinstance(k, tuple) for k in keys):
        fail(f"with {label} the keys should be tuples (a, b), but one is {type(keys[0]).__name__}.")
    if dict(out) == {(b, a): n for (a, b), n in expected.items()}:
        fail(
            f"with {label} every pair is reversed: the key for ids[i] followed by ids[i + 1] "
            "is (ids[i], ids[i + 1]), in reading order."
        )
    if dict(out) == _non_overlapping(ids):
        fail(
            f"with {label} overlapping pairs are missed: after a match your loop jumps over "
            "the second id. Counting looks at every position (only merging jumps ahead), so "
            "[1, 1, 1] gives {(1, 1): 2}: positions 0-1 and 1-2."
        )
    if dict(out) == _counts(zip(ids[::2], ids[1::2], strict=False)):
        fail(
            f"with {label} only the pairs that start at even positions (0-1, 2-3, ...) are "
            "counted, so overlapping pairs are missed: every position i from 0 to "
            "len(ids) - 2 starts a pair. [1, 2, 3] has the pairs (1, 2) and (2, 3); "
            "[1, 1, 1] gives {(1, 1): 2}."
        )
    if dict(out) == ref.pair_counts(ids[:-1]):
        fail(
            f"with {label} the last pair ({ids[-2]}, {ids[-1]}) is missing: an off-by-one in "
            "the loop. There are len(ids) - 1 pairs: use range(len(ids) - 1) or "
            "zip(ids, ids[1:])."
        )
    if dict(out) == ref.pair_counts([*ids, ids[0]]):
        fail(
            f"with {label} there is an extra pair ({ids[-1]}, {ids[0]}) that wraps from the "
            "last id back to the first. The last id has no right neighbour."
        )
    if set(out) == set(expected):
        pair = next(p for p in expected if out[p] != expected[p])
        fail(
            f"with {label} the pairs are right but some counts are not: {pair} occurs "
            f"{expected[pair]} times, your result says {out[pair]}."
        )
    missing = [p for p in expected if p not in out]
    extra = [p for p in out if p not in expected]
    fail(
        f"with {label} the set of pairs is wrong (missing: {_short(missing, 50)}; "
        f"not neighbours: {_short(extra, 50)}). Count (ids[i], ids[i + 1]) for every i "
        "from 0 to len(ids) - 2."
    )


def _counts(pairs: Any) -> dict[Pair, int]:
    counts: dict[Pair, int] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _non_overlapping(ids: list[int]) -> dict[Pair, int]:
    """Counts as str.count gives them: each pair counted left to right without overlaps."""
    return {pair: len(ids) - len(ref.merge(ids, pair, -1)) for pair in ref.pair_counts(ids)}


# --------------------------------------------------------------------------- merge


def _merge_cases() -> list[tuple[list[int], Pair, int]]:
    rng = random.Random(1)
    long_ids = [rng.randrange(4) for _ in range(300)]
    top = max(ref.pair_counts(long_ids).items(), key=lambda item: (item[1], item[0]))[0]
    return [
        ([1, 2, 3, 1, 2, 4], (1, 2), 9),
        ([5, 1, 2], (1, 2), 7),
        ([1, 1, 1], (1, 1), 9),
        ([1, 1, 1, 1], (1, 1), 9),
        ([2, 1, 1, 1, 2], (1, 1), 8),
        ([1, 2, 1, 2, 1, 2], (2, 1), 7),
        ([3, 4, 3], (4, 5), 9),
        ([], (1, 2), 9),
        ([4], (4, 4), 9),
        (long_ids, top, 256),
    ]


@check
def merge(fn: Callable[..., Any]) -> str:
    """Check `fn(ids, pair, new_id) -> list[int]`: each occurrence replaced, left to right."""
    for ids, pair, new_id in _merge_cases():
        given = list(ids)
        label = f"ids={_short(ids, 40)}, pair={pair}, new_id={new_id}"
        out = _run(
            fn,
            (given, pair, new_id),
            label,
            {
                IndexError: (
                    "An index runs past the end of the list: ids[i + 1] only exists while "
                    "i + 1 < len(ids). The last element still has to be copied to the result."
                ),
            },
        )
        if given != ids:
            fail(
                f"with {label} your function changed the input list in place (it is now "
                f"{_short(given)}). Build a new list and leave ids unchanged: the caller may "
                "still need the old ids."
            )
        _diagnose_merge(out, ids, pair, new_id, label)
    return (
        "replaces each occurrence left to right without overlaps on 10 inputs "
        "([1, 1, 1] -> [9, 1]); keeps the last element; leaves the input unchanged"
    )


def _diagnose_merge(out: Any, ids: list[int], pair: Pair, new_id: int, label: str) -> None:
    """Fail, naming the likely mistake, unless `out` equals merge(ids, pair, new_id)."""
    expected = ref.merge(ids, pair, new_id)
    if not isinstance(out, list):
        fail(f"with {label} the result should be a list, but it is {type(out).__name__}.")
    if out == expected:
        return
    if any(isinstance(t, (tuple, list)) for t in out):
        fail(
            f"with {label} the result holds a pair: {_short(out)}. Put the single int new_id "
            "where the pair was, not the pair itself."
        )
    said = f"with {label} you return {_short(out, 60)}, expected {_short(expected, 60)}"
    if out == _merge_from_right(ids, pair, new_id) or out.count(new_id) > expected.count(new_id):
        fail(
            f"{said}. Overlapping matches: [1, 1, 1] with the pair (1, 1) must "
            "give [9, 1], not [9, 9] or [1, 9]. Scan from the left; after a match append new_id "
            "and jump over BOTH elements (i += 2), so the second 1 cannot start another match."
        )
    if out == _merge_keeping_second(ids, pair, new_id):
        fail(
            f"{said}: the second token of each match is still there. A merge "
            "replaces TWO tokens by one: after appending new_id, skip ids[i + 1] (i += 2)."
        )
    if expected and out == expected[:-1]:
        fail(
            f"{said}: the last element is dropped. When i reaches the last "
            "position there is no pair to test, but ids[-1] must still be copied."
        )
    if out == _merge_first(ids, pair, new_id):
        fail(
            f"{said}: only the first occurrence is replaced. Keep scanning "
            "after a match: every occurrence becomes new_id."
        )
    if pair[0] != pair[1] and out == ref.merge(ids, (pair[1], pair[0]), new_id):
        fail(
            f"{said}: you replaced ({pair[1]}, {pair[0]}), the pair in the "
            f"wrong order. Match ids[i] == pair[0] and ids[i + 1] == pair[1]."
        )
    if new_id not in out and expected.count(new_id):
        fail(f"{said}: new_id never appears. Append new_id for each match.")
    fail(
        f"{said}. Walk i from 0: if (ids[i], ids[i + 1]) == pair, append new_id "
        "and add 2 to i; otherwise append ids[i] and add 1."
    )


def _merge_from_right(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    return ref.merge(ids[::-1], (pair[1], pair[0]), new_id)[::-1]


def _merge_keeping_second(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Each position where the pair starts becomes new_id, and nothing is removed."""
    return [new_id if (a, b) == pair else a for a, b in zip_longest(ids, ids[1:])]


def _merge_first(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], new_id, *ids[i + 2 :]]
    return list(ids)


# --------------------------------------------------------------------------- utf8_lengths


_LIMITS = ((0x7F, "U+007F"), (0x7FF, "U+07FF"), (0xFFFF, "U+FFFF"))


def _utf8_length(ch: str) -> int:
    return len(ch.encode("utf-8"))


@check
def utf8_lengths(fn: Callable[..., Any]) -> str:
    """Check `fn(text: str) -> list[int]`: the number of UTF-8 bytes of each character."""
    cases = [
        "cat",
        "\u732b",  # 猫
        "caf\u00e9",  # café
        "\U0001f642",  # 🙂
        "Hi \u4f60\u597d \U0001f44b!",  # Hi 你好 👋!
        "\x00\x7f\x80\u07ff\u0800\uffe5\uffff\U00010000\U0010ffff",  # every boundary
        "",
    ]
    for text in cases:
        label = f"text={text!r}"
        out = _run(fn, (text,), label, {})
        _diagnose_utf8(out, text, label)
    return (
        "1 to 4 bytes per character on 7 texts: ASCII, é, 猫, emoji, every range boundary, "
        "and the empty text"
    )


def _diagnose_utf8(out: Any, text: str, label: str) -> None:
    """Fail, naming the likely mistake, unless `out` lists the UTF-8 length of each character."""
    expected = [_utf8_length(ch) for ch in text]
    if isinstance(out, int):
        if out == sum(expected):
            fail(
                f"with {label} your function returned one number, {out} (the total for the "
                "whole text). Return a list with one number per character: "
                "[len of text[0] in bytes, ...]."
            )
        fail(
            f"with {label} your function returned one number, {out}. Return a list "
            "with one number per character: [len of text[0] in bytes, ...]."
        )
    if not isinstance(out, list):
        fail(f"with {label} the result should be a list, but it is {type(out).__name__}.")
    if out == expected:
        return
    if text and out == list(text.encode("utf-8")):
        fail(
            f"with {label} you returned the bytes themselves, text.encode('utf-8'). Return how "
            "many bytes each character takes: 'A' -> 1, '\u732b' -> 3."
        )
    if len(out) != len(text):
        if len(out) == sum(expected):
            fail(
                f"with {label} the list has length {len(out)} (one per byte?); expected one number "
                f"per character, {len(text)}."
            )
        fail(
            f"with {label} the list has length {len(out)}; expected one number per "
            f"character, {len(text)}."
        )
    if text and all(n == 1 for n in out):
        fail(
            f"with {label} every character gets 1 byte. Only U+0000 to U+007F (ASCII) take "
            "1 byte in UTF-8; é takes 2, 猫 takes 3, most emoji take 4."
        )
    if out == [min(n, 3) for n in expected]:
        fail(
            f"with {label} characters above U+FFFF (most emoji, e.g. U+1F642) get 3 bytes; "
            "they take 4 in UTF-8."
        )
    if out == [max(1, (ord(ch).bit_length() + 7) // 8) for ch in text]:
        fail(
            f"with {label} you counted the bytes of the code point number itself. UTF-8 spends "
            "some bits of each byte on markers, so it needs more: up to U+007F 1 byte, up to "
            "U+07FF 2, up to U+FFFF 3, above that 4."
        )
    if out == [2 if ord(ch) <= 0xFFFF else 4 for ch in text]:
        fail(
            f"with {label} you counted UTF-16 (2 or 4 bytes per character), not UTF-8 "
            "(1 to 4 bytes)."
        )
    wrong = [(ch, n, m) for ch, n, m in zip(text, out, expected, strict=True) if n != m]
    codes = {ord(ch) for ch, _, _ in wrong}
    edges = {limit for limit, _ in _LIMITS} | {limit + 1 for limit, _ in _LIMITS}
    ch, n, m = wrong[0]
    if codes <= edges:
        fail(
            f"with {label} only characters at a range boundary are wrong, e.g. U+{ord(ch):04X} "
            f"gets {n} instead of {m}: check < against <=. The last 1-byte character is "
            "U+007F, the last 2-byte one U+07FF, the last 3-byte one U+FFFF."
        )
    fail(
        f"with {label} the character {ch!r} (U+{ord(ch):04X}) gets {n} bytes; UTF-8 uses {m}. "
        "Ranges: up to U+007F 1 byte, up to U+07FF 2, up to U+FFFF 3, above that 4."
    )


# --------------------------------------------------------------------------- bpe_train / bpe_encode
#
# The two capstones of chapter 02. Ids 0-255 are the UTF-8 byte values, merge i creates id
# 256 + i, and the learned merges are compared with `BPETokenizer`'s. Slow or endless solutions
# are stopped after a stated number of seconds (where a timer signal is available).

BPE_TRAIN_SECONDS = 10.0
"""Time bound for training on BIG_TEXT_BYTES of text to BIG_VOCAB_SIZE (about 1 s is typical)."""
BIG_TEXT_BYTES = 100_000
BIG_VOCAB_SIZE = 276
BPE_ENCODE_SECONDS = 10.0
"""Time bound for all encodings of one bpe_encode check together."""


class _TooSlow(BaseException):
    """Raised inside the candidate by the timer signal of `_deadline`."""


@contextlib.contextmanager
def _deadline(seconds: float, what: str) -> Iterator[None]:
    """Stop the candidate after `seconds` (POSIX main thread only; elsewhere only measure)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _TooSlow:
        fail(
            f"{what} did not finish within {seconds:g} s, so it was stopped. Is there a loop "
            "that never ends (a while loop whose condition never becomes false), or work "
            "that is repeated for every position of the text?"
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timed_run(
    fn: Callable[..., Any], args: tuple[Any, ...], label: str, seconds: float
) -> tuple[Any, float]:
    """Run the candidate under `_deadline`; return its result and the seconds it took."""
    start = time.perf_counter()
    with _deadline(seconds, f"with {label} your function"):
        out = _run(fn, args, label, {})
    return out, time.perf_counter() - start


def _vocab(merges: list[Pair]) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(merges):
        vocab[256 + k] = vocab[a] + vocab[b]
    return vocab


def _train_like(
    ids: list[int],
    num_merges: int,
    pick: Callable[[dict[Pair, int]], Pair],
    first_id: int = 256,
    recount: bool = True,
) -> list[Pair]:
    """A straightforward trainer with one choice changed: how a pair is picked, ids, recount."""
    merges: list[Pair] = []
    counts = ref.pair_counts(ids)
    for k in range(num_merges):
        if recount:
            counts = ref.pair_counts(ids)
        if not counts:
            break
        best = pick(counts)
        if not recount:
            counts = {p: n for p, n in counts.items() if p != best}
        ids = ref.merge(ids, best, first_id + k)
        merges.append(best)
    return merges


def _train_mistakes(text: str, num_merges: int) -> list[tuple[list[Pair], str]]:
    data = list(text.encode("utf-8"))
    most = lambda c: min(c, key=lambda p: (-c[p], p))  # noqa: E731  (the right rule)
    return [
        (
            _train_like(data, num_merges, lambda c: max(c, key=lambda p: (c[p], p))),
            "ties go to the LARGEST pair. When two pairs are equally frequent, take the "
            "smallest pair: compare the first ids, then the second ids (tuples compare this "
            "way, so min over (-count, pair) does it).",
        ),
        (
            _train_like(data, num_merges, lambda c: max(c, key=c.__getitem__)),
            "ties go to the pair seen first in the text (max(counts, key=counts.get) or "
            "Counter.most_common keep the first of equal counts). The rule is: among equally "
            "frequent pairs take the smallest pair, comparing the first ids, then the second.",
        ),
        (
            _train_like(data, num_merges, lambda c: min(c, key=lambda p: (c[p], p))),
            "you merge the LEAST frequent pair. Each merge takes the most frequent pair.",
        ),
        (
            _train_like(data, num_merges, most, recount=False),
            "the pairs are counted only once, before the first merge. After every merge the "
            "ids change (new pairs appear, merged ones disappear): count the pairs again.",
        ),
        (
            _train_like(data, num_merges, most, first_id=255),
            "merge i creates id 255 + i. The ids 0-255 are taken by the bytes, so merge i "
            "(counting from 0) creates id 256 + i.",
        ),
        (
            _train_like(data, num_merges, most, first_id=257),
            "merge i creates id 257 + i. Merge i (counting from 0) creates id 256 + i: the "
            "first merge makes 256.",
        ),
    ]


def _as_merges(out: Any, label: str) -> list[Pair]:
    """The candidate's merges as a list of (int, int) tuples, or a failure that says why not."""
    if not isinstance(out, (list, tuple)):
        fail(
            f"with {label} your function returned {type(out).__name__}. Return a list of "
            "merges in the order learned, each a pair (a, b) of ids, e.g. [(97, 110), (98, 256)]."
        )
    merges: list[Pair] = []
    for k, item in enumerate(out):
        if (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], (tuple, list))
        ):
            fail(
                f"with {label} merge {k} is {_short(item)}: a pair and its new id, as "
                "BPETokenizer.merges stores them. Return only the pairs, [(a, b), ...]: the "
                "new id of merge i is always 256 + i."
            )
        try:
            a, b = item
            merges.append((operator.index(a), operator.index(b)))
        except (TypeError, ValueError):
            fail(
                f"with {label} merge {k} is {_short(item)}; each merge must be a pair (a, b) of "
                "two int ids."
            )
    return merges


@functools.lru_cache(maxsize=16)
def _learned_cached(text: str, vocab_size: int) -> tuple[Pair, ...]:
    return tuple(pair for pair, _ in ref.BPETokenizer().train(text, vocab_size).merges)


def _learned(text: str, vocab_size: int) -> list[Pair]:
    """BPETokenizer's merges for this text (cached: the 100 KB text takes about a second)."""
    return list(_learned_cached(text, vocab_size))


class _Suspects:
    """The named mistakes that every wrong result so far agrees with, narrowed case by case.

    Two mistakes can give the same wrong result on one input; the next inputs tell them apart,
    so a check fails at once only when one mistake is left, and otherwise after the last input.
    """

    def __init__(self) -> None:
        self.label = ""
        self.messages: list[str] | None = None

    def add(self, label: str, messages: list[str]) -> None:
        """Record the mistakes whose result equals the candidate's on the input `label`."""
        if self.messages is None:
            self.label, self.messages = label, messages
        else:
            self.messages = [m for m in self.messages if m in messages] or self.messages
        if len(self.messages) == 1:
            self.report()

    def report(self) -> None:
        """Fail with the first remaining mistake, if any was recorded."""
        if self.messages:
            fail(f"with {self.label}: {self.messages[0]}")


def _diagnose_train(out: Any, text: str, vocab_size: int, label: str, suspects: _Suspects) -> None:
    """Fail, naming the likely mistake, unless `out` equals BPETokenizer's merges."""
    expected = _learned(text, vocab_size)
    merges = _as_merges(out, label)
    if merges == expected:
        return
    wanted = vocab_size - 256
    if len(merges) != wanted and merges[: len(expected)] == expected[: len(merges)]:
        fail(
            f"with {label} you return {len(merges)} merges; expected vocab_size - 256 = "
            f"{wanted}: the 256 bytes are already in the vocabulary, so only vocab_size - 256 "
            "ids are new, one per merge."
        )
    named = [message for wrong, message in _train_mistakes(text, wanted) if merges == wrong]
    if named:
        suspects.add(label, named)
        return
    suspects.report()
    for k, (a, b) in enumerate(merges):
        unknown = [t for t in (a, b) if not 0 <= t < 256 + k]
        if unknown:
            chars = {ord(ch) for ch in text}
            why = (
                " It is the code point of a character of the text: start from the UTF-8 bytes, "
                "list(text.encode('utf-8')), not from ord() of each character."
                if unknown[0] in chars
                else ""
            )
            fail(
                f"with {label} merge {k} is {(a, b)}, but id {unknown[0]} does not exist yet: "
                f"before merge {k} the ids are 0-255 (bytes) and 256-{255 + k} (earlier "
                f"merges).{why}"
            )
    if len(set(merges)) < len(merges):
        repeated = next(p for p in merges if merges.count(p) > 1)
        fail(
            f"with {label} the pair {repeated} is merged twice. After a merge the pair is gone "
            "from the ids: count the pairs again after every merge."
        )
    k = next((i for i, (m, e) in enumerate(zip(merges, expected, strict=False)) if m != e), 0)
    vocab = _vocab(expected[:k])
    fail(
        f"with {label} merge {k} is {merges[k]}, expected {expected[k]} "
        f"({_bytes_text(vocab, expected[k])}); merges 0-{k - 1} are right."
        if k
        else f"with {label} the first merge is {merges[0] if merges else 'missing'}, expected "
        f"{expected[0]} ({_bytes_text(vocab, expected[0])}): the most frequent pair of "
        "neighbouring UTF-8 bytes."
    )


def _bytes_text(vocab: dict[int, bytes], pair: Pair) -> str:
    return " + ".join(repr(vocab[t].decode("utf-8", errors="replace")) for t in pair)


def _mixed_text() -> str:
    """Repeated words in four scripts and emoji, so that multi-byte pairs are merged too."""
    rng = random.Random(3)
    words = ["cat", "café", "\u732b\u54aa", "\u5b66\u6821", "\U0001f642", "\U0001f44b\U0001f3fd",
             "ab", "\u03bb\u03cc\u03b3\u03bf\u03c2"]  # fmt: skip
    return " ".join(rng.choice(words) for _ in range(300))


@functools.lru_cache(maxsize=1)
def _big_text() -> str:
    """About 100 KB of TinyTales stories with some Chinese and emoji lines, fixed forever."""
    from ..data import tiny_tales_text

    extra = "\u732b\u5750\u5728\u57ab\u5b50\u4e0a\u3002 \U0001f642\n" * 100
    tales = tiny_tales_text(700, seed=7)
    return (extra + tales).encode("utf-8")[:BIG_TEXT_BYTES].decode("utf-8", errors="ignore")


def _train_cases() -> list[tuple[str, int, str]]:
    from ..data import tiny_tales_text

    return [
        ("banana bandana", 259, "text='banana bandana', vocab_size=259"),
        ("banana bandana", 256, "text='banana bandana', vocab_size=256 (no merges)"),
        ("cd ab cd ab", 258, "text='cd ab cd ab', vocab_size=258 (four pairs tie)"),
        ("aaaaaaab", 259, "text='aaaaaaab', vocab_size=259"),
        ("\u732b\u732b\u732b \U0001f642\U0001f642 caf\u00e9 caf\u00e9", 262,
         "text='猫猫猫 🙂🙂 café café', vocab_size=262"),
        (_mixed_text(), 300, "300 words in four scripts with emoji, vocab_size=300"),
        (tiny_tales_text(20, seed=0), 336, "20 TinyTales stories, vocab_size=336"),
    ]  # fmt: skip


@check
def bpe_train(fn: Callable[..., Any]) -> str:
    """Check `fn(text, vocab_size) -> list[(a, b)]`: BPE merges over UTF-8 bytes, in order."""
    suspects = _Suspects()
    for text, vocab_size, label in _train_cases():
        out, _ = _timed_run(fn, (text, vocab_size), label, BPE_TRAIN_SECONDS)
        _diagnose_train(out, text, vocab_size, label, suspects)
    suspects.report()
    big = _big_text()
    label = f"{len(big.encode('utf-8')):,} bytes of text, vocab_size={BIG_VOCAB_SIZE}"
    out, seconds = _timed_run(fn, (big, BIG_VOCAB_SIZE), label, BPE_TRAIN_SECONDS)
    if seconds > BPE_TRAIN_SECONDS:
        fail(
            f"with {label} your function took {seconds:.1f} s; the bound is "
            f"{BPE_TRAIN_SECONDS:g} s (a loop with pair_counts and merge needs about 1 s). "
            "Count the pairs once per merge and build each new list in one pass."
        )
    _diagnose_train(out, big, BIG_VOCAB_SIZE, label, suspects)
    suspects.report()
    return (
        f"the same merges as BPETokenizer.train on {len(_train_cases()) + 1} texts (ties, "
        f"overlaps, Chinese, emoji); 100 KB within {BPE_TRAIN_SECONDS:g} s"
    )


def _encode_like(data: list[int], merges: list[Pair], rule: str) -> list[int]:
    """An encoder with one wrong choice: which pair it merges next, or which id it makes."""
    ids = list(data)
    rank = {pair: k for k, pair in enumerate(merges)}
    if rule in ("id = rank", "reverse order"):
        order = list(enumerate(merges))
        for k, pair in order[::-1] if rule == "reverse order" else order:
            ids = ref.merge(ids, pair, k if rule == "id = rank" else 256 + k)
        return ids
    if rule == "one pass":
        for k, pair in enumerate(merges):
            ids = ref.merge(ids, pair, 256 + k) if pair in set(pairwise(data)) else ids
        return ids
    while True:
        present = [(i, p) for i, p in enumerate(pairwise(ids)) if p in rank]
        if not present:
            return ids
        if rule == "leftmost":
            pair = present[0][1]
        else:  # "most frequent"
            counts = ref.pair_counts(ids)
            pair = min((p for _, p in present), key=lambda p: (-counts[p], rank[p]))
        ids = ref.merge(ids, pair, 256 + rank[pair])


_ENCODE_MISTAKES = {
    "most frequent": "you merge the most frequent pair of the text first. That is how "
    "training chooses; encoding applies the learned merges by rank: the pair learned first "
    "(lowest index in merges) that occurs in the ids, then again.",
    "leftmost": "you merge the leftmost pair that has a merge. Encoding takes the pair with the "
    "lowest rank (learned first) wherever it is in the text, not the first one from the left.",
    "id = rank": "merge k gave the id k. The ids 0-255 are the bytes, so merge k creates "
    "id 256 + k.",
    "reverse order": "you apply the merges from the last learned to the first. Later merges are "
    "built from earlier ones, so the lowest rank comes first.",
    "one pass": "you only apply the merges whose pair is in the original bytes. A merge can "
    "also join tokens that earlier merges created: look for the pairs in the current ids.",
}


def _encode_cases() -> list[tuple[str, list[Pair], list[tuple[str, str]]]]:
    from ..data import tiny_tales_text

    rng = random.Random(5)
    ranges = [(0x20, 0x7E), (0xC0, 0x17F), (0x391, 0x3C9), (0x4E00, 0x4E40), (0x1F600, 0x1F64F)]
    alphabet = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(12)]
    training = " ".join(rng.choice(words) for _ in range(400))
    randoms = [
        " ".join(rng.choice(words) for _ in range(20)),
        "".join(rng.choice(alphabet) for _ in range(60)),
        "".join(rng.choice(words[:3] + alphabet[:5]) for _ in range(30)),
    ]
    random_cases = [(text, f"random Unicode text {k + 1} ({_short(text, 40)})")
                    for k, text in enumerate(randoms)]  # fmt: skip
    stories = tiny_tales_text(20, seed=0)
    held_out = tiny_tales_text(3, seed=1)

    return [
        (
            "'banana bandana'",
            _learned("banana bandana", 259),
            [("bandana banana", "'bandana banana'"), ("", "the empty text"), ("a", "'a'")],
        ),
        (
            "20 TinyTales stories",
            _learned(stories, 376),
            [
                (held_out, "3 held-out TinyTales stories"),
                ("Mia found a kite. 猫🙂", "'Mia found a kite. 猫🙂' (bytes never merged)"),
            ],
        ),
        ("random Unicode words", _learned(training, 336), random_cases),
    ]


@check
def bpe_encode(fn: Callable[..., Any]) -> str:
    """Check `fn(text, merges) -> list[int]`: the lowest-rank pair first, as BPETokenizer does."""
    start = time.perf_counter()
    count = 0
    suspects = _Suspects()
    for training_label, merges, texts in _encode_cases():
        vocab = _vocab(merges)
        tokenizer = _tokenizer(merges)
        for text, text_label in texts:
            given = list(merges)
            label = f"text={text_label} and {len(merges)} merges learned on {training_label}"
            left = BPE_ENCODE_SECONDS - (time.perf_counter() - start)
            out, _ = _timed_run(fn, (text, given), label, max(left, 0.5))
            if given != merges:
                fail(
                    f"with {label} your function changed the list of merges. Read it, and "
                    "build your own dict of ranks if you need one."
                )
            _diagnose_encode(out, text, merges, vocab, tokenizer.encode(text), label, suspects)
            count += 1
    suspects.report()
    return (
        f"equals BPETokenizer.encode on {count} texts; decode(encode(text)) == text on "
        "random Unicode with Chinese and emoji"
    )


def _tokenizer(merges: list[Pair]) -> ref.BPETokenizer:
    """A BPETokenizer that holds exactly these merges."""
    tokenizer = ref.BPETokenizer()
    tokenizer.merges = [(pair, 256 + k) for k, pair in enumerate(merges)]
    tokenizer.vocab = _vocab(merges)
    tokenizer._ranks = {pair: (k, 256 + k) for k, pair in enumerate(merges)}
    return tokenizer


def _diagnose_encode(
    out: Any,
    text: str,
    merges: list[Pair],
    vocab: dict[int, bytes],
    expected: list[int],
    label: str,
    suspects: _Suspects,
) -> None:
    """Fail, naming the likely mistake, unless `out` equals the reference encoding."""
    if isinstance(out, (str, bytes)) or not isinstance(out, (list, tuple)):
        fail(
            f"with {label} your function returned {type(out).__name__}. Return the token ids "
            "as a list of ints."
        )
    try:
        ids = [operator.index(t) for t in out]
    except TypeError:
        fail(f"with {label} the result {_short(out)} holds something that is not an int id.")
    if ids == expected:
        return
    data = list(text.encode("utf-8"))
    named = [m for rule, m in _ENCODE_MISTAKES.items() if ids == _encode_like(data, merges, rule)]
    if named:
        suspects.add(label, named)
        return
    suspects.report()
    unknown = [t for t in ids if t not in vocab]
    if unknown:
        chars = {ord(ch) for ch in text}
        why = (
            " It is the code point of a character: start from the UTF-8 bytes, "
            "list(text.encode('utf-8')), not from ord() of each character."
            if unknown[0] in chars
            else ""
        )
        fail(
            f"with {label} your result holds the id {unknown[0]}, but the vocabulary has ids "
            f"0-{255 + len(merges)} only.{why}"
        )
    decoded = b"".join(vocab[t] for t in ids)
    if decoded != text.encode("utf-8"):
        fail(
            f"with {label} decoding your ids does not give back the text: the tokens spell "
            f"{_short(decoded.decode('utf-8', errors='replace'), 50)} instead of "
            f"{_short(text, 50)}. Each merge must replace a pair by the id that stands for "
            "exactly its two tokens."
        )
    left = [p for p in pairwise(ids) if p in set(merges)]
    if left:
        fail(
            f"with {label} your ids still contain the pair {left[0]}, which has a merge (rank "
            f"{merges.index(left[0])}). Keep merging until no neighbouring pair of the ids is "
            "in merges."
        )
    fail(
        f"with {label} you return {_short(ids, 60)}, expected {_short(expected, 60)}. Both "
        "decode to the text, but your merges ran in another order: always merge the pair with "
        "the lowest rank next."
    )
