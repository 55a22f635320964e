"""Rejection sampling and DPO steps of llama_edu.preference, on tiny random models."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from llama_edu import preference
from llama_edu.model import Llama, ModelArgs
from llama_edu.posttrain import dpo_loss
from llama_edu.preference import dpo_step, failing_word, pair_loss, rejection_sampling_step
from llama_edu.tinytales import TinyTales, Validity
from llama_edu.tokenizer import SentencePieceTokenizer
from llama_edu.train import PRETRAINED_DIR

PREFIX = "Long ago, Tom had a big drum at the zoo. Tom went to the lake."
VALID = PREFIX + " He ran to the farm. The drum fell into a hole."
INVALID = PREFIX + " Zed ran to the farm. The drum fell into a hole."  # Zed: no such name


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(PRETRAINED_DIR / "tokenizer.model")


@pytest.fixture(scope="module")
def tales():
    return TinyTales()


def tiny(vocab_size: int, seed: int = 0, max_seq_len: int = 64) -> Llama:
    torch.manual_seed(seed)
    return Llama(ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=vocab_size,
                           multiple_of=16, max_seq_len=max_seq_len))


class Judge:
    """A stand-in for TinyTales: accepts every text, or none."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept

    def is_valid(self, text: str) -> Validity:
        return Validity(self.accept, "" if self.accept else "judged invalid")


def fake_sampler(monkeypatch, stories, continuation=None):
    """Make the steps 'sample' `stories` from bos and `continuation` from any other prompt."""
    prompts_seen = []

    def sample(model, prompts, stop, temperature, generator):
        prompts_seen.append([list(p) for p in prompts])
        if all(len(p) == 1 for p in prompts):
            assert len(prompts) == len(stories)
            return [list(s) for s in stories]
        return [list(continuation) for _ in prompts]

    monkeypatch.setattr(preference, "_sample_ids", sample)
    return prompts_seen


def scored_logprob(model: Llama, ids: list[int], start: int) -> torch.Tensor:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, one sequence alone."""
    x = torch.tensor([ids])
    logp = torch.log_softmax(model(x[:, :-1]).float(), dim=-1)[0]
    return sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))


# --- the failing word ------------------------------------------------------------------------


def test_failing_word_is_the_first_word_no_story_can_follow(tok, tales):
    ids = tok.encode(INVALID)
    start, end = failing_word(tok, ids, tales)
    assert tok.decode(ids[:start]) == PREFIX
    assert tok.decode(ids[:end]) == PREFIX + " Zed"


def test_a_story_that_ends_too_early_fails_at_its_end(tok, tales):
    ids = tok.encode("Long ago, Tom had a big drum at the zoo.") + [tok.eos_id]
    assert failing_word(tok, ids, tales) == (len(ids) - 1, len(ids))


# --- rejection sampling ----------------------------------------------------------------------


def test_rejection_sampling_trains_only_trainable_parameters(tok):
    model = tiny(tok.vocab_size, max_seq_len=24)
    model.norm.weight.requires_grad_(False)
    frozen = model.norm.weight.detach().clone()
    before = model.output.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # the frozen weight included
    out = rejection_sampling_step(model, tok, optimizer, n_samples=3,
                                  generator=torch.Generator().manual_seed(0), tales=Judge(True))
    assert out["valid"] == 1.0 and out["kept"] == 3 and math.isfinite(out["loss"])
    assert torch.equal(model.norm.weight, frozen)
    assert not torch.equal(model.output.weight, before)


def test_rejection_sampling_loss_is_the_next_token_loss_of_the_kept_stories(tok, monkeypatch):
    model = tiny(tok.vocab_size)
    bad = tok.encode(INVALID) + [tok.eos_id]
    good = tok.encode(VALID)  # stopped at the length limit: eos is added for training
    fake_sampler(monkeypatch, [bad, good, bad])
    row = [tok.bos_id, *good, tok.eos_id]
    with torch.no_grad():
        expected = -scored_logprob(model, row, 1) / (len(row) - 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = rejection_sampling_step(model, tok, optimizer, n_samples=3)
    assert out["kept"] == 1 and out["valid"] == pytest.approx(1 / 3)
    assert out["loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_rejection_sampling_trains_once_on_each_kept_story_in_batches(tok, monkeypatch):
    model = tiny(tok.vocab_size)
    good = tok.encode(VALID) + [tok.eos_id]
    short = tok.encode(PREFIX + " He ran to the farm.") + [tok.eos_id]
    bad = tok.encode(INVALID) + [tok.eos_id]
    samples = [good, bad, short, good, short, bad, good]
    fake_sampler(monkeypatch, samples)
    judge = type("Judge", (), {"is_valid": lambda self, text: Validity(
        "Zed" not in text, "" if "Zed" not in text else "Zed")})()
    kept = [[tok.bos_id, *s] for s in samples if s is not bad]
    with torch.no_grad():  # SGD with lr 0: every batch is scored at the same weights
        per_story = [(-scored_logprob(model, row, 1)).item() for row in kept]
        tokens = [len(row) - 1 for row in kept]
    batches = [range(0, 2), range(2, 4), range(4, 5)]
    expected = sum(sum(per_story[i] for i in b) / sum(tokens[i] for i in b)
                   for b in batches) / len(batches)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    out = rejection_sampling_step(model, tok, optimizer, n_samples=7, tales=judge, batch_size=2)
    assert out["kept"] == 5 and out["steps"] == 3 and out["valid"] == pytest.approx(5 / 7)
    assert out["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_size", [0, -3, 1.5, "8"])
def test_a_bad_batch_size_is_refused(tok, batch_size):
    model = tiny(tok.vocab_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        rejection_sampling_step(model, tok, optimizer, n_samples=2, batch_size=batch_size,
                                tales=Judge(True))


def test_no_valid_sample_means_no_step(tok):
    model = tiny(tok.vocab_size, max_seq_len=24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = rejection_sampling_step(model, tok, optimizer, n_samples=2,
                                  generator=torch.Generator().manual_seed(0), tales=Judge(False))
    assert math.isnan(out["loss"]) and out["valid"] == 0.0 and out["kept"] == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not optimizer.state


# --- DPO -------------------------------------------------------------------------------------


def test_dpo_loss_equals_the_hand_computation_on_a_prefix_pair(tok, monkeypatch):
    model, ref = tiny(tok.vocab_size, 0), tiny(tok.vocab_size, 1).requires_grad_(False)
    model.norm.weight.requires_grad_(False)
    frozen = model.norm.weight.detach().clone()
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    model_before = model.output.weight.detach().clone()
    prefix, valid, invalid = tok.encode(PREFIX), tok.encode(VALID), tok.encode(INVALID)
    assert valid[: len(prefix)] == prefix and invalid[: len(prefix)] == prefix
    continuation = valid[len(prefix):] + [tok.eos_id]
    prompts = fake_sampler(monkeypatch, [valid + [tok.eos_id], invalid + [tok.eos_id]],
                           continuation)
    chosen = [tok.bos_id, *valid, tok.eos_id]
    rejected = [tok.bos_id, *tok.encode(PREFIX + " Zed")]
    assert rejected == [tok.bos_id, *invalid[: len(rejected) - 1]]
    shared = 1 + len(prefix)
    with torch.no_grad():
        pc, pr = (scored_logprob(model, s, shared).reshape(1) for s in (chosen, rejected))
        rc, rr = (scored_logprob(ref, s, shared).reshape(1) for s in (chosen, rejected))
        expected = dpo_loss(pc, pr, rc, rr, 0.3) + 0.5 * (-pc[0] / (len(chosen) - shared))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = dpo_step(model, ref, tok, optimizer, n_samples=2, beta=0.3, nll_weight=0.5)
    assert out["pairs"] == 1 and out["valid"] == 0.5
    assert out["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert prompts[1] == [[tok.bos_id, *prefix]] * preference.CONTINUATIONS
    assert all(torch.equal(v, ref_before[k]) for k, v in ref.state_dict().items())
    assert not torch.equal(model.output.weight, model_before)
    assert torch.equal(model.norm.weight, frozen)


def test_dpo_without_pairs_takes_no_step(tok, tales):
    model = tiny(tok.vocab_size, max_seq_len=24)
    ref = copy.deepcopy(model).requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = dpo_step(model, ref, tok, optimizer, n_samples=2,
                   generator=torch.Generator().manual_seed(0), tales=tales)
    assert math.isnan(out["loss"]) and out["pairs"] == 0 and out["valid"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_pair_of_equal_stories_is_refused(tok):
    model = tiny(tok.vocab_size)
    ref = copy.deepcopy(model).requires_grad_(False)
    ids = [tok.bos_id, *tok.encode(VALID)]
    with pytest.raises(ValueError, match="same"):
        pair_loss(model, ref, [(ids, ids, 1)], beta=0.2, nll_weight=0.0)


@pytest.mark.parametrize("change, match", [
    ({"n_samples": 0}, "n_samples must be a positive int"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"beta": 0.0}, "beta must be a finite number > 0"),
    ({"nll_weight": -1.0}, "nll_weight must be a finite number >= 0"),
    ({"ref_model": "self"}, "ref_model is the model itself"),
    ({"ref_model": "trainable"}, "ref_model has trainable parameters"),
    ({"optimizer": None}, "optimizer must be a torch.optim.Optimizer"),
    ({"tales": object()}, "tales must be a TinyTales world"),
])
def test_bad_input_is_refused_with_a_clear_message(tok, change, match):
    model = tiny(tok.vocab_size)
    kwargs = {"model": model, "ref_model": copy.deepcopy(model).requires_grad_(False),
              "tokenizer": tok, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    kwargs.update(change)
    if change.get("ref_model") == "self":
        kwargs["ref_model"] = model
    elif change.get("ref_model") == "trainable":
        kwargs["ref_model"] = copy.deepcopy(model)
    with pytest.raises((ValueError, TypeError), match=match):
        dpo_step(**kwargs)
    if "ref_model" not in change and "beta" not in change and "nll_weight" not in change:
        rs = {k: v for k, v in kwargs.items() if k != "ref_model"}
        with pytest.raises((ValueError, TypeError), match=match):
            rejection_sampling_step(**rs)
