"""Tests for llama_edu.data: TinyTales, the count-based baselines, offline text, downloads and
train/validation splits. Downloads are tested against a server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import http.server
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_edu import data
from llama_edu.data import (
    CorpusSource,
    NoInternetError,
    TinyTales,
    bigram_bits_per_char,
    download,
    load_corpus,
    python_docs_text,
    read_text_file,
    tiny_tales_text,
    train_val_split,
    unigram_bits_per_char,
)

TALES = TinyTales()
STORIES = TALES.sample(1500, seed=2024)
OPENERS = ("Once upon a time,", "One day,", "Long ago,", "One morning,", "One sunny day,")


def sentences(text: str) -> list[str]:
    """Split a story after each full stop."""
    return re.split(r"(?<=\.) ", text)


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def tiny_world(max_sentences: int) -> TinyTales:
    return TinyTales(girls=["Mia"], boys=["Leo"], adjectives=["red"], nouns=["kite"],
                     places=["park", "beach"], min_sentences=1, max_sentences=max_sentences)


@pytest.fixture(scope="module")
def tiny_language() -> list[data.Story]:
    return tiny_world(2).enumerate_stories(max_stories=50_000)


# ---------------------------------------------------------------------------------------------
# TinyTales: sampling and exact probabilities
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_stories_and_different_seed_different_stories() -> None:
    a = TALES.sample(200, seed=7)
    assert a == TinyTales().sample(200, seed=7)
    assert TALES.sample(30, seed=7) == a[:30]
    b = TALES.sample(200, seed=8)
    assert sum(x.text != y.text for x, y in zip(a, b, strict=True)) > 150


def test_recorded_log_prob_equals_log_prob_recomputed_by_parsing() -> None:
    for story in STORIES:
        assert story.log_prob < 0
        assert TALES.log_prob(story.text) == pytest.approx(story.log_prob, rel=1e-12, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**63))
def test_any_seed_gives_valid_stories_with_matching_log_prob(seed: int) -> None:
    for story in TALES.sample(10, seed):
        assert TALES.is_valid(story.text), TALES.is_valid(story.text).reason
        assert math.isclose(TALES.log_prob(story.text), story.log_prob, rel_tol=1e-12)


def test_stories_look_like_simple_english() -> None:
    for story in STORIES:
        text = story.text
        assert "\n" not in text and "  " not in text
        assert re.fullmatch(r"[A-Za-z ,.]+", text)
        assert text.endswith(".") and text.startswith(OPENERS)
        parts = sentences(text)
        assert TALES.min_sentences <= len(parts) <= TALES.max_sentences
        assert all(p[0].isupper() and p.endswith(".") for p in parts)


def test_later_sentences_only_use_people_and_things_introduced_before() -> None:
    names = set(TALES.girls) | set(TALES.boys)
    adjectives, nouns = set(TALES.adjectives), set(TALES.nouns)
    refers_back = 0
    for story in STORIES:
        first, *rest = sentences(story.text)
        known = {w for w in words(first) if w in names}
        adj = next(w for w in words(first) if w in adjectives)
        noun = next(w for w in words(first) if w in nouns)
        for sentence in rest:
            ws = words(sentence)
            new = re.search(r"named ([A-Z][a-z]+)", sentence)
            for w in ws:
                if w in names and not (new and w == new.group(1)):
                    assert w in known, story.text
                assert w not in adjectives or w == adj, story.text
                assert w not in nouns or w == noun, story.text
            if new:
                known.add(new.group(1))
            refers_back += any(w in known or w in (adj, noun) for w in ws)
    assert refers_back > 0.5 * sum(len(sentences(s.text)) - 1 for s in STORIES)


def test_story_lengths_are_uniform_between_min_and_max() -> None:
    counts = Counter(len(sentences(s.text)) for s in TALES.sample(4000, seed=99))
    lengths = range(TALES.min_sentences, TALES.max_sentences + 1)
    p = 1 / len(lengths)
    sd = math.sqrt(4000 * p * (1 - p))
    assert set(counts) == set(lengths)
    assert all(abs(counts[n] - 4000 * p) < 4 * sd for n in lengths)


def test_probabilities_of_a_tiny_world_sum_to_one_and_texts_are_unique(
    tiny_language: list[data.Story],
) -> None:
    world = tiny_world(2)
    texts = [s.text for s in tiny_language]
    assert len(set(texts)) == len(texts)  # one derivation per text
    assert math.fsum(math.exp(s.log_prob) for s in tiny_language) == pytest.approx(1, abs=1e-9)
    for s in random.Random(0).sample(tiny_language, 400):
        assert world.log_prob(s.text) == pytest.approx(s.log_prob, rel=1e-12)


@pytest.mark.parametrize("prefix", [
    "Once upon a time, Mia found a red kite in the park. Mia met a girl named Ava. "
    "Mia gave the kite to Ava.",
    "One day, Leo had an old kite at the beach. He met a girl named Mia. Then Mia walked to the "
    "park.",
    "Long ago, Ava got an old kite in the park. Ava lost the old kite. Ava looked for the kite.",
])
def test_continuations_of_a_prefix_add_up_to_its_probability(prefix: str) -> None:
    world = TinyTales(girls=["Mia", "Ava"], boys=["Leo"], adjectives=["red", "old"],
                      nouns=["kite"], places=["park", "beach"], min_sentences=1,
                      max_sentences=4)
    stories = world.enumerate_stories(prefix=prefix)
    assert len({s.text for s in stories}) == len(stories) > 10
    assert all(s.text.startswith(prefix) for s in stories)
    n = prefix.count(".")
    # Lengths are uniform on [1, 4]: having written n sentences, the story stops with
    # probability 1 / (4 - n + 1), so p(prefix as a whole story) = p(prefix) / (4 - n + 1).
    p_prefix = math.exp(world.log_prob(prefix)) * (4 - n + 1)
    assert math.fsum(math.exp(s.log_prob) for s in stories) == pytest.approx(p_prefix, rel=1e-9)


def test_sampler_follows_the_stated_probabilities(tiny_language: list[data.Story]) -> None:
    world = tiny_world(2)
    exact_entropy = -math.fsum(math.exp(s.log_prob) * s.log_prob for s in tiny_language)
    samples = world.sample(20_000, seed=5)
    nll = np.array([-s.log_prob for s in samples])
    assert abs(nll.mean() - exact_entropy) < 4 * nll.std() / math.sqrt(len(nll))
    top = max(tiny_language, key=lambda s: s.log_prob)
    p = math.exp(top.log_prob)
    hits = sum(s.text == top.text for s in samples)
    assert abs(hits - 20_000 * p) < 4 * math.sqrt(20_000 * p * (1 - p)) + 1


def test_entropy_floor_is_mean_bits_over_characters_with_newlines() -> None:
    est = TALES.entropy_floor(n=500, seed=3)
    stories = TALES.sample(500, seed=3)
    bits = sum(-s.log_prob for s in stories) / math.log(2)
    chars = len(tiny_tales_text(500, seed=3))
    assert chars == sum(len(s.text) + 1 for s in stories) == est.n_chars
    assert est.bits_per_char == pytest.approx(bits / chars, rel=1e-12)
    assert 0 < est.stderr < 0.05 * est.bits_per_char
    assert "bits/char" in str(est)


def test_entropy_floor_standard_error_matches_spread_across_seeds() -> None:
    estimates = [TALES.entropy_floor(n=200, seed=1000 + i) for i in range(24)]
    spread = np.std([e.bits_per_char for e in estimates], ddof=1)
    mean_se = np.mean([e.stderr for e in estimates])
    assert 0.6 < spread / mean_se < 1.6


def test_character_bigram_is_far_above_the_floor() -> None:
    train = [s.text for s in TALES.sample(3000, seed=1)]
    test = [s.text for s in TALES.sample(1000, seed=2)]
    floor = TALES.entropy_floor(n=1000, seed=2)
    bigram = bigram_bits_per_char(train, test)
    unigram = unigram_bits_per_char(train, test)
    assert unigram > bigram > floor.bits_per_char
    assert (bigram - floor.bits_per_char) / floor.bits_per_char >= 0.3


# ---------------------------------------------------------------------------------------------
# TinyTales: validity and reasons
# ---------------------------------------------------------------------------------------------


def test_generated_stories_are_valid() -> None:
    for story in STORIES[:300]:
        result = TALES.is_valid(story.text)
        assert result and result.ok and result.reason == ""


def unused_name(text: str) -> str:
    present = set(words(text))
    return next(n for n in TALES.boys + TALES.girls if n not in present)


def test_a_name_swapped_for_one_never_introduced_is_rejected_with_that_name() -> None:
    checked = 0
    for story in STORIES:
        first, *rest = sentences(story.text)
        hero = next(w for w in words(first) if w in TALES.girls + TALES.boys)
        for i, sentence in enumerate(rest, start=2):
            if re.search(rf"\b{hero}\b", sentence):
                stranger = unused_name(story.text)
                rest[i - 2] = re.sub(rf"\b{hero}\b", stranger, sentence, count=1)
                mutated = " ".join([first, *rest])
                result = TALES.is_valid(mutated)
                assert not result
                assert f"'{stranger}'" in result.reason and "never introduced" in result.reason
                assert f"sentence {i}" in result.reason
                assert TALES.log_prob(mutated) == -math.inf
                checked += 1
                break
    assert checked > 500


def test_dropping_the_sentence_that_introduces_the_friend_is_rejected() -> None:
    checked = 0
    for story in STORIES:
        parts = sentences(story.text)
        for i in range(len(parts) - 1):
            met = re.search(r"named ([A-Z][a-z]+)\.$", parts[i])
            if met and re.match(rf"((Then|Later,|Soon,|After that,) )?{met.group(1)}\b",
                                parts[i + 1]):
                result = TALES.is_valid(" ".join(parts[:i] + parts[i + 1:]))
                assert not result
                assert f"'{met.group(1)}'" in result.reason and "never introduced" in result.reason
                checked += 1
    assert checked > 50


def test_dropping_the_first_sentence_or_all_but_two_is_rejected() -> None:
    for story in STORIES[:200]:
        parts = sentences(story.text)
        result = TALES.is_valid(" ".join(parts[1:]))
        assert not result and "sentence 1" in result.reason
        result = TALES.is_valid(" ".join(parts[:2]))
        assert not result and "at least 3" in result.reason


def test_an_object_called_by_another_adjective_is_rejected() -> None:
    checked = 0
    for story in STORIES:
        first, *rest = sentences(story.text)
        adj = next(w for w in words(first) if w in TALES.adjectives)
        other = next(a for a in TALES.adjectives if a != adj)
        for i, sentence in enumerate(rest):
            if re.search(rf"\b{adj}\b", sentence):
                rest[i] = re.sub(rf"\b{adj}\b", other, sentence, count=1)
                result = TALES.is_valid(" ".join([first, *rest]))
                assert not result
                assert f"'{other}'" in result.reason and adj in result.reason
                checked += 1
                break
    assert checked > 300


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**9), where=st.floats(0, 0.999))
def test_an_unknown_word_is_rejected_by_name(seed: int, where: float) -> None:
    text = TALES.sample(1, seed)[0].text
    spans = [m.span() for m in re.finditer(r"[A-Za-z]+", text)]
    start, end = spans[int(where * len(spans))]
    result = TALES.is_valid(text[:start] + "blorptang" + text[end:])
    assert not result and "unknown word 'blorptang'" in result.reason


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**9), where=st.floats(0, 0.999),
       replacement=st.sampled_from(sorted(TALES.vocabulary)))
def test_is_valid_and_log_prob_agree_on_arbitrary_word_replacements(
    seed: int, where: float, replacement: str
) -> None:
    text = TALES.sample(1, seed)[0].text
    spans = [m.span() for m in re.finditer(r"[A-Za-z]+", text)]
    start, end = spans[int(where * len(spans))]
    mutated = text[:start] + replacement + text[end:]
    result = TALES.is_valid(mutated)
    logp = TALES.log_prob(mutated)
    if result:
        assert -math.inf < logp < 0
    else:
        assert logp == -math.inf and len(result.reason) > 10


@pytest.mark.parametrize("text, expected", [
    ("", "empty"),
    ("Once upon a time, Mia found a red kite in the park.\nMia smiled.", "newline"),
    ("Once upon a time, Mia found a red kite in the park!", "'!'"),
    ("Once upon a time,  Mia found a red kite in the park.", "spacing"),
    ("Once upon a time, Mia found a red kite in the park. Mia smiled. Mia laughed", "unfinished"),
    ("Once upon a time, Mia found a red kite in the park. Mia lost the kite. Mia lost the kite.",
     "lost"),
    ("Once upon a time, Mia found a red kite in the park. Mia went to the park. Mia smiled.",
     "already there"),
    ("Once upon a time, Mia found a red kite in the park. Mia met a girl named Zoe. She smiled. "
     "Zoe smiled.", "ambiguous"),
    ("Once upon a time, Mia found a red kite in the park. He smiled. Mia smiled.", "girl"),
    ("Once upon a time, Mia found a red kite in the park. Mia played with the red ball. Mia "
     "smiled.", "ball"),
])
def test_reasons_name_the_problem(text: str, expected: str) -> None:
    result = TALES.is_valid(text)
    assert not result and expected in result.reason


def test_non_string_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        TALES.log_prob(b"Once upon a time")  # type: ignore[arg-type]


def test_world_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 2 places"):
        TinyTales(places=["park"])
    with pytest.raises(ValueError, match="unknown noun"):
        TinyTales(nouns=["spaceship"])
    with pytest.raises(ValueError, match="also used"):
        TinyTales(adjectives=["kite"])
    with pytest.raises(ValueError, match="min_sentences"):
        TinyTales(min_sentences=4, max_sentences=3)
    with pytest.raises(ValueError, match="more than 10"):
        tiny_world(2).enumerate_stories(max_stories=10)


def test_vocabulary_has_a_few_hundred_words() -> None:
    vocab = {w for s in STORIES for w in words(s.text)}
    assert vocab <= TALES.vocabulary
    assert 200 <= len(TALES.vocabulary) <= 600


def test_tiny_tales_text_is_stories_each_followed_by_a_newline() -> None:
    text = tiny_tales_text(50, seed=4)
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text.split("\n")[:-1] == [s.text for s in TALES.sample(50, seed=4)]


# ---------------------------------------------------------------------------------------------
# Count-based baselines
# ---------------------------------------------------------------------------------------------


def reference_bits(train: list[str], test: list[str], k: float, order: int) -> float:
    """Straightforward add-k character model with the newline-per-document accounting."""
    tr = "".join(d + "\n" for d in train)
    te = "".join(d + "\n" for d in test)
    v = len(set(tr) | set(te))
    if order == 1:
        counts = Counter(tr)
        return -sum(math.log2((counts[c] + k) / (len(tr) + k * v)) for c in te) / len(te)
    pairs = Counter(zip("\n" + tr[:-1], tr, strict=True))
    ctx = Counter("\n" + tr[:-1])
    return -sum(math.log2((pairs[a, b] + k) / (ctx[a] + k * v))
                for a, b in zip("\n" + te[:-1], te, strict=True)) / len(te)


docs = st.lists(st.text(alphabet="ab c.\néZ", max_size=30), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(train=docs, test=docs, k=st.sampled_from([0.01, 0.5, 1.0, 3.0]))
def test_baselines_match_a_reference_implementation(train: list[str], test: list[str],
                                                    k: float) -> None:
    assert bigram_bits_per_char(train, test, k) == pytest.approx(
        reference_bits(train, test, k, 2), rel=1e-9)
    assert unigram_bits_per_char(train, test, k) == pytest.approx(
        reference_bits(train, test, k, 1), rel=1e-9)


def test_bigram_learns_what_the_unigram_cannot() -> None:
    alternating = ["ab" * 500]
    assert bigram_bits_per_char(alternating, alternating, k=0.01) < 0.05
    assert unigram_bits_per_char(alternating, alternating, k=0.01) > 0.9
    rng = random.Random(0)
    noise = ["".join(rng.choice("abcd") for _ in range(20_000))]
    assert unigram_bits_per_char(noise, noise) == pytest.approx(2.0, abs=0.05)


def test_baselines_reject_a_bare_string() -> None:
    with pytest.raises(TypeError, match="list of documents"):
        bigram_bits_per_char("some text", ["x"])
    with pytest.raises(ValueError, match="empty"):
        unigram_bits_per_char([], ["x"])


# ---------------------------------------------------------------------------------------------
# Offline text
# ---------------------------------------------------------------------------------------------


def test_python_docs_text_is_deterministic_plain_text() -> None:
    text = python_docs_text()
    assert text == python_docs_text() and len(text) > 100_000
    assert not re.search(r"[\u2018\u2019\u201c\u201d\u2013\u2014\u2026\t]", text)
    assert "\n\n\n" not in text and not re.search(r" +\n", text)
    assert python_docs_text(max_chars=1000) == text[:1000]
    with pytest.raises(ValueError, match="max_chars"):
        python_docs_text(max_chars=0)


def test_read_text_file_reads_utf8_and_normalises_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfcaf\xc3\xa9\r\nline two\n")
    assert read_text_file(path) == "café\nline two\n"
    assert read_text_file(str(path)) == "café\nline two\n"


def test_read_text_file_errors_say_what_was_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_text_file(missing)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_text_file(empty)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"PK\x03\x04" + bytes(range(256)))
    with pytest.raises(ValueError, match="binary.*offset 4"):
        read_text_file(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("naïve café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"0xef at offset 2.*UTF-8"):
        read_text_file(latin)
    with pytest.raises(IsADirectoryError):
        read_text_file(tmp_path)


# ---------------------------------------------------------------------------------------------
# Downloads, against a loopback server only
# ---------------------------------------------------------------------------------------------

PAYLOAD = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        body = b"x" * 50_000 if self.path.startswith("/big") else PAYLOAD
        if self.path == "/slow.txt":
            time.sleep(1.5)
        self.send_response(200)
        if not self.path.endswith("-nolength.txt"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hung up on purpose (timeouts, size limits)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("LLAMA_EDU_CACHE", str(tmp_path / "cache"))
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_saves_into_the_cache_and_checks_the_hash(server, tmp_path: Path) -> None:
    _, base = server
    path = download(f"{base}/input.txt", sha256=PAYLOAD_SHA)
    assert path == tmp_path / "cache" / "input.txt"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(path.parent) == ["input.txt"]


def test_download_with_wrong_hash_keeps_nothing(server, tmp_path: Path) -> None:
    _, base = server
    with pytest.raises(ValueError, match="SHA-256 mismatch") as info:
        download(f"{base}/input.txt", "bad.txt", sha256="0" * 64)
    assert PAYLOAD_SHA in str(info.value)
    assert leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("name", ["big.txt", "big-nolength.txt"])
def test_download_over_the_size_limit_is_aborted(server, tmp_path: Path, name: str) -> None:
    _, base = server
    with pytest.raises(ValueError, match="max_bytes=10000"):
        download(f"{base}/{name}", max_bytes=10_000)
    assert leftovers(tmp_path / "cache") == []


def test_download_times_out_and_keeps_nothing(server, tmp_path: Path) -> None:
    _, base = server
    start = time.perf_counter()
    with pytest.raises(TimeoutError, match="timeout"):
        download(f"{base}/slow.txt", timeout=0.3)
    assert time.perf_counter() - start < 1.4
    assert leftovers(tmp_path / "cache") == []


def test_unreachable_server_gives_the_offline_error(server, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NoInternetError, match="no internet.*tiny-tales") as info:
        download(f"http://127.0.0.1:{port}/input.txt", timeout=2)
    assert isinstance(info.value, ConnectionError)
    assert leftovers(tmp_path / "cache") == []


def test_cached_file_is_reused_without_network(server, tmp_path: Path) -> None:
    srv, base = server
    first = download(f"{base}/input.txt", "corpus.txt", sha256=PAYLOAD_SHA)
    srv.shutdown()
    srv.server_close()
    again = download(f"{base}/input.txt", "corpus.txt", sha256=PAYLOAD_SHA)
    assert again == first and again.read_bytes() == PAYLOAD
    first.write_bytes(b"corrupted")  # a stale copy must not be trusted; the server is gone
    with pytest.raises(NoInternetError):
        download(f"{base}/input.txt", "corpus.txt", sha256=PAYLOAD_SHA, timeout=2)


def test_download_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        download("ftp://example.org/x.txt", tmp_path / "x.txt")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download("http://127.0.0.1:9/x.txt", tmp_path / "x.txt", sha256="abc")


def test_load_corpus_by_name_or_path(server, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, base = server
    monkeypatch.setitem(data.CORPORA, "tiny-shakespeare",
                        CorpusSource(f"{base}/input.txt", PAYLOAD_SHA, len(PAYLOAD)))
    assert load_corpus("tiny-shakespeare") == PAYLOAD.decode()
    assert load_corpus("python-docs") == python_docs_text()
    tales = load_corpus("tiny-tales")
    assert tales.count("\n") == data.TINY_TALES_DEFAULT_STORIES
    assert TALES.is_valid(tales.split("\n")[0])
    own = tmp_path / "mine.txt"
    own.write_text("hello\n", encoding="utf-8")
    assert load_corpus(str(own)) == "hello\n"
    with pytest.raises(FileNotFoundError, match="tiny-tales"):
        load_corpus("shakespeare-complete")


def test_registry_entry_for_tiny_shakespeare() -> None:
    src = data.CORPORA["tiny-shakespeare"]
    assert src.url.startswith("https://raw.githubusercontent.com/karpathy/char-rnn/")
    assert src.size == 1_115_394 and re.fullmatch(r"[0-9a-f]{64}", src.sha256)


# ---------------------------------------------------------------------------------------------
# Train / validation splits
# ---------------------------------------------------------------------------------------------


lines_text = st.lists(st.text(alphabet="abc .", max_size=12), min_size=2, max_size=60).map(
    lambda ls: "\n".join(ls) + "\n")


@settings(max_examples=80, deadline=None)
@given(text=lines_text, frac=st.floats(0.01, 0.99), seed=st.integers(0, 1000))
def test_line_split_partitions_the_lines(text: str, frac: float, seed: int) -> None:
    train, val = train_val_split(text, frac, seed)
    assert (train, val) == train_val_split(text, frac, seed)
    assert len(train) + len(val) == len(text)
    lines = text.splitlines(keepends=True)
    assert Counter(train.splitlines(keepends=True)) + Counter(
        val.splitlines(keepends=True)) == Counter(lines)
    n_val = len(val.splitlines())
    assert 1 <= n_val <= len(lines) - 1
    assert abs(n_val - frac * len(lines)) <= 1


def test_split_depends_on_the_seed_and_keeps_order() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    a = train_val_split(text, 0.1, seed=0)
    assert a != train_val_split(text, 0.1, seed=1)
    numbers = [int(x.split()[1]) for x in a[1].splitlines()]
    assert numbers == sorted(numbers) and len(numbers) == 100


def test_paragraph_and_tail_splits() -> None:
    text = "".join(f"para {i} line a\npara {i} line b\n\n" for i in range(20))
    train, val = train_val_split(text, 0.25, seed=3, unit="paragraph")
    assert len(train) + len(val) == len(text)
    assert val.count("line a") == 5 and val.count("line b") == 5
    head, tail = train_val_split("abcdefghij", 0.3, unit="tail")
    assert (head, tail) == ("abcdefg", "hij")


def test_split_errors() -> None:
    for bad in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            train_val_split("a\nb\n", bad)
    with pytest.raises(ValueError, match="at least 2 lines"):
        train_val_split("only one line\n")
    with pytest.raises(ValueError, match="unit"):
        train_val_split("a\nb\n", unit="word")
