"""The tokenization checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import pairwise, zip_longest

import pytest

from llama_edu import checks
from llama_edu import tokenizer as ref


def not_yet(*args):
    raise NotImplementedError("Exercise: replace this line with your solution")


def passes(check, solution, capsys):
    check(solution)
    out = capsys.readouterr().out
    assert out.startswith(f"\u2713 checks.{check.__name__} passed"), out
    assert out.count("\n") == 1
    assert checks.results()[check.__name__].status == "passed"


def fails_with(check, wrong, names_the_mistake):
    with pytest.raises(checks.CheckFailed) as info:
        check(wrong)
    assert names_the_mistake in str(info.value), str(info.value)
    assert checks.results()[check.__name__].status == "failed"


# --------------------------------------------------------------------------- pair_counts


def pairs_by_loop(ids):
    counts = {}
    for i in range(len(ids) - 1):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def pairs_by_counter(ids):
    """Written differently: a Counter over neighbouring pairs."""
    return Counter(pairwise(ids))


def pairs_by_defaultdict(ids):
    counts = defaultdict(int)
    for a, b in pairwise(ids):
        counts[a, b] += 1
    return dict(counts)


def pairs_step_two(ids):
    """Counts only the pairs at even positions, so overlapping pairs are missed."""
    counts = {}
    for i in range(0, len(ids) - 1, 2):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def pairs_like_str_count(ids):
    """Counts each pair without overlaps, as "aaa".count("aa") does."""
    counts = {}
    for pair in set(pairwise(ids)):
        n, i = 0, 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                n, i = n + 1, i + 2
            else:
                i += 1
        counts[pair] = n
    return counts


def pairs_missing_last(ids):
    counts = {}
    for i in range(len(ids) - 2):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def pairs_counter_of_ids(ids):
    return Counter(ids)


def pairs_list_keys(ids):
    counts = {}
    for i in range(len(ids) - 1):
        key = [ids[i], ids[i + 1]]
        counts[key] = counts.get(key, 0) + 1
    return counts


def pairs_string_keys(ids):
    return Counter(f"{a},{b}" for a, b in pairwise(ids))


def pairs_list_of_pairs(ids):
    return list(Counter(pairwise(ids)).items())


def pairs_index_error(ids):
    counts = {}
    for i in range(len(ids)):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def pairs_reversed(ids):
    return Counter((b, a) for a, b in pairwise(ids))


def pairs_wrap_around(ids):
    if len(ids) < 2:
        return {}
    return Counter(pairwise([*ids, ids[0]]))


def pairs_empty_not_handled(ids):
    if len(ids) < 2:
        return {(ids[0] if ids else 0, None): 1}
    return Counter(pairwise(ids))


def pairs_mutating(ids):
    counts = Counter(pairwise(ids))
    ids.clear()
    return counts


@pytest.mark.parametrize(
    "solution", [ref.pair_counts, pairs_by_loop, pairs_by_counter, pairs_by_defaultdict]
)
def test_pair_counts_passes_correct_solutions(solution, capsys):
    passes(checks.pair_counts, solution, capsys)


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (pairs_step_two, "only the pairs that start at even positions"),
        (pairs_like_str_count, "overlapping pairs are missed"),
        (pairs_missing_last, "is missing: an off-by-one"),
        (pairs_counter_of_ids, "the keys are single ids"),
        (pairs_list_keys, "a list cannot be a dict key"),
        (pairs_string_keys, "the keys are strings"),
        (pairs_list_of_pairs, "returned a list"),
        (pairs_index_error, "loop over range(len(ids) - 1)"),
        (pairs_reversed, "every pair is reversed"),
        (pairs_wrap_around, "wraps from the last id back to the first"),
        (pairs_empty_not_handled, "the result must be {}"),
        (pairs_mutating, "changed ids in place"),
    ],
)
def test_pair_counts_names_the_mistake(wrong, names_the_mistake):
    fails_with(checks.pair_counts, wrong, names_the_mistake)


def test_pair_counts_not_implemented(capsys):
    checks.pair_counts(not_yet)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert checks.results()["pair_counts"].status == "not implemented"


# --------------------------------------------------------------------------- merge


def merge_while(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_with_skip_flag(ids, pair, new_id):
    """Written differently: a for loop over neighbours with a flag that skips a used element."""
    out, skip = [], False
    for a, b in zip_longest(ids, ids[1:]):
        if skip:
            skip = False
        elif (a, b) == pair:
            out.append(new_id)
            skip = True
        else:
            out.append(a)
    return out


def merge_recursive(ids, pair, new_id):
    if len(ids) < 2:
        return list(ids)
    if (ids[0], ids[1]) == pair:
        return [new_id, *merge_recursive(ids[2:], pair, new_id)]
    return [ids[0], *merge_recursive(ids[1:], pair, new_id)]


def merge_overlapping(ids, pair, new_id):
    """Every matching position becomes new_id and nothing is skipped: [1, 1, 1] -> [9, 9]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            if i + 2 < len(ids) and (ids[i + 1], ids[i + 2]) == pair:
                i += 1
            else:
                i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_keeps_second(ids, pair, new_id):
    out = []
    for i in range(len(ids) - 1):
        out.append(new_id if (ids[i], ids[i + 1]) == pair else ids[i])
    return out + ids[-1:]


def merge_from_right(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i > 0 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i : i + 2] = [new_id]
        i += 1
    return ids


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


def merge_reversed_pair(ids, pair, new_id):
    return merge_while(ids, (pair[1], pair[0]), new_id)


def merge_puts_the_pair(ids, pair, new_id):
    return merge_while(ids, pair, pair)


def merge_returns_tuple(ids, pair, new_id):
    return tuple(merge_while(ids, pair, new_id))


def merge_index_error(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@pytest.mark.parametrize(
    "solution", [ref.merge, merge_while, merge_with_skip_flag, merge_recursive]
)
def test_merge_passes_correct_solutions(solution, capsys):
    passes(checks.merge, solution, capsys)


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (merge_overlapping, "Overlapping matches"),
        (merge_from_right, "Overlapping matches"),
        (merge_keeps_second, "the second token of each match is still there"),
        (merge_drops_last, "the last element is dropped"),
        (merge_in_place, "changed the input list in place"),
        (merge_first_only, "only the first occurrence is replaced"),
        (merge_reversed_pair, "the pair in the wrong order"),
        (merge_puts_the_pair, "the result holds a pair"),
        (merge_returns_tuple, "should be a list, but it is tuple"),
        (merge_index_error, "ids[i + 1] only exists while"),
    ],
)
def test_merge_names_the_mistake(wrong, names_the_mistake):
    fails_with(checks.merge, wrong, names_the_mistake)


def test_merge_overlap_message_shows_both_results():
    with pytest.raises(checks.CheckFailed) as info:
        checks.merge(merge_overlapping)
    message = str(info.value)
    assert "[9, 1]" in message and "ids=[1, 1, 1]" in message


def test_merge_not_implemented(capsys):
    checks.merge(not_yet)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert checks.results()["merge"].status == "not implemented"


# --------------------------------------------------------------------------- utf8_lengths


def utf8_by_encode(text):
    return [len(ch.encode("utf-8")) for ch in text]


def utf8_by_ranges(text):
    """Written differently: from the code point, with the four ranges of UTF-8."""
    lengths = []
    for ch in text:
        code = ord(ch)
        if code < 0x80:
            lengths.append(1)
        elif code < 0x800:
            lengths.append(2)
        elif code < 0x10000:
            lengths.append(3)
        else:
            lengths.append(4)
    return lengths


def utf8_off_by_one(text):
    out = []
    for ch in text:
        code = ord(ch)
        out.append(1 if code < 0x7F else 2 if code < 0x7FF else 3 if code < 0xFFFF else 4)
    return out


def utf8_all_ones(text):
    return [1 for _ in text]


def utf8_total(text):
    return len(text.encode("utf-8"))


def utf8_per_byte(text):
    return list(text.encode("utf-8"))


def utf8_utf16(text):
    return [len(ch.encode("utf-16-le")) for ch in text]


def utf8_code_point_bytes(text):
    return [max(1, (ord(ch).bit_length() + 7) // 8) for ch in text]


def utf8_one_per_byte(text):
    return [1 for _ in text.encode("utf-8")]


def utf8_at_most_three(text):
    return [min(3, len(ch.encode("utf-8"))) for ch in text]


@pytest.mark.parametrize("solution", [utf8_by_encode, utf8_by_ranges])
def test_utf8_lengths_passes_correct_solutions(solution, capsys):
    passes(checks.utf8_lengths, solution, capsys)


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (utf8_off_by_one, "check < against <="),
        (utf8_all_ones, "every character gets 1 byte"),
        (utf8_total, "returned one number"),
        (utf8_per_byte, "you returned the bytes themselves"),
        (utf8_one_per_byte, "(one per byte?)"),
        (utf8_utf16, "you counted UTF-16"),
        (utf8_code_point_bytes, "the bytes of the code point number"),
        (utf8_at_most_three, "they take 4 in UTF-8"),
    ],
)
def test_utf8_lengths_names_the_mistake(wrong, names_the_mistake):
    fails_with(checks.utf8_lengths, wrong, names_the_mistake)


def test_utf8_lengths_not_implemented(capsys):
    checks.utf8_lengths(not_yet)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert checks.results()["utf8_lengths"].status == "not implemented"


def test_the_three_checks_are_listed():
    assert {"pair_counts", "merge", "utf8_lengths"} <= set(checks.available())
