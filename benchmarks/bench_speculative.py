"""Speculative decoding with the shipped model as target: acceptance, and speed against plain.

Usage:
    python benchmarks/bench_speculative.py          # trained and early-exit drafts, k = 2, 4
    python benchmarks/bench_speculative.py --drafts trained --draft-steps 600 --k 4 --json r.json

Drafts (--drafts): "trained", a separate model (1 layer, dim 64, the shipped tokenizer) trained
for --draft-steps steps on TinyTales stories; "early1", "early2", "early3", the shipped model's
own first 1, 2 or 3 blocks with its final norm and output layer (generate.early_exit_draft).
For each, both decoders continue the same prompts (the first sentence of held-out stories) by
--tokens tokens: `generate.generate` with the target alone (KV cache), and
`generate.speculative_generate` with the draft proposing k tokens a round. Measured per setting:
the share of proposals the target accepted, new tokens per target forward, and the wall time of
each decoder (median over --repeats passes over all prompts, interleaved). Greedy outputs are
checked to be identical. On a CPU a forward of either model costs mostly fixed overhead, so the
draft is not much cheaper than the target and the wall-clock speed-up is small or below 1; the
tokens per target forward say what the method would save with a large target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from llama_edu.generate import early_exit_draft, generate, speculative_generate
from llama_edu.model import Llama, ModelArgs
from llama_edu.tinytales import TinyTales
from llama_edu.train import load_pretrained, random_windows, train_step


def train_draft(tokenizer, steps: int, seed: int = 0) -> Llama:  # noqa: ANN001
    """A 1-layer, dim-64 Llama trained on TinyTales with the target's tokenizer."""
    torch.manual_seed(seed)
    draft = Llama(ModelArgs(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, multiple_of=32,
                            vocab_size=tokenizer.vocab_size, max_seq_len=256))  # fmt: skip
    ids: list[int] = []
    for story in TinyTales().sample(4000, seed=seed + 1):
        ids += tokenizer.encode(story.text, bos=True, eos=True)
    tokens = torch.tensor(ids)
    optimizer = torch.optim.AdamW(draft.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    draft.train()
    for _ in range(steps):
        x, y = random_windows(tokens, 32, 128, gen)
        train_step(draft, optimizer, x, y, lr=3e-3, grad_clip=1.0)
    return draft.eval()


def main() -> None:
    """Train the draft, decode with and without it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafts", nargs="+", default=["trained", "early1", "early2"],
                        choices=["trained", "early1", "early2", "early3"])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--draft-steps", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    target, tok = load_pretrained()
    target.eval()
    drafts = {}
    for name in opts.drafts:
        t0 = time.perf_counter()
        if name == "trained":
            drafts[name] = train_draft(tok, opts.draft_steps)
            how = f"trained {opts.draft_steps} steps in {time.perf_counter() - t0:.0f} s"
        else:
            drafts[name] = early_exit_draft(target, int(name.removeprefix("early")))
            how = "the target's first blocks"
        print(f"draft {name}: {sum(p.numel() for p in drafts[name].parameters()):,} parameters "
              f"against the target's {sum(p.numel() for p in target.parameters()):,}; {how}",
              flush=True)
    prompts = [tok.encode(s.text.split(". ")[0] + ".", bos=True)
               for s in TinyTales().sample(opts.prompts, seed=4242)]
    rows = []
    for (draft_name, draft), temperature, k in itertools.product(drafts.items(),
                                                                 opts.temperatures, opts.k):
        plain_s, spec_s = [], []
        stats = {"proposed": 0, "accepted": 0, "target_calls": 0}
        for rep in range(opts.repeats):
            gen_a = torch.Generator().manual_seed(rep)
            gen_b = torch.Generator().manual_seed(rep)
            t = time.perf_counter()
            plain = [generate(target, p, opts.tokens, temperature=temperature, generator=gen_a)
                     for p in prompts]  # fmt: skip
            plain_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            spec = []
            for p in prompts:
                one: dict[str, int] = {}
                spec.append(speculative_generate(target, draft, p, opts.tokens, k=k,
                                                 temperature=temperature, generator=gen_b,
                                                 stats=one))  # fmt: skip
                if rep == 0:
                    for key in stats:
                        stats[key] += one[key]
            spec_s.append(time.perf_counter() - t)
            if temperature == 0 and spec != plain:
                sys.exit("greedy speculative output differs from the target's own: a bug")
        new_tokens = opts.tokens * len(prompts)
        row = {"draft": draft_name, "temperature": temperature, "k": k,
               "acceptance": stats["accepted"] / max(stats["proposed"], 1),
               "tokens_per_target_call": new_tokens / stats["target_calls"],
               "plain_s": statistics.median(plain_s),
               "speculative_s": statistics.median(spec_s)}
        row["speedup"] = row["plain_s"] / row["speculative_s"]
        rows.append(row)
        print(json.dumps({k2: round(v, 4) if isinstance(v, float) else v
                          for k2, v in row.items()}), flush=True)  # fmt: skip
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = ["| draft | temperature | k | proposals accepted | new tokens per target forward "
             "| plain (s) | speculative (s) | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['draft']} | {r['temperature']:g} | {r['k']} | {r['acceptance']:.1%} "
                     f"| {r['tokens_per_target_call']:.2f} | {r['plain_s']:.2f} "
                     f"| {r['speculative_s']:.2f} | {r['speedup']:.2f}x |")  # fmt: skip
    print("\n".join(lines))
    print(f"\n{len(prompts)} prompts x {opts.tokens} new tokens, median of {opts.repeats}; "
          f"`python benchmarks/bench_speculative.py {' '.join(sys.argv[1:])}` on {machine}")
    if opts.json:
        opts.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
