"""Tests for llama_edu.tokenizer: the teaching BPE, the SentencePiece wrapper and the renderers."""

from __future__ import annotations

import html
import itertools
import re
from collections import Counter
from pathlib import Path
from pydoc_data.topics import topics

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llama_edu.tokenizer import (
    LLAMA_SENTENCEPIECE_OPTIONS,
    PRE_SPLIT_PATTERN,
    BPETokenizer,
    SentencePieceTokenizer,
    _cut_long_line,
    merge,
    pair_counts,
    pre_split,
    render_tokens_html,
    token_strings,
    train_sentencepiece,
)

PYDOC_TEXT = "\n".join(topics[key] for key in sorted(topics))
SP_VOCAB = 600

# Any Unicode text that can be written as UTF-8 (lone surrogates cannot).
unicode_text = st.text(st.characters(exclude_categories=("Cs",)))
# SentencePiece reserves U+2581 ("▁") to stand for a space, so it cannot survive a round trip.
sp_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\u2581"))
few_examples = settings(max_examples=60, deadline=None)
many_examples = settings(max_examples=300, deadline=None)


# --------------------------------------------------------------------------------------------
# Independent reference implementations (deliberately the slow, obvious way)
# --------------------------------------------------------------------------------------------


def reference_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out = list(ids)
    i = 0
    while i < len(out) - 1:
        if (out[i], out[i + 1]) == pair:
            out[i : i + 2] = [new_id]
        i += 1
    return out


def reference_train(text: str, num_merges: int) -> list[tuple[tuple[int, int], int]]:
    ids = list(text.encode("utf-8"))
    merges = []
    for k in range(num_merges):
        counts = Counter(zip(ids, ids[1:], strict=False))
        if not counts:
            break
        top = max(counts.values())
        best = min(p for p, c in counts.items() if c == top)  # documented tie-break
        ids = reference_merge(ids, best, 256 + k)
        merges.append((best, 256 + k))
    return merges


def files_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


# --------------------------------------------------------------------------------------------
# Fixtures: every tokenizer is trained once per module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer().train(PYDOC_TEXT[:20_000], 256 + 200)


@pytest.fixture(scope="module")
def bpe_split() -> BPETokenizer:
    return BPETokenizer(pre_split=True).train(PYDOC_TEXT[:20_000], 256 + 200)


@pytest.fixture(scope="module")
def sp_corpus() -> str:
    # Number-heavy lines, so that without split_digits pieces such as "19" would be learned.
    numbers = "\n".join(
        f"Order {i}: {i * 37 % 1000} items for ${i * 13 % 97}.{i % 100:02d} in {1900 + i % 130}"
        for i in range(1500)
    )
    return PYDOC_TEXT[:200_000] + "\n" + numbers


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory: pytest.TempPathFactory, sp_corpus: str) -> Path:
    out = tmp_path_factory.mktemp("sp")
    train_sentencepiece(sp_corpus, SP_VOCAB, out)
    return out


@pytest.fixture(scope="module")
def sp(sp_dir: Path) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(sp_dir / "tokenizer.model")


@pytest.fixture
def model_dir(tmp_path: Path, sp_dir: Path) -> Path:
    """A directory holding a previously trained model, to check failures leave it alone."""
    out = tmp_path / "models"
    out.mkdir()
    for name in ("tokenizer.model", "tokenizer.vocab"):
        (out / name).write_bytes((sp_dir / name).read_bytes())
    return out


SMALL_CORPUS = "the cat sat on the mat, the dog sat on the log.\n" * 20


# --------------------------------------------------------------------------------------------
# Teaching primitives
# --------------------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 5), max_size=40))
@many_examples
def test_pair_counts_counts_every_adjacent_pair(ids: list[int]) -> None:
    expected = Counter(tuple(ids[i : i + 2]) for i in range(len(ids) - 1))
    assert pair_counts(ids) == dict(expected)


def test_pair_counts_counts_overlapping_pairs() -> None:
    assert pair_counts([1, 1, 1]) == {(1, 1): 2}
    assert pair_counts([]) == {}
    assert pair_counts([7]) == {}


@pytest.mark.parametrize(
    ("ids", "pair", "expected"),
    [
        ([1, 1, 1], (1, 1), [9, 1]),
        ([1, 1, 1, 1], (1, 1), [9, 9]),
        ([1, 2, 1, 2, 3], (1, 2), [9, 9, 3]),
        ([2, 1, 2, 1], (1, 2), [2, 9, 1]),
        ([3, 4, 5], (1, 2), [3, 4, 5]),
        ([], (1, 2), []),
        ([1], (1, 2), [1]),
    ],
)
def test_merge_examples(ids: list[int], pair: tuple[int, int], expected: list[int]) -> None:
    assert merge(ids, pair, 9) == expected


@given(st.lists(st.integers(0, 3), max_size=40), st.integers(0, 3), st.integers(0, 3))
@many_examples
def test_merge_replaces_non_overlapping_matches(ids: list[int], a: int, b: int) -> None:
    new_id = 99
    out = merge(ids, (a, b), new_id)
    # Expanding the new id again gives back the input.
    assert list(itertools.chain.from_iterable([a, b] if t == new_id else [t] for t in out)) == ids
    # How many matches a left-to-right, non-overlapping scan finds: for a != b every adjacent
    # occurrence; for a == b, half of each run of a (rounded down).
    if a != b:
        expected = sum(1 for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == (a, b))
    else:
        expected = sum(len(list(run)) // 2 for key, run in itertools.groupby(ids) if key == a)
    assert out.count(new_id) == expected
    assert out == reference_merge(ids, (a, b), new_id)


# --------------------------------------------------------------------------------------------
# BPE training
# --------------------------------------------------------------------------------------------


def test_first_merge_is_the_most_frequent_byte_pair() -> None:
    text = PYDOC_TEXT[:30_000]
    data = text.encode("utf-8")
    counts = Counter(zip(data, data[1:], strict=False))
    top = max(counts.values())
    expected = min(p for p, c in counts.items() if c == top)
    tok = BPETokenizer().train(text, 260)
    assert tok.merges[0] == (expected, 256)


def test_ties_go_to_the_smallest_pair() -> None:
    # Every pair in "dcba" occurs exactly once; the smallest is (b, a) = (98, 97).
    tok = BPETokenizer().train("dcba", 257)
    assert tok.merges == [((98, 97), 256)]


def test_merges_are_recorded_in_order(bpe: BPETokenizer) -> None:
    assert len(bpe.merges) == 200
    assert [new_id for _, new_id in bpe.merges] == list(range(256, 456))
    for (a, b), new_id in bpe.merges:
        assert a < new_id and b < new_id  # a merge only uses ids that already exist
        assert bpe.vocab[new_id] == bpe.vocab[a] + bpe.vocab[b]
    rows = bpe.merge_table()
    assert [r.rank for r in rows] == list(range(200))
    assert [(r.pair, r.new_id) for r in rows] == bpe.merges
    assert all(r.token == bpe.vocab[r.new_id] for r in rows)


@pytest.mark.parametrize("vocab_size", [256, 257, 300, 512])
def test_vocab_size_is_reached_exactly(vocab_size: int) -> None:
    tok = BPETokenizer().train(PYDOC_TEXT[:10_000], vocab_size)
    assert len(tok.vocab) == vocab_size == tok.vocab_size == len(tok)
    assert sorted(tok.vocab) == list(range(vocab_size))
    assert len(set(tok.vocab.values())) == vocab_size  # every token has its own bytes


@given(st.text("ab \nç", min_size=1, max_size=120), st.integers(0, 25))
@many_examples
def test_incremental_training_matches_naive_recount(text: str, num_merges: int) -> None:
    expected = reference_train(text, num_merges)
    if len(expected) < num_merges:
        limit = 256 + len(expected)
        with pytest.raises(ValueError, match=f"largest vocab_size it supports is {limit}"):
            BPETokenizer().train(text, 256 + num_merges)
    else:
        assert BPETokenizer().train(text, 256 + num_merges).merges == expected


def test_training_matches_naive_recount_on_real_text() -> None:
    text = PYDOC_TEXT[:3_000]
    assert BPETokenizer().train(text, 256 + 60).merges == reference_train(text, 60)


@pytest.mark.parametrize("split", [False, True])
def test_training_is_deterministic(split: bool) -> None:
    text = PYDOC_TEXT[:15_000]
    first = BPETokenizer(pre_split=split).train(text, 400)
    second = BPETokenizer(pre_split=split).train(text, 400)
    assert first.merges == second.merges
    assert first.vocab == second.vocab


def test_retraining_replaces_the_old_merges() -> None:
    tok = BPETokenizer().train("aaaa bbbb", 258)
    tok.train("xyxyxy", 257)
    assert tok.merges == [((ord("x"), ord("y")), 256)]
    assert tok.encode("aa") == [ord("a"), ord("a")]


# --------------------------------------------------------------------------------------------
# BPE encode / decode
# --------------------------------------------------------------------------------------------


@given(unicode_text)
@many_examples
def test_bpe_round_trip(bpe: BPETokenizer, s: str) -> None:
    assert bpe.decode(bpe.encode(s)) == s


@given(unicode_text)
@many_examples
def test_bpe_pre_split_round_trip(bpe_split: BPETokenizer, s: str) -> None:
    assert bpe_split.decode(bpe_split.encode(s)) == s


@given(unicode_text)
@few_examples
def test_untrained_bpe_is_plain_utf8(s: str) -> None:
    tok = BPETokenizer()
    assert tok.encode(s) == list(s.encode("utf-8"))
    assert tok.decode(tok.encode(s)) == s


@given(st.text(st.sampled_from(sorted(set(PYDOC_TEXT[:20_000]))) | st.characters(), max_size=80))
@many_examples
def test_encode_applies_merges_in_rank_order(bpe: BPETokenizer, s: str) -> None:
    s = s.encode("utf-8", errors="ignore").decode("utf-8")
    ids = list(s.encode("utf-8"))
    for pair, new_id in bpe.merges:
        ids = reference_merge(ids, pair, new_id)
    assert bpe.encode(s) == ids


@given(st.text("abcd", min_size=2, max_size=200), st.text("abcd", max_size=60), st.integers(1, 15))
@example("abaababababbaabbbbbbbba", "ababaababa", 7)  # a merge can change a pair awaiting its turn
@many_examples
def test_encode_matches_rank_order_on_small_alphabets(train_text: str, s: str, n: int) -> None:
    # A tiny alphabet makes merges build on each other, where the order of application matters.
    n = min(n, len(reference_train(train_text, n)))
    tok = BPETokenizer().train(train_text, 256 + n)
    for text in (s, train_text):
        ids = list(text.encode())
        for pair, new_id in tok.merges:
            ids = reference_merge(ids, pair, new_id)
        assert tok.encode(text) == ids


def test_encode_compresses_the_training_text(bpe: BPETokenizer) -> None:
    text = PYDOC_TEXT[:20_000]
    assert len(bpe.encode(text)) < 0.6 * len(text.encode("utf-8"))


def test_decode_replaces_a_partial_character() -> None:
    tok = BPETokenizer()
    assert tok.decode([0xE4]) == "\ufffd"
    assert tok.decode(list("é".encode())) == "é"


def test_tokens_per_char() -> None:
    tok = BPETokenizer()
    assert tok.tokens_per_char("hello") == 1.0
    assert tok.tokens_per_char("é") == 2.0  # two UTF-8 bytes, no merges yet
    trained = BPETokenizer().train("hello hello hello", 260)
    assert trained.tokens_per_char("hello") < 1.0
    with pytest.raises(ValueError, match="non-empty"):
        tok.tokens_per_char("")


# --------------------------------------------------------------------------------------------
# Pre-split
# --------------------------------------------------------------------------------------------


@given(unicode_text)
@many_examples
def test_pre_split_covers_the_whole_text(s: str) -> None:
    chunks = pre_split(s)
    assert "".join(chunks) == s
    assert all(chunks)


@pytest.mark.parametrize(
    ("text", "chunks"),
    [
        ("Hello, world!", ["Hello", ",", " world", "!"]),
        ("in 2024 we", ["in", " 2", "0", "2", "4", " we"]),
        ("don't stop", ["don", "'t", " stop"]),
        ("a   b", ["a", "  ", " b"]),
        ("x = f(y)\n", ["x", " =", " f", "(", "y", ")", "\n"]),
        ("snake_case", ["snake", "_", "case"]),
    ],
)
def test_pre_split_examples(text: str, chunks: list[str]) -> None:
    assert pre_split(text) == chunks


def test_pre_split_pattern_is_public_and_used() -> None:
    assert re.findall(PRE_SPLIT_PATTERN, "it's 42") == pre_split("it's 42")


def _crosses_a_word_boundary(token: str) -> bool:
    # Inside a chunk, whitespace is either the whole chunk or its single leading space.
    return not token.isspace() and any(ch.isspace() for ch in token[1:])


def test_pre_split_merges_stay_inside_words(bpe: BPETokenizer, bpe_split: BPETokenizer) -> None:
    def learned(tok: BPETokenizer) -> list[str]:
        return [tok.vocab[new_id].decode("utf-8", "replace") for _, new_id in tok.merges]

    assert not [t for t in learned(bpe_split) if _crosses_a_word_boundary(t)]
    # Without pre-splitting the same text does produce tokens such as "e " or ", ".
    assert [t for t in learned(bpe) if _crosses_a_word_boundary(t)]


# --------------------------------------------------------------------------------------------
# BPE bad input
# --------------------------------------------------------------------------------------------


def test_bpe_rejects_bad_training_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer().train("", 300)
    with pytest.raises(ValueError, match="256"):
        BPETokenizer().train("some text", 255)
    with pytest.raises(TypeError, match="bytes"):
        BPETokenizer().train(b"some text", 300)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        BPETokenizer().train("some text", 300.0)  # type: ignore[arg-type]


def test_bpe_vocab_too_large_for_text_says_the_limit_and_keeps_old_state() -> None:
    tok = BPETokenizer().train("abab", 257)
    before = (list(tok.merges), dict(tok.vocab))
    # "ab" has a single pair, so exactly one merge is possible: the limit is 257.
    with pytest.raises(ValueError, match="257"):
        tok.train("ab", 300)
    assert (tok.merges, tok.vocab) == before


@pytest.mark.parametrize("value", [b"bytes", None, 42, ["a", "b"]])
def test_bpe_encode_rejects_non_strings(value: object) -> None:
    with pytest.raises(TypeError, match=type(value).__name__) as info:
        BPETokenizer().encode(value)  # type: ignore[arg-type]
    assert "str" in str(info.value)


def test_bpe_decode_rejects_bad_ids(bpe: BPETokenizer) -> None:
    with pytest.raises(ValueError, match="out of range"):
        bpe.decode([456])
    with pytest.raises(ValueError, match="out of range"):
        bpe.decode([-1])
    with pytest.raises(TypeError, match="encode"):
        bpe.decode("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        bpe.decode([1.5])  # type: ignore[list-item]


def test_bpe_encode_reports_lone_surrogates() -> None:
    with pytest.raises(ValueError, match=r"U\+D800"):
        BPETokenizer().encode("ok \ud800")


# --------------------------------------------------------------------------------------------
# SentencePiece: the trained model
# --------------------------------------------------------------------------------------------


def test_sentencepiece_llama_layout(sp: SentencePieceTokenizer, sp_dir: Path) -> None:
    assert (sp.unk_id, sp.bos_id, sp.eos_id, sp.pad_id) == (0, 1, 2, -1)
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.vocab_size == len(sp) == SP_VOCAB
    # allow_whitespace_only_pieces: runs of spaces (indentation) get pieces of their own.
    assert any(set(p) == {"\u2581"} and len(p) >= 2 for p in map(sp.id_to_piece, range(len(sp))))
    for byte in range(256):
        piece = f"<0x{byte:02X}>"
        assert sp.is_byte(sp.piece_to_id(piece)), piece
    vocab_lines = (sp_dir / "tokenizer.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == SP_VOCAB
    assert [line.split("\t")[0] for line in vocab_lines] == [
        sp.id_to_piece(i) for i in range(SP_VOCAB)
    ]
    assert sorted(p.name for p in sp_dir.iterdir()) == ["tokenizer.model", "tokenizer.vocab"]


@given(sp_text)
@many_examples
def test_sentencepiece_round_trip_without_unk(sp: SentencePieceTokenizer, s: str) -> None:
    ids = sp.encode(s)
    assert sp.decode(ids) == s
    assert sp.unk_id not in ids


# split_digits only splits the ASCII digits 0-9; other Unicode digits may still merge.
ascii_digit = re.compile("[0-9]")


def test_no_vocabulary_piece_joins_a_digit_to_anything(sp: SentencePieceTokenizer) -> None:
    with_digits = [
        sp.id_to_piece(i)
        for i in range(sp.vocab_size)
        if not sp.is_byte(i) and ascii_digit.search(sp.id_to_piece(i))
    ]
    assert sorted(with_digits) == list("0123456789")


@given(st.text(st.sampled_from("0123456789 .,-x\n") | st.characters(exclude_characters="\u2581")))
@many_examples
def test_digits_are_always_single_pieces(sp: SentencePieceTokenizer, s: str) -> None:
    s = s.encode("utf-8", errors="ignore").decode("utf-8")
    ids = sp.encode(s)
    for i in ids:
        piece = sp.id_to_piece(i)
        if not sp.is_byte(i) and ascii_digit.search(piece):
            # Not even "▁7": the space before a number stays a piece of its own.
            assert len(piece) == 1, piece
    assert sum(1 for i in ids if sp.token_text(i) in set("0123456789")) == sum(
        ch in "0123456789" for ch in s
    )


def test_chinese_and_emoji_use_byte_fallback(sp: SentencePieceTokenizer) -> None:
    text = "你好，世界！🦙 Llama"
    ids = sp.encode(text)
    assert sp.decode(ids) == text
    pieces = sp.pieces(text)
    assert "<0xE4>" in pieces  # first UTF-8 byte of 你 (E4 BD A0)
    assert "<0xF0>" in pieces  # first byte of the 4-byte emoji
    assert sp.unk_id not in ids


@pytest.mark.parametrize("literal", ["<s>", "</s>", "<unk>", "a <s> b </s>"])
def test_special_token_text_is_ordinary_text(sp: SentencePieceTokenizer, literal: str) -> None:
    ids = sp.encode(literal)
    assert sp.bos_id not in ids and sp.eos_id not in ids and sp.unk_id not in ids
    assert sp.decode(ids) == literal
    framed = sp.encode(literal, bos=True, eos=True)
    assert framed.count(sp.bos_id) == 1 and framed.count(sp.eos_id) == 1


def test_bos_and_eos_flags(sp: SentencePieceTokenizer) -> None:
    body = sp.encode("Hello world")
    assert sp.encode("Hello world", bos=True) == [1, *body]
    assert sp.encode("Hello world", eos=True) == [*body, 2]
    assert sp.encode("Hello world", bos=True, eos=True) == [1, *body, 2]
    assert sp.decode([1, *body, 2]) == "Hello world"


def test_piece_lookup(sp: SentencePieceTokenizer) -> None:
    assert sp.piece_to_id(sp.id_to_piece(300)) == 300
    with pytest.raises(KeyError, match="not a piece"):
        sp.piece_to_id("definitely-not-a-piece")


def test_sentencepiece_training_is_deterministic(
    sp_dir: Path, sp_corpus: str, tmp_path: Path
) -> None:
    train_sentencepiece(sp_corpus, SP_VOCAB, tmp_path)
    assert files_in(tmp_path) == files_in(sp_dir)


def test_training_from_a_file_equals_training_from_its_text(
    sp_dir: Path, sp_corpus: str, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(sp_corpus, encoding="utf-8")
    for source in (corpus, str(corpus)):
        out = tmp_path / f"from_{type(source).__name__}"
        tok = train_sentencepiece(source, SP_VOCAB, out)
        assert tok.model_path == out / "tokenizer.model"
        assert files_in(out) == files_in(sp_dir)


def test_long_lines_are_cut_not_dropped(tmp_path: Path) -> None:
    words = re.findall(r"[A-Za-z]+", PYDOC_TEXT[:200_000])
    line = " ".join(words)
    assert len(line.encode()) > 4 * LLAMA_SENTENCEPIECE_OPTIONS["max_sentence_length"]
    # Dropped lines would leave SentencePiece with nothing to learn from at all.
    tok = train_sentencepiece(line, 500, tmp_path)
    assert tok.vocab_size == 500
    assert len(tok.encode(line[:5_000])) < 0.5 * 5_000


@given(st.text(" ab\u00e9\u4f60", max_size=60), st.integers(4, 12))
@many_examples
def test_cut_long_line_keeps_everything_within_the_limit(line: str, max_bytes: int) -> None:
    parts = _cut_long_line(line, max_bytes)
    assert "".join(parts) == line
    assert all(0 < len(p.encode()) <= max_bytes for p in parts)


def test_custom_options_are_applied(sp_corpus: str, tmp_path: Path) -> None:
    tok = train_sentencepiece(sp_corpus[:50_000], 400, tmp_path, model_prefix="m", pad_id=3)
    assert tok.pad_id == 3
    assert (tmp_path / "m.model").is_file() and (tmp_path / "m.vocab").is_file()


# --------------------------------------------------------------------------------------------
# SentencePiece bad input: clear errors, nothing left behind
# --------------------------------------------------------------------------------------------


def assert_failed_cleanly(model_dir: Path, before: dict[str, bytes]) -> None:
    assert files_in(model_dir) == before  # no temp dirs, old model untouched


@pytest.mark.parametrize("corpus", ["", "\n\n", "   \n\t "])
def test_empty_corpus(model_dir: Path, corpus: str) -> None:
    before = files_in(model_dir)
    with pytest.raises(ValueError, match="empty"):
        train_sentencepiece(corpus, 400, model_dir)
    assert_failed_cleanly(model_dir, before)


def test_vocab_below_the_byte_alphabet(model_dir: Path) -> None:
    before = files_in(model_dir)
    with pytest.raises(ValueError, match=r"vocab_size >= 260"):
        train_sentencepiece(SMALL_CORPUS, 100, model_dir)
    assert_failed_cleanly(model_dir, before)


def test_vocab_too_small_for_the_characters_names_the_minimum(
    model_dir: Path, tmp_path: Path
) -> None:
    before = files_in(model_dir)
    with pytest.raises(ValueError, match="too small") as info:
        train_sentencepiece(SMALL_CORPUS, 262, model_dir)
    assert_failed_cleanly(model_dir, before)
    minimum = int(re.search(r"vocab_size >= (\d+)", str(info.value)).group(1))
    # 3 specials + 256 bytes + the distinct characters (counting "▁" for the space).
    assert minimum == 3 + 256 + len(set(SMALL_CORPUS.replace("\n", "")))
    train_sentencepiece(SMALL_CORPUS, minimum, tmp_path / "ok")


def test_vocab_too_large_names_the_maximum(model_dir: Path, tmp_path: Path) -> None:
    before = files_in(model_dir)
    with pytest.raises(ValueError, match="too large") as info:
        train_sentencepiece(SMALL_CORPUS, 5_000, model_dir)
    assert_failed_cleanly(model_dir, before)
    maximum = int(re.search(r"vocab_size <= (\d+)", str(info.value)).group(1))
    assert train_sentencepiece(SMALL_CORPUS, maximum, tmp_path / "ok").vocab_size == maximum
    with pytest.raises(ValueError, match=f"vocab_size <= {maximum}"):
        train_sentencepiece(SMALL_CORPUS, maximum + 1, tmp_path / "ok")


def test_failed_training_removes_directories_it_created(tmp_path: Path) -> None:
    target = tmp_path / "new" / "nested"
    with pytest.raises(ValueError):
        train_sentencepiece(SMALL_CORPUS, 5_000, target)
    assert list(tmp_path.iterdir()) == []


def test_missing_file(model_dir: Path, tmp_path: Path) -> None:
    before = files_in(model_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_sentencepiece(tmp_path / "missing.txt", 400, model_dir)
    with pytest.raises(FileNotFoundError, match="pass the text itself"):
        train_sentencepiece(str(tmp_path / "missing.txt"), 400, model_dir)
    assert_failed_cleanly(model_dir, before)


def test_binary_file(model_dir: Path, tmp_path: Path) -> None:
    blob = tmp_path / "weights.bin"
    # Valid UTF-8 apart from the NUL bytes, so only the binary check can catch it.
    blob.write_bytes(b"PK\x03\x04\x00\x00header\x00\x00" * 100)
    before = files_in(model_dir)
    with pytest.raises(ValueError, match="looks like a binary file"):
        train_sentencepiece(blob, 400, model_dir)
    assert_failed_cleanly(model_dir, before)


def test_non_utf8_file(model_dir: Path, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(("caf\u00e9 na\u00efve " * 200).encode("latin-1"))
    before = files_in(model_dir)
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(byte 0xE9 at offset 3\)"):
        train_sentencepiece(latin1, 400, model_dir)
    assert_failed_cleanly(model_dir, before)


def test_bad_options(model_dir: Path) -> None:
    before = files_in(model_dir)
    with pytest.raises(TypeError, match="'no_such_option' is not a SentencePiece training option"):
        train_sentencepiece(SMALL_CORPUS, 300, model_dir, no_such_option=1)
    with pytest.raises(ValueError, match="kModelType"):
        train_sentencepiece(SMALL_CORPUS, 300, model_dir, model_type="no-such-type")
    with pytest.raises(TypeError, match="vocab_size"):
        train_sentencepiece(SMALL_CORPUS, 300, model_dir, vocab_size=300)
    with pytest.raises(ValueError, match="plain file name"):
        train_sentencepiece(SMALL_CORPUS, 300, model_dir, model_prefix="../escape")
    with pytest.raises(TypeError, match="int"):
        train_sentencepiece(SMALL_CORPUS, "300", model_dir)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        train_sentencepiece(SMALL_CORPUS.encode(), 300, model_dir)  # type: ignore[arg-type]
    assert_failed_cleanly(model_dir, before)


@pytest.mark.parametrize("value", [b"bytes", None, 3, ["a"]])
def test_sentencepiece_encode_rejects_non_strings(
    sp: SentencePieceTokenizer, value: object
) -> None:
    with pytest.raises(TypeError, match=type(value).__name__) as info:
        sp.encode(value)  # type: ignore[arg-type]
    assert "str" in str(info.value)


def test_sentencepiece_decode_rejects_bad_ids(sp: SentencePieceTokenizer) -> None:
    with pytest.raises(ValueError, match=f"0..{SP_VOCAB - 1}"):
        sp.decode([SP_VOCAB])
    with pytest.raises(ValueError, match="out of range"):
        sp.decode([sp.pad_id])


def test_loading_a_missing_or_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_sentencepiece"):
        SentencePieceTokenizer(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_text("not a model", encoding="utf-8")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        SentencePieceTokenizer(junk)


# --------------------------------------------------------------------------------------------
# Token strings and HTML rendering
# --------------------------------------------------------------------------------------------


@given(st.text(st.characters(max_codepoint=127)))
@few_examples
def test_token_strings_spell_out_the_text(
    bpe: BPETokenizer, sp: SentencePieceTokenizer, s: str
) -> None:
    assert "".join(token_strings(s, bpe)) == s
    # SentencePiece adds one space in front (add_dummy_prefix) and writes it into the pieces.
    assert "".join(token_strings(s, sp)) == (" " + s if s else "")


def test_token_strings_show_split_characters_as_bytes(sp: SentencePieceTokenizer) -> None:
    assert token_strings("你", sp) == [" ", "<0xE4>", "<0xBD>", "<0xA0>"]
    assert token_strings("你", BPETokenizer()) == ["<0xE4>", "<0xBD>", "<0xA0>"]
    assert token_strings("é", BPETokenizer().train("é é é", 257)) == ["é"]


def test_render_tokens_html(sp: SentencePieceTokenizer) -> None:
    text = "if a < b:\n\treturn '<s>' & x"
    out = render_tokens_html(text, sp)
    shown = html.unescape(re.sub(r"<[^>]*>", "", out))
    # Every character is shown, with whitespace drawn as symbols (plus the dummy-prefix space).
    assert shown == "\u2423if\u2423a\u2423<\u2423b:\u21b5\n\u21e5return\u2423'<s>'\u2423&\u2423x"
    assert "<s>" not in out and "& " not in out  # special characters are escaped
    backgrounds = re.findall(r"background:(#[0-9a-f]{6})", out)
    assert len(backgrounds) == len(sp.encode(text))
    assert all(a != b for a, b in zip(backgrounds, backgrounds[1:], strict=False))
    titles = [int(t) for t in re.findall(r'title="id (\d+)"', out)]
    assert titles == sp.encode(text)


def test_render_tokens_html_accepts_ids_or_strings(bpe: BPETokenizer) -> None:
    ids = bpe.encode("the end")
    assert render_tokens_html(ids, bpe) == render_tokens_html("the end", bpe)
    from_strings = render_tokens_html(["a", "<b>", "\x00"])
    assert "&lt;b&gt;" in from_strings and "\u2400" in from_strings and "title" not in from_strings
    with pytest.raises(TypeError, match="tokenizer"):
        render_tokens_html("text without tokenizer")
    with pytest.raises(TypeError):
        render_tokens_html([1, 2, 3])


# The trainer settings stored in Llama 2's tokenizer.model (its trainer_spec) that shape the
# vocabulary. LLAMA_SENTENCEPIECE_OPTIONS must agree with them, except where it says why not.
LLAMA2_TRAINER_SPEC = {
    "model_type": "bpe",
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": True,
    "allow_whitespace_only_pieces": True,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "character_coverage": 0.99995,
}
DOCUMENTED_DIFFERENCES = {"character_coverage"}


def test_options_match_llama2_except_the_documented_differences() -> None:
    differ = {k for k, v in LLAMA2_TRAINER_SPEC.items() if LLAMA_SENTENCEPIECE_OPTIONS.get(k) != v}
    assert differ == DOCUMENTED_DIFFERENCES
    import llama_edu.tokenizer as module

    source = Path(module.__file__).read_text(encoding="utf-8")
    for key in differ:
        assert f"Llama 2: {LLAMA2_TRAINER_SPEC[key]}" in source, key  # said next to the value
