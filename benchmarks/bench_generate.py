"""Greedy generation on the CPU with the KV cache vs recomputing the whole sequence every step.

Usage:  python benchmarks/bench_generate.py [--new-tokens 256 ...] [--prompt-len 8] [--repeats 3]
        python benchmarks/bench_generate.py --floor

The tiny preset's max_seq_len is raised to 512 (or more, for longer runs) so prompt + new fits.
--floor also times one cached decoding step written as bare functional calls on the same weights
(no modules, no input checks, gradients switched off): about the least eager PyTorch can spend
per token for this model, which bounds the speed-up any cache can show at this size.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llama_edu.generate import generate
from llama_edu.model import Llama, ModelArgs


def best_time(fn: Callable[[], list[int]], repeats: int) -> tuple[float, list[int]]:
    """Best wall time of `repeats` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def bare_step(
    model: Llama, k_cache: torch.Tensor, v_cache: torch.Tensor, token: torch.Tensor, pos: int
) -> torch.Tensor:
    """One cached step of `model` as plain functional calls: logits (1, 1, vocab) for `token`."""
    args = model.args
    heads, kv_heads, head_dim = args.n_heads, args.kv_heads, args.head_dim
    rotation = torch.complex(model.rope_cos[pos], model.rope_sin[pos])  # (head_dim / 2,)
    h = F.embedding(token, model.tok_embeddings.weight)  # (1, 1, dim)
    for i, layer in enumerate(model.layers):
        att, ffn = layer.attention, layer.feed_forward
        x = F.rms_norm(h, (args.dim,), layer.attention_norm.weight, args.norm_eps)
        q = torch.view_as_complex(F.linear(x, att.wq.weight).view(1, heads, head_dim // 2, 2))
        k = torch.view_as_complex(F.linear(x, att.wk.weight).view(1, kv_heads, head_dim // 2, 2))
        k_cache[i, pos] = torch.view_as_real(k * rotation).flatten(-2)  # (kv_heads, head_dim)
        v_cache[i, pos] = F.linear(x, att.wv.weight).view(kv_heads, head_dim)
        q = torch.view_as_real(q * rotation).flatten(-2)  # (1, heads, head_dim)
        keys = k_cache[i, : pos + 1].transpose(0, 1)[None]  # (1, kv_heads, pos + 1, head_dim)
        values = v_cache[i, : pos + 1].transpose(0, 1)[None]
        out = F.scaled_dot_product_attention(q[:, :, None], keys, values, enable_gqa=True)
        h = h + F.linear(out.reshape(1, 1, args.dim), att.wo.weight)  # (1, 1, dim)
        x = F.rms_norm(h, (args.dim,), layer.ffn_norm.weight, args.norm_eps)
        h = h + F.linear(
            F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight
        )
    return F.linear(
        F.rms_norm(h, (args.dim,), model.norm.weight, args.norm_eps), model.output.weight
    )


def floor_ms_per_step(model: Llama, prompt: list[int], steps: int, repeats: int) -> float:
    """Best ms per token of `bare_step`, checked against the model at every prompt position."""
    args = model.args
    shape = (args.n_layers, args.max_seq_len, args.kv_heads, args.head_dim)
    k_cache, v_cache = torch.zeros(shape), torch.zeros(shape)
    token = torch.tensor([[prompt[0]]])
    with torch.inference_mode():
        cache = model.init_cache(1)
        for pos, token_id in enumerate(prompt):  # every position: RoPE and attention both count
            one = torch.tensor([[token_id]])
            torch.testing.assert_close(
                bare_step(model, k_cache, v_cache, one, pos), model(one, cache=cache)
            )
        best = float("inf")
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for pos in range(steps):
                bare_step(model, k_cache, v_cache, token, pos)
            best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e3


def parts_ms(model: Llama, repeats: int, steps: int = 256) -> dict[str, float]:
    """Best ms per cached step of the model as it is, and with one part switched off at a time."""
    import llama_edu.attention as attention

    def step_ms() -> float:
        token = torch.tensor([[5]])
        best = float("inf")
        for r in range(repeats + 1):  # the first round warms up
            cache = model.init_cache(1, steps)
            start = time.perf_counter()
            for _ in range(steps):
                model(token, cache=cache)
            if r:
                best = min(best, (time.perf_counter() - start) / steps)
        return best * 1e3

    switches = {  # (object, attribute, stand-in): the step gives wrong logits without them
        "without RoPE": (attention, "_rotate_pairs", lambda x, cos, sin: x),
        "without the model's input checks": (
            Llama, "_validate", lambda self, tokens, cache: 0 if cache is None else cache.length
        ),
        "without the attention's input checks": (
            attention.Attention, "_check_input", lambda self, x, cos, sin: None
        ),
    }
    with torch.inference_mode():  # as generate() calls the model
        times = {"as it is": step_ms()}
        for name, (owner, attribute, stand_in) in switches.items():
            original = getattr(owner, attribute)
            setattr(owner, attribute, stand_in)
            try:
                times[name] = step_ms()
            finally:
                setattr(owner, attribute, original)
        times["as it is, again"] = step_ms()
    return times


def main() -> None:
    """Print a markdown row: both timings, the speed-up, and whether the tokens agree."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[256])
    parser.add_argument("--prompt-len", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--floor", action="store_true", help="also time the bare decoding step")
    parser.add_argument("--parts", action="store_true",
                        help="also time the cached step with RoPE or input checks switched off")
    args = parser.parse_args()
    torch.manual_seed(0)
    max_seq_len = max(512, args.prompt_len + max(args.new_tokens))
    model_args = ModelArgs.from_name("tiny", max_seq_len=max_seq_len)
    model = Llama(model_args).eval()
    prompt = torch.randint(0, model_args.vocab_size, (args.prompt_len,)).tolist()

    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    print(
        f"# preset tiny (max_seq_len {max_seq_len}), float32, greedy, prompt {args.prompt_len} "
        f"tokens, best of {args.repeats}"
    )
    print("| new tokens | with cache (s) | without cache (s) | speed-up | tokens identical |")
    print("|---:|---:|---:|---:|:---:|")
    for n in args.new_tokens:
        cached_s, cached = best_time(lambda n=n: generate(model, prompt, n), args.repeats)
        full_s, full = best_time(
            lambda n=n: generate(model, prompt, n, use_cache=False), args.repeats
        )
        assert cached == full, "the cache changed the greedy tokens"
        print(f"| {n} | {cached_s:.3f} | {full_s:.3f} | {full_s / cached_s:.1f}x | yes |")
    if args.floor:
        model.requires_grad_(False)
        floor = floor_ms_per_step(model, prompt, max(args.new_tokens), args.repeats)
        print(f"# bare functional step (checked equal to the model's): {floor:.3f} ms per token")
    if args.parts:
        for name, ms in parts_ms(model, args.repeats).items():
            print(f"# cached model step, {name}: {ms:.3f} ms")


if __name__ == "__main__":
    main()
