"""Post-training the shipped TinyTales model: what SFT, LoRA, RS and DPO buy, and what they cost.

Usage:
    python benchmarks/bench_posttrain.py                        # every row, ~25 min on 2 cores
    python benchmarks/bench_posttrain.py --only base sft lora   # some rows
    python benchmarks/bench_posttrain.py --ranks 4 --lora-lr 1e-2 3e-2 --steps 100   # a LoRA sweep
    python benchmarks/bench_posttrain.py --md table.md --json runs.json --readme README.md

Every row starts from `llama_edu.train.load_pretrained()`. The rows:

- base: the shipped model, unchanged.
- sft: supervised fine-tuning of every weight (`posttrain.sft`) on questions about TinyTales
  stories (`tasks.qa_tasks(M, "train")`), in Llama 3's chat format (four new tokens, whose
  rows `posttrain.resize_vocab` adds).
- mix: the same SFT, but on the questions plus one story request per training story
  (`tasks.instruction_tasks`: "Write a story about Mia and a red kite in the park ..." answered
  with the story it was read from), so that the model also learns to tell stories in the chat.
- lora: the same task, step budget and batch with LoRA adapters (`lora.add_lora`) of each rank
  in --ranks on the --targets layers, alpha = --alpha-per-rank * r, learning rate --lora-lr
  (several values make a sweep; the table keeps them all). The four chat tokens' rows of the
  embedding and of the output layer are new and, under LoRA, frozen at their initial mean
  row: LoRA must adapt `output` (the default targets) or train those rows (--lora-new-rows),
  or the model cannot learn to write <|eot_id|> and gets no answer right.
- control: the same compute (steps x batch x the mean SFT example's length in tokens, same
  learning rate) spent on plain continued pre-training on fresh TinyTales stories.
- rs, dpo: rejection sampling and DPO with `TinyTales.is_valid` as the reward, from
  `llama_edu.preference`. RS runs in rounds (sample --rs-samples stories, train once on each
  valid one, --rs-batch per step), one row per seed in --rs-seeds; DPO takes --pref-steps steps.

Measured: exact-match accuracy on held-out questions (`posttrain.qa_eval`, greedy); the share of
held-out story requests answered at temperature 1 with a valid story that meets every
constraint (`posttrain.instruction_eval`, chat models only); trainable parameters
(`lora.count_trainable`); the bytes of AdamW's state tensors after one step (measured on a copy
of the model, not computed from a formula); training seconds; and the price: held-out bits per
character on true stories minus the exact entropy floor; of --valid-samples stories sampled at
temperature 1 the share TinyTales accepts, and of the first --samples of them the share of
distinct texts and the model's own entropy of its samples in bits per character (total -log2 p
over total characters, the floor's accounting; the mean of the per-sample ratios is in the
JSON). Wall-clock seconds on a shared machine are inflated by the other jobs on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import llama_edu  # noqa: F401
except ImportError:  # running from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from llama_edu import lora, posttrain
from llama_edu.generate import generate
from llama_edu.tasks import instruction_tasks, qa_tasks
from llama_edu.tinytales import TinyTales
from llama_edu.train import load_pretrained, random_windows, story_bits_per_char

START, END = "<!-- posttrain-table:start -->", "<!-- posttrain-table:end -->"
ROWS = ("base", "sft", "mix", "lora", "control", "rs", "dpo")
ALL_LINEAR = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
EVAL_SEED = 12345  # held-out true stories and the entropy floor, as in train.tales_report
CONTROL_SEED = 2026  # the continued pre-training text: fresh stories from the generator


# ------------------------------------------------------------------------------ measurements


def optimizer_state_bytes(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                          lr: float = 1e-3) -> int:  # fmt: skip
    """Bytes of every tensor in AdamW's state after one step on a copy of `model`'s trainables."""
    twin = copy.deepcopy(model)
    params = [p for p in twin.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters, so AdamW would keep no state")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    loss_fn(twin).backward()
    optimizer.step()
    return sum(t.numel() * t.element_size()
               for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor))  # fmt: skip


def sample_with_ids(model: nn.Module, tokenizer: Any, n: int, seed: int,
                    max_new_tokens: int = 200) -> list[list[int]]:  # fmt: skip
    """n samples at temperature 1 from bos, as token ids (eos kept where the model wrote it)."""
    limit = min(max_new_tokens, model.args.max_seq_len - 1)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        outputs = generate(model, [[tokenizer.bos_id]] * n, limit, temperature=1.0,
                           stop_ids=[tokenizer.eos_id], generator=generator)  # fmt: skip
    finally:
        model.train(was_training)
    return [list(out) for out in outputs]


def sample_entropy(model: nn.Module, tokenizer: Any, samples: Sequence[Sequence[int]],
                   batch_size: int = 50) -> dict[str, float]:  # fmt: skip
    """The model's own bits per character on its samples: total ratio and mean per-sample ratio.

    A sample's characters are its text plus one newline when it ended with eos (the floor's
    accounting: the eos token stands for the newline that ends a story).
    """
    bits: list[float] = []
    chars: list[int] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            rows = [[tokenizer.bos_id, *s] for s in samples[i : i + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.bool)
            for j, row in enumerate(rows):
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, 1 : len(row)] = True
            nats = posttrain.sequence_logprobs(model, ids, mask)
            bits += (-nats / math.log(2)).tolist()
            for s in samples[i : i + batch_size]:
                ended = bool(s) and s[-1] == tokenizer.eos_id
                text = tokenizer.decode([t for t in s if t != tokenizer.eos_id])
                chars.append(len(text) + int(ended))
    model.train(was_training)
    ratios = [b / c for b, c in zip(bits, chars, strict=True) if c > 0]
    return {"total": sum(bits) / max(sum(chars), 1),
            "mean_per_sample": sum(ratios) / max(len(ratios), 1)}  # fmt: skip


class Judge:
    """The held-out material every row is measured on: questions, true stories and the floor."""

    def __init__(self, test_stories: int, eval_stories: int, n_samples: int,
                 valid_samples: int) -> None:  # fmt: skip
        self.tales = TinyTales()
        self.questions = qa_tasks(test_stories, "test")
        self.instructions = instruction_tasks(test_stories, "test")
        self.stories = [s.text for s in self.tales.sample(eval_stories, seed=EVAL_SEED)]
        self.floor = self.tales.entropy_floor(n=eval_stories, seed=EVAL_SEED).bits_per_char
        self.n_samples = n_samples
        self.valid_samples = max(valid_samples, n_samples)

    def accuracy(self, model: nn.Module, chat_tok: Any) -> float:
        """Exact-match accuracy on the held-out questions."""
        return posttrain.qa_eval(model, chat_tok, self.questions)["all"]

    def follows(self, model: nn.Module, chat_tok: Any, seed: int = 0) -> dict[str, float]:
        """Shares of held-out story requests answered with a valid story that meets them all."""
        out = posttrain.instruction_eval(model, chat_tok, self.instructions, temperature=1.0,
                                         seed=seed, tales=self.tales)  # fmt: skip
        return {"instructions": out["ok"], "instructions_valid": out["valid"]}

    def price(self, model: nn.Module, tokenizer: Any, seed: int = 0) -> dict[str, float]:
        """Excess bits/char over the floor; validity of valid_samples samples; distinctness and
        entropy of the first n_samples of them."""
        excess = story_bits_per_char(model, tokenizer, self.stories) - self.floor
        samples = sample_with_ids(model, tokenizer, self.valid_samples, seed)
        texts = [tokenizer.decode([t for t in s if t != tokenizer.eos_id]) for s in samples]
        valid = posttrain.story_stats(texts, self.tales)["valid"]
        distinct = posttrain.story_stats(texts[: self.n_samples], self.tales)["distinct"]
        entropy = sample_entropy(model, tokenizer, samples[: self.n_samples])
        return {"excess": excess, "valid": valid, "distinct": distinct,
                "entropy": entropy["total"], "entropy_mean_per_sample": entropy["mean_per_sample"]}


# ------------------------------------------------------------------------------ training rows


def continued_pretraining(model: nn.Module, tokens: torch.Tensor, steps: int, batch_size: int,
                          seq_len: int, lr: float, seed: int) -> list[float]:  # fmt: skip
    """Plain next-token training on random windows of `tokens` (AdamW, no weight decay)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        x, y = random_windows(tokens, batch_size, seq_len, generator)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_new_rows(model: nn.Module, old_vocab: int) -> None:
    """Make the rows of ids >= old_vocab in tok_embeddings and output trainable, the rest not.

    The whole tensors get requires_grad, and a hook zeroes the gradient of the old rows; with
    AdamW without weight decay a zero gradient leaves those rows exactly as they are (AdamW's
    state still holds the whole tensors, so the memory column counts them).
    """
    for weight in (model.tok_embeddings.weight, model.output.weight):
        weight.requires_grad_(True)
        weight.register_hook(lambda g: torch.cat([torch.zeros_like(g[:old_vocab]),
                                                  g[old_vocab:]]))  # fmt: skip


def preference_rows(opts: argparse.Namespace, judge: Judge, base: nn.Module, tok: Any,
                    wanted: Sequence[str], show: Callable[[dict[str, Any]], None]
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """Rejection sampling and DPO from the shipped model, if llama_edu.preference exists."""
    try:
        from llama_edu import preference  # type: ignore[attr-defined]
    except ImportError as err:
        print(f"note: rows {', '.join(wanted)} skipped: llama_edu.preference cannot be imported "
              f"({err}).", flush=True)  # fmt: skip
        return []
    rows = []
    runs = [("rs", seed) for seed in opts.rs_seeds] if "rs" in wanted else []
    runs += [("dpo", opts.seed)] if "dpo" in wanted else []
    for name, seed in runs:
        torch.manual_seed(seed)
        model = copy.deepcopy(base).train()
        lr = opts.rs_lr if name == "rs" else opts.dpo_lr
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(seed)
        ref = None
        if name == "dpo":
            ref = copy.deepcopy(base).eval().requires_grad_(False)
        start = time.perf_counter()
        infos = []
        steps = opts.rs_rounds if name == "rs" else opts.pref_steps
        for step in range(steps):
            if name == "rs":
                info = preference.rejection_sampling_step(
                    model, tok, optimizer, n_samples=opts.rs_samples, temperature=1.0,
                    generator=generator, tales=judge.tales, batch_size=opts.rs_batch)  # fmt: skip
            else:
                info = preference.dpo_step(
                    model, ref, tok, optimizer, n_samples=opts.pref_samples, beta=opts.beta,
                    nll_weight=opts.nll_weight, temperature=1.0, generator=generator,
                    tales=judge.tales)  # fmt: skip
            infos.append(info)
            if step % 10 == 0 or step == steps - 1:
                print(f"  {name} step {step}: {info}", flush=True)
            if opts.pref_seconds and time.perf_counter() - start > opts.pref_seconds:
                print(f"  {name}: stopped after {step + 1} steps at the --pref-seconds budget")
                break
        seconds = time.perf_counter() - start
        if name == "rs":
            updates = sum(int(i.get("steps", 1)) for i in infos)
            text = (f"RS, lr {lr:g}, {len(infos)} rounds of {opts.rs_samples} samples "
                    f"({updates} steps of up to {opts.rs_batch}), seed {seed}")
        else:
            text = f"DPO, lr {lr:g}, {len(infos)} steps of {opts.pref_samples} samples"
        row = {"row": name, "method": text, "seconds": seconds, "seed": seed,
               "trainable": lora.count_trainable(model), "steps_info": infos[-1:],
               **judge.price(model, tok, seed=opts.seed)}  # fmt: skip
        show(row)
        rows.append(row)
    return rows


def run(opts: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The requested rows (each printed when done) and the setting: floor, question counts."""
    base, tok = load_pretrained()
    base.eval()
    folder = tempfile.mkdtemp(prefix="bench_posttrain_")
    chat_tok = posttrain.chat_tokenizer(tok, Path(folder) / "chat.model")
    start = time.perf_counter()
    judge = Judge(opts.test_stories, opts.eval_stories, opts.samples, opts.valid_samples)
    train_tasks = qa_tasks(opts.train_stories, "train")
    examples = posttrain.sft_examples(chat_tok, train_tasks, base.args.max_seq_len)
    mean_len = sum(len(x) for x, _, _ in examples) / len(examples)
    print(f"{len(train_tasks)} training questions ({mean_len:.1f} tokens each on average), "
          f"{len(judge.questions)} held-out questions, floor {judge.floor:.4f} bits/char on "
          f"{len(judge.stories)} held-out stories ({time.perf_counter() - start:.0f} s)",
          flush=True)  # fmt: skip
    rows: list[dict[str, Any]] = []

    def show(row: dict[str, Any]) -> None:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                 if k != "steps_info"}  # fmt: skip
        print(json.dumps(shown), flush=True)
        rows.append(row)

    def sft_loss(model: nn.Module) -> torch.Tensor:
        inputs, targets, mask = posttrain.collate_sft(examples[: opts.batch], 0)
        return posttrain.masked_lm_loss(model(inputs), targets, mask)

    def fine_tune(model: nn.Module, lr: float, data: Sequence[Any] | None = None
                  ) -> dict[str, Any]:  # fmt: skip
        memory = optimizer_state_bytes(model, sft_loss, lr)
        t0 = time.perf_counter()
        losses = posttrain.sft(model, examples if data is None else data, opts.steps, opts.batch,
                               lr, seed=opts.seed)  # fmt: skip
        return {"seconds": time.perf_counter() - t0, "optimizer_bytes": memory,
                "trainable": lora.count_trainable(model), "final_loss": losses[-1],
                "accuracy": judge.accuracy(model, chat_tok)}  # fmt: skip

    price_all = opts.price == "all"
    price = judge.price if opts.price != "none" else (lambda *_, **__: {})
    if "base" in opts.only:
        grown = posttrain.resize_vocab(base, chat_tok.vocab_size)  # old tokens: same logits
        show({"row": "base", "method": "shipped model", "accuracy": judge.accuracy(grown, chat_tok),
              **judge.follows(grown, chat_tok, seed=opts.seed),
              **price(base, tok, seed=opts.seed)})  # fmt: skip
    if "sft" in opts.only:
        torch.manual_seed(opts.seed)
        model = posttrain.resize_vocab(base, chat_tok.vocab_size)
        row = {"row": "sft", "method": f"SFT, all weights, lr {opts.lr:g}",
               **fine_tune(model, opts.lr), **judge.follows(model, chat_tok, seed=opts.seed)}
        show(row | price(model, chat_tok, seed=opts.seed))
    if "mix" in opts.only:
        torch.manual_seed(opts.seed)
        model = posttrain.resize_vocab(base, chat_tok.vocab_size)
        requests = instruction_tasks(opts.train_stories, "train")
        mixed = examples + posttrain.instruction_examples(chat_tok, requests,
                                                          base.args.max_seq_len)  # fmt: skip
        row = {"row": "mix", "method": f"SFT on questions and story requests, lr {opts.lr:g}",
               **fine_tune(model, opts.lr, mixed), **judge.follows(model, chat_tok, opts.seed)}
        show(row | price(model, chat_tok, seed=opts.seed))
    if "lora" in opts.only:
        for lr in opts.lora_lr:
            for r in opts.ranks:
                torch.manual_seed(opts.seed)
                model = posttrain.resize_vocab(base, chat_tok.vocab_size)
                lora.add_lora(model, r, opts.alpha_per_rank * r, opts.targets)
                label = f"LoRA r={r}, lr {lr:g}"
                if opts.lora_new_rows:
                    train_new_rows(model, base.args.vocab_size)
                    label += ", new token rows trained"
                row = {"row": "lora", "method": label, "r": r, "lr": lr, **fine_tune(model, lr)}
                if opts.lora_new_rows:  # count the new rows only, not the frozen old ones
                    row["trainable"] -= (base.args.vocab_size * base.args.dim) * 2
                if price_all or r == max(opts.ranks):
                    row |= judge.follows(model, chat_tok, opts.seed)
                    row |= price(model, chat_tok, seed=opts.seed)
                show(row)
    if "control" in opts.only:
        torch.manual_seed(opts.seed)
        model = posttrain.resize_vocab(base, chat_tok.vocab_size)
        seq_len = max(1, round(mean_len))
        needed = opts.steps * opts.batch * seq_len
        ids: list[int] = []  # the pre-training stream's layout: bos + story + eos, one by one
        for story in judge.tales.sample(max(2000, needed // 40), seed=CONTROL_SEED):
            ids += chat_tok.encode(story.text, bos=True, eos=True)
        tokens = torch.tensor(ids, dtype=torch.long)
        t0 = time.perf_counter()
        losses = continued_pretraining(model, tokens, opts.steps, opts.batch, seq_len, opts.lr,
                                       opts.seed)  # fmt: skip
        seconds = time.perf_counter() - t0
        show({"row": "control", "seconds": seconds, "final_loss": losses[-1],
              "method": f"continued pre-training, {opts.steps} x {opts.batch} x {seq_len} tokens, "
                        f"lr {opts.lr:g}",
              "trainable": lora.count_trainable(model), "accuracy": judge.accuracy(model, chat_tok),
              **judge.follows(model, chat_tok, opts.seed),
              **price(model, chat_tok, seed=opts.seed)})  # fmt: skip
    wanted = [name for name in ("rs", "dpo") if name in opts.only]
    if wanted:
        preference_rows(opts, judge, base, tok, wanted, show)
    return rows, {"floor": judge.floor, "test_questions": len(judge.questions),
                  "train_questions": len(train_tasks), "mean_example_tokens": mean_len}


# ------------------------------------------------------------------------------ the tables


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def _kib(row: dict[str, Any]) -> str:
    return "—" if row.get("optimizer_bytes") is None else f"{row['optimizer_bytes'] / 1024:,.1f}"


def markdown_tables(rows: Sequence[dict[str, Any]], floor: float | None = None) -> str:
    """Two markdown tables: each row's accuracy and price, and the cost of full FT against LoRA."""
    head = ("| model | held-out QA exact match | story requests met | valid stories (T = 1) "
            "| distinct stories "
            "| sample entropy (bits/char) | excess over floor (bits/char) | train time (s) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    lines = [head]
    for row in rows:
        if row.get("excess") is None and row["row"] == "lora":
            continue  # LoRA rows without a price appear in the second table only
        lines.append(
            f"| {row['method']} | {_cell(row, 'accuracy', '.1%')} "
            f"| {_cell(row, 'instructions', '.1%')} | {_cell(row, 'valid', '.1%')} "
            f"| {_cell(row, 'distinct', '.1%')} | {_cell(row, 'entropy', '.3f')} "
            f"| {_cell(row, 'excess', '.4f')} | {_cell(row, 'seconds', '.0f')} |"
        )
    text = "\n".join(lines)
    if floor is not None:
        text += f"\n\nEntropy floor of the true stories: {floor:.4f} bits/char."
    tuned = [r for r in rows if r["row"] in ("sft", "lora")]  # the same data and steps
    if tuned:
        full = next((r for r in tuned if r["row"] == "sft"), None)
        lines = ["| fine-tuning | trainable parameters | share of full | AdamW state (KiB) "
                 "| held-out QA exact match | train time (s) |",
                 "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in tuned:
            share = f"{row['trainable'] / full['trainable']:.2%}" if full else "—"
            lines.append(f"| {row['method']} | {row['trainable']:,} | {share} | {_kib(row)} "
                         f"| {_cell(row, 'accuracy', '.1%')} | {_cell(row, 'seconds', '.0f')} |")
        text += "\n\n" + "\n".join(lines)
    return text


def lora_figure(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Full fine-tuning against each LoRA rank: accuracy against trainable weights, and memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tuned = [r for r in rows if r["row"] in ("sft", "lora") and r.get("accuracy") is not None]
    if not tuned:
        sys.exit("no SFT or LoRA rows to draw; measure them with --only sft lora")
    labels = ["full" if r["row"] == "sft" else r["method"].split(",")[0].removeprefix("LoRA ")
              for r in tuned]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row, label in zip(tuned, labels, strict=True):
        colour = "tab:red" if row["row"] == "sft" else "tab:blue"
        left.scatter(row["trainable"], 100 * row["accuracy"], color=colour, zorder=3)
        left.annotate(label, (row["trainable"], 100 * row["accuracy"]),
                      textcoords="offset points", xytext=(6, -4))
    left.set(xscale="log", xlabel="trainable weights (log scale)",
             ylabel="held-out exact match (%)", ylim=(0, 100),
             title="SFT: full fine-tuning against LoRA ranks")
    left.grid(alpha=0.3)
    kib = [r["optimizer_bytes"] / 1024 for r in tuned]
    colours = ["tab:red" if r["row"] == "sft" else "tab:blue" for r in tuned]
    right.bar(labels, kib, color=colours)
    right.set(yscale="log", ylabel="AdamW state (KiB, log scale)",
              title="optimizer memory, measured after one step")
    for x, value in enumerate(kib):
        right.annotate(f"{value:,.0f}", (x, value), ha="center", textcoords="offset points",
                       xytext=(0, 3))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_between_markers(path: Path, block: str) -> None:
    """Put `block` between START and END in the file at `path` (written atomically)."""
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        sys.exit(f"{path} has no {START} ... {END} markers; put them where the table goes.")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(pattern.sub(lambda _: f"{START}\n{block}\n{END}", text))
    tmp.replace(path)


def judge_valid(opts: argparse.Namespace) -> int:
    """How many samples the valid share is measured on (as Judge counts them)."""
    return max(opts.valid_samples, opts.samples)


def main() -> None:
    """Parse the options, measure the rows, print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=ROWS, default=list(ROWS),
                        help="the rows to measure (default: all)")
    parser.add_argument("--steps", type=int, default=300, help="SFT / LoRA / control steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="full SFT and control")
    parser.add_argument("--lora-lr", type=float, nargs="+", default=[3e-3])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--alpha-per-rank", type=float, default=2.0, help="alpha = this * r")
    parser.add_argument("--targets", nargs="+", default=[*ALL_LINEAR, "output"],
                        help="the layers LoRA adapts (names or name endings)")
    parser.add_argument("--lora-new-rows", action="store_true",
                        help="with LoRA, also train the embedding and output rows of the 4 chat "
                        "tokens (the old rows stay frozen)")
    parser.add_argument("--train-stories", type=int, default=2000,
                        help="stories whose questions SFT trains on")
    parser.add_argument("--test-stories", type=int, default=100,
                        help="held-out stories whose questions are scored")
    parser.add_argument("--eval-stories", type=int, default=1000,
                        help="held-out true stories for the excess over the floor")
    parser.add_argument("--samples", type=int, default=200,
                        help="samples per model for the distinct share and the sample entropy")
    parser.add_argument("--valid-samples", type=int, default=1000,
                        help="samples per model for the valid share (the first --samples of "
                        "them give the other two)")
    parser.add_argument("--price", choices=("none", "main", "all"), default="main",
                        help="main: LoRA's price only for its largest rank; all: every rank; "
                        "none: no price at all (for quick sweeps)")
    parser.add_argument("--pref-steps", type=int, default=100, help="dpo steps")
    parser.add_argument("--pref-seconds", type=float, default=0,
                        help="stop rs / dpo after this many seconds (0: no limit)")
    parser.add_argument("--rs-lr", type=float, default=1e-3)
    parser.add_argument("--rs-rounds", type=int, default=60,
                        help="rs: rounds of sampling, each followed by one pass over the kept")
    parser.add_argument("--rs-samples", type=int, default=256, help="rs: samples per round")
    parser.add_argument("--rs-batch", type=int, default=64, help="rs: kept stories per step")
    parser.add_argument("--rs-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="rs: one row per seed, for the spread")
    parser.add_argument("--dpo-lr", type=float, default=2e-4)
    parser.add_argument("--pref-samples", type=int, default=16, help="dpo: samples per step")
    parser.add_argument("--beta", type=float, default=0.2)
    parser.add_argument("--nll-weight", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--md", type=Path, help="write the tables (and how they were made) here")
    parser.add_argument("--json", type=Path, help="write every row's measurements here")
    parser.add_argument("--readme", type=Path, help=f"replace the text between {START} and {END}")
    parser.add_argument("--figure", type=Path, help="draw full fine-tuning against LoRA ranks here")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="measure nothing: draw --figure from the rows of an earlier --json")
    opts = parser.parse_args()
    if opts.replot:
        if not opts.figure:
            parser.error("--replot needs --figure PATH")
        lora_figure(json.loads(opts.replot.read_text())["rows"], opts.figure)
        print(f"drew {opts.figure} from {opts.replot}")
        return
    for name in ("steps", "batch", "train_stories", "test_stories", "eval_stories", "samples",
                 "pref_steps", "pref_samples", "rs_rounds", "rs_samples", "rs_batch",
                 "valid_samples", "threads"):  # fmt: skip
        if getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(opts.ranks) < 1:
        parser.error("--ranks must all be at least 1")
    torch.set_num_threads(opts.threads)

    start = time.perf_counter()
    rows, setting = run(opts)
    floor = setting["floor"]
    minutes = (time.perf_counter() - start) / 60
    command = "python benchmarks/bench_posttrain.py " + " ".join(sys.argv[1:])
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}")  # fmt: skip
    parts = ["From the shipped model"]
    if {"sft", "mix", "lora", "control"} & set(opts.only):
        parts.append(
            f"SFT, LoRA and the control: {opts.steps} steps of batch {opts.batch} on "
            f"{setting['train_questions']} questions about {opts.train_stories} training stories "
            f"(the mix: and one story request per training story); exact match on the "
            f"{setting['test_questions']} questions about {opts.test_stories} held-out stories; "
            f"story requests met: one request per held-out story answered at T = 1 with a valid "
            f"story that meets every constraint (tasks.check_instruction)")
    if "lora" in opts.only:
        parts.append(f"LoRA on {', '.join(opts.targets)} with alpha = {opts.alpha_per_rank:g} r"
                     + (", new token rows trained" if opts.lora_new_rows else ""))
    if "rs" in opts.only:
        rs = [r for r in rows if r["row"] == "rs"]
        spread = ""
        if len(rs) > 1 and all("valid" in r for r in rs):
            valid = [r["valid"] for r in rs]
            spread = (f"; valid over {len(rs)} seeds: mean {sum(valid) / len(valid):.1%}, "
                      f"lowest {min(valid):.1%}, highest {max(valid):.1%}")
        parts.append(f"RS: each round samples {opts.rs_samples} stories and trains once on each "
                     f"valid one, {opts.rs_batch} per step{spread}")
    if "dpo" in opts.only:
        parts.append(f"DPO: {opts.pref_samples} samples per step, beta {opts.beta:g}, nll "
                     f"weight {opts.nll_weight:g}")
    if {"rs", "dpo"} & set(opts.only) and opts.pref_seconds:
        parts.append(f"RS and DPO stopped after at most {opts.pref_seconds:g} s")
    if opts.price != "none":
        parts.append(f"valid share of {judge_valid(opts)} samples per model at T = 1, distinct "
                     f"share and sample entropy of the first {opts.samples}; excess on "
                     f"{opts.eval_stories} held-out stories")
    footer = (f"\n\n{'; '.join(parts)}. `{command.strip()}` on {machine}: {minutes:.0f} min "
              "(wall-clock).")
    block = markdown_tables(rows, floor) + footer
    print(block)
    if opts.md:
        opts.md.write_text(block + "\n")
    if opts.json:
        opts.json.write_text(json.dumps({"command": command, "machine": machine,
                                         **setting, "rows": rows}, indent=1))  # fmt: skip
    if opts.readme:
        replace_between_markers(opts.readme, block)
        print(f"wrote the tables into {opts.readme}")
    if opts.figure:
        lora_figure(rows, opts.figure)
        print(f"drew {opts.figure}")


if __name__ == "__main__":
    main()
