"""LoRA (low-rank adaptation), written from scratch: train two thin matrices, keep the model frozen.

A linear layer computes y = x W^T with W of shape (out, in). LoRA leaves W frozen and learns a
change of rank r instead: W' = W + (alpha / r) * B @ A, with A of shape (r, in) and B of shape
(out, r). Only r * (in + out) numbers per layer are trained instead of in * out. B starts at zero,
so a fresh adapter changes nothing; A starts random, so the gradient that reaches B is not zero.

    add_lora(model, r, alpha, targets)    wrap the named nn.Linear layers in LoRALinear
    merge_lora(model) / unmerge_lora()    fold B @ A into W (and back): no extra cost at inference
    merge_lora(model, replace=True)       fold, then put plain nn.Linear back (a plain Llama again,
                                          e.g. for llama_edu.interop.export_hf)
    save_adapter / load_adapter           only A and B, in a safetensors file with metadata

Names follow Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models": r is the rank
and alpha / r the scale of the update.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._validate import is_number
from .runfiles import fsync_dir, fsync_file

ADAPTER_FORMAT = "llama_edu.lora/1"  # the value of FORMAT_KEY in an adapter file's metadata
FORMAT_KEY = "llama_edu_lora"


class LoRALinear(nn.Module):
    """base(x) + (alpha / r) * B(A(x)): a frozen nn.Linear plus a trainable update of rank r."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"LoRALinear wraps an nn.Linear, got {type(base).__name__}. LoRA here adapts "
                "linear layers only (wq, wk, wv, wo, w1, w2, w3, output)."
            )
        _check_rank_alpha(r, alpha)
        weight = base.weight  # (out, in)
        self.base = base
        self.r = r
        self.alpha = float(alpha)
        self.scaling = self.alpha / r
        self.merged = False
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)  # weight (r, in)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)  # weight (out, r)
        # A: nn.Linear's own default (Kaiming-uniform, a = sqrt(5)), written out to be seen;
        # B: zero, so that B @ A = 0 and the wrapped layer starts equal to the base layer.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        for p in base.parameters():
            p.requires_grad_(False)

    @property
    def in_features(self) -> int:
        """Width of the input, as nn.Linear names it."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """Width of the output, as nn.Linear names it."""
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (out, in); it includes the update only while merged."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias (frozen), or None."""
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update scaling * B @ A, shape (out, in), computed in float32 at least."""
        a, b = self.lora_A.weight, self.lora_B.weight  # (r, in), (out, r)
        wide = torch.promote_types(a.dtype, torch.float32)
        return (b.to(wide) @ a.to(wide)) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        if self.merged:
            if self.training and torch.is_grad_enabled() and self.lora_A.weight.requires_grad:
                raise RuntimeError(
                    "this LoRA layer is merged, so A and B are not used and training would not "
                    "change them. Call unmerge_lora(model) before training, merge_lora after."
                )
            return self.base(x)  # the update is inside base.weight
        update = self.lora_B(self.lora_A(x))  # (..., in) -> (..., r) -> (..., out)
        return self.base(x) + self.scaling * update

    @torch.no_grad()
    def merge(self) -> None:
        """Add scaling * B @ A into base.weight; forward then skips the branch (same output)."""
        if self.merged:
            raise RuntimeError("this LoRA layer is merged already; merging twice would add B @ A "
                               "twice. Call unmerge() first.")  # fmt: skip
        weight = self.base.weight
        weight.copy_((weight.to(torch.promote_types(weight.dtype, torch.float32))
                      + self.delta_weight()).to(weight.dtype))  # fmt: skip
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract scaling * B @ A from base.weight again (the inverse of merge)."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged; there is nothing to subtract. "
                               "Call merge() first.")  # fmt: skip
        weight = self.base.weight
        weight.copy_((weight.to(torch.promote_types(weight.dtype, torch.float32))
                      - self.delta_weight()).to(weight.dtype))  # fmt: skip
        self.merged = False

    def extra_repr(self) -> str:
        """Shown by print(model)."""
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


# --------------------------------------------------------------------------- adding and merging


def _check_rank_alpha(r: Any, alpha: Any) -> None:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"the LoRA rank r must be an int >= 1, got {r!r} "
                        f"({type(r).__name__}); common values are 4, 8 or 16.")  # fmt: skip
    if r < 1:
        raise ValueError(f"the LoRA rank r must be >= 1, got {r}: rank 0 would train nothing. "
                         "Common values are 4, 8 or 16.")  # fmt: skip
    if not is_number(alpha):
        raise TypeError(f"LoRA's alpha must be a number > 0, got {alpha!r} "
                        f"({type(alpha).__name__}); a common choice is alpha = 2 * r.")  # fmt: skip
    if not (0 < float(alpha) < math.inf):
        raise ValueError(f"LoRA's alpha must be a finite number > 0, got {alpha!r}: the update "
                         "is scaled by alpha / r. A common choice is alpha = 2 * r.")  # fmt: skip


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear in the model, by its module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _plain_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's nn.Linear layers, leaving out those inside a LoRALinear (base, A, B)."""
    inside = tuple(f"{name}." for name in lora_layers(model) if name)
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not (inside and n.startswith(inside))}  # fmt: skip


def _short_names(names: Sequence[str]) -> str:
    """Layer names with their layer numbers folded: layers.*.attention.wq, ..., output."""
    folded = list(dict.fromkeys(re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", n) for n in names))
    return ", ".join(folded) if folded else "(none)"


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _shared_weights(model: nn.Module) -> dict[int, list[str]]:
    """Names of every parameter, grouped by parameter object (a tied weight has several names)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return groups


def add_lora(model: nn.Module, r: int, alpha: float, targets: Sequence[str]) -> nn.Module:
    """Wrap the target nn.Linear layers in LoRALinear (in place); freeze everything else."""
    _check_rank_alpha(r, alpha)
    if isinstance(targets, str) or not isinstance(targets, Sequence):
        raise TypeError(f"targets must be a list of layer names such as ['wq', 'wv'], got "
                        f"{targets!r}.")  # fmt: skip
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty list of non-empty layer names such as "
                         f"['wq', 'wv'], got {list(targets)!r}.")  # fmt: skip
    linears = _plain_linears(model)
    wrapped = lora_layers(model)
    chosen: list[str] = []
    for target in targets:
        done = [n for n in wrapped if _matches(n, target)]
        if done:
            raise ValueError(
                f"target {target!r} names layers that already have LoRA ({_short_names(done)}). "
                "Wrap each layer once: merge_lora(model, replace=True) first to start again."
            )
        found = [n for n in linears if _matches(n, target)]
        if not found:
            raise ValueError(
                f"target {target!r} matches no linear layer of this model. Give a layer's name or "
                f"the end of it; the model's linear layers are: {_short_names(list(linears))}"
                + (f" (with LoRA already: {_short_names(list(wrapped))})" if wrapped else "")
                + ", so e.g. 'wq', 'attention.wv', 'w1' or 'layers.0.attention.wq'."
            )
        chosen += [n for n in found if n not in chosen]
    shared = _shared_weights(model)
    for name in chosen:
        names = shared[id(linears[name].weight)]
        if len(names) > 1:
            others = [n for n in names if not n.startswith(name + ".")]
            raise ValueError(
                f"{name} shares its weight with {', '.join(others)} (tied embeddings), so merging "
                "an update into it would change both. Leave it out of targets."
            )
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        layer = LoRALinear(linears[name], r, alpha)
        layer.train(linears[name].training)  # a new module would be in training mode
        _set_module(model, name, layer)
    for layer in lora_layers(model).values():
        for p in (layer.lora_A.weight, layer.lora_B.weight):
            p.requires_grad_(True)
    return model


def merge_lora(model: nn.Module, replace: bool = False) -> nn.Module:
    """Merge every LoRALinear (output unchanged up to rounding); replace=True puts nn.Linear back.

    With replace=True the adapters are gone for good (no unmerge_lora): the model is a plain one
    again, with the same state-dict names as before add_lora, ready for export. Its parameters
    stay frozen as add_lora left them; call model.requires_grad_(True) to train all of them.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to merge; add them with add_lora(...).")
    for name, layer in layers.items():
        if not layer.merged:
            layer.merge()
        if replace:
            _set_module(model, name, layer.base)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """The inverse of merge_lora(model): subtract every merged update again."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to unmerge (merge_lora(model, replace=True) "
                         "removes them for good).")  # fmt: skip
    for layer in layers.values():
        if layer.merged:
            layer.unmerge()
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The A and B weights of every LoRALinear (what the optimizer should get)."""
    return [p for layer in lora_layers(model).values()
            for p in (layer.lora_A.weight, layer.lora_B.weight)]  # fmt: skip


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with requires_grad=True (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights, under their names in model.state_dict()."""
    out = {}
    for name, layer in lora_layers(model).items():
        prefix = f"{name}." if name else ""
        out[f"{prefix}lora_A.weight"] = layer.lora_A.weight.detach()  # (r, in)
        out[f"{prefix}lora_B.weight"] = layer.lora_B.weight.detach()  # (out, r)
    return out


# ------------------------------------------------------------------------------ saving, loading


def base_fingerprint(model: nn.Module, layers: Sequence[str] | None = None) -> str:
    """SHA-256 of every tensor outside the LoRA layers (or `layers`): tells base models apart.

    The LoRA layers (base weight included) are left out, so merging does not change it, and a
    plain model gives the same value as after add_lora on the same layers.
    """
    names = list(lora_layers(model)) if layers is None else list(layers)
    skip = tuple(f"{n}." for n in names)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if skip and name.startswith(skip):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_adapter_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of an adapter file (r, alpha, targets, layers, ...); ValueError if not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}; save_adapter(model, path) writes one.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ValueError(f"{path} is not a readable safetensors file ({type(exc).__name__}: "
                         f"{exc}).") from exc  # fmt: skip
    if raw.get(FORMAT_KEY) != ADAPTER_FORMAT:
        raise ValueError(
            f"{path} is a safetensors file but not a LoRA adapter written by "
            f"llama_edu.lora.save_adapter (its metadata has no {FORMAT_KEY}={ADAPTER_FORMAT!r})."
        )
    meta: dict[str, Any] = {"format": raw[FORMAT_KEY]}
    for key in ("r", "alpha", "targets", "layers", "base_run", "base_args", "base_fingerprint"):
        if key in raw:
            meta[key] = json.loads(raw[key])
    return meta


def _is_our_adapter(path: Path) -> bool:
    try:
        read_adapter_metadata(path)
    except (ValueError, OSError):
        return False
    return True


def save_adapter(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    base_run: str | os.PathLike[str] | None = None,
    r: int | None = None,
    alpha: float | None = None,
    targets: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the adapter (A and B of every LoRA layer) to a safetensors file, atomically.

    r, alpha and targets are stored as JSON in the file's metadata; given here they must agree
    with the model's LoRA layers (left out, they are read from the model). An existing file is
    replaced only if it is an adapter written by this function, or when overwrite=True.
    """
    path = Path(path)
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers, so there is no adapter to save; call "
                         "add_lora(model, r, alpha, targets) and train first.")  # fmt: skip
    ranks = {layer.r for layer in layers.values()}
    alphas = {layer.alpha for layer in layers.values()}
    if len(ranks) > 1 or len(alphas) > 1:
        raise ValueError(
            f"the LoRA layers have different ranks {sorted(ranks)} or alphas {sorted(alphas)}; "
            "one adapter file holds one r and one alpha."
        )
    (model_r,), (model_alpha,) = ranks, alphas
    if r is not None and r != model_r:
        raise ValueError(f"r={r!r} was given but the model's LoRA layers have r={model_r}.")
    if alpha is not None and (not is_number(alpha) or float(alpha) != model_alpha):
        raise ValueError(f"alpha={alpha!r} was given but the model's LoRA layers have "
                         f"alpha={model_alpha:g}.")  # fmt: skip
    if targets is not None:
        if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
            raise TypeError(f"targets must be a list of layer names, got {targets!r}.")
        missed = [t for t in targets if not any(_matches(n, t) for n in layers)]
        if missed:
            raise ValueError(f"targets {missed} match none of the model's LoRA layers "
                             f"({_short_names(list(layers))}).")  # fmt: skip
    if path.is_symlink() or path.is_dir():
        raise FileExistsError(f"{path} is a {'link' if path.is_symlink() else 'folder'}; give "
                              "the path of an adapter file, e.g. run/adapter.safetensors. "
                              "Nothing was written.")  # fmt: skip
    if path.exists() and not overwrite and not _is_our_adapter(path):
        raise FileExistsError(
            f"{path} exists and is not a LoRA adapter written by llama_edu; it was left as it "
            "is and nothing was written. Choose another path, or pass overwrite=True to replace it."
        )
    args = getattr(model, "args", None)
    metadata = {
        FORMAT_KEY: ADAPTER_FORMAT,
        "r": json.dumps(model_r),
        "alpha": json.dumps(model_alpha),
        "targets": json.dumps(list(targets) if targets is not None else list(layers)),
        "layers": json.dumps({n: [m.out_features, m.in_features] for n, m in layers.items()}),
        "base_fingerprint": json.dumps(base_fingerprint(model)),
    }
    if base_run is not None:
        metadata["base_run"] = json.dumps(str(base_run))
    if args is not None and hasattr(args, "to_dict"):
        metadata["base_args"] = json.dumps(args.to_dict())
    tensors = {k: v.cpu().contiguous() for k, v in lora_state_dict(model).items()}
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def load_adapter(model: nn.Module, path: str | os.PathLike[str], check_base: bool = True
                 ) -> nn.Module:  # fmt: skip
    """Load an adapter file into model (adding the LoRA layers it names if there are none).

    The file's layers must exist in the model with the same shapes, and (check_base=True) the
    rest of the model must be the base model the adapter was trained on (same fingerprint).
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_adapter_metadata(path)
    r, alpha, layer_shapes = meta["r"], meta["alpha"], meta["layers"]
    args = getattr(model, "args", None)
    if "base_args" in meta and args is not None and hasattr(args, "to_dict"):
        ours = json.loads(json.dumps(args.to_dict()))
        diff = [f"{k}: adapter {v!r}, model {ours.get(k)!r}" for k, v in meta["base_args"].items()
                if ours.get(k) != v]  # fmt: skip
        if diff:
            raise ValueError(f"{path} was trained on another model shape ({'; '.join(diff)}). "
                             "Load the base model it was saved with.")  # fmt: skip
    existing = lora_layers(model)
    linears = {**_plain_linears(model), **existing}
    problems = []
    for name, (out_f, in_f) in layer_shapes.items():
        layer = linears.get(name)
        if layer is None:
            problems.append(f"the model has no linear layer {name}")
        elif (layer.out_features, layer.in_features) != (out_f, in_f):
            problems.append(f"{name} is ({layer.out_features}, {layer.in_features}) in the "
                            f"model but ({out_f}, {in_f}) in the adapter")  # fmt: skip
    if problems:
        raise ValueError(f"{path} does not fit this model: {'; '.join(problems[:6])}. The "
                         "model's linear layers are: "
                         f"{_short_names(list(_plain_linears(model)))}.")  # fmt: skip
    if existing:
        same = set(existing) == set(layer_shapes) and all(
            m.r == r and m.alpha == alpha for m in existing.values())
        if not same:
            raise ValueError(
                f"the model already has LoRA layers ({_short_names(list(existing))}, r="
                f"{sorted({m.r for m in existing.values()})}) that differ from the adapter's "
                f"({_short_names(list(layer_shapes))}, r={r}, alpha={alpha:g}). Load it into a "
                "plain copy of the base model instead."
            )
        if any(m.merged for m in existing.values()):
            raise RuntimeError("the model's LoRA layers are merged; call unmerge_lora(model) "
                               "before loading new adapter weights into them.")  # fmt: skip
    if check_base and "base_fingerprint" in meta:
        probe = base_fingerprint(model, list(layer_shapes))
        if probe != meta["base_fingerprint"]:
            raise ValueError(
                f"{path} was trained on a different base model: the weights outside its LoRA "
                f"layers differ (base run recorded: {meta.get('base_run', 'not recorded')}). "
                "Load the right base model, or pass check_base=False if the change is intended "
                "(e.g. the base converted to another dtype)."
            )
    tensors = load_file(str(path))
    if not existing:
        add_lora(model, r, alpha, list(layer_shapes))
    expected = {k: tuple(v.shape) for k, v in lora_state_dict(model).items()}
    wrong = sorted(set(tensors) ^ set(expected))
    wrong += [f"{k} {tuple(tensors[k].shape)} != {expected[k]}" for k in sorted(expected)
              if k in tensors and tuple(tensors[k].shape) != expected[k]]  # fmt: skip
    if wrong:
        raise ValueError(f"the tensors in {path} do not match its layers: {', '.join(wrong[:6])}. "
                         "The file is damaged; save the adapter again.")  # fmt: skip
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, tensor in tensors.items():
            params[key].copy_(tensor)
    return model
