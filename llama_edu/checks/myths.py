"""Checks for the myths-and-facts chapter: the AUC of two sets of scores, and a causality test."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..model import Llama, ModelArgs
from ._core import call, check, fail

# --------------------------------------------------------------------------- auc

_AUC_RULE = (
    "The AUC is the fraction of all (positive, negative) pairs in which the positive score is "
    "higher, a tie counting one half: mean over i, j of [pos_i > neg_j] + 0.5 * [pos_i == neg_j]."
)


def _auc_reference(pos: torch.Tensor, neg: torch.Tensor) -> float:
    diff = pos.double()[:, None] - neg.double()[None, :]  # (P, N): every pair
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def _auc_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, positive scores, negative scores); lengths differ and ties occur."""
    gen = torch.Generator().manual_seed(0)
    return [
        ("pos=[3, 1, 2], neg=[0, 2]", torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.0, 2.0])),
        (
            "40 positive and 25 negative whole-number scores (many ties)",
            torch.randint(0, 6, (40,), generator=gen).float() + 1.0,
            torch.randint(0, 6, (25,), generator=gen).float(),
        ),
        (
            "30 positive and 50 negative log-probabilities around -40",
            -40.0 + 4.0 * torch.randn(30, generator=gen) + 3.0,
            -40.0 + 4.0 * torch.randn(50, generator=gen),
        ),
        ("every positive above every negative", torch.tensor([5.0, 6.0, 7.0]),
         torch.tensor([1.0, 2.0])),
        ("every score equal", torch.full((4,), -3.0), torch.full((7,), -3.0)),
    ]


def _auc_mistakes(pos: torch.Tensor, neg: torch.Tensor) -> list[tuple[float, str]]:
    """Typical wrong AUCs on these scores, each with the hint that names the mistake."""
    diff = pos.double()[:, None] - neg.double()[None, :]
    wins, ties = (diff > 0).double(), (diff == 0).double()
    pairs = diff.numel()
    n = min(len(pos), len(neg))
    zipped = (pos[:n].double() - neg[:n].double())
    return [
        (
            float(wins.mean()),
            "ties count zero. A pair with equal scores says nothing about which is higher: "
            "count it as one half (use > for a win and == for a tie).",
        ),
        (
            float((diff >= 0).double().mean()),
            "ties count one, as wins (>=). Count a tie as one half: [pos > neg] + 0.5 * [pos == "
            "neg].",
        ),
        (
            1.0 - _auc_reference(pos, neg),
            "the result is 1 - AUC: you measured how often the *negative* score is higher. The "
            "first argument holds the positive (valid) scores.",
        ),
        (
            float((wins + 0.5 * ties).sum() / (len(pos) + len(neg))),
            f"the count of wins is divided by P + N = {len(pos) + len(neg)}. There are "
            f"P * N = {pairs} pairs: divide by P * N (or take the mean over the (P, N) matrix).",
        ),
        (
            float((wins + 0.5 * ties).sum() / len(pos)),
            f"the count of wins is divided by P = {len(pos)}, the number of positive scores. "
            f"Divide by the number of pairs, P * N = {pairs}.",
        ),
        (
            float(((zipped > 0).double() + 0.5 * (zipped == 0).double()).mean()),
            "you compared pos[i] with neg[i] only, position by position (zip). The AUC compares "
            "every positive score with every negative score: build the (P, N) matrix "
            "pos[:, None] - neg[None, :].",
        ),
    ]


def _as_number(out: Any, label: str) -> float:
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            fail(
                f"with {label} your function returned a tensor of shape {tuple(out.shape)}; "
                "return one number, the mean over all pairs (e.g. matrix.mean().item())."
            )
        return float(out)
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        fail(f"with {label} your function returned {type(out).__name__}; return a float.")
    return float(out)


@check
def auc(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> str:
    """Check `fn(pos_scores, neg_scores) -> float`: P(random positive > random negative)."""
    for label, pos, neg in _auc_cases():
        pos_in, neg_in = pos.clone(), neg.clone()
        out = call(fn, pos_in, neg_in)
        if not (torch.equal(pos_in, pos) and torch.equal(neg_in, neg)):
            fail(
                "your function changed its input scores in place (e.g. with .sort_() or -=). "
                "Work on new tensors and leave the inputs as they are."
            )
        value = _as_number(out, label)
        expected = _auc_reference(pos, neg)
        if abs(value - expected) <= 1e-6:
            continue
        for wrong, message in _auc_mistakes(pos, neg):
            if abs(value - wrong) <= 1e-6:
                fail(f"with {label}: {message}")
        if not 0.0 <= value <= 1.0:
            fail(f"with {label} you returned {value:.4f}, but an AUC is a probability in [0, 1].")
        fail(f"with {label} you returned {value:.4f}, expected {expected:.4f}. {_AUC_RULE}")
    return (
        "equals the pairwise definition on 5 inputs of different lengths; ties count one half; "
        "1.0 for a perfect split, 0.5 when all scores are equal"
    )


# --------------------------------------------------------------------------- is_causal

_VOCAB, _SEQ, _WIDTH = 11, 6, 8


class _MixingModel(nn.Module):
    """A toy language model: position i's logits read token j with weight mix[i, j]."""

    def __init__(self, mix: torch.Tensor, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("mix", mix)
        self.register_buffer("embed", torch.randn(_VOCAB, _WIDTH, generator=gen))
        self.register_buffer("out", torch.randn(_WIDTH, _VOCAB, generator=gen) / _WIDTH**0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        h = self.mix[:seq, :seq] @ self.embed[tokens]  # (batch, seq, width)
        return torch.tanh(h) @ self.out  # (batch, seq, vocab)


def _mix(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    weights = torch.rand(_SEQ, _SEQ, generator=gen) + 0.5
    causal = torch.tril(weights)
    if kind == "causal":
        return causal
    if kind == "full":
        return weights
    if kind == "one ahead":
        return torch.tril(weights, diagonal=1)
    extra = torch.zeros(_SEQ, _SEQ)
    if kind == "first reads second":
        extra[0, 1] = 1.0
    elif kind == "first reads last":
        extra[0, _SEQ - 1] = 1.0
    elif kind == "tiny leak":
        extra = 1e-4 * torch.triu(weights, diagonal=1)
    else:
        raise ValueError(kind)
    return causal + extra


def _tiny_llama() -> Llama:
    args = ModelArgs(dim=16, n_layers=2, n_heads=2, vocab_size=_VOCAB, multiple_of=8,
                     max_seq_len=16)
    with torch.random.fork_rng(devices=[]):  # building a model draws from the global RNG
        model = Llama(args)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return model.eval()


# (label, model, is it causal, the hint when the answer is wrong)
def _causal_cases() -> list[tuple[str, nn.Module, bool, str]]:
    return [
        (
            "a small Llama (random weights)",
            _tiny_llama(),
            True,
            "your function says a real, causal Llama is not causal. Changing token t may change "
            "the logits at t and after; only the positions before t must stay the same. Compare "
            "logits[:, :t] of the two runs, not all positions.",
        ),
        (
            "a toy causal model",
            _MixingModel(_mix("causal"), 3),
            True,
            "your function says a causal model is not causal. Compare only the positions "
            "before the changed token (logits[:, :t]); positions t and later are allowed to "
            "change.",
        ),
        (
            "a model without a mask (every position reads every token)",
            _MixingModel(_mix("full"), 4),
            False,
            "your function says a model without any mask is causal. Check that the token "
            "really changes (e.g. (tokens[:, t] + 1) % vocab_size on a copy), that you run the "
            "model on the changed copy, and that you compare the logits before t.",
        ),
        (
            "a model whose position i also reads token i + 1",
            _MixingModel(_mix("one ahead"), 5),
            False,
            "your function missed a model in which each position reads the next token. Change "
            "each token t and compare every position before t.",
        ),
        (
            "a model whose position 0 also reads token 1",
            _MixingModel(_mix("first reads second"), 6),
            False,
            "your function missed a model in which position 0 reads token 1. Test every "
            "position t = 1 .. seq - 1 in turn, not only the last token.",
        ),
        (
            "a model whose position 0 also reads the last token",
            _MixingModel(_mix("first reads last"), 7),
            False,
            "your function missed a model in which position 0 reads the last token. Compare "
            "all positions before t (logits[:, :t]), not only position t - 1.",
        ),
        (
            "a model with a leak of about 1e-4 in the logits",
            _MixingModel(_mix("tiny leak"), 8),
            False,
            "your function missed a small leak: later tokens move earlier logits by about "
            "1e-4. Compare the logits themselves with torch.equal (or a tolerance of 1e-6 or "
            "less), not the predicted tokens (argmax) and not with a loose tolerance.",
        ),
    ]


@check
def is_causal(fn: Callable[[Callable[..., torch.Tensor], torch.Tensor, int], bool]) -> str:
    """Check `fn(model, tokens, vocab_size) -> bool`: True when no logit reads a later token."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, _VOCAB, (2, _SEQ), generator=gen)
    cases = _causal_cases()
    for label, model, truth, hint in cases:
        given = tokens.clone()
        with torch.no_grad():
            out = call(fn, model, given, _VOCAB)
        if not torch.equal(given, tokens):
            fail(
                "your function changed `tokens` in place. Change a copy: "
                "changed = tokens.clone(); changed[:, t] = ..."
            )
        if isinstance(out, torch.Tensor) and out.numel() == 1 and out.dtype == torch.bool:
            out = bool(out)
        if not isinstance(out, bool):
            fail(
                f"for {label} your function returned {type(out).__name__}; return True or False "
                "(a Python bool)."
            )
        if out != truth:
            fail(f"for {label} you returned {out}, expected {truth}: {hint}")
    return (
        f"right on {len(cases)} models: 2 causal ones, and leaks from every token, from the "
        "next token, into position 0 only, and of size 1e-4"
    )
