"""Moving weights between this workbook, Meta's checkpoints and Hugging Face `transformers`.

Meta's reference rotates interleaved pairs of features; Hugging Face rotates the two halves of
each head. The same model therefore stores wq and wk with their rows permuted per head (see
`llama_edu.rope.interleaved_to_half`); every other tensor only changes its name.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .hub import REAL_CHECKPOINTS, download_hf  # noqa: F401  (re-exported)
from .model import Llama, ModelArgs
from .rope import half_to_interleaved, interleaved_to_half
from .runfiles import (
    EXPORT_KEY,
    EXPORT_VERSION,
    atomic_write_text,
    foreign_entries,
    install_folder,
    make_staging_dir,
)

_LAYER_NAMES = {  # Meta name inside layers.{i} -> Hugging Face name inside model.layers.{i}
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
ARGS_KEY = "llama_edu_args"


def require_llama(args: ModelArgs, what: str) -> None:
    """Raise a clear error when args has ablation switches that Meta's and HF's formats lack."""
    if not args.is_llama:
        changed = ", ".join(f"{k}={v!r}" for k, v in args.changed_switches().items())
        raise ValueError(
            f"{what} needs a Llama, but this model is an ablation variant ({changed}); Meta's "
            "and Hugging Face's formats have no place for it. Save it with "
            "llama_edu.train.save_checkpoint instead, or use Llama's defaults."
        )


def _name_map(args: ModelArgs) -> dict[str, str]:
    require_llama(args, "converting between Meta's and Hugging Face's names")
    names = dict(_TOP_NAMES)
    if args.tie_embeddings:
        del names["output.weight"]
    for i in range(args.n_layers):
        for meta, hf in _LAYER_NAMES.items():
            names[f"layers.{i}.{meta}"] = f"model.layers.{i}.{hf}"
    return names


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a Meta-format state dict for these args."""
    with torch.device("meta"):
        model = Llama(args)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if args.tie_embeddings:
        shapes.pop("output.weight")
    return shapes


def validate_state_dict(state_dict: Mapping[str, torch.Tensor], args: ModelArgs) -> None:
    """Raise a ValueError naming every missing, unexpected or wrongly shaped tensor."""
    shapes = expected_shapes(args)
    given = {k for k in state_dict if not (args.tie_embeddings and k == "output.weight")}
    problems = [f"missing key {k!r} (shape {shapes[k]})" for k in sorted(shapes.keys() - given)]
    problems += [f"unexpected key {k!r}" for k in sorted(given - shapes.keys())]
    problems += [
        f"{k!r} has shape {tuple(state_dict[k].shape)}, expected {shapes[k]}"
        for k in sorted(given & shapes.keys())
        if tuple(state_dict[k].shape) != shapes[k]
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise ValueError(
            f"the state dict does not fit ModelArgs(dim={args.dim}, n_layers={args.n_layers}, "
            f"n_heads={args.n_heads}, n_kv_heads={args.kv_heads}, vocab_size={args.vocab_size}): "
            f"{shown}. Check that the checkpoint and the config belong together."
        )


def meta_to_hf(state_dict: Mapping[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Rename (and, for wq/wk, permute) a Meta-format state dict into Hugging Face's format."""
    validate_state_dict(state_dict, args)
    out = {}
    for meta, hf in _name_map(args).items():
        tensor = state_dict[meta]
        if meta.endswith("attention.wq.weight"):
            tensor = interleaved_to_half(tensor, args.n_heads)
        elif meta.endswith("attention.wk.weight"):
            tensor = interleaved_to_half(tensor, args.kv_heads)
        out[hf] = tensor.contiguous()
    return out


def hf_to_meta(state_dict: Mapping[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Rename (and, for q/k, un-permute) a Hugging Face state dict into Meta's format."""
    names = _name_map(args)
    reverse = {hf: meta for meta, hf in names.items()}
    extra = [
        k
        for k in state_dict
        if k not in reverse
        and not (args.tie_embeddings and k == "lm_head.weight")
        and not k.endswith("rotary_emb.inv_freq")
    ]
    missing = [hf for hf in reverse if hf not in state_dict]
    if extra or missing:
        raise ValueError(
            f"the Hugging Face state dict does not fit these ModelArgs: missing {missing[:5]}, "
            f"unexpected {extra[:5]}. Check n_layers and tie_embeddings."
        )
    out = {}
    for hf, meta in reverse.items():
        tensor = state_dict[hf]
        if meta.endswith("attention.wq.weight"):
            tensor = half_to_interleaved(tensor, args.n_heads)
        elif meta.endswith("attention.wk.weight"):
            tensor = half_to_interleaved(tensor, args.kv_heads)
        out[meta] = tensor.contiguous()
    validate_state_dict(out, args)
    return out


def hf_config_kwargs(args: ModelArgs) -> dict[str, Any]:
    """Keyword arguments for `transformers.LlamaConfig` describing the same model."""
    require_llama(args, "a transformers LlamaConfig")
    kwargs: dict[str, Any] = {
        "vocab_size": args.vocab_size,
        "hidden_size": args.dim,
        "intermediate_size": args.hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "tie_word_embeddings": args.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    scaling = {"rope_type": "llama3", **args.rope_scaling} if args.rope_scaling else None
    if _hf_uses_rope_parameters():
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": args.rope_theta}
        if scaling:
            kwargs["rope_parameters"] = {**scaling, "rope_theta": args.rope_theta}
    else:
        kwargs["rope_theta"] = args.rope_theta
        kwargs["rope_scaling"] = scaling
    return kwargs


def _hf_uses_rope_parameters() -> bool:
    """transformers 5 groups rope_theta and rope_scaling into `rope_parameters`."""
    try:
        from transformers import LlamaConfig
    except ImportError:
        return True
    return "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters


def args_from_hf_config(config: Any) -> ModelArgs:
    """ModelArgs from a LlamaConfig or its dict (the hidden size is reproduced exactly)."""
    cfg = config if isinstance(config, Mapping) else config.to_dict()
    if ARGS_KEY in cfg:
        return ModelArgs(**cfg[ARGS_KEY])
    _refuse_unsupported(cfg)
    rope = dict(cfg.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = dict(cfg.get("rope_scaling") or rope)  # transformers 4 and Hub files; 5
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    scaling.pop("type", None)
    if kind not in ("default", "llama3"):
        raise ValueError(
            f"the config scales RoPE with type {kind!r}; llama_edu implements only Llama 3.1's "
            "'llama3' scaling (and none). Load this model with transformers instead, or choose "
            "a checkpoint without it."
        )
    scaling = scaling if kind == "llama3" else None
    dim, hidden = cfg["hidden_size"], cfg["intermediate_size"]
    base = int(2 * 4 * dim / 3)
    # Meta's rule rounds up to multiple_of; with multiple_of = hidden it lands exactly on hidden.
    multiplier = None if base <= hidden else hidden / base
    args = ModelArgs(
        dim=dim,
        n_layers=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg.get("num_key_value_heads"),
        vocab_size=cfg["vocab_size"],
        multiple_of=hidden,
        ffn_dim_multiplier=multiplier,
        norm_eps=cfg["rms_norm_eps"],
        rope_theta=float(theta),
        rope_scaling=scaling or None,
        max_seq_len=cfg["max_position_embeddings"],
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    if args.hidden_dim != hidden:
        raise ValueError(f"cannot express intermediate_size={hidden} for dim={dim} in ModelArgs.")
    return args


def _refuse_unsupported(cfg: Mapping[str, Any]) -> None:
    """Raise a clear error for config fields that change a Llama's maths in ways ModelArgs lacks."""
    problems = []
    dim, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim")
    if head_dim is not None and isinstance(dim, int) and isinstance(heads, int) and heads > 0:
        if head_dim != dim // heads:
            problems.append(f"head_dim={head_dim} differs from hidden_size / num_attention_heads "
                            f"= {dim // heads}")
    for name in ("attention_bias", "mlp_bias"):
        if cfg.get(name):
            problems.append(f"{name}=true")
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={cfg['hidden_act']!r} (Llama's SwiGLU uses 'silu')")
    if problems:
        raise ValueError(
            f"the config has {'; '.join(problems)}, which llama_edu's Llama does not support. "
            "Load this model with transformers instead, or choose a plain Llama checkpoint."
        )


EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json")


def _is_own_export(folder: Path) -> bool:
    """Whether folder's config.json says export_hf wrote it (its marker, or the older args key)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and (
        config.get(EXPORT_KEY) == EXPORT_VERSION or isinstance(config.get(ARGS_KEY), dict)
    )


def export_hf(model: Llama, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write a folder that LlamaForCausalLM.from_pretrained loads (safetensors + config.json).

    The export is written into a staging folder next to out_dir and moved into place when
    complete. An existing out_dir must be empty or an earlier export made by export_hf that
    holds nothing else; any other folder is refused and left as it is.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; export into an empty or new folder.")
    if out.exists() and any(out.iterdir()):
        if not _is_own_export(out):
            raise FileExistsError(
                f"{out} holds files and is not an export made by export_hf (its config.json "
                f"lacks the {EXPORT_KEY!r} marker). Nothing was changed; export into an empty or "
                "new folder."
            )
        extra = foreign_entries(out, EXPORT_FILES)
        if extra:
            raise FileExistsError(
                f"{out} is an earlier export but also holds {', '.join(extra)}, which export_hf "
                "did not write. Nothing was changed; move those away or export elsewhere."
            )
    config = {
        **hf_config_kwargs(model.args),
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": str(model.tok_embeddings.weight.dtype).removeprefix("torch."),
        ARGS_KEY: model.args.to_dict(),
        EXPORT_KEY: EXPORT_VERSION,
    }
    weights = meta_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()}, model.args)
    staging = make_staging_dir(out.parent, out.name)
    try:
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        if tokenizer is not None:
            model_file = Path(tokenizer.model_path)
            shutil.copyfile(model_file, staging / "tokenizer.model")
            atomic_write_text(
                staging / "tokenizer_config.json",
                json.dumps(
                    {
                        "tokenizer_class": "LlamaTokenizer",
                        "bos_token": "<s>",
                        "eos_token": "</s>",
                        "unk_token": "<unk>",
                        "add_bos_token": True,
                        "add_eos_token": False,
                    },
                    indent=2,
                )
                + "\n",
            )
        atomic_write_text(staging / "config.json", json.dumps(config, indent=2) + "\n")
        install_folder(staging, out)  # fsyncs, then swaps; the old export goes last
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def load_hf(source: str | os.PathLike | tuple[Mapping[str, torch.Tensor], Any]) -> Llama:
    """A Llama from a Hugging Face folder (config.json + *.safetensors), or (state_dict, config)."""
    if isinstance(source, tuple):
        state_dict, config = source
        args = args_from_hf_config(config)
    else:
        folder = Path(source)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{folder} has no config.json; is it a Hugging Face model folder?"
            )
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{config_file} is not valid JSON ({exc}). Export the model again, or restore "
                "the file from a copy."
            ) from exc
        args = args_from_hf_config(config)
        files = _weight_files(folder)
        state_dict = {}
        for file in files:
            try:
                state_dict.update(load_file(file))
            except Exception as exc:  # safetensors raises its own error type for bad files
                raise ValueError(
                    f"{file} is truncated or not a safetensors file ({type(exc).__name__}: "
                    f"{exc}). Export or download the model again."
                ) from exc
    return _build(args, hf_to_meta(state_dict, args))


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: those its index names if it has one, else all."""
    index_file = folder / "model.safetensors.index.json"
    if not index_file.is_file():
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{folder} has no .safetensors files. Only safetensors are loaded, never pickles."
            )
        return files
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(
            f"{index_file} is not a valid index (a JSON object whose 'weight_map' maps tensor "
            "names to shard files). Download the model again, or restore the file from a copy."
        ) from None
    odd = [n for n in names if not isinstance(n, str) or Path(n).name != n or n.startswith(".")]
    if odd or not names:
        raise ValueError(f"{index_file} names {odd or 'no shards'}; shards must be plain file "
                         "names next to the index. Download the model again.")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}, which its model.safetensors.index.json "
            "names. Download the model again (the shards belong together)."
        )
    return [folder / n for n in names]


def load_meta(checkpoint_dir: str | os.PathLike) -> Llama:
    """A Llama from Meta's format: params.json + consolidated.00.pth (loaded with weights_only)."""
    folder = Path(checkpoint_dir)
    params_file, weights_file = folder / "params.json", folder / "consolidated.00.pth"
    for needed in (params_file, weights_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{needed} is missing; a Meta checkpoint folder has both "
                "params.json and consolidated.00.pth."
            )
    params = json.loads(params_file.read_text())
    state_dict = torch.load(weights_file, map_location="cpu", weights_only=True)
    state_dict.pop("rope.freqs", None)  # Llama 1/2 checkpoints store the RoPE table too
    fields = {f.name for f in dataclasses.fields(ModelArgs)}
    kwargs = {k: v for k, v in params.items() if k in fields}
    if kwargs.get("vocab_size", -1) < 1:
        kwargs["vocab_size"] = state_dict["tok_embeddings.weight"].shape[0]
    if params.get("use_scaled_rope"):
        from .model import LLAMA31_SCALING

        kwargs["rope_scaling"] = dict(
            LLAMA31_SCALING, factor=params.get("rope_scaling_factor", 8.0)
        )
    kwargs.setdefault("tie_embeddings", "output.weight" not in state_dict)
    return _build(ModelArgs(**kwargs), state_dict)


def _build(args: ModelArgs, state_dict: Mapping[str, torch.Tensor]) -> Llama:
    validate_state_dict(state_dict, args)
    model = Llama(args)
    own = {
        k: v for k, v in state_dict.items() if not (args.tie_embeddings and k == "output.weight")
    }
    model.load_state_dict(own, strict=not args.tie_embeddings)
    return model


# --- GGUF, the file format of llama.cpp and Ollama -----------------------------------------

GGUF_DTYPES = ("f32", "f16", "q8_0")
"""The precisions `export_gguf` writes: float32, float16, and llama.cpp's Q8_0 blocks."""

_GGUF_LAYER_NAMES = {  # Meta name inside layers.{i} -> llama.cpp name inside blk.{i}
    "attention.wq.weight": "attn_q.weight",
    "attention.wk.weight": "attn_k.weight",
    "attention.wv.weight": "attn_v.weight",
    "attention.wo.weight": "attn_output.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",
    "feed_forward.w2.weight": "ffn_down.weight",
    "feed_forward.w3.weight": "ffn_up.weight",
    "attention_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_GGUF_TOP_NAMES = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}


def gguf_name(meta_name: str) -> str:
    """llama.cpp's name for one of our (Meta's) tensor names, e.g. layers.0.attention.wq.weight
    -> blk.0.attn_q.weight."""
    if meta_name in _GGUF_TOP_NAMES:
        return _GGUF_TOP_NAMES[meta_name]
    parts = meta_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[2] in _GGUF_LAYER_NAMES:
        return f"blk.{parts[1]}.{_GGUF_LAYER_NAMES[parts[2]]}"
    raise ValueError(f"{meta_name!r} is not a tensor of a Llama; expected names such as "
                     "'layers.0.attention.wq.weight' or 'tok_embeddings.weight'")


def _gguf_vocab(tokenizer: Any) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces, scores and llama.cpp token types of a SentencePiece tokenizer."""
    from gguf import TokenType

    sp = getattr(tokenizer, "sp", None)
    if sp is None or not callable(getattr(sp, "IdToPiece", None)):
        raise TypeError(f"export_gguf needs the model's SentencePieceTokenizer (llama.cpp's "
                        f"'llama' vocabulary is SentencePiece's), got {type(tokenizer).__name__}")
    pieces, scores, types = [], [], []
    for i in range(sp.GetPieceSize()):
        pieces.append(sp.IdToPiece(i).encode("utf-8"))
        scores.append(float(sp.GetScore(i)))
        if sp.IsUnknown(i):
            kind = TokenType.UNKNOWN
        elif sp.IsControl(i):
            kind = TokenType.CONTROL
        elif sp.IsByte(i):
            kind = TokenType.BYTE
        elif sp.IsUnused(i):
            kind = TokenType.UNUSED
        else:
            kind = TokenType.NORMAL
        types.append(int(kind))
    return pieces, scores, types


def export_gguf(model: Llama, tokenizer: Any, path: str | os.PathLike, dtype: str = "f32",
                overwrite: bool = False) -> Path:
    """Write model and tokenizer as one GGUF file that llama.cpp (and Ollama) can run.

    The tensors get llama.cpp's names (`gguf_name`); wq and wk keep Meta's row order, which is
    the one llama.cpp's rotary embedding expects for the "llama" architecture. Norm weights stay
    float32; the matrices are written in `dtype` ("f32", "f16" or "q8_0"). The file is written
    next to `path` and renamed into place when complete; an existing file is kept unless
    overwrite=True.
    """
    import gguf

    from .quantize import quantize_q8_0

    if not isinstance(model, Llama):
        raise TypeError(f"export_gguf expects a llama_edu Llama, got {type(model).__name__}")
    require_llama(model.args, "export_gguf")
    if model.args.rope_scaling is not None:
        raise ValueError("export_gguf does not write Llama 3.1's rope scaling yet; export a model "
                         "with rope_scaling=None")
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} for export_gguf; choose one of "
                         f"{', '.join(GGUF_DTYPES)}")
    pieces, scores, types = _gguf_vocab(tokenizer)
    if len(pieces) != model.args.vocab_size:
        raise ValueError(f"the tokenizer has {len(pieces)} pieces but the model "
                         f"{model.args.vocab_size} rows; export the model with its own tokenizer")
    out = Path(path)
    if out.suffix != ".gguf":
        raise ValueError(f"{out} should end in .gguf, the extension llama.cpp and Ollama expect")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists and was left as it is; pass overwrite=True to "
                              "replace it, or choose another name")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give a file name such as model.gguf")
    a = model.args
    if dtype == "q8_0":
        odd = [n for n, t in model.state_dict().items() if t.dim() == 2 and t.shape[1] % 32]
        if odd:
            raise ValueError(f"q8_0 cuts each row into blocks of 32 weights, but {odd[0]} has "
                             f"rows of {model.state_dict()[odd[0]].shape[1]}; use f16 or f32")
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    tmp = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        writer.add_name("llama_edu")
        writer.add_context_length(a.max_seq_len)
        writer.add_embedding_length(a.dim)
        writer.add_block_count(a.n_layers)
        writer.add_feed_forward_length(a.hidden_dim)
        writer.add_head_count(a.n_heads)
        writer.add_head_count_kv(a.kv_heads)
        writer.add_rope_dimension_count(a.head_dim)
        writer.add_rope_freq_base(float(a.rope_theta))
        writer.add_layer_norm_rms_eps(float(a.norm_eps))
        writer.add_vocab_size(a.vocab_size)
        writer.add_file_type(int(file_type))
        if dtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(pieces)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(tokenizer.bos_id)
        writer.add_eos_token_id(tokenizer.eos_id)
        writer.add_unk_token_id(tokenizer.unk_id)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        for name, tensor in model.state_dict().items():
            if a.tie_embeddings and name == "output.weight":
                continue  # llama.cpp uses token_embd when output.weight is absent
            t = tensor.detach().float().cpu()
            if t.dim() == 1 or dtype == "f32":
                writer.add_tensor(gguf_name(name), t.numpy())
            elif dtype == "f16":
                writer.add_tensor(gguf_name(name), t.half().numpy())
            else:
                q, d = quantize_q8_0(t)  # (n_blocks, 32) int8, (n_blocks,) float16
                blocks = torch.cat([d.view(torch.uint8).reshape(-1, 2), q.view(torch.uint8)], 1)
                writer.add_tensor(gguf_name(name), blocks.reshape(t.shape[0], -1).numpy(),
                                  raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out
