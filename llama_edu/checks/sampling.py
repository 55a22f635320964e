"""Checks for the generation chapter: top-k and top-p filtering, the cached generation loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import generate as ref
from ..model import Llama, ModelArgs
from ._core import Mistake, _Failure, call, check, close, fail, match_mistakes

NEG_INF = float("-inf")


def _same_with_inf(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes, -inf in the same places, and the finite entries close."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    if not torch.equal(torch.isneginf(a), torch.isneginf(b)):
        return False
    finite = ~torch.isneginf(b)
    return bool(torch.allclose(a[finite], b[finite], atol=1e-6, rtol=1e-5))


# --------------------------------------------------------------------------- top_k_filter


def _top_k_cases() -> list[tuple[str, torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(3)
    return [
        ("logits [2.0, -1.0, 0.5, 3.0, 1.0] and k=2", torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0]), 2),
        ("random logits of shape (3, 10) and k=3", torch.randn(3, 10, generator=gen) * 2, 3),
        ("random logits of shape (2, 4, 7) and k=1", torch.randn(2, 4, 7, generator=gen), 1),
        ("random logits of shape (6,) and k=6 (= V)", torch.randn(6, generator=gen), 6),
        ("negative logits of shape (2, 5) and k=4", -torch.rand(2, 5, generator=gen) - 1, 4),
    ]


def _top_k_mistakes(logits: torch.Tensor, k: int) -> list[Mistake]:
    """Typical wrong top-k results on these inputs, each with the message that names it."""
    v = logits.shape[-1]
    out: list[Mistake] = []
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    if k > 1:
        out.append((
            logits.masked_fill(logits <= kth, NEG_INF),
            "only k-1 entries survive: the k-th largest logit must be kept. Compare with "
            "`logits < kth` (strictly smaller is removed), not `<=`.",
        ))
    if k < v:
        if k + 1 <= v:
            kth1 = torch.topk(logits, k + 1, dim=-1).values[..., -1:]
            out.append((
                logits.masked_fill(logits < kth1, NEG_INF),
                "k+1 entries survive: you took the (k+1)-th value as the threshold (an "
                "off-by-one in the index). The threshold is topk(logits, k).values[..., -1].",
            ))
        out.append((
            logits.masked_fill(logits < kth, 0.0),
            "the removed entries are 0, but a logit of 0 still gets probability e^0 after the "
            "softmax. Set them to -inf (float('-inf')), which the softmax turns into 0.",
        ))
        low = torch.topk(logits, k, dim=-1, largest=False).values[..., -1:]
        out.append((
            logits.masked_fill(logits > low, NEG_INF),
            "you kept the k *smallest* logits. Keep the k largest: torch.topk returns the "
            "largest by default (largest=True), or sort in descending order.",
        ))
        out.append((
            torch.softmax(logits.masked_fill(logits < kth, NEG_INF), dim=-1),
            "you returned probabilities (a softmax of the filtered logits). This function "
            "returns logits: the sampler applies the softmax afterwards.",
        ))
        if logits.dim() > 1:
            flat_kth = torch.topk(logits.flatten(), k).values[-1]
            out.append((
                logits.masked_fill(logits < flat_kth, NEG_INF),
                "you took the top k over the whole tensor. Each row (the last axis) is its own "
                "distribution: use dim=-1 in torch.topk and keepdim for the threshold.",
            ))
    return out


@check
def top_k_filter(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(logits (..., V), k) -> Tensor (..., V)`: outside the top k set to -inf."""
    for label, logits, k in _top_k_cases():
        given = logits.clone()
        out = call(fn, given, k)
        if not torch.equal(given, logits):
            fail(
                "your function changed `logits` in place (e.g. with masked_fill_ or an index "
                "assignment). Return a new tensor (masked_fill, torch.where) and leave the "
                "input as it is: the caller may still need the original logits."
            )
        expected = ref.top_k_filter(logits, k)
        if _same_with_inf(out, expected):
            continue
        if isinstance(out, torch.Tensor) and out.shape[:-1] == logits.shape[:-1] and (
            out.shape[-1] == k != logits.shape[-1]
        ):
            fail(
                f"with {label} the result has only k={k} entries per row: these are the top-k "
                "values, not the filtered logits. Keep shape (..., V) and put -inf where a "
                "token is not among the k largest, so that ids stay where they were."
            )
        for wrong, message in _top_k_mistakes(logits, k):
            if _same_with_inf(out, wrong):
                fail(f"with {label}: {message}")
        if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
            match_mistakes(out, expected, [], label)  # names the type or the shape
        kept = (~torch.isneginf(out)).sum(-1).flatten().tolist()
        fail(
            f"with {label} the result is not the logits with everything outside the top {k} "
            f"set to -inf. It keeps {kept} entries per row (expected {k} each); entries that "
            "are kept must be the original logits, unchanged."
        )
    return "keeps exactly the k largest logits of every row unchanged, -inf elsewhere; 5 inputs"


# --------------------------------------------------------------------------- top_p_filter


def _top_p_cases() -> list[tuple[str, torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(4)
    halves = torch.tensor([0.5, 0.25, 0.125, 0.125])
    return [
        ("probs [0.1, 0.4, 0.2, 0.3] and p=0.6", torch.tensor([0.1, 0.4, 0.2, 0.3]), 0.6),
        ("probs [0.5, 0.25, 0.125, 0.125] and p=0.75 (the mass reaches p exactly)", halves, 0.75),
        ("probs [0.7, 0.2, 0.1] and p=0.5 (smaller than the top probability)",
         torch.tensor([0.7, 0.2, 0.1]), 0.5),
        ("random probs of shape (3, 12) and p=0.9",
         torch.softmax(torch.randn(3, 12, generator=gen) * 2, -1), 0.9),
        ("random probs of shape (2, 2, 6) and p=0.3",
         torch.softmax(torch.randn(2, 2, 6, generator=gen), -1), 0.3),
        ("random probs of shape (8,) and p=1.0", torch.softmax(torch.randn(8, generator=gen), -1),
         1.0),
    ]


def _top_p_mistakes(probs: torch.Tensor, p: float) -> list[Mistake]:
    """Typical wrong top-p results on these inputs, each with the message that names it."""
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    cum = sorted_probs.cumsum(-1)
    before = F.pad(cum[..., :-1], (1, 0))

    def back(keep: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        return kept / kept.sum(-1, keepdim=True) if normalise else kept

    reference_keep = (before < p).to(probs.dtype)
    out: list[Mistake] = [
        (
            back(reference_keep, normalise=False),
            "the kept probabilities are right but do not sum to 1: divide by their sum "
            "(renormalise) so that the result is a distribution again.",
        ),
        (
            sorted_probs * reference_keep / (sorted_probs * reference_keep).sum(-1, keepdim=True),
            "the result is in sorted order. Put every probability back at its token id (scatter "
            "with the sort indices), so that position j still means token j.",
        ),
    ]
    if (cum <= p).any():
        without_crossing = (cum <= p).to(probs.dtype)
        if without_crossing.sum(-1).min() > 0:
            out.append((
                back(without_crossing),
                "the token that crosses p is missing: you kept tokens while the cumulative sum "
                "*including* the token is <= p. Keep a token when the mass *before* it is still "
                "below p (cumsum - probs < p), so the kept set reaches p.",
            ))
    rolled = torch.roll(cum > p, 1, dims=-1)  # wraps the last entry round to the front
    if rolled[..., 0].any():
        out.append((
            back((~rolled).to(probs.dtype)),
            "the most likely token is missing: torch.roll wraps the last entry of the mask "
            "round to the front. Shift with F.pad(mask[..., :-1], (1, 0)) (or set the first "
            "entry to keep), so that the top token is always kept.",
        ))
    out.append((
        back((cum < p).to(probs.dtype)),
        "the token that crosses p is missing (and, when the top probability alone exceeds p, "
        "everything is removed). Keep a token when the mass *before* it is below p.",
    ))
    asc, asc_order = torch.sort(probs, dim=-1, descending=False, stable=True)
    asc_before = F.pad(asc.cumsum(-1)[..., :-1], (1, 0))
    asc_kept = torch.zeros_like(probs).scatter(-1, asc_order, asc * (asc_before < p))
    out.append((
        asc_kept / asc_kept.sum(-1, keepdim=True),
        "you kept the *least* likely tokens: sort in descending order "
        "(torch.sort(..., descending=True)) so that the mass is collected from the top.",
    ))
    return out


TIE = 1e-6
"""Mass differences this small count as a tie with p (float32 sums of probabilities)."""


def _a_nucleus(out: torch.Tensor, probs: torch.Tensor, p: float) -> bool:
    """True when `out` is a correct top-p result under any tie convention.

    Correct means: the kept tokens are a top set (no removed token is more likely than a kept
    one, so equal probabilities may be kept in either order), the mass before the least likely
    kept token is not above p, the kept mass is not below p (both up to TIE), and the kept
    probabilities are renormalised at their ids. This accepts the rule of chapter 10 (keep when
    the mass before is < p), Meta's `sample_top_p` (remove when the mass before is > p) and
    Hugging Face's TopPLogitsWarper (sort ascending, remove while the cumulative mass is
    <= 1 - p), which differ only where a sum of probabilities equals p exactly.
    """
    if not isinstance(out, torch.Tensor) or out.shape != probs.shape:
        return False
    if not torch.isfinite(out).all():
        return False
    q = probs.double() / probs.double().sum(-1, keepdim=True)
    q, o = q.reshape(-1, q.shape[-1]), out.double().reshape(-1, q.shape[-1])
    kept = o.abs() > TIE
    for q_row, k_row in zip(q, kept, strict=True):
        if not k_row.any():
            return False
        if (~k_row).any() and q_row[~k_row].max() > q_row[k_row].min():
            return False  # not a top set: a removed token is more likely than a kept one
        mass = q_row[k_row].sum().item()
        if mass < p - TIE or mass - q_row[k_row].min().item() > p + TIE:
            return False
    renormalised = q * kept / (q * kept).sum(-1, keepdim=True)
    return close(o, renormalised, atol=1e-6)


@check
def top_p_filter(fn: Callable[..., torch.Tensor]) -> str:
    """Check `fn(probs (..., V), p) -> Tensor (..., V)`: the renormalised top-p nucleus.

    Where the sorted probabilities add up to p exactly, rules differ: chapter 10 (and the
    library) removes a token whose preceding mass equals p, Meta's `sample_top_p` in LLaMA's
    generation.py keeps it (it removes a token only when the mass before it is > p), and Hugging
    Face's TopPLogitsWarper sorts in ascending order and removes tokens while their cumulative
    mass is <= 1 - p. Among equal probabilities any of them may be the one kept. All of these
    are accepted; the check rejects results that differ anywhere else.
    """
    for label, probs, p in _top_p_cases():
        given = probs.clone()
        out = call(fn, given, p)
        if not torch.equal(given, probs):
            fail(
                "your function changed `probs` in place. Return a new tensor and leave the "
                "input as it is."
            )
        expected = ref.top_p_filter(probs, p)
        if isinstance(out, torch.Tensor) and out.shape == probs.shape and torch.isnan(out).any():
            fail(
                f"with {label} the result contains nan: probably every token was removed (so "
                "you divided 0 by 0). The most likely token must always be kept, even when its "
                "probability alone is above p."
            )
        if _a_nucleus(out, probs, p):
            continue  # the chapter's rule, or another tie convention (Meta's, Hugging Face's)
        match_mistakes(
            out,
            expected,
            _top_p_mistakes(probs, p),
            label,
            "Expected: sort from most to least likely, keep a token while the mass before it "
            "is below p, put the kept probabilities back at their ids, divide by their sum. "
            "(Where the mass before a token equals p exactly, keeping it, as Meta's "
            "sample_top_p does, is accepted too.)",
            atol=1e-6,
        )
    return (
        "keeps the smallest top set that reaches p (the crossing token and the top token "
        "included), renormalised, at the original ids; 6 inputs incl. p=1 and an exact tie"
    )


# --------------------------------------------------------------------------- generate_loop

_LOOP_RULE = (
    "The rule generate follows: at temperature 0 take logits.argmax(); otherwise divide the "
    "logits by the temperature, softmax, apply top_p_filter when top_p is not None, and draw "
    "one id with torch.multinomial(probs, 1, generator=generator) from the full distribution "
    "(all V probabilities), once per step."
)


def _loop_model() -> Llama:
    """A small random Llama (48 tokens) whose next-token distributions are peaked, not flat."""
    args = ModelArgs(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=48, max_seq_len=48, multiple_of=16
    )
    with torch.random.fork_rng(devices=[]):  # leave the learner's global random state alone
        model = Llama(args).eval()
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, 0.6 if name == "output.weight" else 0.3, generator=gen)
    return model


class _Watch:
    """Counts the model's calls, the positions each call feeds, the caches used and made."""

    def __init__(self, model: Llama) -> None:
        self.calls: list[tuple[int, object]] = []  # (positions fed, the cache passed or None)
        self.made = 0
        model.register_forward_pre_hook(self._seen, with_kwargs=True)
        make = model.init_cache

        def init_cache(*args: object, **kwargs: object) -> object:
            self.made += 1
            return make(*args, **kwargs)

        model.init_cache = init_cache  # type: ignore[method-assign]

    def _seen(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = args[0] if args else kwargs.get("tokens")
        cache = args[1] if len(args) > 1 else kwargs.get("cache")
        fed = int(tokens.shape[-1]) if isinstance(tokens, torch.Tensor) and tokens.dim() else 0
        self.calls.append((fed, cache))  # kept alive, so that id() tells caches apart

    def reset(self) -> None:
        self.calls, self.made = [], 0


@dataclass
class _LoopCase:
    label: str
    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    stop_ids: Sequence[int] = ()
    seed: int | None = None

    def generator(self) -> torch.Generator | None:
        return None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the call; the first case relies on the defaults."""
        if self.temperature == 0 and self.top_p is None and not self.stop_ids:
            return {}
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop_ids": self.stop_ids,
            "generator": self.generator(),
        }


def _reference_ids(model: Llama, case: _LoopCase) -> list[int]:
    out = ref.generate(
        model,
        case.prompt,
        case.max_new_tokens,
        temperature=case.temperature,
        top_p=case.top_p,
        stop_ids=case.stop_ids,
        generator=case.generator(),
    )
    return [int(i) for i in out]  # type: ignore[union-attr]


def _stop_after(ids: list[int], at_least: int) -> int:
    """An id first seen at index >= at_least of ids (so that stopping there cuts the list)."""
    for index in range(at_least, len(ids)):
        if ids[index] not in ids[:index]:
            return ids[index]
    raise AssertionError("the check's model repeats itself; choose another prompt")


def _loop_cases(model: Llama) -> list[_LoopCase]:
    greedy = _LoopCase("greedy decoding (the defaults) of 16 tokens after [1, 5, 9]", [1, 5, 9], 16)
    stop = _stop_after(_reference_ids(model, greedy), 4)
    hot = {"temperature": 1.3, "top_p": 0.9, "seed": 2}
    sampled = _LoopCase("temperature 1.3, top_p=0.9, seed 2 after [6, 2]", [6, 2], 16, **hot)
    hot_stop = _stop_after(_reference_ids(model, sampled), 5)
    return [
        greedy,
        _LoopCase(
            f"greedy decoding with stop_ids=[{stop}] after [1, 5, 9]", [1, 5, 9], 16,
            stop_ids=[stop],
        ),
        _LoopCase(
            "temperature 1.0, seed 0, 16 tokens after [2, 7]", [2, 7], 16, temperature=1.0, seed=0
        ),
        _LoopCase(
            "temperature 0.7, top_p=0.8, seed 1, 20 tokens after [3, 4, 8, 1]", [3, 4, 8, 1], 20,
            temperature=0.7, top_p=0.8, seed=1,
        ),
        _LoopCase(
            f"temperature 1.3, top_p=0.9, stop_ids=({hot_stop},), seed 2 after [6, 2]", [6, 2], 16,
            stop_ids=(hot_stop,), **hot,
        ),
    ]  # fmt: skip


def _variant_ids(
    model: Llama, case: _LoopCase, pick: Callable[[torch.Tensor, torch.Generator | None], int]
) -> list[int]:
    """The ids of a cached loop that chooses each id with `pick(logits (V,), generator)`."""
    gen = case.generator()
    cache = model.init_cache(1, len(case.prompt) + case.max_new_tokens)
    feed, new = torch.tensor([case.prompt]), []
    with torch.no_grad():
        for _ in range(case.max_new_tokens):
            logits = model(feed, cache=cache)[0, -1]
            new.append(pick(logits, gen))
            if new[-1] in case.stop_ids:
                break
            feed = torch.tensor([[new[-1]]])
    return new


def _draw(probs: torch.Tensor, gen: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))


def _sampling_mistakes(model: Llama, case: _LoopCase) -> list[tuple[list[int], str]]:
    """What typical wrong sampling rules produce on this case, each with its message."""
    t, p = case.temperature, case.top_p

    def nucleus(probs: torch.Tensor) -> torch.Tensor:
        return probs if p is None else ref.top_p_filter(probs, p)

    mistakes = [
        (
            lambda z, g: int(z.argmax()),
            "you took the argmax although the temperature is above 0: draw the id with "
            "torch.multinomial instead (greedy only at temperature 0).",
        ),
        (
            lambda z, g: _draw(nucleus(torch.softmax(z, -1)), g),
            "the temperature is not used: divide the logits by it before the softmax.",
        ),
    ]
    if p is not None:
        mistakes.append(
            (
                lambda z, g: _draw(torch.softmax(z / t, -1), g),
                "top_p is ignored: filter the probabilities with top_p_filter(probs, top_p) before "
                "the draw.",
            )
        )
        mistakes.append(
            (
                lambda z, g: _draw(torch.softmax(nucleus(torch.softmax(z, -1)).log() / t, -1), g),
                "the temperature is applied after top-p: the kept set was chosen on the "
                "distribution at temperature 1. Divide the logits by the temperature first, then "
                "softmax, then top_p_filter.",
            )
        )
    out = []
    for pick, message in mistakes:
        ids = _variant_ids(model, case, pick)
        if ids != _reference_ids(model, case):
            out.append((ids, message))
    return out


def _as_id_list(out: Any, label: str) -> list[int]:
    if isinstance(out, torch.Tensor):
        fail(
            f"with {label} your function returned a Tensor; return a list of ints (the new ids "
            "only), for example ids.tolist()."
        )
    if not isinstance(out, (list, tuple)):
        fail(f"with {label} your function returned {type(out).__name__}; return a list of ints.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in out):
        kinds = sorted({type(i).__name__ for i in out})
        fail(
            f"with {label} the list holds {', '.join(kinds)}, not only ints: convert each id "
            "with int(...) (a 0-d tensor is not an int)."
        )
    return list(out)


def _check_the_cache(watch: _Watch, case: _LoopCase, out: list[int], label: str) -> None:
    """Fail unless one cache was used at every call, with one position per step after the prompt."""
    if not watch.calls:
        fail(f"with {label} your function never called the model: call model(tokens, cache=cache).")
    fed = sum(positions for positions, _ in watch.calls)
    needed = len(case.prompt) + max(len(out), 1) - 1
    uncached = sum(cache is None for _, cache in watch.calls)
    if uncached:
        fail(
            f"with {label} {uncached} of your {len(watch.calls)} calls to the model had no cache, "
            f"and the model processed {fed} positions where a cached loop processes {needed}. "
            "Make one cache with model.init_cache(1, len(prompt) + max_new_tokens) before the "
            "loop, pass cache=cache at every call, and after the prompt feed only the newest id."
        )
    caches = {id(cache) for _, cache in watch.calls}
    if watch.made > 1 or len(caches) > 1:
        fail(
            f"with {label} you made {max(watch.made, len(caches))} caches. A new cache is empty "
            "and starts at position 0, so the next token sees none of the earlier ones and gets "
            "the wrong position. Make the cache once, before the loop."
        )
    if fed > needed + 1:
        fail(
            f"with {label} the model processed {fed} positions where a cached loop processes "
            f"{needed}: you fed more than the newest id after the prompt (the whole sequence "
            "again?). The cache already holds every earlier position: feed only the newest id, "
            "not the whole sequence again."
        )


def _run_case(fn: Callable[..., Any], model: Llama, watch: _Watch, case: _LoopCase) -> list[int]:
    """Call the candidate on one case; name the errors that point at a typical mistake."""
    prompt = list(case.prompt)
    kwargs = case.kwargs()
    watch.reset()
    try:
        out = call(fn, model, prompt, case.max_new_tokens, **kwargs)
    except _Failure as failure:
        text = str(failure)
        if "probability tensor contains" in text:
            fail(
                f"with {case.label} torch.multinomial got negative numbers: you sampled from "
                "logits. Turn them into probabilities with torch.softmax first.\n" + text
            )
        if "do not fit" in text:
            fail(
                f"with {case.label} the cache overflowed: you fed the whole sequence again at "
                "each step. With a cache, feed only the newest id after the prompt.\n" + text
            )
        raise
    if prompt != case.prompt:
        fail(
            f"with {case.label} your function changed the prompt list it was given (appended "
            "to it?). Copy it first, e.g. tokens = list(prompt)."
        )
    ids = _as_id_list(out, case.label)
    generator = kwargs.get("generator")
    unused = generator is not None and torch.equal(
        generator.get_state(), case.generator().get_state()
    )
    return ids, unused


@check
def generate_loop(fn: Callable[..., list[int]]) -> str:
    """Check `fn(model, prompt, max_new_tokens, temperature=0.0, top_p=None, stop_ids=(),
    generator=None) -> list[int]`: the new ids of generate, made with one KV cache.

    The model is a small random Llama with a hook that counts what every call feeds: one cache
    must be made and passed at every call, and after the prompt each step may feed one position.
    Greedy and seeded sampled ids must equal `llama_edu.generate.generate` (stop id included).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, above all on a busy machine
    try:
        return _generate_loop(fn)
    finally:
        torch.set_num_threads(threads)


def _generate_loop(fn: Callable[..., list[int]]) -> str:
    model = _loop_model()
    cases = _loop_cases(model)
    expected = {id(case): _reference_ids(model, case) for case in cases}
    watch = _Watch(model)
    for case in cases:
        want = expected[id(case)]
        ids, unused = _run_case(fn, model, watch, case)
        _check_the_cache(watch, case, ids, case.label)
        if ids == want:
            continue
        label = case.label
        if ids == case.prompt + want:
            fail(f"with {label} you returned the prompt too; return only the new ids.")
        if case.stop_ids and len(ids) > len(want) and ids[: len(want)] == want:
            fail(
                f"with {label} your loop went on after the stop id {want[-1]}: end the loop "
                "as soon as the new id is in stop_ids."
            )
        if case.stop_ids and ids == want[:-1]:
            fail(
                f"with {label} your loop stopped at the right place but left the stop id out. "
                "Like generate, include it as the last id, so a caller can tell 'stopped' from "
                "'ran out of max_new_tokens'."
            )
        if ids[: len(want)] == want[: len(ids)] and abs(len(ids) - len(want)) == 1:
            fail(
                f"with {label} you returned {len(ids)} ids where {len(want)} were expected: an "
                "off-by-one in the number of steps (max_new_tokens new ids, fewer only at a stop)."
            )
        if case.temperature > 0:
            watch.reset()
            for wrong, message in _sampling_mistakes(model, case):
                if ids == wrong:
                    fail(f"with {label}: {message}")
        if unused:
            fail(
                f"with {label} the generator passed in was never used, so the draws are not the "
                "seeded ones. Pass it on: torch.multinomial(probs, 1, generator=generator)."
            )
        pairs = zip(ids, want, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(ids), len(want)))
        fail(
            f"with {label} your ids differ from generate's from new id {first} on: yours "
            f"{ids[first : first + 5]}, generate's {want[first : first + 5]}. {_LOOP_RULE}"
        )
    return (
        "equals generate for greedy and seeded sampling (temperature, top-p), stops at a stop "
        "id (included); one cache, one position per step after the prompt; 5 runs"
    )
