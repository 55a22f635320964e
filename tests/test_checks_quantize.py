"""The quantization check: correct solutions pass and the typical mistakes are named."""

from __future__ import annotations

import torch
from check_harness import table_tests

from llama_edu.quantize import absmax_quantize as library


def by_rows(w):
    """Written differently: a loop over rows, torch.round (halves to even), a guarded scale."""
    qs, scales = [], []
    for row in w:
        scale = row.abs().max() / 127
        step = scale if scale > 0 else torch.tensor(1.0)
        qs.append(torch.round(row / step).to(torch.int8))
        scales.append(scale)
    return torch.stack(qs), torch.stack(scales)


def one_scale(w):
    scale = w.abs().max() / 127
    return torch.round(w / scale).to(torch.int8), scale


def by_128(w):
    scale = w.abs().amax(dim=1) / 128
    return torch.round(w / scale.clamp(min=1e-12)[:, None]).to(torch.int8), scale


def no_abs(w):
    scale = w.amax(dim=1) / 127
    return torch.round(w / scale.clamp(min=1e-12)[:, None]).to(torch.int8), scale


def truncated(w):
    scale = w.abs().amax(dim=1) / 127
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    return (w / safe[:, None]).to(torch.int8), scale


def float_q(w):
    scale = w.abs().amax(dim=1) / 127
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.round(w / safe[:, None]), scale


def inverse_scale(w):
    factor = 127 / w.abs().amax(dim=1)
    return torch.round(w * factor.nan_to_num(0, 0, 0)[:, None]).to(torch.int8), factor


def unguarded(w):
    scale = w.abs().amax(dim=1) / 127
    q = torch.round(w / scale[:, None]).nan_to_num(100.0)  # 0 / 0: nan, made visible here
    return q.to(torch.int8), scale


CHECKS = ["absmax_quantize"]
CORRECT = [("absmax_quantize", library), ("absmax_quantize", by_rows)]
WRONG = [
    ("absmax_quantize", one_scale, ["one scale for the whole matrix"]),
    ("absmax_quantize", by_128, ["divide by 127"]),
    ("absmax_quantize", no_abs, ["largest magnitude"]),
    ("absmax_quantize", truncated, ["cut toward zero"]),
    ("absmax_quantize", float_q, ["torch.int8"]),
    ("absmax_quantize", inverse_scale, ["its inverse"]),
    ("absmax_quantize", unguarded, ["row of zeros", "Guard the division"]),
]

globals().update(table_tests(CORRECT, WRONG, CHECKS))
