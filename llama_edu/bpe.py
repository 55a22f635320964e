"""Byte-level BPE written from scratch: the algorithm of GPT-2's and Llama 3's tokenizers.

`BPETokenizer` starts from the 256 byte values, so every string can be encoded and decoded back
exactly; training repeatedly merges the most frequent adjacent pair into a new token
(`pair_counts`, `merge`). An optional pre-split (`pre_split`) keeps merges inside word-like
chunks. `bytes_to_unicode` gives the printable character that byte-level vocabulary files use
for each byte. The SentencePiece tokenizer that Llama 2 ships is in `llama_edu.tokenizer`.
"""

from __future__ import annotations

import heapq
import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import NamedTuple

__all__ = [
    "BPETokenizer",
    "MergeRow",
    "PRE_SPLIT_PATTERN",
    "bytes_to_unicode",
    "merge",
    "pair_counts",
    "pre_split",
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
# How byte-level vocabulary files write a byte
# --------------------------------------------------------------------------------------------


def _keeps_its_latin1_character(byte: int) -> bool:
    # Visible Latin-1 characters: '!' to '~', then '¡' to 'ÿ' without the soft hyphen (0xAD).
    return 0x21 <= byte <= 0x7E or (0xA1 <= byte <= 0xFF and byte != 0xAD)


def bytes_to_unicode() -> dict[int, str]:
    """The printable character that GPT-2-style byte-level vocabularies write for each byte.

    A token of a byte-level BPE is a string of bytes, often not whole UTF-8 characters, but
    vocabulary files are text. So each byte value gets one visible character: the 188 bytes
    whose Latin-1 character is visible keep it (0x41 -> 'A', 0xE8 -> 'è'), and the other 68
    (control characters, the space, 0x7F to 0xA0 and the soft hyphen 0xAD) get U+0100, U+0101,
    ... in byte order (0x00 -> 'Ā', 0x20 -> 'Ġ', 0x99 -> 'Ļ'). The table is only a way to write
    bytes down: the model never sees these characters, only token ids.
    """
    table: dict[int, str] = {}
    moved = 0
    for byte in range(256):
        if _keeps_its_latin1_character(byte):
            table[byte] = chr(byte)
        else:
            table[byte] = chr(0x100 + moved)
            moved += 1
    return table


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
