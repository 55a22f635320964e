"""Checks for the tokenization chapter: pair counts and merges of BPE, UTF-8 byte lengths."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import zip_longest
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
    shown = f"you return {_short(out, 60)}, expected {_short(expected, 60)}"
    if out == _merge_from_right(ids, pair, new_id) or out.count(new_id) > expected.count(new_id):
        fail(
            f"with {label} {shown}. Overlapping matches: [1, 1, 1] with the pair (1, 1) must "
            "give [9, 1], not [9, 9] or [1, 9]. Scan from the left; after a match append new_id "
            "and jump over BOTH elements (i += 2), so the second 1 cannot start another match."
        )
    if out == _merge_keeping_second(ids, pair, new_id):
        fail(
            f"with {label} {shown}: the second token of each match is still there. A merge "
            "replaces TWO tokens by one: after appending new_id, skip ids[i + 1] (i += 2)."
        )
    if expected and out == expected[:-1]:
        fail(
            f"with {label} {shown}: the last element is dropped. When i reaches the last "
            "position there is no pair to test, but ids[-1] must still be copied."
        )
    if out == _merge_first(ids, pair, new_id):
        fail(
            f"with {label} {shown}: only the first occurrence is replaced. Keep scanning "
            "after a match: every occurrence becomes new_id."
        )
    if pair[0] != pair[1] and out == ref.merge(ids, (pair[1], pair[0]), new_id):
        fail(
            f"with {label} {shown}: you replaced ({pair[1]}, {pair[0]}), the pair in the "
            f"wrong order. Match ids[i] == pair[0] and ids[i + 1] == pair[1]."
        )
    if new_id not in out and expected.count(new_id):
        fail(f"with {label} {shown}: new_id never appears. Append new_id for each match.")
    fail(
        f"with {label} {shown}. Walk i from 0: if (ids[i], ids[i + 1]) == pair, append new_id "
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
        total = " (the total for the whole text)" if out == sum(expected) else ""
        fail(
            f"with {label} your function returned one number, {out}{total}. Return a list "
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
        per_byte = " (one per byte?)" if len(out) == sum(expected) else ""
        fail(
            f"with {label} the list has length {len(out)}{per_byte}; expected one number per "
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
