"""Tokenizers for the workbook: a byte-level BPE written from scratch, and a Llama-style
SentencePiece wrapper, plus helpers that show where the token boundaries fall.

The teaching BPE (`BPETokenizer`) starts from the 256 byte values, so every string can be
encoded and decoded back exactly. `train_sentencepiece` trains the kind of tokenizer Llama 2
ships (BPE with byte fallback, split digits, no normalisation) and `SentencePieceTokenizer`
loads either that or a real Llama 2 ``tokenizer.model``.
"""

from __future__ import annotations

import heapq
import html
import io
import operator
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import sentencepiece as spm

__all__ = [
    "BPETokenizer",
    "LLAMA_SENTENCEPIECE_OPTIONS",
    "MergeRow",
    "PRE_SPLIT_PATTERN",
    "SentencePieceTokenizer",
    "TokenizerLike",
    "add_special_pieces",
    "merge",
    "pair_counts",
    "pre_split",
    "render_tokens_html",
    "token_strings",
    "train_sentencepiece",
]

Pair = tuple[int, int]

# --------------------------------------------------------------------------------------------
# The two teaching primitives
# --------------------------------------------------------------------------------------------


def pair_counts(ids: Sequence[int]) -> dict[Pair, int]:
    """Count how often each pair of neighbouring ids occurs in `ids`."""
    counts: dict[Pair, int] = {}
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids` by `new_id`, scanning left to right."""
    first, second = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2  # the matched pair is consumed, so matches never overlap
        else:
            out.append(ids[i])
            i += 1
    return out


# --------------------------------------------------------------------------------------------
# Optional pre-split into word-like chunks
# --------------------------------------------------------------------------------------------

# Each alternative takes one kind of chunk; together they cover every character, so joining
# the chunks gives back the text. A single leading space stays glued to the word after it.
#   1. English contraction endings: 's 't 'd 'm 'll 've 're
#   2. a run of letters (word characters that are neither digits nor "_")
#   3. one digit (numbers are split digit by digit, as Llama's split_digits does)
#   4. a run of punctuation / symbols (including "_")
#   5. a run of whitespace that is not followed by a word (so " word" keeps its space)
#   6. any other whitespace run
PRE_SPLIT_PATTERN = (
    r"'(?:[stdm]|ll|ve|re)(?![^\W\d_])"
    r"| ?[^\W\d_]+"
    r"| ?\d"
    r"| ?(?:[^\s\w]|_)+"
    r"|\s+(?!\S)"
    r"|\s+"
)
_PRE_SPLIT_RE = re.compile(PRE_SPLIT_PATTERN)


def pre_split(text: str) -> list[str]:
    """Split `text` into the word-like chunks that pre-split BPE never merges across."""
    return _PRE_SPLIT_RE.findall(text)


# --------------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------------


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        hint = (
            " (decode bytes first, e.g. data.decode('utf-8'))"
            if isinstance(value, (bytes, bytearray))
            else ""
        )
        raise TypeError(f"{what} must be a str, but got {type(value).__name__}{hint}")
    return value


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise ValueError(
            f"text contains the lone surrogate U+{ord(bad):04X} at index {err.start}, which is "
            "not a valid Unicode character and has no UTF-8 encoding; remove it first"
        ) from err


def _as_id_list(ids: Iterable[int], vocab_size: int) -> list[int]:
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(
            f"ids must be a sequence of int token ids, but got {type(ids).__name__}; "
            "to turn text into ids use encode()"
        )
    out: list[int] = []
    for item in ids:
        try:
            token_id = operator.index(item)
        except TypeError:
            raise TypeError(
                f"token ids must be integers, but got {type(item).__name__} {item!r}"
            ) from None
        if not 0 <= token_id < vocab_size:
            raise ValueError(
                f"token id {token_id} is out of range: this vocabulary has ids 0..{vocab_size - 1}"
            )
        out.append(token_id)
    return out


def _bytes_for_display(data: bytes) -> str:
    """Decode `data`, writing bytes that are not whole UTF-8 characters as <0xNN>."""
    text = data.decode("utf-8", errors="surrogateescape")
    return "".join(
        f"<0x{ord(ch) - 0xDC00:02X}>" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in text
    )


# --------------------------------------------------------------------------------------------
# Byte-level BPE
# --------------------------------------------------------------------------------------------


class MergeRow(NamedTuple):
    """One learned merge: its rank, the pair it joins, the id it creates and that id's bytes."""

    rank: int
    pair: Pair
    new_id: int
    token: bytes


class BPETokenizer:
    """Byte-level BPE tokenizer, trained from scratch on a string.

    Ids 0..255 are the raw byte values, so any text can be encoded and decoded exactly.
    Training repeatedly merges the most frequent pair of neighbouring ids into a new id.
    Ties between equally frequent pairs go to the smallest pair, comparing the first id and
    then the second, which makes training deterministic.

    With ``pre_split=True`` the text is first cut into word-like chunks (`pre_split`,
    `PRE_SPLIT_PATTERN`) and merges never cross a chunk boundary, so tokens cannot glue the end
    of one word to the start of the next. Encoding cuts the text the same way. The chunks
    cover the whole text, so the round trip stays exact either way.
    """

    def __init__(self, pre_split: bool = False) -> None:
        self.pre_split = pre_split
        self.merges: list[tuple[Pair, int]] = []
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        self._ranks: dict[Pair, tuple[int, int]] = {}
        self._chunk_cache: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={len(self.vocab)}, pre_split={self.pre_split})"

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 byte values plus one per merge."""
        return len(self.vocab)

    # ---- training -------------------------------------------------------------------------

    def train(self, text: str, vocab_size: int) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from `text`; replaces any earlier training."""
        _require_str(text, "training text")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, but got {type(vocab_size).__name__}")
        if vocab_size < 256:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: byte-level BPE needs the 256 byte values "
                "as its base alphabet, so use vocab_size >= 256 (256 means no merges)"
            )
        if not text:
            raise ValueError("the training text is empty; pass some text to learn merges from")

        chunks = pre_split(text) if self.pre_split else [text]
        words = Counter(_utf8(chunk) for chunk in chunks)
        merges, vocab = _learn_merges(words, vocab_size - 256)
        if len(merges) < vocab_size - 256:
            raise ValueError(
                f"vocab_size={vocab_size} is too large for this text: it runs out of pairs to "
                f"merge after {len(merges)} merges, so the largest vocab_size it supports is "
                f"{256 + len(merges)}; use a smaller vocab_size or more text"
            )
        self.merges = merges
        self.vocab = vocab
        self._ranks = {pair: (rank, new_id) for rank, (pair, new_id) in enumerate(merges)}
        self._chunk_cache = {}
        return self

    # ---- encoding / decoding --------------------------------------------------------------

    def encode(self, s: str) -> list[int]:
        """Turn text into token ids, applying the learned merges in the order they were learned."""
        _require_str(s, "the text to encode")
        if not self.pre_split:
            return self._encode_bytes(_utf8(s))
        ids: list[int] = []
        cache = self._chunk_cache
        for chunk in pre_split(s):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._encode_bytes(_utf8(chunk))
                if len(cache) < 100_000:
                    cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Turn token ids back into text; bytes that do not form valid UTF-8 become U+FFFD."""
        id_list = _as_id_list(ids, len(self.vocab))
        return b"".join(self.vocab[i] for i in id_list).decode("utf-8", errors="replace")

    def _encode_bytes(self, data: bytes) -> list[int]:
        # Same result as "repeatedly merge the lowest-rank pair present, left to right", but a
        # heap of (rank, position) over a linked list avoids rescanning the whole text per merge.
        ids = list(data)
        ranks = self._ranks
        n = len(ids)
        if n < 2 or not ranks:
            return ids
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = [(ranks[p][0], i) for i, p in enumerate(pairwise(ids)) if p in ranks]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            left = ids[i]
            j = nxt[i]
            if left < 0 or j < 0:
                continue
            entry = ranks.get((left, ids[j]))
            if entry is None or entry[0] != rank:
                continue  # stale: this position changed since it was pushed
            new_id = entry[1]
            ids[i] = new_id
            ids[j] = -1
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
                after = ranks.get((new_id, ids[k]))
                if after is not None:
                    heapq.heappush(heap, (after[0], i))
            p = prv[i]
            if p >= 0:
                before = ranks.get((ids[p], new_id))
                if before is not None:
                    heapq.heappush(heap, (before[0], p))
        return [t for t in ids if t >= 0]

    # ---- inspection -----------------------------------------------------------------------

    def merge_table(self) -> list[MergeRow]:
        """The merge history: one row (rank, pair, new_id, token bytes) per merge, in order."""
        return [
            MergeRow(rank, pair, new_id, self.vocab[new_id])
            for rank, (pair, new_id) in enumerate(self.merges)
        ]

    def token_text(self, token_id: int) -> str:
        """The text a single token stands for; bytes of a split character appear as <0xNN>."""
        return _bytes_for_display(self.vocab[_as_id_list([token_id], len(self.vocab))[0]])

    def tokens_per_char(self, text: str) -> float:
        """Average number of tokens per character of `text` (lower means better compression)."""
        _require_str(text, "text")
        if not text:
            raise ValueError("tokens_per_char needs a non-empty text")
        return len(self.encode(text)) / len(text)


def _learn_merges(
    words: Counter[bytes], num_merges: int
) -> tuple[list[tuple[Pair, int]], dict[int, bytes]]:
    """Learn up to `num_merges` merges from byte strings weighted by their counts.

    All words live in one array of nodes, chained into one linked list per word. For every
    pair we keep its weighted count and the set of nodes where it starts; a merge only touches
    those nodes and their neighbours, instead of recounting the whole corpus.
    """
    tok: list[int] = []
    nxt: list[int] = []
    prv: list[int] = []
    weight: list[int] = []
    for word, freq in words.items():
        start = len(tok)
        for offset, byte in enumerate(word):
            tok.append(byte)
            prv.append(start + offset - 1 if offset else -1)
            nxt.append(start + offset + 1 if offset + 1 < len(word) else -1)
            weight.append(freq)

    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}
    for i, j in enumerate(nxt):
        if j >= 0:
            pair = (tok[i], tok[j])
            counts[pair] = counts.get(pair, 0) + weight[i]
            where.setdefault(pair, set()).add(i)
    # Max-heap by count via negation; equal counts pop the smallest pair first.
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[Pair, int]] = []
    vocab = {i: bytes([i]) for i in range(256)}

    def change(pair: Pair, node: int, delta: int) -> None:
        count = counts.get(pair, 0) + delta
        if count:
            counts[pair] = count
            heapq.heappush(heap, (-count, pair))
        else:
            counts.pop(pair, None)
        if delta > 0:
            where.setdefault(pair, set()).add(node)
        elif pair in where:
            where[pair].discard(node)

    while len(merges) < num_merges:
        best = None
        while heap:
            neg_count, pair = heapq.heappop(heap)
            if counts.get(pair) == -neg_count:
                best = pair
                break
        if best is None:
            break
        new_id = 256 + len(merges)
        first, second = best
        for i in sorted(where.pop(best)):
            j = nxt[i]
            if tok[i] != first or j < 0 or tok[j] != second:
                continue  # consumed by an earlier, overlapping match in this pass
            w = weight[i]
            p, k = prv[i], nxt[j]
            if p >= 0:
                change((tok[p], first), p, -w)
            if k >= 0:
                change((second, tok[k]), j, -w)
            tok[i] = new_id
            tok[j] = -1
            nxt[i] = k
            if k >= 0:
                prv[k] = i
                change((new_id, tok[k]), i, w)
            if p >= 0:
                change((tok[p], new_id), p, w)
        # Every occurrence is now merged or was swallowed by an overlapping one (as in 'aaa').
        counts.pop(best, None)
        merges.append((best, new_id))
        vocab[new_id] = vocab[first] + vocab[second]
    return merges, vocab


# --------------------------------------------------------------------------------------------
# SentencePiece (Llama style)
# --------------------------------------------------------------------------------------------

#: Training options of Llama 2's tokenizer, plus settings that make training reproducible.
#: One deliberate difference: ``character_coverage`` is 0.9995 (SentencePiece's default), where
#: Llama 2 used 0.99995. A higher value keeps rarer characters as pieces of their own instead of
#: bytes; the shipped TinyTales tokenizer and the stored notebook outputs were made with 0.9995,
#: so it stays. Pass ``character_coverage=0.99995`` to `train_sentencepiece` for Llama 2's value.
LLAMA_SENTENCEPIECE_OPTIONS: dict[str, Any] = {
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
    "character_coverage": 0.9995,  # Llama 2: 0.99995 (see above)
    # Longer sentences (in bytes) are dropped silently by SentencePiece, so lines are cut
    # below this length before training.
    "max_sentence_length": 16384,
    # Use every sentence: SentencePiece's own sampling is not reproducible between runs,
    # even after spm.set_random_generator_seed (measured with sentencepiece 0.2.3).
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    # The thread count is stored inside the .model file; a fixed value keeps files
    # byte-identical across machines. Training 1 MB takes well under a second anyway.
    "num_threads": 1,
    "minloglevel": 2,
}

_MANAGED_OPTIONS = frozenset(
    {
        "input",
        "input_format",
        "model_prefix",
        "sentence_iterator",
        "sentence_reader",
        "model_writer",
        "vocab_size",
    }
)


class SentencePieceTokenizer:
    """A trained SentencePiece model: ours from `train_sentencepiece`, or Llama 2's own."""

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no SentencePiece model file at {str(path)!r}; check the path, or train one "
                "with train_sentencepiece(text, vocab_size, out_dir)"
            )
        processor = spm.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except (RuntimeError, OSError) as err:
            raise ValueError(
                f"{str(path)!r} is not a SentencePiece model (it could not be parsed); pass the "
                "'.model' file written by train_sentencepiece, or Llama's 'tokenizer.model'"
            ) from err
        self.model_path = path
        self.sp = processor

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({str(self.model_path)!r}, vocab_size={self.vocab_size})"

    def __len__(self) -> int:
        return self.sp.GetPieceSize()

    @property
    def vocab_size(self) -> int:
        """Number of pieces (ids run from 0 to vocab_size - 1)."""
        return self.sp.GetPieceSize()

    @property
    def bos_id(self) -> int:
        """Id of the beginning-of-sequence token ``<s>`` (-1 if the model has none)."""
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        """Id of the end-of-sequence token ``</s>`` (-1 if the model has none)."""
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        """Id of the padding token (-1 for Llama, which has none)."""
        return self.sp.pad_id()

    @property
    def unk_id(self) -> int:
        """Id of the unknown token ``<unk>``."""
        return self.sp.unk_id()

    def encode(self, s: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Turn text into ids, optionally adding ``<s>`` in front and ``</s>`` at the end.

        Text that looks like a special token (e.g. the five characters ``<s>``) is encoded
        as ordinary text, never as the special id. Pieces added with `add_special_pieces` are
        different: they are found in the text itself, so ``"<|eot_id|>"`` in a chat
        tokenizer's input becomes that piece's id (which is why `llama_edu.posttrain.format_chat`
        refuses message contents that contain one).
        """
        _require_str(s, "the text to encode")
        try:
            ids: list[int] = list(self.sp.EncodeAsIds(s))
        except RuntimeError:
            _utf8(s)  # a lone surrogate: raise the same clear ValueError as BPETokenizer
            raise
        if bos:
            if self.bos_id < 0:
                raise ValueError("this model has no <s> (bos) token; call encode with bos=False")
            ids.insert(0, self.bos_id)
        if eos:
            if self.eos_id < 0:
                raise ValueError("this model has no </s> (eos) token; call encode with eos=False")
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text; control tokens such as ``<s>`` and ``</s>`` are dropped."""
        return self.sp.DecodeIds(_as_id_list(ids, self.vocab_size))

    def pieces(self, s: str) -> list[str]:
        """The pieces `s` is split into, as SentencePiece writes them (spaces shown as ▁)."""
        _require_str(s, "the text to split")
        try:
            return list(self.sp.EncodeAsPieces(s))
        except RuntimeError:
            _utf8(s)  # a lone surrogate: raise the same clear ValueError as BPETokenizer
            raise

    def id_to_piece(self, i: int) -> str:
        """The piece with id `i`, e.g. ``'▁the'`` or ``'<0x0A>'``."""
        return self.sp.IdToPiece(_as_id_list([i], self.vocab_size)[0])

    def piece_to_id(self, piece: str) -> int:
        """The id of `piece`; raises KeyError if the vocabulary has no such piece."""
        _require_str(piece, "piece")
        _utf8(piece)  # a lone surrogate: the same clear ValueError as encode
        token_id = self.sp.PieceToId(piece)
        if token_id == self.unk_id and piece != self.sp.IdToPiece(token_id):
            raise KeyError(f"{piece!r} is not a piece of this vocabulary")
        return token_id

    def is_byte(self, i: int) -> bool:
        """Whether id `i` is a byte-fallback piece such as ``<0xE4>``."""
        return bool(self.sp.IsByte(_as_id_list([i], self.vocab_size)[0]))

    def token_text(self, token_id: int) -> str:
        """The text a single token stands for (▁ shown as a space; split bytes as <0xNN>)."""
        i = _as_id_list([token_id], self.vocab_size)[0]
        piece = self.sp.IdToPiece(i)
        if self.sp.IsByte(i):
            return _bytes_for_display(bytes([int(piece[3:5], 16)]))
        if self.sp.IsControl(i) or self.sp.IsUnknown(i):
            return piece
        return piece.replace("\u2581", " ")

    def tokens_per_char(self, text: str) -> float:
        """Average number of tokens per character of `text` (lower means better compression)."""
        _require_str(text, "text")
        if not text:
            raise ValueError("tokens_per_char needs a non-empty text")
        return len(self.encode(text)) / len(text)


def add_special_pieces(
    tokenizer: SentencePieceTokenizer, pieces: Sequence[str], path: str | os.PathLike[str]
) -> SentencePieceTokenizer:
    """Write a copy of `tokenizer`'s model to `path` with `pieces` added as unsplittable pieces.

    The pieces are appended to the vocabulary as SentencePiece USER_DEFINED pieces, so they get
    the ids vocab_size, vocab_size + 1, ... in the order given, and every existing id keeps its
    piece. Unlike the control tokens ``<s>`` and ``</s>`` (which `encode` never produces from
    text), a user-defined piece is matched in the text itself: ``"a<|eot_id|>b"`` encodes the
    middle as one id, wherever it stands, and decodes back to the same characters. The source
    model file is never changed. An existing `path` is refused unless it already holds exactly
    the model this call would write (so running a notebook twice is safe).
    """
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    if not isinstance(tokenizer, SentencePieceTokenizer):
        raise TypeError(
            "add_special_pieces needs a SentencePieceTokenizer (the byte-level BPETokenizer has no "
            f"model file to extend), got {type(tokenizer).__name__}"
        )
    if isinstance(pieces, str) or not isinstance(pieces, Sequence):
        raise TypeError(
            "pieces must be a list or tuple of strings, e.g. ['<|eot_id|>'], got "
            f"{type(pieces).__name__}"
        )
    if not pieces:
        raise ValueError("pieces is empty; pass at least one piece to add")
    seen: set[str] = set()
    for piece in pieces:
        _require_str(piece, "each special piece")
        _utf8(piece)
        if not piece or any(ch.isspace() for ch in piece) or "\u2581" in piece:
            raise ValueError(
                f"special piece {piece!r} is empty or holds whitespace; a special piece must be "
                "one word of visible characters such as '<|eot_id|>'"
            )
        if piece in seen:
            raise ValueError(f"special piece {piece!r} is listed twice; list each piece once")
        seen.add(piece)
        if tokenizer.sp.PieceToId(piece) != tokenizer.unk_id or piece == tokenizer.sp.IdToPiece(
            tokenizer.unk_id
        ):
            raise ValueError(
                f"{piece!r} is already a piece of this vocabulary (id "
                f"{tokenizer.sp.PieceToId(piece)}); add only new pieces"
            )
    out = Path(path)
    source = Path(tokenizer.model_path)
    if out.exists() and out.resolve() == source.resolve():
        raise ValueError(
            f"{str(out)!r} is the tokenizer's own model file; add_special_pieces never changes "
            "it. Pass a new path, e.g. next to your run's checkpoint."
        )
    proto = model_pb2.ModelProto()
    proto.ParseFromString(source.read_bytes())
    for piece in pieces:
        proto.pieces.add(
            piece=piece, score=0.0, type=model_pb2.ModelProto.SentencePiece.USER_DEFINED
        )
    data = proto.SerializeToString()
    if out.exists():
        if out.is_file() and out.read_bytes() == data:
            return SentencePieceTokenizer(out)
        raise FileExistsError(
            f"{str(out)!r} already exists and is not this tokenizer with these pieces; nothing "
            "was changed. Choose a new path or move that file away."
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(out.parent)!r} does not exist; create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        extended = SentencePieceTokenizer(tmp)  # fails here rather than after the move
        if extended.vocab_size != tokenizer.vocab_size + len(pieces):
            raise RuntimeError(
                f"SentencePiece loaded {extended.vocab_size} pieces, expected "
                f"{tokenizer.vocab_size + len(pieces)}; the model file was not written"
            )
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SentencePieceTokenizer(out)


def _looks_like_path(s: str) -> bool:
    if not s or "\n" in s or "\x00" in s or len(s) > 4096:
        return False
    if os.path.isfile(s):
        return True
    # A single "word" with a directory separator or a file extension is almost surely a path
    # that does not exist; treating it as a one-word corpus would only hide the mistake.
    return bool(re.fullmatch(r"\S+", s)) and (
        "/" in s or os.sep in s or re.search(r"\.[A-Za-z][A-Za-z0-9]{0,4}$", s) is not None
    )


def _read_corpus(text_or_path: str | os.PathLike[str]) -> str:
    if isinstance(text_or_path, os.PathLike):
        path = Path(text_or_path)
    elif isinstance(text_or_path, str):
        if not _looks_like_path(text_or_path):
            return text_or_path
        path = Path(text_or_path)
    else:
        raise TypeError(
            "text_or_path must be the training text (str) or a path to a UTF-8 text file "
            f"(str or pathlib.Path), but got {type(text_or_path).__name__}"
        )
    if not path.exists():
        hint = (
            ""
            if isinstance(text_or_path, os.PathLike)
            else (" (this str was taken for a file name; to train on text, pass the text itself)")
        )
        raise FileNotFoundError(f"training file {str(path)!r} does not exist; check the path{hint}")
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory; pass one UTF-8 text file (concatenate several first)"
        )
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError(
            f"{str(path)!r} looks like a binary file (it contains NUL bytes); SentencePiece "
            "trains on UTF-8 text, so pass a text file"
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{str(path)!r} is not valid UTF-8 (byte 0x{data[err.start]:02X} at offset "
            f"{err.start}); convert it to UTF-8 first, or read it with its real encoding and "
            "pass the text itself"
        ) from err


def _cut_long_line(line: str, max_bytes: int) -> list[str]:
    """Cut `line` into parts of at most `max_bytes` UTF-8 bytes, at whitespace when possible."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for word in re.findall(r"\S+\s*|\s+", line):
        units = [word] if len(word.encode("utf-8")) <= max_bytes else list(word)
        for unit in units:
            n = len(unit.encode("utf-8"))
            if size + n > max_bytes and current:
                parts.append("".join(current))
                current, size = [], 0
            current.append(unit)
            size += n
    if current:
        parts.append("".join(current))
    return parts


def _sentences(text: str, max_bytes: int) -> list[str]:
    sentences: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if len(line.encode("utf-8")) <= max_bytes:
            sentences.append(line)
        else:
            sentences.extend(_cut_long_line(line, max_bytes))
    return sentences


def _vocab_file_text(tokenizer: SentencePieceTokenizer) -> str:
    sp = tokenizer.sp
    return "".join(f"{sp.IdToPiece(i)}\t{sp.GetScore(i):g}\n" for i in range(tokenizer.vocab_size))


def _translate_training_error(err: Exception, vocab_size: int) -> Exception:
    msg = str(err)
    too_high = re.search(
        r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", msg
    )
    if too_high:
        limit = int(too_high.group(1))
        return ValueError(
            f"vocab_size={vocab_size} is too large for this corpus: SentencePiece finds only "
            f"{limit} pieces in it. Use vocab_size <= {limit}, or train on more text."
        )
    too_low = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", msg)
    if too_low:
        need = int(too_low.group(1))
        return ValueError(
            f"vocab_size={vocab_size} is too small for this corpus: it needs at least {need} "
            "ids (the special tokens, 256 byte pieces and one piece per character kept by "
            f"character_coverage). Use vocab_size >= {need}, or lower character_coverage."
        )
    unknown = re.search(r'unknown field name "([^"]+)"', msg)
    if unknown:
        return TypeError(
            f"{unknown.group(1)!r} is not a SentencePiece training option; see the "
            "TrainerSpec / NormalizerSpec fields in SentencePiece's documentation"
        )
    if isinstance(err, ValueError):
        return ValueError(f"invalid SentencePiece training option: {msg}")
    return RuntimeError(f"SentencePiece training failed: {msg}")


def train_sentencepiece(
    text_or_path: str | os.PathLike[str],
    vocab_size: int,
    out_dir: str | os.PathLike[str],
    model_prefix: str = "tokenizer",
    **options: Any,
) -> SentencePieceTokenizer:
    """Train a Llama-style SentencePiece BPE model and save ``<prefix>.model`` / ``.vocab``.

    `text_or_path` is either the training text itself or a UTF-8 text file (a `pathlib.Path`,
    or a str naming an existing file). `options` override `LLAMA_SENTENCEPIECE_OPTIONS`, for
    example ``character_coverage=1.0``. Lines longer than ``max_sentence_length`` bytes are cut
    at whitespace rather than dropped.

    Training happens in a temporary directory inside `out_dir`; the two files are moved into
    place only once the model has been trained and loaded back, so a failed training leaves
    `out_dir` as it was. The same text and options give byte-identical files.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, but got {type(vocab_size).__name__}")
    if not isinstance(model_prefix, str) or not re.fullmatch(r"[\w.-]+", model_prefix):
        raise ValueError(
            f"model_prefix must be a plain file name such as 'tokenizer', got {model_prefix!r}; "
            "put the directory in out_dir"
        )
    managed = sorted(_MANAGED_OPTIONS.intersection(options))
    if managed:
        raise TypeError(
            f"train_sentencepiece sets {', '.join(managed)} itself; pass the corpus as "
            "text_or_path and the size as vocab_size"
        )
    settings = {**LLAMA_SENTENCEPIECE_OPTIONS, **options}

    text = _read_corpus(text_or_path)
    _utf8(text)  # a lone surrogate: the same clear ValueError as encode
    if not text.strip():
        raise ValueError(
            "the training corpus is empty (or only whitespace); pass some text to learn from"
        )
    max_bytes = int(settings["max_sentence_length"])
    sentences = _sentences(text, max_bytes)

    specials = sum(1 for key in ("unk_id", "bos_id", "eos_id", "pad_id") if int(settings[key]) >= 0)
    minimum = specials + (256 if settings["byte_fallback"] else 0) + 1
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: {specials} special tokens and "
            f"{256 if settings['byte_fallback'] else 0} byte-fallback pieces come first, plus one "
            f"piece per character of the corpus; use vocab_size >= {minimum} at the very least"
        )

    out = Path(out_dir)
    created = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_prefix}.training-", dir=out))
    try:
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.Train(
                sentence_iterator=iter(sentences),
                model_writer=buffer,
                vocab_size=vocab_size,
                **settings,
            )
        except (RuntimeError, ValueError) as err:
            raise _translate_training_error(err, vocab_size) from err
        tmp_model = tmp / f"{model_prefix}.model"
        tmp_vocab = tmp / f"{model_prefix}.vocab"
        tmp_model.write_bytes(buffer.getvalue())
        trained = SentencePieceTokenizer(tmp_model)  # fails here rather than after the move
        tmp_vocab.write_text(_vocab_file_text(trained), encoding="utf-8")
        # The .model goes last: a new .model next to an old .vocab cannot happen.
        os.replace(tmp_vocab, out / tmp_vocab.name)
        os.replace(tmp_model, out / tmp_model.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return SentencePieceTokenizer(out / f"{model_prefix}.model")


# --------------------------------------------------------------------------------------------
# Showing token boundaries
# --------------------------------------------------------------------------------------------


class TokenizerLike(Protocol):
    """Anything with `encode` and `token_text`: both tokenizers in this module."""

    def encode(self, s: str) -> list[int]: ...

    def token_text(self, token_id: int) -> str: ...


def token_strings(text: str, tokenizer: TokenizerLike) -> list[str]:
    """The text of each token `tokenizer` splits `text` into, in order."""
    return [tokenizer.token_text(i) for i in tokenizer.encode(_require_str(text, "text"))]


_TOKEN_COLOURS = ("#fde2e4", "#dbeafe", "#dcfce7", "#fef3c7", "#ede9fe", "#cffafe")
_WHITESPACE_MARK = 'style="color:#94a3b8"'


def _visible(text: str) -> str:
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == " ":
            out.append(f"<span {_WHITESPACE_MARK}>\u2423</span>")
        elif ch == "\n":
            out.append(f"<span {_WHITESPACE_MARK}>\u21b5</span>\n")
        elif ch == "\t":
            out.append(f"<span {_WHITESPACE_MARK}>\u21e5</span>")
        elif code < 0x20 or code == 0x7F:
            # Unicode's "control pictures" block has one visible symbol per control character.
            symbol = chr(0x2400 + code) if code < 0x20 else "\u2421"
            out.append(f"<span {_WHITESPACE_MARK}>{symbol}</span>")
        else:
            out.append(html.escape(ch))
    return "".join(out)


def render_tokens_html(
    tokens: str | Sequence[int] | Sequence[str], tokenizer: TokenizerLike | None = None
) -> str:
    """HTML showing each token on its own alternating background colour.

    `tokens` is text (split with `tokenizer`), a list of ids (looked up in `tokenizer`) or a
    list of token strings. Spaces, newlines, tabs and other control characters are drawn as
    visible symbols; hovering over a token shows its id when it is known. Display it in a
    notebook with ``IPython.display.HTML(...)``.
    """
    ids: list[int] | None
    if isinstance(tokens, str):
        if tokenizer is None:
            raise TypeError("render_tokens_html needs a tokenizer to split text into tokens")
        ids = tokenizer.encode(tokens)
        texts = [tokenizer.token_text(i) for i in ids]
    else:
        items = list(tokens)
        if all(isinstance(t, str) for t in items):
            ids, texts = None, [str(t) for t in items]
        elif tokenizer is not None and all(not isinstance(t, str) for t in items):
            ids = [operator.index(t) for t in items]
            texts = [tokenizer.token_text(i) for i in ids]
        else:
            raise TypeError(
                "tokens must be a str, a list of token strings, or a list of int ids together "
                "with the tokenizer they came from"
            )
    spans = []
    for k, text in enumerate(texts):
        colour = _TOKEN_COLOURS[k % len(_TOKEN_COLOURS)]
        title = f' title="id {ids[k]}"' if ids is not None else ""
        spans.append(
            f'<span style="background:{colour};border-radius:3px;padding:1px 0"{title}>'
            f"{_visible(text)}</span>"
        )
    return (
        '<div class="llama-edu-tokens" style="font-family:monospace;line-height:1.9;'
        f'white-space:pre-wrap;word-break:break-all">{"".join(spans)}</div>'
    )
