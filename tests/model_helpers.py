"""Helpers shared by the model tests: models whose every weight matters."""

from __future__ import annotations

import torch

from llama_edu.model import Llama, ModelArgs


def randomised(args: ModelArgs, seed: int = 0) -> Llama:
    """A model whose every weight, norms included, is random and of order one."""
    torch.manual_seed(seed)
    model = Llama(args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model.eval()
