"""generate.speculative_generate: the target's greedy output exactly, and its distribution."""

from __future__ import annotations

import itertools

import pytest
import torch

from llama_edu.generate import generate, speculative_generate
from llama_edu.model import Llama, ModelArgs
from llama_edu.train import load_pretrained


def small(seed: int, vocab: int = 512, dim: int = 32, sharp: float = 1.0,
          max_seq_len: int = 64) -> Llama:
    torch.manual_seed(seed)
    model = Llama(ModelArgs(dim=dim, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=vocab,
                            multiple_of=16, max_seq_len=max_seq_len))
    with torch.no_grad():
        model.output.weight.mul_(sharp)  # sharper next-token distributions
    return model.eval()


@pytest.fixture(scope="module")
def shipped():
    model, tok = load_pretrained()
    return model.eval(), tok


@pytest.mark.parametrize("k", [1, 4])
def test_greedy_output_is_the_targets_own_greedy_output(shipped, k):
    target, tok = shipped
    prompt = tok.encode("Once upon a time,", bos=True)
    expected = generate(target, prompt, 40, temperature=0.0)
    for draft in (small(0), target):  # a poor draft, and a perfect one
        stats: dict[str, int] = {}
        out = speculative_generate(target, draft, prompt, 40, k=k, stats=stats)
        assert out == expected
        if draft is target:  # every proposal is kept: each round yields k + 1 tokens
            assert stats["accepted"] == stats["proposed"]
            assert stats["target_calls"] < 40
    assert speculative_generate(target, small(1), prompt, 0, k=k) == []


def exact_pairs(model: Llama, prompt: list[int], temperature: float) -> torch.Tensor:
    """P(first two new tokens = (a, b)) under `model`, as a (vocab, vocab) table."""
    vocab = model.args.vocab_size
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([prompt]))[0, -1].double() / temperature, -1)
        rows = torch.tensor([[*prompt, a] for a in range(vocab)])
        second = torch.softmax(model(rows)[:, -1].double() / temperature, -1)
    return first[:, None] * second


def markov(first: list[float]) -> Llama:
    """A Llama whose next-token distribution depends on the last token only: after token t it
    is `first` rotated by t. Attention and feed-forward write nothing (wo = w2 = 0), so the
    logits are output.weight @ rmsnorm(embedding of t)."""
    vocab, dim = len(first), 4
    model = Llama(ModelArgs(dim=dim, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=vocab,
                            multiple_of=16, max_seq_len=8))
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.zero_()
        model.tok_embeddings.weight[:, :vocab] = torch.eye(vocab)  # rmsnorm: 2 * one-hot
        logp = torch.tensor(first).log()
        for t in range(vocab):
            model.output.weight[:, t] = logp.roll(t) / 2
    return model.eval()


def test_sampling_keeps_the_targets_distribution_exactly():
    prompt, draws, vocab = [0], 1500, 3
    target, draft = markov([0.7, 0.2, 0.1]), markov([0.1, 0.2, 0.7])
    exact = exact_pairs(target, prompt, 1.0).flatten()
    p, q = exact_pairs(target, prompt, 1.0).sum(1), exact_pairs(draft, prompt, 1.0).sum(1)
    torch.testing.assert_close(p, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64),
                               atol=1e-4, rtol=0)  # the models are what they claim
    # two rules that look plausible and are wrong: resampling a rejected token from p instead
    # of max(0, p - q), and keeping every proposal; each gives another first-token distribution
    kept = torch.minimum(p, q)
    from_p = kept + (1 - kept.sum()) * p
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(vocab * vocab, dtype=torch.float64)
    firsts = torch.zeros(vocab, dtype=torch.float64)
    for _ in range(draws):
        # 3 tokens with k = 2: the first round proposes two, so a rejection can come at either
        a, b, _ = speculative_generate(target, draft, prompt, 3, k=2, temperature=1.0,
                                       generator=gen)
        counts[a * vocab + b] += 1
        firsts[a] += 1

    def chi_square(observed: torch.Tensor, probabilities: torch.Tensor) -> float:
        expected = observed.sum() * probabilities
        return float(((observed - expected) ** 2 / expected).sum())

    # chi-square quantiles at 0.9999: 8 degrees of freedom 31.8, 2 degrees of freedom 18.4
    assert chi_square(counts, exact) < 31.8
    assert chi_square(firsts, p) < 18.4
    assert chi_square(firsts, from_p) > 18.4  # the counts would catch either wrong rule
    assert chi_square(firsts, q) > 18.4


def test_speculative_sampling_is_seeded():
    target, draft = small(0), small(3)
    runs = [speculative_generate(target, draft, [5, 6], 20, k=3, temperature=0.8,
                                 generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2] and len(runs[0]) == 20


@pytest.mark.parametrize("kwargs, error, words", [
    ({"k": 0}, ValueError, "k (tokens the draft proposes per round) must be an int >= 1"),
    ({"temperature": -1.0}, ValueError, "temperature must be a finite number >= 0"),
    ({"max_new_tokens": 100}, ValueError, "more than model.args.max_seq_len"),
    ({"draft": small(0, vocab=64)}, ValueError, "the draft's vocabulary (64 ids)"),
    ({"draft": torch.nn.Linear(2, 2)}, TypeError, "draft must be a llama_edu Llama"),
    ({"prompt": []}, ValueError, "must be a non-empty list of token ids"),
])
def test_bad_input_gets_a_clear_error(kwargs, error, words):
    call = {"target": small(0), "draft": small(1), "prompt": [1, 2], "max_new_tokens": 5,
            **kwargs}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        speculative_generate(**call)


def test_every_pair_is_reachable_in_the_exact_table():
    target = small(0, 5, sharp=40.0)
    table = exact_pairs(target, [1, 3], 1.0)
    assert abs(table.sum().item() - 1) < 1e-9
    assert len(list(itertools.product(range(5), repeat=2))) == table.numel()


def test_an_early_exit_draft_is_the_models_first_layers():
    from llama_edu.generate import early_exit_draft
    from llama_edu.train import load_pretrained

    model, tok = load_pretrained()
    model.eval()
    draft = early_exit_draft(model, 2)
    assert draft.args.n_layers == 2 and len(draft.layers) == 2 and model.args.n_layers == 4
    x = torch.tensor([tok.encode("Once upon a time, Mia found a red kite.", bos=True)])
    with torch.no_grad():
        trace = model.trace(x)
        # the draft's logits are the model's logit lens after block 2: final norm, output layer
        expected = model.output(model.norm(trace.hidden_states[2]))
        torch.testing.assert_close(draft(x), expected)
        draft.layers[0].attention.wq.weight.zero_()
    assert model.layers[0].attention.wq.weight.abs().sum() > 0  # a copy, not shared
    prompt = x[0].tolist()
    assert speculative_generate(model, early_exit_draft(model, 1), prompt, 30, k=3) == \
        generate(model, prompt, 30)
    for bad in (0, 4, 2.0, True):
        with pytest.raises(ValueError, match="n_layers must be a whole number from 1 to 3"):
            early_exit_draft(model, bad)
    with pytest.raises(TypeError, match="must be a llama_edu Llama"):
        early_exit_draft(torch.nn.Linear(2, 2), 1)
