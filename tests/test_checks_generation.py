"""checks.generate_loop (chapter 10 capstone): correct loops pass, typical mistakes are named."""

from __future__ import annotations

import pytest
import torch

from llama_edu import checks
from llama_edu.generate import generate, top_p_filter


def library_loop(model, prompt, max_new_tokens, temperature=0.0, top_p=None, stop_ids=(),
                 generator=None):
    """The library's generate (it makes one cache and feeds one id per step)."""
    return generate(model, prompt, max_new_tokens, temperature=temperature, top_p=top_p,
                    stop_ids=stop_ids, generator=generator)  # fmt: skip


def reference_loop(model, prompt, max_new_tokens, temperature=0.0, top_p=None, stop_ids=(),
                   generator=None):
    """The notebook's solution: prefill, then one id per step."""
    cache = model.init_cache(1, len(prompt) + max_new_tokens)
    feed, new_ids = torch.tensor([prompt]), []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(feed, cache=cache)[0, -1]
        if temperature == 0:
            next_id = int(logits.argmax())
        else:
            probs = torch.softmax((logits - logits.max()) / temperature, dim=-1)
            if top_p is not None:
                probs = top_p_filter(probs, top_p)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        new_ids.append(next_id)
        if next_id in stop_ids:
            break
        feed = torch.tensor([[next_id]])
    return new_ids


def token_by_token_loop(model, prompt, max_new_tokens, temperature=0.0, top_p=None,
                        stop_ids=(), generator=None):
    """Another correct loop: the prompt fed one id at a time, a (1, V) row, no max shift, a
    while loop, the last id fed too, and a hand-written top-p with Meta's tie rule."""
    cache = model.init_cache(1)
    tokens = list(prompt)
    for token in tokens[:-1]:
        model(torch.tensor([[token]]), cache)
    new = []
    while True:
        row = model(torch.tensor([[tokens[-1]]]), cache)[:, -1].detach()  # (1, V)
        if temperature:
            probs = torch.softmax(row / temperature, dim=-1)
            if top_p is not None:
                sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
                drop = sorted_probs.cumsum(-1) - sorted_probs > top_p
                sorted_probs = sorted_probs.masked_fill(drop, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            choice = torch.multinomial(probs, 1, generator=generator).item()
        else:
            choice = row.argmax(dim=-1).item()
        tokens.append(choice)
        new.append(choice)
        if choice in set(stop_ids) or len(new) == max_new_tokens:
            return new


def mistaken(**flags):
    """The reference loop with one typical mistake switched on."""

    def loop(model, prompt, max_new_tokens, temperature=0.0, top_p=None, stop_ids=(),
             generator=None):
        tokens = prompt if flags.get("mutates_prompt") else list(prompt)
        cache = None if flags.get("no_cache") else model.init_cache(1, model.args.max_seq_len)
        feed, new_ids = torch.tensor([tokens]), []
        steps = max_new_tokens - 1 if flags.get("one_short") else max_new_tokens
        for _ in range(steps):
            if flags.get("new_cache_each_step"):
                cache = model.init_cache(1)
            with torch.no_grad():
                logits = (model(feed) if cache is None else model(feed, cache=cache))[0, -1]
            if temperature == 0 or flags.get("always_argmax"):
                next_id = int(logits.argmax())
            else:
                t = 1.0 if flags.get("no_temperature") else temperature
                if flags.get("from_logits"):
                    probs = logits / t
                elif flags.get("temperature_after_top_p"):
                    probs = torch.softmax(logits, dim=-1)
                    if top_p is not None:
                        probs = top_p_filter(probs, top_p)
                    probs = torch.softmax(probs.log() / t, dim=-1)
                else:
                    probs = torch.softmax(logits / t, dim=-1)
                    if top_p is not None and not flags.get("no_top_p"):
                        probs = top_p_filter(probs, top_p)
                gen = None if flags.get("no_generator") else generator
                next_id = int(torch.multinomial(probs, 1, generator=gen))
            tokens.append(next_id)
            new_ids.append(next_id)
            if next_id in stop_ids and not flags.get("ignores_stop"):
                if flags.get("drops_stop"):
                    new_ids.pop()
                break
            whole = cache is None or flags.get("refeeds_whole_sequence")
            feed = torch.tensor([tokens]) if whole else torch.tensor([[next_id]])
        return tokens if flags.get("returns_prompt") else new_ids

    loop.__name__ = "_".join(flags)
    return loop


def not_yet(*args, **kwargs):
    raise NotImplementedError("Exercise: replace this line with your solution")


@pytest.mark.parametrize("solution", [library_loop, reference_loop, token_by_token_loop])
def test_correct_loops_pass(solution, capsys):
    checks.generate_loop(solution)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 checks.generate_loop passed: ")
    assert checks.results()["generate_loop"].status == "passed"


MISTAKES = [
    ({"no_cache": True}, ["had no cache", "init_cache"]),
    ({"refeeds_whole_sequence": True}, ["whole sequence again"]),
    ({"new_cache_each_step": True}, ["caches", "Make the cache once"]),
    ({"ignores_stop": True}, ["went on after the stop id"]),
    ({"drops_stop": True}, ["left the stop id out"]),
    ({"returns_prompt": True}, ["returned the prompt too"]),
    ({"mutates_prompt": True}, ["changed the prompt list"]),
    ({"one_short": True}, ["off-by-one"]),
    ({"always_argmax": True}, ["argmax although the temperature is above 0"]),
    ({"no_temperature": True}, ["temperature is not used"]),
    ({"no_top_p": True}, ["top_p is ignored"]),
    ({"temperature_after_top_p": True}, ["temperature is applied after top-p"]),
    ({"from_logits": True}, ["sampled from logits"]),
    ({"no_generator": True}, ["generator passed in was never used"]),
]


@pytest.mark.parametrize(("flags", "words"), MISTAKES, ids=["-".join(f) for f, _ in MISTAKES])
def test_typical_mistakes_are_named(flags, words):
    with pytest.raises(checks.CheckFailed) as info:
        checks.generate_loop(mistaken(**flags))
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"
    assert checks.results()["generate_loop"].status == "failed"


def test_a_loop_without_a_mistake_flag_is_the_reference(capsys):
    """The mistake builder itself is right when no mistake is switched on."""
    checks.generate_loop(mistaken())
    assert capsys.readouterr().out.startswith("\u2713 checks.generate_loop passed")


def test_not_implemented_is_reported(capsys):
    checks.generate_loop(not_yet)
    assert "checks.generate_loop: not implemented yet" in capsys.readouterr().out
    assert checks.results()["generate_loop"].status == "not implemented"


def test_the_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.generate_loop(reference_loop)
    torch.testing.assert_close(torch.rand(3), expected)


def test_the_check_is_listed():
    assert "generate_loop" in checks.available()
