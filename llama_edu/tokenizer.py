"""Llama-style SentencePiece tokenizers, and helpers that show where the token boundaries fall.

The byte-level BPE written from scratch lives in `llama_edu.bpe`; its names are also importable
from here (``from llama_edu.tokenizer import BPETokenizer``). `train_sentencepiece` trains the
kind of tokenizer Llama 2 ships (BPE with byte fallback, split digits, no normalisation) and
`SentencePieceTokenizer` loads either that or a real Llama 2 ``tokenizer.model``.
"""

from __future__ import annotations

import html
import io
import operator
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import sentencepiece as spm

from .bpe import (
    PRE_SPLIT_PATTERN,
    BPETokenizer,
    MergeRow,
    _as_id_list,
    _bytes_for_display,
    _require_str,
    _utf8,
    merge,
    pair_counts,
    pre_split,
)

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
