"""The ablation-lab checks: each passes correct solutions and names the typical mistakes."""

from __future__ import annotations

import statistics

import numpy as np
from check_harness import table_tests

# ------------------------------------------------------------------------------ post_norm_block


def post_norm(x, attention, feed_forward, attention_norm, ffn_norm):
    h = attention_norm(x + attention(x))
    return ffn_norm(h + feed_forward(h))


def post_norm_via_llama_edu(x, attention, feed_forward, attention_norm, ffn_norm):
    """Written with the library's functional RMSNorm on the norms' own weights."""
    from llama_edu.norm import rms_norm

    h = rms_norm(x + attention(x), attention_norm.weight, attention_norm.eps)
    return rms_norm(h + feed_forward(h), ffn_norm.weight, ffn_norm.eps)


def pre_norm(x, attention, feed_forward, attention_norm, ffn_norm):
    h = x + attention(attention_norm(x))
    return h + feed_forward(ffn_norm(h))


def last_norm_missing(x, attention, feed_forward, attention_norm, ffn_norm):
    h = attention_norm(x + attention(x))
    return h + feed_forward(h)


def ffn_sees_x(x, attention, feed_forward, attention_norm, ffn_norm):
    h = attention_norm(x + attention(x))
    return ffn_norm(h + feed_forward(x))


def one_norm_twice(x, attention, feed_forward, attention_norm, ffn_norm):
    h = attention_norm(x + attention(x))
    return attention_norm(h + feed_forward(h))


def norm_on_branch(x, attention, feed_forward, attention_norm, ffn_norm):
    h = x + attention_norm(attention(x))
    return h + ffn_norm(feed_forward(h))


def in_place(x, attention, feed_forward, attention_norm, ffn_norm):
    x += attention(x)
    h = attention_norm(x)
    return ffn_norm(h + feed_forward(h))


# ------------------------------------------------------------------------------- noise_verdict


def verdict(baseline, variant):
    noise = max(max(baseline) - min(baseline), max(variant) - min(variant))
    diff = statistics.mean(variant) - statistics.mean(baseline)
    if abs(diff) <= noise:
        return "within noise"
    return "better" if diff < 0 else "worse"


def verdict_numpy(baseline, variant):
    b, v = np.asarray(baseline), np.asarray(variant)
    noise = max(np.ptp(b), np.ptp(v))
    diff = v.mean() - b.mean()
    return "within noise" if abs(diff) <= noise else ("worse" if diff > 0 else "better")


def sign_flipped(baseline, variant):
    out = verdict(baseline, variant)
    return {"better": "worse", "worse": "better"}.get(out, out)


def no_noise(baseline, variant):
    diff = statistics.mean(variant) - statistics.mean(baseline)
    return "better" if diff < 0 else "worse"


def baseline_spread_only(baseline, variant):
    diff = statistics.mean(variant) - statistics.mean(baseline)
    if abs(diff) <= max(baseline) - min(baseline):
        return "within noise"
    return "better" if diff < 0 else "worse"


def strict_boundary(baseline, variant):
    noise = max(max(baseline) - min(baseline), max(variant) - min(variant))
    diff = statistics.mean(variant) - statistics.mean(baseline)
    if abs(diff) < noise:
        return "within noise"
    return "better" if diff < 0 else "worse"


def capitalised(baseline, variant):
    return verdict(baseline, variant).title()


CHECKS = ["post_norm_block", "noise_verdict"]
CORRECT = [
    ("post_norm_block", post_norm),
    ("post_norm_block", post_norm_via_llama_edu),
    ("noise_verdict", verdict),
    ("noise_verdict", verdict_numpy),
]
WRONG = [
    ("post_norm_block", pre_norm, ["pre-norm block"]),
    ("post_norm_block", last_norm_missing, ["second norm is missing"]),
    ("post_norm_block", ffn_sees_x, ["feed_forward sees x"]),
    ("post_norm_block", one_norm_twice, ["must use ffn_norm"]),
    ("post_norm_block", norm_on_branch, ["sub-layer's output only"]),
    ("post_norm_block", in_place, ["in place"]),
    ("noise_verdict", sign_flipped, ["lower excess is better"]),
    ("noise_verdict", no_noise, ["'within noise'", "seed spread"]),
    ("noise_verdict", baseline_spread_only, ["larger of the two spreads"]),
    ("noise_verdict", strict_boundary, ["<= noise"]),
    ("noise_verdict", capitalised, ["return one of"]),
]

globals().update(table_tests(CORRECT, WRONG, CHECKS))


def test_the_library_table_uses_the_rule_of_the_exercise() -> None:
    from llama_edu import ablation
    from llama_edu.checks.ablation import reference_verdict

    def row(name: str, xs: list[float]) -> ablation.LabRow:
        return ablation.LabRow(name, statistics.fmean(xs), min(xs), max(xs), len(xs), 0.9,
                               1, 1, 0)  # fmt: skip

    for base, var in [([0.2, 0.3], [0.28, 0.29]), ([0.24, 0.26], [0.2, 0.4]), ([0.2], [0.5]),
                      ([0.3, 0.31], [0.1, 0.12])]:  # fmt: skip
        words = ablation.verdict(row("v", var), row("b", base))
        assert words.split(" by")[0].split(" (")[0] == reference_verdict(base, var)
