"""Train the recommended CPU run over several seeds and write the reference band of its curves.

    PYTHONPATH=$PWD nice python tools/make_reference_band.py            # seeds 1..5, ~3 min each
    PYTHONPATH=$PWD python tools/make_reference_band.py --from-raw DIR  # rebuild from saved runs

Each run is `llama_edu.train.recommended_config("cpu")` (what chapter 09 trains) with another
seed; the learner's default seed 0 is not among them, so a learner's run is an independent
draw. The raw histories are kept in --raw-dir (one JSON per seed), and the band
(min / median / max over seeds of the training loss, averaged over blocks of 10 steps, and of
the validation loss and excess bits/char at every evaluation) goes to
llama_edu/assets/reference_band.json. The floor and the bigram baseline of each run are
recomputed here from the same validation stories that `prepare_corpus` draws, so the band does
not depend on the evaluation records carrying them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

BLOCK = 10  # training losses are averaged over blocks of this many steps
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "llama_edu" / "assets" / "reference_band.json"


def floor_and_baselines(cfg_dict: dict) -> dict[str, float]:
    """Floor, unigram and bigram bits/char on the validation stories of a TinyTales run."""
    from llama_edu.data import bigram_bits_per_char, unigram_bits_per_char
    from llama_edu.tinytales import TinyTales

    tales = TinyTales()
    seed, n = cfg_dict["seed"], cfg_dict["n_stories"]
    train_texts = [s.text for s in tales.sample(n, seed=seed)]
    val = tales.sample(max(200, n // 20), seed=seed + 10**6)
    val_texts = [s.text for s in val]
    return {
        "floor_bpc": sum(s.bits for s in val) / sum(s.n_chars for s in val),
        "unigram_bpc": unigram_bits_per_char(train_texts, val_texts),
        "bigram_bpc": bigram_bits_per_char(train_texts, val_texts),
    }


def run_seeds(seeds: list[int], raw_dir: Path) -> float:
    """Train one run per seed, saving each history as raw_dir/seed_<n>.json; return seconds."""
    import torch

    from llama_edu.train import recommended_config, train

    raw_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for seed in seeds:
        cfg = dataclasses.replace(recommended_config("cpu"), seed=seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(cfg, Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - t0
        cfg_dict = dataclasses.asdict(cfg)
        raw = {"config": cfg_dict, "seconds": seconds, "stopped": result.stopped,
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "history": result.history, **floor_and_baselines(cfg_dict)}
        (raw_dir / f"seed_{seed}.json").write_text(json.dumps(raw) + "\n")
        print(f"seed {seed}: {seconds:.0f} s, last val_bpc {result.history[-1]['val_bpc']:.4f}, "
              f"floor {raw['floor_bpc']:.4f}", flush=True)
    return time.perf_counter() - start


def _cpu_model() -> str:
    """The processor's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _spread(values: list[float], digits: int = 4) -> list[float]:
    return [round(min(values), digits), round(statistics.median(values), digits),
            round(max(values), digits)]


def build_band(raws: list[dict], wall_seconds: float | None) -> dict:
    """The band: min/median/max over runs of each curve point, plus each run's final numbers."""
    configs = [{k: v for k, v in r["config"].items() if k != "seed"} for r in raws]
    if any(c != configs[0] for c in configs):
        raise ValueError("the raw runs were trained with different configurations")
    max_steps = configs[0]["max_steps"]
    block_steps = list(range(BLOCK, max_steps + 1, BLOCK))
    train_blocks = []
    for r in raws:
        losses = [h["train_loss"] for h in r["history"]]
        train_blocks.append([statistics.fmean(losses[s - BLOCK : s]) for s in block_steps])
    evals = [[h for h in r["history"] if "val_loss" in h] for r in raws]
    eval_steps = [h["step"] for h in evals[0]]
    excess = [[h["val_bpc"] - r["floor_bpc"] for h in e] for r, e in zip(raws, evals, strict=True)]
    val_loss = [[h["val_loss"] for h in e] for e in evals]
    finals = []
    for r, e in zip(raws, evals, strict=True):
        last = e[-1]["val_bpc"]
        gap = (r["bigram_bpc"] - last) / (r["bigram_bpc"] - r["floor_bpc"])
        finals.append({"seed": r["config"]["seed"], "val_bpc": round(last, 4),
                       "floor_bpc": round(r["floor_bpc"], 4),
                       "bigram_bpc": round(r["bigram_bpc"], 4),
                       "val_excess_bpc": round(last - r["floor_bpc"], 4),
                       "gap_closed": round(gap, 4), "seconds": round(r["seconds"], 1)})

    def columns(rows: list[list[float]]) -> dict[str, list[float]]:
        spread = [_spread(list(col)) for col in zip(*rows, strict=True)]
        return {name: [s[i] for s in spread] for i, name in enumerate(("min", "median", "max"))}

    return {
        "what": "chapter 09's recommended CPU run over several seeds: min, median and max over "
                "the seeds of the training loss (nats/token, mean of each block of "
                f"{BLOCK} steps, plotted at the block's last step), and at every evaluation the "
                "validation loss (nats/token) and val_excess_bpc (val_bpc - entropy floor of the "
                "run's validation stories, bits/char). Made by tools/make_reference_band.py.",
        "config": configs[0],
        "seeds": [r["config"]["seed"] for r in raws],
        "machine": {"platform": platform.platform(), "processor": _cpu_model(),
                    "cpus": os.cpu_count(), "torch_threads": raws[0]["threads"],
                    "torch": raws[0]["torch"], "wall_seconds": wall_seconds},
        "train_block": BLOCK,
        "train_steps": block_steps,
        "train_loss": columns(train_blocks),
        "eval_steps": eval_steps,
        "val_loss": columns(val_loss),
        "val_excess_bpc": columns(excess),
        "final": finals,
    }


def main() -> None:
    """Parse the arguments, train (unless --from-raw) and write the band."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--raw-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "llama_edu_band")
    parser.add_argument("--from-raw", action="store_true", help="use the runs saved in --raw-dir")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    wall = None if args.from_raw else run_seeds(args.seeds, args.raw_dir)
    raws = [json.loads((args.raw_dir / f"seed_{s}.json").read_text()) for s in args.seeds]
    if wall is None:
        wall = sum(r["seconds"] for r in raws)
    band = build_band(raws, round(wall, 1))
    args.out.write_text(json.dumps(band, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes); wall {wall:.0f} s")
    for f in band["final"]:
        print(f)


if __name__ == "__main__":
    main()
