"""Learning from verified samples: rejection sampling and DPO, with TinyTales as the judge.

A base model writes stories; `TinyTales.is_valid` says which ones the world can tell. Two ways
to learn from that verdict, one optimiser step each:

* `rejection_sampling_step` keeps the valid samples and trains on them with the plain
  next-token loss (the model imitates its own good stories);
* `dpo_step` pairs a valid (chosen) with an invalid (rejected) story and lowers DPO's loss
  (`posttrain.dpo_loss`) against a frozen reference model, plus a little next-token loss on
  the chosen story.

The DPO pairs share a prefix. An invalid sample is read word by word until the first word after
which no valid story can follow; the rejected sequence is the sample cut just after that word,
and the chosen one is a valid story the model writes from the same prefix (up to
`CONTINUATIONS` tries). Both halves of a pair then differ only after the shared prefix, so the
loss points at the word that went wrong, not at everything else the two stories do differently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._validate import as_int, is_number
from .posttrain import check_pair, dpo_loss, sequence_logprobs

__all__ = ["CONTINUATIONS", "MAX_NEW_TOKENS", "dpo_step", "rejection_sampling_step"]

MAX_NEW_TOKENS = 200
"""The longest story sampled (also capped by the model's context)."""

CONTINUATIONS = 4
"""How many continuations `dpo_step` samples from the prefix of each invalid story."""


# --------------------------------------------------------------------------------------------
# Checks and sampling
# --------------------------------------------------------------------------------------------


def _check_common(fn: str, model: Any, tokenizer: Any, optimizer: Any, n_samples: Any,
                  temperature: Any) -> int:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a llama_edu Llama, got {type(model).__name__}")
    for name in ("bos_id", "eos_id", "decode"):
        if not hasattr(tokenizer, name):
            raise TypeError(
                f"{fn}: tokenizer must be the model's SentencePieceTokenizer (it has no "
                f"{name!r}), got {type(tokenizer).__name__}"
            )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{fn}: optimizer must be a torch.optim.Optimizer over the model's trainable "
            f"parameters, e.g. torch.optim.AdamW(params, lr=1e-4); got {type(optimizer).__name__}"
        )
    n = as_int(n_samples)
    if n is None or n < 1:
        raise ValueError(f"{fn}: n_samples must be a positive int, got {n_samples!r}")
    if not is_number(temperature) or not 0 < float(temperature) < math.inf:
        raise ValueError(
            f"{fn}: temperature must be a finite number > 0, got {temperature!r}; at 0 every "
            "sample would be the same greedy story, so there would be nothing to choose from"
        )
    return n


def _judge(tales: Any) -> Any:
    if tales is None:
        from .tinytales import TinyTales

        return TinyTales()
    if not callable(getattr(tales, "is_valid", None)):
        raise TypeError(
            f"tales must be a TinyTales world (anything with is_valid(text)), got "
            f"{type(tales).__name__}"
        )
    return tales


def _sample_ids(model: torch.nn.Module, prompts: list[list[int]], stop: int,
                temperature: float, generator: torch.Generator | None) -> list[list[int]]:
    """One sampled continuation per prompt, up to and including `stop` (if it comes)."""
    from .generate import generate

    limit = min(MAX_NEW_TOKENS, model.args.max_seq_len - max(len(p) for p in prompts))
    if limit < 1:
        return [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        return generate(model, prompts, limit, temperature=float(temperature), stop_ids=[stop],
                        generator=generator)
    finally:
        model.train(was_training)


def _text(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode([i for i in ids if i not in (tokenizer.bos_id, tokenizer.eos_id)])


def _is_story(tales: Any, tokenizer: Any, ids: Sequence[int]) -> bool:
    """Whether the text of sampled ids (without bos) is a valid story."""
    return bool(tales.is_valid(_text(tokenizer, ids)))


def _ended(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """Sampled ids with eos at the end (added when the sample stopped at the length limit)."""
    ids = list(ids)
    return ids if ids and ids[-1] == tokenizer.eos_id else [*ids, tokenizer.eos_id]


def _batch(rows: Sequence[Sequence[int]], starts: Sequence[int], multiple_of: int = 1
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the right with 0 (to a multiple of `multiple_of` plus one), and a mask
    True on row[start:] for each row.

    The model reads ids[:, :-1], so a width of k * multiple_of + 1 gives it k * multiple_of.
    """
    width = max(len(r) for r in rows)
    if multiple_of > 1:
        width = -(-(width - 1) // multiple_of) * multiple_of + 1
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for k, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[k, start : len(row)] = True
    return ids, mask


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _on(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor,
                                                                                  torch.Tensor]:
    device = next(model.parameters()).device
    return ids.to(device), mask.to(device)


# --------------------------------------------------------------------------------------------
# Rejection sampling
# --------------------------------------------------------------------------------------------


def rejection_sampling_step(
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    n_samples: int = 16,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    tales: Any = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Sample stories, keep the valid ones, train on each kept story once; the round's numbers.

    Returns {"loss": mean next-token loss (nats) over the round's steps, each taken before its
    update, "valid": share of valid samples, "kept": how many were kept, "steps": optimiser
    steps taken}. A story counts if `tales.is_valid` accepts its text (as in
    `posttrain.story_stats`); it is trained on as bos + story + eos. The kept stories are
    trained on in batches of `batch_size` (None: all in one step), one pass, in sampled order.
    With no valid sample there is no step and the loss is nan.
    """
    fn = "rejection_sampling_step"
    n = _check_common(fn, model, tokenizer, optimizer, n_samples, temperature)
    size = n if batch_size is None else as_int(batch_size)
    if size is None or size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int or None (all kept stories in "
                         f"one step), got {batch_size!r}")
    tales = _judge(tales)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    samples = _sample_ids(model, [[bos]] * n, eos, temperature, generator)
    kept = [s for s in samples if _is_story(tales, tokenizer, s)]
    if not kept:
        return {"loss": math.nan, "valid": 0.0, "kept": 0, "steps": 0}
    losses = []
    was_training = model.training
    model.train()
    try:
        for first in range(0, len(kept), size):
            rows = [[bos, *_ended(tokenizer, s)] for s in kept[first : first + size]]
            # widths rounded up to a multiple of 32: odd, changing widths are many times slower
            # on a CPU with few threads (see posttrain.collate_sft)
            ids, mask = _batch(rows, [1] * len(rows), multiple_of=32)
            keep = max(model.args.max_seq_len + 1, max(len(r) for r in rows))
            ids, mask = _on(model, ids[:, :keep], mask[:, :keep])  # cuts padding only
            logits = model(ids[:, :-1])
            targets = mask[:, 1:]
            loss = F.cross_entropy(logits[targets].float(), ids[:, 1:][targets])
            _step(optimizer, loss)
            losses.append(loss.item())
    finally:
        model.train(was_training)
    return {"loss": sum(losses) / len(losses), "valid": len(kept) / n, "kept": len(kept),
            "steps": len(losses)}


# --------------------------------------------------------------------------------------------
# DPO on pairs that share a prefix
# --------------------------------------------------------------------------------------------


def _word_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """Every j such that ids[:j] ends with a whole word ('.' and ',' count as words)."""
    ends = []
    for j in range(1, len(ids) + 1):
        if j == len(ids) or ids[j - 1] == tokenizer.eos_id:
            ends.append(j)
            continue
        piece = tokenizer.id_to_piece(ids[j])
        if piece.startswith("\u2581") or piece in (".", ",") or ids[j] == tokenizer.eos_id:
            ends.append(j)
    return ends


def _can_continue(tales: Any, text: str) -> bool:
    """Whether some valid story starts with `text` (judged by is_valid's verdict alone)."""
    verdict = tales.is_valid(text)
    reason = getattr(verdict, "reason", "")
    return bool(verdict) or reason.startswith("the story has only") or "is unfinished" in reason


def failing_word(tokenizer: Any, ids: Sequence[int], tales: Any) -> tuple[int, int]:
    """(start, end) of the first word of sampled `ids` after which no valid story can follow.

    `ids` has no bos; ids[:start] can still become a valid story, ids[:end] cannot. A story
    whose every word fits but which ends too early, or never ends, fails at its last token.
    """
    start = 0
    for end in _word_ends(tokenizer, ids):
        if ids[end - 1] == tokenizer.eos_id:
            if not tales.is_valid(_text(tokenizer, ids[:end])):
                return start, end
        elif not _can_continue(tales, _text(tokenizer, ids[:end])):
            return start, end
        start = end
    return max(0, len(ids) - 1), len(ids)


def _prefix_pairs(model: torch.nn.Module, tokenizer: Any, bad: list[list[int]], tales: Any,
                  temperature: float, generator: torch.Generator | None
                  ) -> list[tuple[list[int], list[int], int]]:
    """(chosen, rejected, shared) for each invalid sample whose prefix yields a valid story."""
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    cuts = [failing_word(tokenizer, s, tales) for s in bad]
    prompts = [[bos, *s[:start]] for s, (start, _) in zip(bad, cuts, strict=True)]
    tries = [p for p in prompts if len(p) < model.args.max_seq_len for _ in range(CONTINUATIONS)]
    conts = _sample_ids(model, tries, eos, temperature, generator) if tries else []
    by_prompt: dict[tuple[int, ...], list[list[int]]] = {}
    for prompt, cont in zip(tries, conts, strict=True):
        by_prompt.setdefault(tuple(prompt), []).append(cont)
    pairs = []
    for s, (start, end), prompt in zip(bad, cuts, prompts, strict=True):
        good = [c for c in by_prompt.get(tuple(prompt), [])
                if _is_story(tales, tokenizer, s[:start] + c)]
        if good:
            chosen, rejected = prompt + _ended(tokenizer, good[0]), [bos, *s[:end]]
            check_pair(chosen, rejected)
            pairs.append((chosen, rejected, len(prompt)))
    return pairs


def pair_loss(model: torch.nn.Module, ref_model: torch.nn.Module,
              pairs: Sequence[tuple[Sequence[int], Sequence[int], int]], beta: float,
              nll_weight: float) -> torch.Tensor:
    """DPO loss over (chosen, rejected, shared) id pairs + nll_weight * NLL per chosen token.

    Only the tokens after the `shared` prefix are scored (the prefix's log-probabilities would
    cancel in DPO's margin anyway); the NLL is the mean over the scored chosen tokens.
    """
    if not pairs:
        raise ValueError("pair_loss: there are no pairs; DPO needs at least one")
    for chosen, rejected, _ in pairs:
        check_pair(list(chosen), list(rejected))
    rows = [list(c) for c, _, _ in pairs] + [list(r) for _, r, _ in pairs]
    starts = [shared for _, _, shared in pairs] * 2
    ids, mask = _on(model, *_batch(rows, starts))
    n = len(pairs)
    policy = sequence_logprobs(model, ids, mask)
    with torch.no_grad():
        ref = sequence_logprobs(ref_model, ids, mask)
    loss = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], beta)
    if nll_weight:
        loss = loss - nll_weight * policy[:n].sum() / mask[:n].sum()
    return loss


def dpo_step(
    model: torch.nn.Module,
    ref_model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    n_samples: int = 16,
    beta: float = 0.2,
    nll_weight: float = 0.5,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    tales: Any = None,
) -> dict[str, float]:
    """Sample, pair valid with invalid stories that share a prefix, one DPO step; its numbers.

    Returns {"loss": the loss before the step, "valid": share of valid samples, "pairs": how
    many pairs}. Each invalid sample is cut after its first failing word (`failing_word`); the
    chosen story is a valid continuation sampled from the same prefix. The loss is
    `pair_loss`: `posttrain.dpo_loss` against `ref_model` (frozen, under no_grad) plus
    nll_weight times the next-token loss of the chosen continuations. No pair: no step, nan.
    """
    fn = "dpo_step"
    n = _check_common(fn, model, tokenizer, optimizer, n_samples, temperature)
    if not isinstance(ref_model, torch.nn.Module):
        raise TypeError(f"{fn}: ref_model must be a llama_edu Llama (a frozen copy of the model "
                        f"before training), got {type(ref_model).__name__}")
    if ref_model is model:
        raise ValueError(f"{fn}: ref_model is the model itself; give a frozen copy made before "
                         "training, e.g. copy.deepcopy(model).requires_grad_(False)")
    if any(p.requires_grad for p in ref_model.parameters()):
        raise ValueError(f"{fn}: ref_model has trainable parameters; the reference must stay "
                         "frozen: call ref_model.requires_grad_(False) first")
    if not is_number(beta) or not 0 < float(beta) < math.inf:
        raise ValueError(f"{fn}: beta must be a finite number > 0, got {beta!r}; 0.1 to 0.5 is "
                         "usual")
    if not is_number(nll_weight) or not 0 <= float(nll_weight) < math.inf:
        raise ValueError(f"{fn}: nll_weight must be a finite number >= 0, got {nll_weight!r}")
    tales = _judge(tales)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    samples = _sample_ids(model, [[bos]] * n, eos, temperature, generator)
    bad = [s for s in samples if not _is_story(tales, tokenizer, s)]
    valid = 1 - len(bad) / n
    pairs = _prefix_pairs(model, tokenizer, bad, tales, temperature, generator) if bad else []
    if not pairs:
        return {"loss": math.nan, "valid": valid, "pairs": 0}
    was_training = model.training
    model.train()
    try:
        loss = pair_loss(model, ref_model, pairs, float(beta), float(nll_weight))
        _step(optimizer, loss)
    finally:
        model.train(was_training)
    return {"loss": loss.item(), "valid": valid, "pairs": len(pairs)}
