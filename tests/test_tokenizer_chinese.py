"""Chinese text in tokenizers: GPT-2's byte table, byte fallback, a Chinese corpus."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import pytest

from llama_edu.bpe import bytes_to_unicode
from llama_edu.data import python_docs_text, workbook_text
from llama_edu.tokenizer import train_sentencepiece


def written(text: str) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


# ---- the byte table ------------------------------------------------------------------------


def test_every_byte_gets_its_own_visible_character() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    for byte, ch in table.items():
        assert len(ch) == 1 and ch.isprintable() and not ch.isspace(), (byte, ch)


def test_visible_latin1_bytes_keep_their_character_and_the_rest_move_in_order() -> None:
    table = bytes_to_unicode()
    moved = []
    for byte in range(256):
        latin1 = bytes([byte]).decode("latin-1")
        # Control characters (Cc), spaces (Zs) and the soft hyphen (Cf) are not visible.
        if unicodedata.category(latin1) in {"Cc", "Zs", "Cf"}:
            moved.append(byte)
        else:
            assert table[byte] == latin1, hex(byte)
    assert len(moved) == 68
    assert [table[b] for b in moved] == [chr(0x100 + k) for k in range(68)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("这", "è¿Ļ"),  # E8 BF 99
        ("中文", "ä¸Ńæĸĩ"),  # E4 B8 AD E6 96 87
        ("的", "çļĦ"),  # E7 9A 84
        (" the", "Ġthe"),
        ("a\nb", "aĊb"),
        ("\u00ad", "ÂŃ"),  # the soft hyphen U+00AD is C2 AD in UTF-8
    ],
)
def test_known_vocabulary_spellings(text: str, expected: str) -> None:
    assert written(text) == expected


def test_the_ends_of_the_moved_ranges() -> None:
    table = bytes_to_unicode()
    # 0x00 is the first moved byte, 0x20 the 33rd, 0x7F the 34th, 0xAD the 68th and last.
    assert [table[b] for b in (0x00, 0x20, 0x7F, 0xA0, 0xAD)] == ["Ā", "Ġ", "ġ", "ł", "Ń"]
    assert [table[b] for b in (0x21, 0x7E, 0xA1, 0xAC, 0xAE, 0xFF)] == list("!~¡¬®ÿ")


def test_the_table_can_be_read_back() -> None:
    table = bytes_to_unicode()
    back = {ch: b for b, ch in table.items()}
    text = "这是中文, with English, emoji 🙂 and a tab\t."
    assert bytes(back[ch] for ch in written(text)).decode("utf-8") == text


def test_each_call_returns_a_fresh_table() -> None:
    table = bytes_to_unicode()
    table[0x20] = " "
    assert bytes_to_unicode()[0x20] == "Ġ"


def test_the_table_equals_the_one_in_transformers() -> None:
    pytest.importorskip("transformers")
    try:
        from transformers.convert_slow_tokenizer import bytes_to_unicode as reference
    except ImportError:  # older transformers keep it with the GPT-2 tokenizer
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode as reference
    assert bytes_to_unicode() == reference()


def test_the_table_matches_the_byte_level_pre_tokenizer_of_tokenizers() -> None:
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for text in ["这是中文。", " the cat\n", "é ß \u00a0 \u00ad ~ 🙂"]:
        [(pieces, _)] = byte_level.pre_tokenize_str(text)
        assert written(text) == pieces, text


# ---- byte fallback in SentencePiece --------------------------------------------------------


@pytest.fixture(scope="module")
def english_text() -> str:
    return python_docs_text()[:60_000]


def test_byte_fallback_writes_an_unseen_character_as_its_three_bytes(english_text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sp = train_sentencepiece(english_text, 500, tmp)
    ids = sp.encode("这是")
    assert [sp.id_to_piece(i) for i in ids] == [
        "▁", "<0xE8>", "<0xBF>", "<0x99>", "<0xE6>", "<0x98>", "<0xAF>",
    ]  # fmt: skip
    assert sp.decode(ids) == "这是"


def test_without_byte_fallback_unseen_characters_become_one_unk(english_text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sp = train_sentencepiece(english_text, 500, tmp, byte_fallback=False)
    assert not any(sp.is_byte(i) for i in range(sp.vocab_size))
    ids = sp.encode("这是中文。")
    assert ids[1:] == [sp.unk_id] == [0]
    assert "中" not in sp.decode(ids)
    # English words around the Chinese survive; each run of unknown characters is one <unk>.
    mixed = sp.encode("这 is 中文")
    assert mixed.count(sp.unk_id) == 2
    assert "is" in sp.decode(mixed)


# ---- a tokenizer trained on the workbook's Chinese -----------------------------------------


def test_training_on_the_chinese_text_is_deterministic_and_compresses_it() -> None:
    zh_train = workbook_text("zh", chapters=range(14))
    zh_test = workbook_text("zh", chapters=[14, 15])
    with tempfile.TemporaryDirectory() as tmp:
        first = train_sentencepiece(zh_train, 2000, Path(tmp) / "a")
        second = train_sentencepiece(zh_train, 2000, Path(tmp) / "b")
        same = first.model_path.read_bytes() == second.model_path.read_bytes()
        english = train_sentencepiece(python_docs_text()[:200_000], 2000, Path(tmp) / "en")
    assert same
    assert first.tokens_per_char(zh_test) < 1.0
    # An English tokenizer spends at least 3 byte tokens on each 3-byte character it lacks.
    three_byte = sum(len(ch.encode("utf-8")) == 3 for ch in zh_test)
    assert english.tokens_per_char(zh_test) >= 3 * three_byte / len(zh_test) > 2.0
    assert first.decode(first.encode(zh_test)) == zh_test
