"""Turning next-token logits into text: greedy decoding, sampling, top-k / top-p, beam search.

Conventions shared by every function here:

* A prompt is a non-empty list of token ids (or a 1-D integer tensor); `generate` also takes a
  batch: a (batch, seq) integer tensor or a list of lists, whose rows may differ in length.
* The result is the continuation only, never the prompt: a list of new ids for one prompt, a
  list of such lists for a batch.
* A stop id ends its sequence and is *included* as the last id of the continuation, so you can
  tell "stopped" from "ran out of max_new_tokens".
* `temperature=0` means greedy decoding (argmax; the lowest id wins an exact tie). Otherwise
  logits are divided by the temperature, then top-k, then top-p filtering is applied, and the
  next id is drawn with `torch.multinomial(..., generator=generator)`.
* The model only needs `model(tokens, cache=None)` returning logits (batch, seq, vocab) and
  `model.args.max_seq_len`; a model without `init_cache` is decoded without a cache.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import is_number, require_float, require_tensor
from .model import ModelArgs

Prompt = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor


# --- filtering and sampling ----------------------------------------------------------------


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (..., V) with everything outside the k largest set to -inf.

    Exactly k entries survive even when several tie at the k-th largest value; which of the
    tied entries is kept is torch.topk's choice. k >= V keeps everything.
    """
    _check_top_k(k)
    _check_rows("top_k_filter", "logits", logits)
    require_float("top_k_filter", "logits", logits)
    if k >= logits.shape[-1]:
        return logits.clone()
    keep = torch.topk(logits, k, dim=-1).indices
    filtered = torch.full_like(logits, float("-inf"))
    return filtered.scatter(-1, keep, logits.gather(-1, keep))


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Probabilities (..., V) renormalised over the smallest top set whose mass reaches p.

    Sorted from most to least likely, a token is kept when the mass of the tokens before it is
    still below p: the most likely token is always kept, and so is the token that crosses p.
    Equal probabilities are ordered by id (stable sort). p = 1 keeps every token.
    """
    _check_top_p(p)
    _check_rows("top_p_filter", "probs", probs)
    sums = probs.sum(dim=-1)
    if not (bool((probs >= 0).all()) and bool((sums > 0).all()) and bool(sums.isfinite().all())):
        _explain_bad_probs(probs, sums)
    return _top_p(probs, p)


def _top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    """top_p_filter without the input checks (probs already a valid distribution)."""
    probs = probs / probs.sum(dim=-1, keepdim=True)
    if p == 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = F.pad(sorted_probs.cumsum(dim=-1)[..., :-1], (1, 0))  # 0 for the top token
    sorted_probs = sorted_probs.masked_fill(mass_before >= p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """torch.multinomial(probs, 1), drawn where the generator lives (a CPU one for a GPU model)."""
    if generator is None or generator.device == probs.device:
        return torch.multinomial(probs, 1, generator=generator)
    return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)


def sample_top_p(
    probs: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one id per row of probs (..., V) from its top-p filtered distribution."""
    filtered = top_p_filter(probs, p)
    ids = _multinomial(filtered.reshape(-1, filtered.shape[-1]), generator)
    return ids.reshape(probs.shape[:-1])


def next_token_distribution(
    logits_row: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution (V,) the next id is drawn from: temperature, then top-k, then top-p."""
    _check_sampling(temperature, top_k, top_p)
    _check_rows("next_token_distribution", "logits_row", logits_row)
    _check_logits(logits_row, "next_token_distribution got logits")
    return _distribution(logits_row, temperature, top_k, top_p)


def _distribution(
    logits_row: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """next_token_distribution without the input checks (the caller has made them)."""
    if temperature == 0:
        best = logits_row.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits_row, dtype=torch.float).scatter(-1, best, 1.0)
    # shifting by the max first keeps a tiny temperature from turning logits into inf - inf
    scaled = (logits_row - logits_row.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    probs = torch.softmax(scaled, dim=-1)
    return probs if top_p is None else _top_p(probs, top_p)


def kv_cache_bytes(
    args: ModelArgs, seq_len: int, batch_size: int = 1, bytes_per_value: int = 2
) -> int:
    """Memory for keys and values: 2 * n_layers * batch * seq * n_kv_heads * head_dim * bytes."""
    if not isinstance(args, ModelArgs):
        raise TypeError(
            f"kv_cache_bytes expects a ModelArgs, got {type(args).__name__}; pass model.args or "
            "ModelArgs.from_name('tiny')."
        )
    numbers = (seq_len, batch_size, bytes_per_value)
    not_ints = any(isinstance(n, bool) or not isinstance(n, int) for n in numbers)
    if not_ints or seq_len < 0 or batch_size < 0 or bytes_per_value < 1:
        raise ValueError(
            "kv_cache_bytes needs ints seq_len >= 0, batch_size >= 0 and bytes_per_value >= 1 "
            f"(2 for float16/bfloat16, 4 for float32); got {seq_len!r}, {batch_size!r}, "
            f"{bytes_per_value!r}."
        )
    from .budget import kv_cache_bytes_per_token  # the accounting's home

    return int(seq_len * batch_size * kv_cache_bytes_per_token(args, bytes_per_value))


# --- autoregressive generation -------------------------------------------------------------


def generate(
    model: nn.Module,
    prompt: Prompt,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] | int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> list[int] | list[list[int]]:
    """Continue a prompt (list[int] -> list[int]) or a batch (-> list[list[int]]); see module doc.

    Ragged batches: the KV cache keeps every row at the same position and the model has no
    padding mask, so rows are grouped by prompt length and each group is decoded as one
    rectangular batch. Greedy results therefore equal decoding each row alone (up to the
    last-bit rounding differences a different batch size may cause). With sampling, rows of a
    group share one draw from `generator` per step, so a row's sample differs from the one it
    would get alone with the same seed (it is still a sample from the same distribution).
    A finished row keeps being fed (its ids are discarded) until its whole group is done.
    use_cache=False recomputes the full sequence at every step.
    """
    rows, single = _as_rows(prompt)
    _check_sampling(temperature, top_k, top_p)
    _check_length(model, max(len(row) for row in rows), max_new_tokens)
    stops = _stop_set(stop_ids)
    out: list[list[int]] = [[] for _ in rows]
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(len(row), []).append(i)
    for members in groups.values():
        tokens = torch.tensor([rows[i] for i in members], device=_device(model))
        steps = _decode(
            model, tokens, max_new_tokens, temperature, top_k, top_p, stops, use_cache, generator
        )
        for new_ids in steps:
            for i, token in zip(members, new_ids, strict=True):
                if token is not None:
                    out[i].append(token)
    return out[0] if single else out


def stream(
    model: nn.Module,
    prompt: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Iterable[int] | int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Like generate for one prompt, but yield each new id as soon as it is chosen."""
    row = _single_row(prompt)
    _check_sampling(temperature, top_k, top_p)
    _check_length(model, len(row), max_new_tokens)
    tokens = torch.tensor([row], device=_device(model))
    steps = _decode(
        model,
        tokens,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        _stop_set(stop_ids),
        use_cache,
        generator,
    )
    return (new_ids[0] for new_ids in steps)  # never None: a lone row ends the loop when it stops


def _decode(
    model: nn.Module,
    tokens: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stops: frozenset[int],
    use_cache: bool,
    generator: torch.Generator | None,
) -> Iterator[list[int | None]]:
    """Yield, per step, each row's new id (None once the row has stopped)."""
    batch, prompt_len = tokens.shape
    cache = None
    if use_cache and hasattr(model, "init_cache"):
        cache = model.init_cache(batch, prompt_len + max_new_tokens)
    done = [False] * batch
    feed = tokens  # with a cache: only the tokens not seen yet; without: the whole sequence
    for step in range(max_new_tokens):
        # inference mode around the call only: held across a yield it would leak to the caller
        with torch.inference_mode():
            logits = (model(feed, cache=cache) if cache is not None else model(feed))[:, -1]
        _check_logits(logits, f"at step {step} (new token {step + 1}) the model gave logits")
        next_ids = _pick(logits, temperature, top_k, top_p, generator)
        ids = next_ids.tolist()
        yield [None if finished else token for finished, token in zip(done, ids, strict=True)]
        done = [finished or token in stops for finished, token in zip(done, ids, strict=True)]
        if all(done) or step == max_new_tokens - 1:
            return
        new = next_ids[:, None].to(tokens.dtype)
        feed = new if cache is not None else torch.cat([feed, new], dim=1)


def _pick(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Next ids (batch,) from logits (batch, V): argmax at temperature 0, else a draw."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = _distribution(logits, temperature, top_k, top_p)
    return _multinomial(probs, generator).squeeze(-1)


# --- beam search ---------------------------------------------------------------------------


def beam_search(
    model: nn.Module,
    prompt: Sequence[int] | torch.Tensor,
    beam_width: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    stop_ids: Iterable[int] | int | None = None,
    use_cache: bool = True,
) -> list[int]:
    """The best continuation found by beam search (see beam_search_candidates)."""
    candidates = beam_search_candidates(
        model, prompt, beam_width, max_new_tokens, length_penalty, stop_ids, use_cache
    )
    return candidates[0][0]


def beam_search_candidates(
    model: nn.Module,
    prompt: Sequence[int] | torch.Tensor,
    beam_width: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    stop_ids: Iterable[int] | int | None = None,
    use_cache: bool = True,
) -> list[tuple[list[int], float]]:
    """Up to beam_width (continuation, score) pairs, best first.

    Each step extends every live beam by every token and keeps the beam_width best extensions
    by summed log-probability. An extension ending in a stop id that ranks above the last kept
    beam is finished (stop id included). A hypothesis of n new ids scores
    logprob / n**length_penalty: 0 ranks by total log-probability, which favours short
    hypotheses; larger values favour longer ones. Beams still live after max_new_tokens are
    scored the same way. The search ends early once no live beam can beat the best finished
    one (logprobs only fall as a beam grows).
    """
    row = _single_row(prompt)
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an int >= 1 (1 is greedy), got {beam_width!r}.")
    _check_length(model, len(row), max_new_tokens)
    if not (is_number(length_penalty) and math.isfinite(float(length_penalty))):
        raise ValueError(
            f"length_penalty must be a finite number, got {length_penalty!r}; 1.0 (the default) "
            "ranks by log-probability per token, 0 by total log-probability."
        )
    length_penalty = float(length_penalty)
    stops = _stop_set(stop_ids)
    if max_new_tokens == 0:
        return [([], 0.0)]

    def score(logprob: float, length: int) -> float:
        return logprob / length**length_penalty

    device = _device(model)
    cache = None
    if use_cache and hasattr(model, "init_cache"):
        cache = model.init_cache(beam_width, len(row) + max_new_tokens)
    beams: list[list[int]] = [[]]  # continuations of the live beams
    totals = [0.0]  # their summed log-probabilities
    finished: list[tuple[list[int], float]] = []
    feed = torch.tensor([row], device=device)
    for length in range(1, max_new_tokens + 1):
        if cache is None:
            feed = torch.tensor([row + beam for beam in beams], device=device)
        with torch.no_grad():
            logits = (model(feed, cache=cache) if cache is not None else model(feed))[:, -1]
        _check_logits(logits, f"at step {length - 1} (new token {length}) the model gave logits")
        logprobs = torch.log_softmax(logits.double(), dim=-1)  # (live beams, V)
        extended = torch.tensor(totals, dtype=torch.float64, device=device)[:, None] + logprobs
        vocab = logprobs.shape[-1]
        # enough candidates that beam_width of them are not stop ids
        k = min(extended.numel(), beam_width + len(beams) * len(stops))
        best = torch.topk(extended.flatten(), k)
        parents, new_beams, new_totals = [], [], []
        for total, flat in zip(best.values.tolist(), best.indices.tolist(), strict=True):
            parent, token = divmod(flat, vocab)
            if token in stops:
                finished.append((beams[parent] + [token], score(total, length)))
                continue
            parents.append(parent)
            new_beams.append(beams[parent] + [token])
            new_totals.append(total)
            if len(new_beams) == beam_width:
                break
        beams, totals = new_beams, new_totals
        if not beams:
            break
        if length == max_new_tokens:
            finished.extend(
                (beam, score(total, length)) for beam, total in zip(beams, totals, strict=True)
            )
            break
        if finished:
            # a live beam's descendants have logprob <= its total and length in (length, max]
            horizon = max_new_tokens if length_penalty >= 0 else length + 1
            if max(s for _, s in finished) >= max(score(t, horizon) for t in totals):
                break
        if cache is not None:
            index = torch.tensor(parents, device=device)
            cache.k[:, : len(parents)] = cache.k[:, index]  # each beam inherits its parent's keys
            cache.v[:, : len(parents)] = cache.v[:, index]
            feed = torch.tensor([[beam[-1]] for beam in beams], device=device)
    finished.sort(key=lambda pair: pair[1], reverse=True)
    return finished[:beam_width]


# --- input checks --------------------------------------------------------------------------


# --- speculative decoding ------------------------------------------------------------------


def early_exit_draft(model: nn.Module, n_layers: int) -> nn.Module:
    """A draft for speculative decoding: a copy of `model` with only its first `n_layers` blocks.

    The copy keeps the embedding, the first blocks, the final norm and the output layer, so it
    predicts from an early layer's residual stream ("self-speculative decoding": no second
    model to train or ship). Its weights are copies; the model itself is not changed.
    """
    from .model import Llama  # generate is imported by model's users; keep the import local

    if not isinstance(model, Llama):
        raise TypeError(f"early_exit_draft: model must be a llama_edu Llama, got "
                        f"{type(model).__name__}")
    total = model.args.n_layers
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers < total:
        raise ValueError(f"early_exit_draft: n_layers must be a whole number from 1 to "
                         f"{total - 1} (fewer than the model's {total} layers), got {n_layers!r}")
    args = dataclasses.replace(model.args, n_layers=n_layers)
    keep = {k: v for k, v in model.state_dict().items()
            if not k.startswith("layers.") or int(k.split(".")[1]) < n_layers}
    param = next(model.parameters())
    draft = Llama(args).to(device=param.device, dtype=param.dtype)
    draft.load_state_dict(keep)
    return draft.eval()


def speculative_generate(
    target: nn.Module,
    draft: nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    k: int = 4,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    stats: dict[str, int] | None = None,
) -> list[int]:
    """Continue `prompt` with `target`, k tokens at a time proposed by the smaller `draft`.

    Each round the draft proposes up to k tokens, one forward each, and the target scores all of
    them in one forward. Greedy (temperature 0): a proposal is kept while it equals the
    target's argmax; the first that differs is replaced by the target's choice, so the result
    is exactly the target's own greedy continuation. Sampling: proposal x, drawn from the
    draft's q, is kept with probability min(1, p(x) / q(x)) under the target's p; the first
    rejected one is replaced by a draw from max(0, p - q), renormalised; this keeps the
    target's distribution exactly (Leviathan et al. 2023, Chen et al. 2023). When every
    proposal is kept, the target's last distribution gives one more token for free.

    `stats`, if given, is filled with "rounds", "proposed", "accepted", "target_calls" and
    "draft_calls". No stop ids: exactly max_new_tokens tokens come back.
    """
    ids = _single_row(prompt)
    for name, model in (("target", target), ("draft", draft)):
        if not callable(getattr(model, "init_cache", None)):
            raise TypeError(f"speculative_generate: {name} must be a llama_edu Llama (it needs "
                            f"init_cache), got {type(model).__name__}")
        _check_length(model, len(ids), max_new_tokens)
    if target.args.vocab_size != draft.args.vocab_size:
        raise ValueError(
            f"the draft's vocabulary ({draft.args.vocab_size} ids) differs from the target's "
            f"({target.args.vocab_size}); both must share one tokenizer, or the draft's "
            "proposals mean nothing to the target"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (tokens the draft proposes per round) must be an int >= 1, got {k!r}")
    _check_sampling(temperature, None, None)
    counts = {"rounds": 0, "proposed": 0, "accepted": 0, "target_calls": 0, "draft_calls": 0}
    total = len(ids) + max_new_tokens
    seq = list(ids)
    device = _device(target)
    draft_device = _device(draft)

    def probs(logits: torch.Tensor) -> torch.Tensor:  # (vocab,) float32 logits -> distribution
        return torch.softmax(logits.double() / temperature, dim=-1)

    def pick(p: torch.Tensor) -> int:
        return int(_multinomial(p, generator).item())

    was = target.training, draft.training
    target.eval()
    draft.eval()
    try:
        with torch.no_grad():
            t_cache = target.init_cache(1, total)
            d_cache = draft.init_cache(1, total)
            if len(seq) > 1:  # the caches hold seq[:-1]; the last token is fed each round
                target(torch.tensor([seq[:-1]], device=device), t_cache)
                counts["target_calls"] += 1
            while len(seq) < total:
                n = min(k, total - len(seq) - 1)  # room for n proposals and one target token
                proposals: list[int] = []
                q_rows: list[torch.Tensor] = []
                if n > 0:
                    behind = seq[d_cache.length : -1]  # tokens the draft has not read yet
                    if behind:
                        draft(torch.tensor([behind], device=draft_device), d_cache)
                        counts["draft_calls"] += 1
                    last = seq[-1]
                    for _ in range(n):
                        logits = draft(torch.tensor([[last]], device=draft_device), d_cache)[0, -1]
                        counts["draft_calls"] += 1
                        if temperature == 0:
                            last = int(torch.argmax(logits).item())
                        else:
                            q_rows.append(probs(logits))
                            last = pick(q_rows[-1])
                        proposals.append(last)
                start = len(seq) - 1
                scored = target(torch.tensor([[seq[-1], *proposals]], device=device), t_cache)
                counts["target_calls"] += 1
                logits = scored[0]  # (n + 1, vocab): row i is the target's view after token i
                accepted = 0
                new_token = None
                for i, x in enumerate(proposals):
                    if temperature == 0:
                        best = int(torch.argmax(logits[i]).item())
                        if best != x:
                            new_token = best
                            break
                    else:
                        p, q = probs(logits[i]), q_rows[i]
                        u = torch.rand(1, generator=generator, dtype=torch.float64).item()
                        if u * q[x].item() >= p[x].item():  # rejected: draw from max(0, p - q)
                            rest = (p - q).clamp(min=0)
                            new_token = pick(rest / rest.sum())
                            break
                    accepted += 1
                if new_token is None:  # every proposal kept: the last row gives one more
                    row = logits[len(proposals)]
                    new_token = int(torch.argmax(row).item()) if temperature == 0 else pick(
                        probs(row))
                seq += [*proposals[:accepted], new_token]
                t_cache.length = start + 1 + accepted  # forget the rejected proposals
                d_cache.length = min(d_cache.length, len(seq) - 1)
                counts["rounds"] += 1
                counts["proposed"] += len(proposals)
                counts["accepted"] += accepted
    finally:
        target.train(was[0])
        draft.train(was[1])
    if stats is not None:
        stats.update(counts)
    return seq[len(ids) : total]


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not is_number(temperature) or not 0 <= float(temperature) < math.inf:
        hint = " (a str: write the number without quotes)" if isinstance(temperature, str) else ""
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}{hint}."
        )
    _check_top_k(top_k, allow_none=True)
    if top_p is not None:
        _check_top_p(top_p)


def _check_top_k(k: Any, allow_none: bool = False) -> None:
    if k is None and allow_none:
        return
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an int >= 1 (or None for no top-k), got {k!r}.")


def _check_top_p(p: Any) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"top_p must be a number in (0, 1] (1 keeps everything), got {p!r}.")


def _check_length(model: nn.Module, prompt_len: int, max_new_tokens: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}.")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
    limit = model.args.max_seq_len
    if prompt_len + max_new_tokens > limit:
        raise ValueError(
            f"a prompt of {prompt_len} tokens plus max_new_tokens={max_new_tokens} makes "
            f"{prompt_len + max_new_tokens} positions, more than model.args.max_seq_len={limit}. "
            f"Ask for at most {max(limit - prompt_len, 0)} new tokens or shorten the prompt."
        )


def _stop_set(stop_ids: Iterable[int] | int | None) -> frozenset[int]:
    if stop_ids is None:
        return frozenset()
    if isinstance(stop_ids, (str, bytes)):
        raise ValueError(
            f"stop_ids must be token ids (an int or a list of ints), got the string {stop_ids!r}, "
            "which would be read character by character. Pass ids, e.g. "
            "stop_ids=[tokenizer.eos_id], or tokenizer.encode(text) for a stop text."
        )
    if isinstance(stop_ids, torch.Tensor):
        stop_ids = stop_ids.tolist()
    items = [stop_ids] if not isinstance(stop_ids, Iterable) else list(stop_ids)
    ids = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            ids.append(operator.index(item))
        except TypeError:
            raise ValueError(
                f"stop_ids must be token ids (an int or a list of ints), got {stop_ids!r}; "
                f"{item!r} is not an integer id."
            ) from None
    return frozenset(ids)


def _check_rows(fn: str, name: str, t: torch.Tensor) -> None:
    require_tensor(fn, name, t)
    if t.dim() == 0 or t.shape[-1] == 0:
        raise ValueError(
            f"{fn} expects {name} of shape (..., vocab_size) with at least one entry per row, got "
            f"shape {tuple(t.shape)}."
        )


def _check_logits(logits: torch.Tensor, where: str) -> None:
    """Raise if a row of logits holds NaN or +inf, or is -inf everywhere (one sync, on (rows,))."""
    if math.isfinite(logits.amax(dim=-1).sum().item()):  # NaN, +inf or an all -inf row
        return
    rows = logits.reshape(-1, logits.shape[-1])
    bad_rows = (~rows.amax(dim=-1).isfinite()).nonzero()
    if len(bad_rows) == 0:
        return  # every row fine; only their sum overflowed
    row = int(bad_rows[0])
    if bool(rows[row].isnan().any()):
        what = "NaN"
    elif bool((rows[row] == math.inf).any()):
        what = "+inf"
    else:
        what = "-inf everywhere (no token left to choose)"
    raise ValueError(
        f"{where} that are {what} in row {row}, so there is no distribution to pick the next "
        "token from. Look for NaN/inf in the model's weights (a diverged training run?), in its "
        "input, or in settings such as norm_eps and rope_theta."
    )


def _explain_bad_probs(probs: torch.Tensor, sums: torch.Tensor) -> None:
    rows, flat_sums = probs.reshape(-1, probs.shape[-1]), sums.reshape(-1)
    if bool(rows.isnan().any()):
        problem = "contain NaN"
    elif bool((rows < 0).any()):
        problem = (
            "contain negative values; these look like logits: turn them into probabilities "
            "with torch.softmax(logits, dim=-1)"
        )
    elif bool((flat_sums == 0).any()):
        row = int((flat_sums == 0).nonzero()[0])
        problem = (
            f"sum to 0 in row {row} (all zeros), which is no distribution; a uniform one is "
            "torch.full_like(probs, 1 / probs.shape[-1])"
        )
    else:
        problem = "contain inf"
    raise ValueError(
        f"top_p_filter expects probabilities (>= 0, each row summing to more than 0), but they "
        f"{problem}."
    )


def _as_ids(seq: Any, what: str) -> list[int]:
    try:
        ids = [operator.index(t) for t in seq]
    except TypeError as exc:
        raise ValueError(f"{what} must contain integer token ids; got {seq!r}.") from exc
    if not ids:
        raise ValueError(f"{what} is empty: give at least one token id (e.g. a BOS id).")
    return ids


def _as_rows(prompt: Prompt) -> tuple[list[list[int]], bool]:
    """The prompt as a list of rows, and whether it was a single sequence."""
    if isinstance(prompt, torch.Tensor):
        if prompt.dtype.is_floating_point or prompt.dtype.is_complex or prompt.dim() not in (1, 2):
            raise ValueError(
                "a tensor prompt must hold integer ids with shape (seq,) or (batch, seq); got "
                f"shape {tuple(prompt.shape)} and dtype {prompt.dtype}."
            )
        if prompt.dim() == 1:
            return [_as_ids(prompt.tolist(), "the prompt")], True
        prompt = prompt.tolist()
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not prompt:
        raise ValueError(
            "the prompt must be a non-empty list of token ids, a list of such lists, or an "
            f"integer tensor; got {prompt!r}. Encode text with a tokenizer first."
        )
    if all(isinstance(row, (Sequence, torch.Tensor)) for row in prompt):
        return [_as_ids(row, f"prompt row {i}") for i, row in enumerate(prompt)], False
    return [_as_ids(prompt, "the prompt")], True


def _single_row(prompt: Sequence[int] | torch.Tensor) -> list[int]:
    rows, single = _as_rows(prompt)
    if not single:
        raise ValueError(
            "this function continues one prompt (a list of ids); for a batch call generate, "
            "or call it once per row."
        )
    return rows[0]


def _device(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device
