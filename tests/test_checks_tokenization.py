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


# --------------------------------------------------------------------------- bpe_train (capstone)


def train_by_library(text, vocab_size):
    return [pair for pair, _ in ref.BPETokenizer().train(text, vocab_size).merges]


def train_by_loop(text, vocab_size):
    ids = list(text.encode("utf-8"))
    merges = []
    for k in range(vocab_size - 256):
        counts = ref.pair_counts(ids)
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        ids = ref.merge(ids, best, 256 + k)
        merges.append(best)
    return merges


def train_by_sorting(text, vocab_size):
    """Written differently: a Counter, the ranking by sorting, a merge with a skip flag."""
    ids = list(text.encode("utf-8"))
    merges = []
    while len(merges) < vocab_size - 256:
        counts = Counter(zip(ids, ids[1:], strict=False))
        best = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]
        new_id, out, skip = 256 + len(merges), [], False
        for a, b in zip_longest(ids, ids[1:]):
            if skip:
                skip = False
            elif (a, b) == best:
                out.append(new_id)
                skip = True
            else:
                out.append(a)
        ids = out
        merges.append(best)
    return merges


def _train_with(text, vocab_size, pick, first_id=256, start=None):
    ids = list(text.encode("utf-8")) if start is None else start(text)
    merges = []
    for k in range(vocab_size - 256):
        counts = ref.pair_counts(ids)
        best = pick(counts)
        ids = ref.merge(ids, best, first_id + k)
        merges.append(best)
    return merges


def train_ties_largest(text, vocab_size):
    return _train_with(text, vocab_size, lambda c: max(c, key=lambda p: (c[p], p)))


def train_ties_first_seen(text, vocab_size):
    return _train_with(text, vocab_size, lambda c: Counter(c).most_common(1)[0][0])


def train_least_frequent(text, vocab_size):
    return _train_with(text, vocab_size, lambda c: min(c, key=lambda p: (c[p], p)))


def train_ids_from_257(text, vocab_size):
    return _train_with(text, vocab_size, lambda c: min(c, key=lambda p: (-c[p], p)), 257)


def train_characters(text, vocab_size):
    return _train_with(
        text,
        vocab_size,
        lambda c: min(c, key=lambda p: (-c[p], p)),
        start=lambda t: list(map(ord, t)),
    )


def train_counts_once(text, vocab_size):
    ids = list(text.encode("utf-8"))
    counts = ref.pair_counts(ids)
    merges = []
    for k in range(vocab_size - 256):
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        ids = ref.merge(ids, best, 256 + k)
        merges.append(best)
    return merges


def train_vocab_size_merges(text, vocab_size):
    ids = list(text.encode("utf-8"))
    merges = []
    for k in range(vocab_size):  # one merge per id of the vocabulary, bytes included
        counts = ref.pair_counts(ids)
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        ids = ref.merge(ids, best, 256 + k)
        merges.append(best)
    return merges


def train_pairs_with_ids(text, vocab_size):
    return ref.BPETokenizer().train(text, vocab_size).merges


def train_forever(text, vocab_size):
    while True:
        pass


@pytest.mark.parametrize("solution", [train_by_library, train_by_loop, train_by_sorting])
def test_bpe_train_passes_correct_solutions(solution, capsys):
    passes(checks.bpe_train, solution, capsys)


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (train_ties_largest, "ties go to the LARGEST pair"),
        (train_ties_first_seen, "ties go to the pair seen first in the text"),
        (train_least_frequent, "you merge the LEAST frequent pair"),
        (train_ids_from_257, "merge i creates id 257 + i"),
        (train_characters, "not from ord() of each character"),
        (train_counts_once, "count the pairs again after every merge"),
        (train_vocab_size_merges, "the 256 bytes are already in the vocabulary"),
        (train_pairs_with_ids, "a pair and its new id"),
    ],
)
def test_bpe_train_names_the_mistake(wrong, names_the_mistake):
    fails_with(checks.bpe_train, wrong, names_the_mistake)


def test_bpe_train_stops_an_endless_loop(monkeypatch):
    from llama_edu.checks import tokenization

    monkeypatch.setattr(tokenization, "BPE_TRAIN_SECONDS", 0.5)
    fails_with(checks.bpe_train, train_forever, "did not finish within 0.5 s")


def test_bpe_train_not_implemented(capsys):
    checks.bpe_train(not_yet)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert checks.results()["bpe_train"].status == "not implemented"


def test_bpe_train_big_text_is_100_kb_and_the_exercise_states_the_bound():
    import nbformat

    from llama_edu.checks import tokenization
    from llama_edu.classroom import default_notebook_dir

    assert len(tokenization._big_text().encode("utf-8")) == 100_000
    nb = nbformat.read(default_notebook_dir() / "02_tokenization.ipynb", as_version=4)
    statement = next(c.source for c in nb.cells if "Exercise 2.4 · bpe_train" in c.source)
    assert "100,000 bytes" in statement
    assert f"vocab_size={tokenization.BIG_VOCAB_SIZE}" in statement
    assert f"within **{tokenization.BPE_TRAIN_SECONDS:g} seconds**" in statement


# --------------------------------------------------------------------------- bpe_encode (capstone)


def encode_by_library(text, merges):
    tokenizer = ref.BPETokenizer()
    tokenizer.train("ab", 256)  # an empty tokenizer, then the given merges, as train sets them
    tokenizer.merges = [(pair, 256 + k) for k, pair in enumerate(merges)]
    for k, (a, b) in enumerate(merges):
        tokenizer.vocab[256 + k] = tokenizer.vocab[a] + tokenizer.vocab[b]
    tokenizer._ranks = {pair: (k, 256 + k) for k, pair in enumerate(merges)}
    return tokenizer.encode(text)


def encode_lowest_rank(text, merges):
    ranks = {pair: k for k, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(pairwise(ids), key=lambda p: ranks.get(p, len(merges)))
        if pair not in ranks:
            break
        ids = ref.merge(ids, pair, 256 + ranks[pair])
    return ids


def encode_in_learned_order(text, merges):
    """Written differently: each merge in turn over the whole text (the same result)."""
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = ref.merge(ids, pair, 256 + k)
    return ids


def _encode_picking(text, merges, pick, first_id=256, start=None):
    ranks = {pair: k for k, pair in enumerate(merges)}
    ids = list(text.encode("utf-8")) if start is None else start(text)
    while True:
        present = [p for p in pairwise(ids) if p in ranks]
        if not present:
            return ids
        pair = pick(ids, present, ranks)
        ids = ref.merge(ids, pair, first_id + ranks[pair])


def encode_most_frequent(text, merges):
    def pick(ids, present, ranks):
        counts = ref.pair_counts(ids)
        return min(present, key=lambda p: (-counts[p], ranks[p]))

    return _encode_picking(text, merges, pick)


def encode_leftmost(text, merges):
    return _encode_picking(text, merges, lambda ids, present, ranks: present[0])


def encode_id_is_rank(text, merges):
    ids = list(text.encode("utf-8"))
    for k, pair in enumerate(merges):
        ids = ref.merge(ids, pair, k)
    return ids


def encode_reverse_order(text, merges):
    ids = list(text.encode("utf-8"))
    for k in reversed(range(len(merges))):
        ids = ref.merge(ids, merges[k], 256 + k)
    return ids


def encode_pairs_of_the_bytes_only(text, merges):
    data = list(text.encode("utf-8"))
    ids = list(data)
    for k, pair in enumerate(merges):
        if pair in set(pairwise(data)):
            ids = ref.merge(ids, pair, 256 + k)
    return ids


def encode_characters(text, merges):
    ranks = {pair: k for k, pair in enumerate(merges)}
    ids = [ord(ch) for ch in text]
    for pair in sorted(set(ranks), key=ranks.get):
        ids = ref.merge(ids, pair, 256 + ranks[pair])
    return ids


def encode_returns_text(text, merges):
    return text


def encode_sorts_merges(text, merges):
    merges.sort()
    return encode_in_learned_order(text, merges)


def encode_forever(text, merges):
    ranks = {pair: k for k, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while True:  # forgets to stop when no pair has a merge
        pair = min(pairwise(ids), key=lambda p: ranks.get(p, len(merges)), default=None)
        if pair in ranks:
            ids = ref.merge(ids, pair, 256 + ranks[pair])


@pytest.mark.parametrize(
    "solution", [encode_by_library, encode_lowest_rank, encode_in_learned_order]
)
def test_bpe_encode_passes_correct_solutions(solution, capsys):
    passes(checks.bpe_encode, solution, capsys)


@pytest.mark.parametrize(
    ("wrong", "names_the_mistake"),
    [
        (encode_most_frequent, "you merge the most frequent pair of the text first"),
        (encode_leftmost, "you merge the leftmost pair that has a merge"),
        (encode_id_is_rank, "merge k gave the id k"),
        (encode_reverse_order, "from the last learned to the first"),
        (encode_pairs_of_the_bytes_only, "only apply the merges whose pair is in the original"),
        (encode_characters, "not from ord() of each character"),
        (encode_returns_text, "returned str"),
        (encode_sorts_merges, "changed the list of merges"),
    ],
)
def test_bpe_encode_names_the_mistake(wrong, names_the_mistake):
    fails_with(checks.bpe_encode, wrong, names_the_mistake)


def test_bpe_encode_stops_an_endless_loop(monkeypatch):
    from llama_edu.checks import tokenization

    monkeypatch.setattr(tokenization, "BPE_ENCODE_SECONDS", 0.5)
    fails_with(checks.bpe_encode, encode_forever, "did not finish within 0.5 s")


def test_bpe_encode_not_implemented(capsys):
    checks.bpe_encode(not_yet)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert checks.results()["bpe_encode"].status == "not implemented"


def test_bpe_encode_round_trip_cases_hold_chinese_and_emoji():
    from llama_edu.checks import tokenization

    texts = [text for _, _, cases in tokenization._encode_cases() for text, _ in cases]
    assert any("\u4e00" <= ch <= "\u9fff" for text in texts for ch in text)
    assert any(ord(ch) >= 0x1F600 for text in texts for ch in text)
