"""Text corpora for the workbook: real text that ships with Python, optional downloads,
count-based baselines and train/validation splits.

The synthetic story world, TinyTales, has its own module, ``llama_edu.tinytales``; its public
names are also importable from here (``from llama_edu.data import TinyTales``), as notebooks and
scripts written before the split expect. `workbook_text` (the workbook's own prose in English and
Chinese, from ``llama_edu.workbook_text``) is importable from here too.

Character accounting of the count-based baselines, as for TinyTales' entropy floor: a corpus
of stories is the stories one after the other, each followed by one newline ``"\\n"``, so a
story of ``len(text)`` characters costs ``len(text) + 1`` characters.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tinytales import EntropyEstimate, Story, TinyTales, Validity, ratio_estimate, tiny_tales_text
from .tinytales_zh import tiny_tales_zh_text
from .workbook_text import workbook_text

__all__ = [
    "CORPORA",
    "DEFAULT_MAX_BYTES",
    "TINY_TALES_DEFAULT_STORIES",
    "CorpusSource",
    "EntropyEstimate",
    "NoInternetError",
    "Story",
    "TinyTales",
    "Validity",
    "bigram_bits_per_char",
    "cache_dir",
    "download",
    "load_corpus",
    "python_docs_text",
    "ratio_estimate",
    "read_text_file",
    "tiny_tales_text",
    "tiny_tales_zh_text",
    "train_val_split",
    "unigram_bits_per_char",
    "workbook_text",
]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Count-based baselines (character level)
# --------------------------------------------------------------------------------------------


def _documents(texts: Iterable[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of documents, not one str; wrap it: [{what}]")
    docs = list(texts)
    if not docs:
        raise ValueError(f"{what} is empty; pass at least one document")
    for d in docs:
        if not isinstance(d, str):
            raise TypeError(f"{what} must contain str documents, found {type(d).__name__}")
    return docs


def _encode(train: list[str], test: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Each document plus its newline as character ids over the train+test alphabet."""
    train_s = "".join(d + "\n" for d in train)
    test_s = "".join(d + "\n" for d in test)
    codes = np.frombuffer((train_s + test_s).encode("utf-32-le"), dtype=np.uint32)
    present = np.zeros(int(codes.max()) + 1, dtype=bool)
    present[codes] = True
    rank = np.cumsum(present) - 1  # code point -> index in the sorted alphabet
    ids = rank[codes]
    return ids[: len(train_s)], ids[len(train_s) :], int(present.sum())


def unigram_bits_per_char(train_texts: Iterable[str], test_texts: Iterable[str],
                          k: float = 1.0) -> float:
    """Test bits/char of an add-k smoothed character unigram model fit on the training texts.

    Characters are counted as for the entropy floor: each document plus one newline. The
    alphabet is every character seen in train or test, so no test character has probability 0.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    train_ids, test_ids, v = _encode(_documents(train_texts, "train_texts"),
                                     _documents(test_texts, "test_texts"))
    counts = np.bincount(train_ids, minlength=v).astype(np.float64)
    logp = np.log2((counts + k) / (counts.sum() + k * v))
    return float(-logp[test_ids].mean())


def bigram_bits_per_char(train_texts: Iterable[str], test_texts: Iterable[str],
                         k: float = 1.0) -> float:
    """Test bits/char of an add-k smoothed character bigram model fit on the training texts.

    P(c | b) = (count(b, c) + k) / (count(b) + k * V) over the train+test alphabet of size V.
    The stream is the documents each followed by a newline, and the first character is
    predicted after a newline, so every character (newlines included) is scored exactly once.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    train_docs = _documents(train_texts, "train_texts")
    test_docs = _documents(test_texts, "test_texts")
    train_ids, test_ids, v = _encode(train_docs, test_docs)
    newline = int(train_ids[-1])  # every stream ends with the newline after its last document
    prev_train = np.concatenate(([newline], train_ids[:-1]))
    prev_test = np.concatenate(([newline], test_ids[:-1]))
    pair_counts = np.bincount(prev_train * v + train_ids, minlength=v * v).reshape(v, v)
    ctx_counts = pair_counts.sum(axis=1)
    p = (pair_counts[prev_test, test_ids] + k) / (ctx_counts[prev_test] + k * v)
    return float(-np.log2(p).mean())


# --------------------------------------------------------------------------------------------
# Real text that is always available offline
# --------------------------------------------------------------------------------------------

_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "--",
    "\u2026": "...", "\u00a0": " ",
})


def python_docs_text(max_chars: int | None = None) -> str:
    """English text from the Python reference manual topics that ship with CPython.

    Topics are taken in sorted order and normalised: curly quotes, dashes and ellipses become
    ASCII, tabs become spaces, trailing spaces go, runs of blank lines become one blank line,
    and topics are separated by one blank line. max_chars cuts the result to that length.
    """
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars <= 0):
        raise ValueError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some Linux distributions ship it in a separate package
        raise RuntimeError(
            "this Python has no 'pydoc_data' module (the help() topics); install your "
            "distribution's full Python standard library, or use load_corpus('tiny-tales') or "
            "read_text_file(path) instead"
        ) from exc
    parts = []
    for key in sorted(topics):
        body = topics[key].translate(_TYPOGRAPHY).replace("\r\n", "\n").expandtabs(8)
        body = "\n".join(line.rstrip() for line in body.split("\n")).strip("\n")
        parts.append(re.sub(r"\n{3,}", "\n\n", body))
    text = "\n\n".join(parts) + "\n"
    return text if max_chars is None else text[:max_chars]


def read_text_file(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file (a leading BOM is dropped, CRLF line ends become LF)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"no such file: '{p}' (absolute: '{p.absolute()}'); check the path, or use a built-in "
            "corpus: load_corpus('tiny-tales') or load_corpus('python-docs')"
        )
    if p.is_dir():
        raise IsADirectoryError(f"'{p}' is a folder; pass the path of a text file inside it")
    data = p.read_bytes()
    if not data:
        raise ValueError(f"'{p}' is empty (0 bytes); a corpus needs some text")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"'{p}' is UTF-16 text; convert it to UTF-8 first, for example with "
                         f"iconv -f UTF-16 -t UTF-8 '{p}' > out.txt")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"'{p}' looks like a binary file, not text: it has a NUL byte at offset "
                         f"{nul}; pass a plain UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"'{p}' is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            "cannot start or continue a UTF-8 character (the file may be Latin-1 or "
            "Windows-1252 text, or binary); convert it to UTF-8, e.g. "
            f"iconv -f WINDOWS-1252 -t UTF-8 '{p}' > out.txt"
        ) from None
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise ValueError(f"'{p}' contains only whitespace; a corpus needs some text")
    return text


# --------------------------------------------------------------------------------------------
# Downloads (for environments with internet, e.g. Binder)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusSource:
    """Where a public corpus lives and what its bytes must hash to."""

    url: str
    sha256: str
    size: int


CORPORA: dict[str, CorpusSource] = {
    "tiny-shakespeare": CorpusSource(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
        "input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
    ),
}
DEFAULT_MAX_BYTES = 64 * 2**20
TINY_TALES_DEFAULT_STORIES = 10_000
_OFFLINE_HINT = (
    "Offline corpora work without a network: load_corpus('tiny-tales'), "
    "load_corpus('python-docs'), or load_corpus('/path/to/any/utf8_file.txt')."
)


class NoInternetError(ConnectionError):
    """The download server could not be reached (usually: no internet in this environment)."""


def cache_dir() -> Path:
    """Folder for downloaded files: $LLAMA_EDU_CACHE if set, else ~/.cache/llama_edu."""
    env = os.environ.get("LLAMA_EDU_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llama_edu"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    dest_path: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = 30.0,
) -> Path:
    """Download url to a file and return its path, reusing a cached copy when it is valid.

    A relative dest_path (or the URL's file name when None) is placed in ``cache_dir()``. The
    body is streamed to a temporary file next to the destination, at most max_bytes are
    accepted, the SHA-256 is checked when given, and only then is the file renamed into place,
    so a failed download leaves nothing behind. timeout is in seconds for connecting and for
    each read. An existing destination is reused without any network access if its SHA-256
    matches (or, with sha256=None, if it exists: files only appear once complete).
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"url must start with http:// or https:// and name a host, got {url!r}")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if dest_path is None:
        dest_path = Path(parsed.path).name or "download"
    dest = Path(dest_path).expanduser()
    if not dest.is_absolute():
        dest = cache_dir() / dest
    if dest.is_file() and (sha256 is None or _sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    host = parsed.netloc
    slow = (f"no answer from {host} within {timeout} s while downloading {url}; the network "
            f"may be slow or down. Retry with a larger timeout=, or work offline. {_OFFLINE_HINT}")
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers={"User-Agent": "llama_edu"}), timeout=timeout
        )
    except urllib.error.HTTPError as exc:
        raise ConnectionError(
            f"{host} answered HTTP {exc.code} ({exc.reason}) for {url}; check the URL. "
            f"{_OFFLINE_HINT}"
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TimeoutError(slow) from None
        raise NoInternetError(
            f"cannot reach {host} ({exc.reason}): there seems to be no internet connection "
            f"here (or a firewall blocks it). {_OFFLINE_HINT}"
        ) from None
    except TimeoutError:
        raise TimeoutError(slow) from None
    except OSError as exc:
        raise NoInternetError(f"connection to {host} failed ({exc}). {_OFFLINE_HINT}") from None

    too_big = (f"{url} is larger than max_bytes={max_bytes}; download aborted and nothing kept. "
               "Pass a larger max_bytes= if this file is expected to be that big.")
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with response, os.fdopen(fd, "wb") as out:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ValueError(too_big + f" (the server announced {int(length)} bytes)")
            h = hashlib.sha256()
            total = 0
            while True:
                try:
                    chunk = response.read(1 << 16)
                except TimeoutError:
                    raise TimeoutError(slow) from None
                except OSError as exc:
                    raise NoInternetError(
                        f"the connection to {host} broke during the download ({exc}); "
                        f"try again. {_OFFLINE_HINT}") from None
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise ValueError(too_big)
                h.update(chunk)
                out.write(chunk)
        if length is not None and length.isdigit() and total != int(length):
            raise ConnectionError(f"download of {url} stopped after {total} of {length} bytes; "
                                  "try again")
        if sha256 is not None and h.hexdigest() != sha256:
            raise ValueError(
                f"SHA-256 mismatch for {url}: expected {sha256}, got {h.hexdigest()} "
                f"({total} bytes); the file was not kept. The server may have changed the "
                "file, or the download was corrupted: retry, or check the expected hash."
            )
        tmp.chmod(0o644)  # mkstemp makes the file private; a cache file is ordinary data
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return dest


def load_corpus(name_or_path: str) -> str:
    """Text of a named corpus (tiny-tales[-zh], python-docs, tiny-shakespeare) or of a file."""
    if name_or_path == "tiny-tales":
        return tiny_tales_text(TINY_TALES_DEFAULT_STORIES, seed=0)
    if name_or_path == "tiny-tales-zh":
        return tiny_tales_zh_text(TINY_TALES_DEFAULT_STORIES, seed=0)
    if name_or_path == "python-docs":
        return python_docs_text()
    if name_or_path in CORPORA:
        src = CORPORA[name_or_path]
        path = download(src.url, f"{name_or_path}.txt", sha256=src.sha256, max_bytes=src.size)
        return read_text_file(path)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        names = ", ".join(repr(n) for n in ("tiny-tales", "tiny-tales-zh", "python-docs", *CORPORA))
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a known corpus ({names}) nor an existing file "
            f"(looked for '{path.absolute()}')"
        )
    return read_text_file(path)


# --------------------------------------------------------------------------------------------
# Train / validation splits
# --------------------------------------------------------------------------------------------

_SPLIT_UNITS = ("line", "paragraph", "tail")


def _units(text: str, unit: str) -> list[str]:
    """Cut text into lines or paragraphs that concatenate back to it exactly."""
    if unit == "line":
        pieces = re.findall(r"[^\n]*\n|[^\n]+\Z", text)
    else:
        pieces = re.findall(r".*?(?:\n[ \t]*\n(?:[ \t]*\n)*|\Z)", text, flags=re.S)
    return [p for p in pieces if p]


def train_val_split(text: str, val_fraction: float = 0.1, seed: int = 0,
                    unit: str = "line") -> tuple[str, str]:
    """Split text deterministically into (train, validation) text.

    unit="line" or "paragraph" (blocks ending in blank lines) sends a seeded random
    round(val_fraction * n) of the n pieces (at least 1, at most n - 1) to validation, keeping
    the original order within each part; unit="tail" keeps the last val_fraction of the
    characters as validation (seed unused). In all cases train + validation has exactly the
    characters of text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if unit not in _SPLIT_UNITS:
        raise ValueError(f"unit must be one of {_SPLIT_UNITS}, got {unit!r}")
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    if unit == "tail":
        if len(text) < 2:
            raise ValueError(f"need at least 2 characters to split, got {len(text)}")
        cut = min(max(round(len(text) * (1 - val_fraction)), 1), len(text) - 1)
        return text[:cut], text[cut:]
    pieces = _units(text, unit)
    n = len(pieces)
    if n < 2:
        raise ValueError(
            f"need at least 2 {unit}s to split, found {n}; use more text, or unit='tail' to "
            "split by characters"
        )
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    val_idx = set(random.Random(seed).sample(range(n), n_val))
    train = "".join(p for i, p in enumerate(pieces) if i not in val_idx)
    val = "".join(p for i, p in enumerate(pieces) if i in val_idx)
    return train, val

