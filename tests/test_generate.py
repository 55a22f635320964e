"""Generation: cached == recomputed, ragged batches, stop ids, top-k / top-p, sampling, beams."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from llama_edu.generate import (
    beam_search,
    beam_search_candidates,
    generate,
    kv_cache_bytes,
    next_token_distribution,
    sample_top_p,
    stream,
    top_k_filter,
    top_p_filter,
)
from llama_edu.model import Llama, ModelArgs

PROMPTS = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [4, 4, 4], [9, 8, 7, 6, 5], [42]]


@pytest.fixture(scope="module")
def model() -> Llama:
    """The tiny preset in float64 with weights of order one, so logits rarely come near a tie."""
    torch.manual_seed(0)
    llama = Llama(ModelArgs.from_name("tiny"))
    with torch.no_grad():
        for module in llama.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=1 / math.sqrt(module.in_features))
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1.0)
    return llama.double()


class Bigram(nn.Module):
    """A toy model: the next-token log-probabilities depend only on the last token."""

    def __init__(self, probs: torch.Tensor, max_seq_len: int = 32) -> None:
        super().__init__()
        self.register_buffer("table", torch.log_softmax(probs.double().log(), dim=-1))
        self.args = SimpleNamespace(max_seq_len=max_seq_len, vocab_size=probs.shape[0])

    def forward(self, tokens: torch.Tensor, cache: object = None) -> torch.Tensor:
        return self.table[tokens]


def sequence_logprob(toy: Bigram, start: int, continuation: list[int]) -> float:
    """Total log-probability of a continuation under the toy model."""
    path = [start, *continuation]
    return sum(toy.table[a, b].item() for a, b in itertools.pairwise(path))


def brute_force_best(
    toy: Bigram, start: int, n: int, stops: set[int], length_penalty: float
) -> tuple[list[int], float]:
    """Best-scoring continuation of up to n ids (ending at the first stop id), by enumeration."""
    vocab = toy.table.shape[0]
    seen: dict[tuple[int, ...], float] = {}
    for seq in itertools.product(range(vocab), repeat=n):
        cut = next((i + 1 for i, t in enumerate(seq) if t in stops), n)
        hyp = seq[:cut]
        if hyp not in seen:
            seen[hyp] = sequence_logprob(toy, start, list(hyp)) / len(hyp) ** length_penalty
    best = max(seen, key=seen.__getitem__)
    return list(best), seen[best]


# --- greedy, the cache, batches, stop ids --------------------------------------------------


def test_cached_greedy_equals_recomputing_the_whole_sequence(model):
    for prompt in PROMPTS:
        cached = generate(model, prompt, 32)
        assert cached == generate(model, prompt, 32, use_cache=False)
        assert len(cached) == 32 and len(set(cached)) > 10  # a non-degenerate continuation


def test_ragged_batch_equals_each_row_alone(model):
    alone = [generate(model, prompt, 12) for prompt in PROMPTS]
    assert generate(model, PROMPTS, 12) == alone
    assert generate(model, PROMPTS, 12, use_cache=False) == alone
    square = torch.tensor([PROMPTS[0], PROMPTS[2]])
    assert generate(model, square, 12) == [alone[0], alone[2]]


def test_return_format_and_the_prompt_is_left_alone(model):
    prompt = [1, 2, 3]
    out = generate(model, prompt, 5)
    assert prompt == [1, 2, 3] and len(out) == 5 and all(isinstance(t, int) for t in out)
    assert generate(model, torch.tensor(prompt), 5) == out
    assert generate(model, [prompt], 5) == [out]
    assert generate(model, prompt, 0) == [] and generate(model, [prompt, [7]], 0) == [[], []]


def test_stop_id_ends_the_row_and_is_included(model):
    full = [generate(model, prompt, 20) for prompt in PROMPTS]
    stop = full[0][6]
    for prompt, row in zip(PROMPTS, full, strict=True):
        expected = row[: row.index(stop) + 1] if stop in row else row
        assert generate(model, prompt, 20, stop_ids=[stop]) == expected
    assert generate(model, PROMPTS, 20, stop_ids={stop}) == [
        row[: row.index(stop) + 1] if stop in row else row for row in full
    ]
    assert generate(model, PROMPTS[0], 20, stop_ids=stop)[-1] == stop


def test_stream_yields_what_generate_returns(model):
    assert list(stream(model, PROMPTS[1], 15)) == generate(model, PROMPTS[1], 15)
    stop = generate(model, PROMPTS[1], 15)[4]
    assert list(stream(model, PROMPTS[1], 15, stop_ids=[stop])) == generate(
        model, PROMPTS[1], 15, stop_ids=[stop]
    )
    sampled = [
        list(stream(model, [3], 10, temperature=1.0, generator=torch.Generator().manual_seed(5))),
        generate(model, [3], 10, temperature=1.0, generator=torch.Generator().manual_seed(5)),
    ]
    assert sampled[0] == sampled[1]


def test_stream_leaves_grad_mode_and_training_mode_alone(model):
    model.train()
    tokens = stream(model, [1, 2], 3)
    next(tokens)
    assert torch.is_grad_enabled()  # no no_grad leaking out of the paused generator
    list(tokens)
    assert model.training
    model.eval()
    generate(model, [1, 2], 3)
    assert not model.training


# --- sampling ------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible(model):
    def draw(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, PROMPTS, 12, temperature=1.0, top_k=50, top_p=0.9, generator=gen)

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_a_tiny_temperature_is_greedy(model):
    gen = torch.Generator().manual_seed(0)
    for prompt in PROMPTS[:2]:
        assert generate(model, prompt, 30, temperature=1e-4, generator=gen) == generate(
            model, prompt, 30
        )
    logits = torch.tensor([1.0, 3.0, 2.9, -1.0])
    for temperature in (1e-3, 1e-6, 1e-30):
        torch.testing.assert_close(
            next_token_distribution(logits, temperature), torch.tensor([0.0, 1.0, 0.0, 0.0])
        )


def reference_distribution(
    logits: list[float], temperature: float, top_k: int | None, top_p: float | None
) -> list[float]:
    """The sampling distribution written out in plain Python, one rule at a time."""
    scaled = [x / temperature for x in logits]
    order = sorted(range(len(logits)), key=lambda i: -scaled[i])
    allowed = set(order[:top_k] if top_k is not None else order)
    weights = [math.exp(s) if i in allowed else 0.0 for i, s in enumerate(scaled)]
    probs = [w / sum(weights) for w in weights]
    if top_p is not None:
        mass, kept = 0.0, set()
        for i in order:
            if mass >= top_p:
                break
            kept.add(i)
            mass += probs[i]
        probs = [q if i in kept else 0.0 for i, q in enumerate(probs)]
    return [q / sum(probs) for q in probs]


LOGITS = [2.0, 1.0, 0.5, 0.0, -0.3, -1.0, -2.0, 1.5]


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8), (0.7, 5, 0.9), (2.0, 2, 1.0)],
)
def test_next_token_distribution_matches_the_written_out_rules(temperature, top_k, top_p):
    out = next_token_distribution(
        torch.tensor(LOGITS, dtype=torch.float64), temperature, top_k, top_p
    )
    expected = reference_distribution(LOGITS, temperature, top_k, top_p)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_temperature_zero_is_one_hot_at_the_argmax():
    out = next_token_distribution(torch.tensor(LOGITS), 0.0, top_k=3, top_p=0.5)
    assert out.tolist() == [1.0] + [0.0] * 7


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic over the tokens with positive probability, and its degrees of freedom."""
    support = probs > 0
    assert counts[~support].sum() == 0, "a filtered-out token was drawn"
    expected = probs[support] * counts.sum()
    return float(((counts[support] - expected) ** 2 / expected).sum()), int(support.sum()) - 1


def test_sampled_frequencies_match_the_filtered_distribution():
    draws, vocab = 4000, len(LOGITS)
    table = torch.softmax(torch.tensor(LOGITS), dim=0).expand(vocab, vocab)  # next id ~ LOGITS
    toy = Bigram(table)
    settings_ = {"temperature": 0.8, "top_k": 6, "top_p": 0.9}
    probs = next_token_distribution(toy.table[0].float(), **settings_)
    rows = generate(toy, [[0]] * draws, 1, generator=torch.Generator().manual_seed(0), **settings_)
    counts = torch.bincount(torch.tensor(rows).flatten(), minlength=vocab).double()
    stat, dof = chi_square(counts, probs.double())
    assert stat < dof + 5 * math.sqrt(2 * dof)  # about five standard deviations of chi2(dof)

    p = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    ids = sample_top_p(p.expand(draws, 5), 0.8, generator=torch.Generator().manual_seed(1))
    assert ids.shape == (draws,)
    stat, dof = chi_square(torch.bincount(ids, minlength=5).double(), top_p_filter(p, 0.8).double())
    assert stat < dof + 5 * math.sqrt(2 * dof)
    assert sample_top_p(p, 0.5).shape == ()


# --- top-k and top-p filters ---------------------------------------------------------------


def test_top_p_worked_examples():
    p = torch.tensor([0.5, 0.3, 0.2])
    torch.testing.assert_close(top_p_filter(p, 0.6), torch.tensor([0.625, 0.375, 0.0]))
    torch.testing.assert_close(top_p_filter(p, 0.5), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(top_p_filter(p, 1.0), p)
    shuffled = torch.tensor([[0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])
    torch.testing.assert_close(
        top_p_filter(shuffled, 0.6), torch.tensor([[0.0, 0.625, 0.375], [0.375, 0.0, 0.625]])
    )
    # a tiny top_p still keeps the most likely token; p = 1 keeps even negligible ones
    assert top_p_filter(p, 1e-9).tolist() == [1.0, 0.0, 0.0]
    assert (top_p_filter(torch.tensor([1.0 - 1e-7, 1e-7]), 1.0) > 0).all()


def test_top_k_worked_examples_and_ties():
    logits = torch.tensor([1.0, 3.0, 2.0, 3.0])
    assert top_k_filter(logits, 2).tolist() == [-math.inf, 3.0, -math.inf, 3.0]
    kept = torch.isfinite(top_k_filter(logits, 1))  # a tie at the boundary: still exactly k
    assert kept.sum() == 1 and logits[kept].item() == 3.0
    assert top_k_filter(logits, 10).tolist() == logits.tolist()
    assert top_k_filter(torch.zeros(2, 3, 5), 2).isfinite().sum(-1).eq(2).all()


prob_lists = st.lists(st.floats(0, 1), min_size=1, max_size=30).filter(lambda xs: sum(xs) > 1e-6)


@settings(max_examples=200, deadline=None)
@given(prob_lists, st.floats(1e-6, 1.0))
def test_top_p_properties(raw, p):
    probs = torch.tensor(raw, dtype=torch.float64)
    probs = probs / probs.sum()
    out = top_p_filter(probs, p)
    kept = out > 0
    assert math.isclose(out.sum().item(), 1.0, abs_tol=1e-9)
    assert kept[probs.argmax()]  # the most likely token (lowest id among equals) is kept
    if (~kept).any():
        assert probs[kept].min() >= probs[~kept].max()  # a prefix of the sorted order
    mass = probs[kept].sum().item()
    assert mass >= p - 1e-9  # enough mass: the token that crosses p is kept ...
    assert mass - probs[kept].min().item() < p + 1e-9  # ... and nothing beyond it
    torch.testing.assert_close(out[kept], probs[kept] / mass)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=30), st.integers(1, 35))
def test_top_k_properties(raw, k):
    logits = torch.tensor(raw)
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    assert kept.sum() == min(k, len(raw))
    assert torch.equal(out[kept], logits[kept])
    largest = sorted(logits.tolist(), reverse=True)[: min(k, len(raw))]
    assert sorted(out[kept].tolist(), reverse=True) == largest


# --- beam search ---------------------------------------------------------------------------


def test_beam_width_one_is_greedy(model):
    for prompt in PROMPTS[:3]:
        assert beam_search(model, prompt, 1, 15) == generate(model, prompt, 15)
    stop = generate(model, PROMPTS[0], 15)[5]
    assert beam_search(model, PROMPTS[0], 1, 15, length_penalty=0.0, stop_ids=[stop]) == generate(
        model, PROMPTS[0], 15, stop_ids=[stop]
    )


def test_beam_search_with_and_without_the_cache_agree(model):
    with_cache = beam_search_candidates(model, PROMPTS[1], 3, 12)
    without = beam_search_candidates(model, PROMPTS[1], 3, 12, use_cache=False)
    assert [seq for seq, _ in with_cache] == [seq for seq, _ in without]
    torch.testing.assert_close(
        torch.tensor([s for _, s in with_cache]), torch.tensor([s for _, s in without])
    )
    assert len(with_cache) == 3 and all(len(seq) == 12 for seq, _ in with_cache)


def test_beam_search_beats_myopic_greedy():
    # from 0, token 1 looks best (0.6) but leads nowhere (uniform); token 2 leads to 3 (0.97)
    probs = torch.tensor(
        [
            [0.0, 0.6, 0.4, 0.0],
            [0.25, 0.25, 0.25, 0.25],
            [0.01, 0.01, 0.01, 0.97],
            [0.25, 0.25, 0.25, 0.25],
        ],
        dtype=torch.float64,
    )
    toy = Bigram(probs + 1e-12)
    best, _ = brute_force_best(toy, 0, 2, set(), length_penalty=1.0)
    greedy = generate(toy, [0], 2)
    assert best == [2, 3] and greedy[0] == 1
    assert sequence_logprob(toy, 0, greedy) < sequence_logprob(toy, 0, best)
    assert beam_search(toy, [0], 2, 2) == best
    (seq, score), _ = beam_search_candidates(toy, [0], 2, 2)
    assert seq == best and math.isclose(score, math.log(0.4 * 0.97) / 2, rel_tol=1e-9)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_beam_search_finds_the_brute_force_optimum(seed, length_penalty):
    vocab, n, stops = 4, 4, {3}
    gen = torch.Generator().manual_seed(seed)
    toy = Bigram(torch.softmax(2 * torch.randn(vocab, vocab, generator=gen), dim=-1))
    best, best_score = brute_force_best(toy, 0, n, stops, length_penalty)
    width = (vocab - len(stops)) ** (n - 1)  # wide enough to keep every live prefix
    (seq, score), *_ = beam_search_candidates(toy, [0], width, n, length_penalty, stop_ids=stops)
    assert seq == best and math.isclose(score, best_score, rel_tol=1e-9)


def test_length_penalty_decides_between_stopping_early_and_a_long_likely_run():
    # from 0: stop (id 2) at 0.55 or token 1 at 0.45; after 1, token 1 again is almost certain
    probs = torch.tensor(
        [[0.0, 0.45, 0.55], [0.0, 0.99, 0.01], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64
    )
    toy = Bigram(probs + 1e-12)
    assert generate(toy, [0], 6, stop_ids=[2]) == [2]
    for length_penalty, expected in [(0.0, [2]), (1.0, [1] * 6)]:
        best, _ = brute_force_best(toy, 0, 6, {2}, length_penalty)
        assert best == expected
        # the early stop must not end the search while [1] can still grow into the winner
        assert beam_search(toy, [0], 2, 6, length_penalty, stop_ids=[2]) == expected


def test_beam_search_zero_new_tokens(model):
    assert beam_search(model, [1], 3, 0) == []


# --- memory and bad input ------------------------------------------------------------------


def test_kv_cache_bytes():
    args = ModelArgs.from_name("tiny")
    cache = Llama(args).init_cache(3, 100)
    assert kv_cache_bytes(args, 100, batch_size=3, bytes_per_value=4) == cache.memory_bytes()
    # Llama 2 7B: 32 layers, 32 kv heads of 128 in float16 -> 0.5 MiB a token, 2 GiB for 4096
    assert kv_cache_bytes(ModelArgs.from_name("llama2-7b"), 4096) == 2 * 2**30
    with pytest.raises(ValueError, match="seq_len >= 0"):
        kv_cache_bytes(args, -1)


BAD_CALLS = [
    ({"temperature": -0.1}, "temperature must be a finite number >= 0"),
    ({"temperature": float("nan")}, "temperature must be"),
    ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
    ({"top_k": 0}, "top_k must be an int >= 1"),
    ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
    ({"max_new_tokens": 300}, "more than model.args.max_seq_len=256"),
    ({"prompt": []}, "non-empty list of token ids"),
    ({"prompt": [[1, 2], []]}, "prompt row 1 is empty"),
    ({"prompt": torch.zeros(0, dtype=torch.long)}, "the prompt is empty"),
    ({"prompt": torch.zeros(2, 3)}, "integer ids"),
    ({"prompt": "hello"}, "Encode text with a tokenizer"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CALLS)
def test_bad_input_to_generate_and_stream(model, change, message):
    call = {"prompt": [1, 2, 3], "max_new_tokens": 4, **change}
    with pytest.raises(ValueError, match=message):
        generate(model, **call)
    if not (isinstance(call["prompt"], list) and call["prompt"][:1] == [[1, 2]]):  # no batches
        with pytest.raises(ValueError, match=message):
            stream(model, **call)  # raised at the call, before the first token


def test_bad_input_elsewhere(model):
    with pytest.raises(ValueError, match="beam_width must be an int >= 1"):
        beam_search(model, [1], 0, 3)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        beam_search(model, [1], 2, -1)
    with pytest.raises(ValueError, match="more than model.args.max_seq_len"):
        beam_search(model, [1] * 250, 2, 10)
    with pytest.raises(ValueError, match="continues one prompt"):
        stream(model, [[1], [2]], 3)
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        top_k_filter(torch.zeros(4), 0)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        top_p_filter(torch.ones(4) / 4, -0.2)
    with pytest.raises(ValueError, match="temperature"):
        next_token_distribution(torch.zeros(4), -1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cpu_generator_samples_a_gpu_model_like_the_cpu_one(model):
    # tales_report and the notebooks seed a torch.Generator() on the CPU whatever the device
    on_gpu = Llama(model.args).cuda()
    on_gpu.load_state_dict(model.state_dict())
    draws = [
        generate(m, [1, 2], 20, temperature=1.0, generator=torch.Generator().manual_seed(0))
        for m in (model, on_gpu)
    ]
    assert draws[0] == draws[1]
